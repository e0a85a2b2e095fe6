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
	"sync"
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

// CloseAll calls close on every item at once and returns when all calls
// have returned: closing AMI sessions waits for each Logoff's answer, so
// one after another would cost the sum of those waits, all at once costs
// the slowest.
func CloseAll[T any](items []T, close func(T)) {
	var wg sync.WaitGroup
	for _, it := range items {
		wg.Go(func() { close(it) })
	}
	wg.Wait()
}
