package logging

import (
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// fakeClock runs timers synchronously from Advance.
type fakeClock struct {
	mu     sync.Mutex
	now    time.Duration
	timers []*fakeTimer
}

type fakeTimer struct {
	at      time.Duration
	f       func()
	stopped bool
	fired   bool
}

func (t *fakeTimer) Stop() bool {
	was := !t.stopped && !t.fired
	t.stopped = true
	return was
}

func (c *fakeClock) Now() time.Duration {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) AfterFunc(d time.Duration, f func()) Timer {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := &fakeTimer{at: c.now + d, f: f}
	c.timers = append(c.timers, t)
	return t
}

func (c *fakeClock) pending() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, t := range c.timers {
		if !t.stopped && !t.fired {
			n++
		}
	}
	return n
}

// Advance moves time on and runs the timers that came due, in order.
func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now += d
	var due []*fakeTimer
	for _, t := range c.timers {
		if !t.stopped && !t.fired && t.at <= c.now {
			t.fired = true
			due = append(due, t)
		}
	}
	c.mu.Unlock()
	for _, t := range due {
		t.f()
	}
}

func observed() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

func counts(t *testing.T, logs *observer.ObservedLogs) (count, total []uint64) {
	t.Helper()
	for _, e := range logs.All() {
		m := e.ContextMap()
		count = append(count, m["count"].(uint64))
		total = append(total, m["total"].(uint64))
	}
	return count, total
}

func TestCoalescerOneLinePerInterval(t *testing.T) {
	logger, logs := observed()
	clock := &fakeClock{}
	c := NewCoalescerWith(logger, "events dropped", time.Second,
		CoalescerOptions{Level: zapcore.WarnLevel, Clock: clock}, zap.String("node", "pbx1"))

	for range 10000 {
		c.Add(1)
	}
	// The first Add reports at once; the other 9999 wait for the interval.
	if logs.Len() != 1 {
		t.Fatalf("%d lines for 10k adds within one interval, want 1", logs.Len())
	}
	e := logs.All()[0]
	if e.Message != "events dropped" || e.Level != zapcore.WarnLevel || e.ContextMap()["node"] != "pbx1" {
		t.Errorf("line: %+v", e)
	}
	if clock.pending() != 1 {
		t.Fatalf("%d timers armed, want 1", clock.pending())
	}

	clock.Advance(999 * time.Millisecond)
	if logs.Len() != 1 {
		t.Fatalf("logged before the interval ended")
	}
	clock.Advance(time.Millisecond)
	count, total := counts(t, logs)
	if len(count) != 2 || count[0] != 1 || total[0] != 1 || count[1] != 9999 || total[1] != 10000 {
		t.Fatalf("count %v total %v, want [1 9999] [1 10000]", count, total)
	}

	// Quiet: nothing pending, no timer, no line.
	clock.Advance(time.Hour)
	if logs.Len() != 2 || clock.pending() != 0 {
		t.Fatalf("%d lines, %d timers after a quiet hour", logs.Len(), clock.pending())
	}
	// After a quiet interval the next Add reports at once again.
	c.Add(5)
	count, total = counts(t, logs)
	if len(count) != 3 || count[2] != 5 || total[2] != 10005 {
		t.Fatalf("count %v total %v", count, total)
	}
}

func TestCoalescerSteadyStream(t *testing.T) {
	logger, logs := observed()
	clock := &fakeClock{}
	c := NewCoalescerWith(logger, "late answers", time.Second, CoalescerOptions{Clock: clock})
	// 3 per 100 ms for 10 s, then a Flush.
	var added uint64
	var times []time.Duration
	for range 100 {
		for range 3 {
			c.Add(1)
			added++
		}
		before := logs.Len()
		clock.Advance(100 * time.Millisecond)
		if logs.Len() > before {
			times = append(times, clock.Now())
		}
	}
	c.Flush()
	count, total := counts(t, logs)
	var sum uint64
	for _, n := range count {
		sum += n
	}
	if sum != added || total[len(total)-1] != added || c.Total() != added {
		t.Fatalf("sum of counts %d, last total %d, Total %d, want %d", sum, total[len(total)-1], c.Total(), added)
	}
	// 10 s at one line per second, the first at once and the Flush at the end.
	if len(count) < 10 || len(count) > 12 {
		t.Fatalf("%d lines for 10 s at 1/s", len(count))
	}
	for i := 1; i < len(times); i++ {
		if times[i]-times[i-1] < time.Second {
			t.Fatalf("lines at %v and %v: closer than the interval", times[i-1], times[i])
		}
	}
}

func TestCoalescerFlushAndStop(t *testing.T) {
	logger, logs := observed()
	clock := &fakeClock{}
	c := NewCoalescerWith(logger, "oversized", time.Minute,
		CoalescerOptions{Clock: clock, CountField: "dropped_delta", TotalField: "dropped_total"})
	c.Flush() // nothing pending: no line
	if logs.Len() != 0 {
		t.Fatal("Flush logged with nothing pending")
	}
	c.Add(1)
	c.Add(2)
	c.Stop() // disarms the timer and reports the 2
	if clock.pending() != 0 {
		t.Fatal("Stop left a timer armed")
	}
	clock.Advance(time.Hour)
	all := logs.All()
	if len(all) != 2 {
		t.Fatalf("%d lines, want 2", len(all))
	}
	m := all[1].ContextMap()
	if m["dropped_delta"] != uint64(2) || m["dropped_total"] != uint64(3) || all[1].Level != zapcore.InfoLevel {
		t.Errorf("line after Stop: %v at %v", m, all[1].Level)
	}
	// After Stop, Adds arm no timer.
	c.Add(1)
	c.Add(1)
	if clock.pending() != 0 {
		t.Error("Add armed a timer after Stop")
	}
}

// TestCoalescerConcurrent runs Adds from many goroutines on the real clock
// under the race detector; the interval is long, so the lines are exactly
// the first Add's and Stop's. Other goroutines' Adds can land before the
// first line takes its count, so that count is at least 1, and each line's
// total is the sum of the counts up to it.
func TestCoalescerConcurrent(t *testing.T) {
	logger, logs := observed()
	c := NewCoalescer(logger, "dropped", time.Hour)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 10000 {
				c.Add(1)
			}
		})
	}
	wg.Wait()
	c.Stop()
	count, total := counts(t, logs)
	if len(count) != 2 || count[0] < 1 || total[0] != count[0] || count[0]+count[1] != 80000 || total[1] != 80000 {
		t.Fatalf("count %v total %v", count, total)
	}
	if logs.All()[0].Level != zapcore.WarnLevel {
		t.Errorf("NewCoalescer level %v, want warn", logs.All()[0].Level)
	}
}

// TestCoalescerRealTimer checks the timer path with the real clock: the
// remainder of a burst is logged when the interval ends, without Flush.
func TestCoalescerRealTimer(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	got := make(chan struct{}, 10)
	logger := zap.New(core, zap.Hooks(func(zapcore.Entry) error {
		select {
		case got <- struct{}{}:
		default:
		}
		return nil
	}))
	c := NewCoalescer(logger, "dropped", 20*time.Millisecond)
	defer c.Stop()
	c.Add(1)
	<-got // at once
	c.Add(2)
	select {
	case <-got:
	case <-time.After(10 * time.Second):
		t.Fatal("the timer never logged the remainder")
	}
	count, _ := counts(t, logs)
	if len(count) != 2 || count[1] != 2 {
		t.Fatalf("count %v", count)
	}
}

func BenchmarkCoalescerAdd(b *testing.B) {
	logger, _ := observed()
	c := NewCoalescer(logger, "dropped", time.Second)
	defer c.Stop()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			c.Add(1)
		}
	})
}

// TestCoalescerAddWithAndEnd: the line carries the latest occurrence's
// fields; End drops the unlogged count, disarms the timer, reports whether
// the condition was active, and lets the next occurrence log at once.
func TestCoalescerAddWithAndEnd(t *testing.T) {
	logger, logs := observed()
	clock := &fakeClock{}
	c := NewCoalescerWith(logger, "attempt failed", time.Minute, CoalescerOptions{Clock: clock}, zap.String("node", "pbx1"))
	if n, active := c.End(); n != 0 || active {
		t.Fatalf("End before any Add: %d, %v", n, active)
	}
	c.AddWith(1, zap.String("error", "first"))
	c.AddWith(1, zap.String("error", "second"))
	c.AddWith(1, zap.String("error", "third"))
	clock.Advance(time.Minute)
	all := logs.All()
	if len(all) != 2 || all[0].ContextMap()["error"] != "first" || all[1].ContextMap()["error"] != "third" ||
		all[1].ContextMap()["count"] != uint64(2) || all[1].ContextMap()["node"] != "pbx1" {
		t.Fatalf("lines %+v", all)
	}
	c.AddWith(1, zap.String("error", "fourth"))
	c.AddWith(1, zap.String("error", "fifth")) // both within the interval: counted, timer armed
	if n, active := c.End(); n != 2 || !active {
		t.Fatalf("End = %d, %v; want 2 unlogged, active", n, active)
	}
	if clock.pending() != 0 {
		t.Fatalf("%d timers armed after End", clock.pending())
	}
	if n, active := c.End(); n != 0 || active {
		t.Fatalf("second End = %d, %v; want 0, inactive", n, active)
	}
	c.AddWith(1, zap.String("error", "sixth"))
	if all := logs.All(); len(all) != 3 || all[2].ContextMap()["error"] != "sixth" {
		t.Fatalf("the first occurrence after End was not logged at once: %d lines", len(all))
	}
	c.Stop()
}
