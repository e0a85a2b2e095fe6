package session

import (
	"sync"
	"time"
)

// throttle coalesces a repeated condition into at most one log line per
// interval: the first occurrence is logged, later ones are counted and the
// count goes out with the next line allowed.
type throttle struct {
	mu         sync.Mutex
	every      time.Duration
	last       time.Time
	suppressed int
}

// note records one occurrence. It reports whether to log it now and, if so,
// how many occurrences were left unlogged since the previous line.
func (t *throttle) note(now time.Time) (ok bool, suppressed int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.last.IsZero() && now.Sub(t.last) < t.every {
		t.suppressed++
		return false, 0
	}
	suppressed, t.suppressed = t.suppressed, 0
	t.last = now
	return true, suppressed
}

// reset ends the condition: the next occurrence is logged at once. It
// returns the occurrences never logged.
func (t *throttle) reset() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := t.suppressed
	t.last, t.suppressed = time.Time{}, 0
	return n
}
