package testenv

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// Go runs run in a goroutine of its own until stop, which cancels run's
// context, waits up to WaitLimit for run to return and returns run's error
// (later calls return the same error at once). If run does not return in
// time, stop fails the test (goroutine-safe: Errorf) and returns an error
// naming what. The test's cleanup calls stop and ignores run's error: a
// test that expects run to end well checks what stop returns.
func Go(t testing.TB, what string, run func(context.Context) error) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var once sync.Once
	var err error
	stop = func() error {
		once.Do(func() {
			cancel()
			select {
			case err = <-done:
			case <-time.After(WaitLimit):
				t.Errorf("%s did not return within %v of cancel", what, WaitLimit)
				err = fmt.Errorf("%s did not return within %v of cancel", what, WaitLimit)
			}
		})
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return stop
}
