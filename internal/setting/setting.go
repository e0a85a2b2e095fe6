// Package setting words the checks of amibus's functional options once:
// each package states a setting's bound in one call next to the code it
// governs, and every refusal reads the same, "<setting> <value>: must be
// ...". A package wraps the error in its own ErrInvalidOption where it
// applies its options, so errors.Is tells whose option was refused.
package setting

import (
	"cmp"
	"fmt"

	"github.com/amibus/amibus/pkg/amiwire"
)

// Positive refuses v <= 0.
func Positive[T cmp.Ordered](name string, v T) error {
	var zero T
	if v <= zero {
		return fmt.Errorf("%s %v: must be positive", name, v)
	}
	return nil
}

// NotNegative refuses v < 0.
func NotNegative[T cmp.Ordered](name string, v T) error {
	var zero T
	if v < zero {
		return fmt.Errorf("%s %v: must not be negative", name, v)
	}
	return nil
}

// AtLeast refuses v < lowest.
func AtLeast[T cmp.Ordered](name string, v, lowest T) error {
	if v < lowest {
		return fmt.Errorf("%s %v: must be at least %v", name, v, lowest)
	}
	return nil
}

// Between refuses v outside lowest..highest, both included.
func Between[T cmp.Ordered](name string, v, lowest, highest T) error {
	if v < lowest || v > highest {
		return fmt.Errorf("%s %v: must be %v to %v", name, v, lowest, highest)
	}
	return nil
}

// Token refuses a value that is not a name amibus can put in a subject or
// a key: amiwire.ValidName, the one token check.
func Token(name, v string) error {
	if !amiwire.ValidName(v) {
		return fmt.Errorf("%s %q: must be [A-Za-z0-9_-]+", name, v)
	}
	return nil
}

// NotNil refuses a nil pointer.
func NotNil[T any](name string, v *T) error {
	if v == nil {
		return fmt.Errorf("nil %s", name)
	}
	return nil
}
