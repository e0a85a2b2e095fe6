package testenv

import (
	"testing"
	"time"
)

// PollEvery is how often Poll checks its condition.
const PollEvery = 20 * time.Millisecond

// Poll waits until cond holds, checking it every PollEvery, and fails the
// test after WaitLimit, naming what it waited for. It is for conditions
// with no signal to wait on: another process's HTTP endpoint, a metric, a
// server's view of a consumer. Where a channel or a callback exists, wait
// on that instead.
func Poll(t testing.TB, what string, cond func() bool) {
	t.Helper()
	if cond() {
		return
	}
	tick := time.NewTicker(PollEvery)
	defer tick.Stop()
	deadline := time.NewTimer(WaitLimit)
	defer deadline.Stop()
	for {
		select {
		case <-tick.C:
			if cond() {
				return
			}
		case <-deadline.C:
			t.Fatalf("waited %v for %s", WaitLimit, what)
		}
	}
}
