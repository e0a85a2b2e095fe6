// Package lifecycle holds what every long-lived component of amibus shares
// about starting and stopping (docs/architecture.md, "Lifecycle"): the one
// error for a second start, and the guard that reports it.
//
// The shape: New validates and starts nothing; Run(ctx) does the work and
// blocks; the end of ctx asks for a graceful stop within the component's
// own bound; Run returns only once every goroutine it started has ended,
// with nil after a requested stop or the error that stopped it. A second
// Run (or Start) returns an error for which errors.Is(err, ErrStarted).
package lifecycle

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// ErrStarted is the error of a second start. Public packages export it
// under their own name (session.ErrStarted, publish.ErrStarted,
// command.ErrStarted): it is the same value.
var ErrStarted = errors.New("already started")

// Once refuses every start after the first. The zero value is ready.
type Once struct{ started atomic.Bool }

// Start reports nil the first time and ErrStarted, prefixed with
// component, every later time.
func (o *Once) Start(component string) error {
	if o.started.CompareAndSwap(false, true) {
		return nil
	}
	return fmt.Errorf("%s: %w", component, ErrStarted)
}

// Started reports whether Start was called.
func (o *Once) Started() bool { return o.started.Load() }
