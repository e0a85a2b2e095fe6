package testenv

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// Log is an append-only record, safe for any goroutine, that a test waits
// on instead of sleeping: every Add wakes every waiter. The zero value is
// ready to use. It keeps all it is given: a test records what it asserts
// on, a bounded amount.
type Log[T any] struct {
	mu      sync.Mutex
	items   []T
	changed chan struct{} // closed and replaced by each Add
}

// wakeLocked returns the channel the next Add closes.
func (l *Log[T]) wakeLocked() chan struct{} {
	if l.changed == nil {
		l.changed = make(chan struct{})
	}
	return l.changed
}

// Add records x and wakes the waiters.
func (l *Log[T]) Add(x T) {
	l.mu.Lock()
	l.items = append(l.items, x)
	ch := l.wakeLocked()
	l.changed = nil
	l.mu.Unlock()
	close(ch)
}

// All is a copy of what was recorded, in order.
func (l *Log[T]) All() []T {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]T(nil), l.items...)
}

// WaitFor waits until cond holds on the record, checked at each Add, and
// returns the record it held on; at WaitLimit it fails the test, naming
// what it waited for.
func (l *Log[T]) WaitFor(t testing.TB, what string, cond func([]T) bool) []T {
	t.Helper()
	timeout := time.NewTimer(WaitLimit)
	defer timeout.Stop()
	for {
		l.mu.Lock()
		items := append([]T(nil), l.items...)
		ch := l.wakeLocked()
		l.mu.Unlock()
		if cond(items) {
			return items
		}
		select {
		case <-ch:
		case <-timeout.C:
			t.Fatalf("timed out after %v waiting for %s (%d recorded)", WaitLimit, what, len(items))
		}
	}
}

// String is for failure messages.
func (l *Log[T]) String() string {
	return fmt.Sprint(l.All())
}
