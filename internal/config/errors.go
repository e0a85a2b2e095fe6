package config

import (
	"fmt"
	"strings"
)

// MaxErrors caps the problems one Parse reports: past it the rest of the
// file is still checked, but only counted (ValidationError.Omitted), so
// that a file of garbage yields a readable message, not thousands of lines.
const MaxErrors = 20

// FieldError is one problem with one field, named by its path in the file
// (nodes[2].address). Msg never contains a secret's value.
type FieldError struct {
	Path string
	Msg  string
}

// Error returns "<path>: <msg>".
func (e *FieldError) Error() string {
	if e.Path == "" {
		return e.Msg
	}
	return e.Path + ": " + e.Msg
}

// ValidationError holds every problem found in one file, in file order
// for decoding problems and then section by section.
type ValidationError struct {
	Errors  []*FieldError // at most MaxErrors
	Omitted int           // problems found beyond MaxErrors
}

// Error returns the single problem, or a count followed by one problem per
// line.
func (e *ValidationError) Error() string {
	if len(e.Errors) == 1 && e.Omitted == 0 {
		return e.Errors[0].Error()
	}
	var b strings.Builder
	total := len(e.Errors) + e.Omitted
	fmt.Fprintf(&b, "%d problems:", total)
	for _, fe := range e.Errors {
		b.WriteString("\n  ")
		b.WriteString(fe.Error())
	}
	if e.Omitted > 0 {
		fmt.Fprintf(&b, "\n  ... and %d more", e.Omitted)
	}
	return b.String()
}

// Unwrap lets errors.As find each *FieldError.
func (e *ValidationError) Unwrap() []error {
	errs := make([]error, len(e.Errors))
	for i, fe := range e.Errors {
		errs[i] = fe
	}
	return errs
}

// problems collects FieldErrors up to MaxErrors. A path that already has a
// problem gets no second one, so that a field that failed to decode is not
// also reported as missing or out of range.
type problems struct {
	errs    []*FieldError
	omitted int
	failed  map[string]bool
}

func (p *problems) add(path, format string, args ...any) {
	if p.failed == nil {
		p.failed = make(map[string]bool)
	}
	if p.failed[path] {
		return
	}
	p.failed[path] = true
	if len(p.errs) >= MaxErrors {
		p.omitted++
		return
	}
	p.errs = append(p.errs, &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (p *problems) has(path string) bool { return p.failed[path] }

func (p *problems) err() error {
	if len(p.errs) == 0 {
		return nil
	}
	return &ValidationError{Errors: p.errs, Omitted: p.omitted}
}

// quote renders a non-secret value for a message, shortened so that a huge
// value cannot flood the terminal.
func quote(s string) string {
	const max = 64
	r := []rune(s)
	if len(r) > max {
		return fmt.Sprintf("%q...", string(r[:max]))
	}
	return fmt.Sprintf("%q", s)
}
