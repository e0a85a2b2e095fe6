package logging

import (
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// Clock is a Coalescer's time source; tests inject a fake one.
type Clock interface {
	// Now is a monotonic reading from an arbitrary origin.
	Now() time.Duration
	// AfterFunc calls f once, on its own goroutine, after d.
	AfterFunc(d time.Duration, f func()) Timer
}

// Timer is a pending AfterFunc call.
type Timer interface {
	// Stop prevents the call if it has not started.
	Stop() bool
}

type realClock struct{ origin time.Time }

func (c realClock) Now() time.Duration { return time.Since(c.origin) }

func (realClock) AfterFunc(d time.Duration, f func()) Timer { return time.AfterFunc(d, f) }

// CoalescerOptions tunes a Coalescer; zero values take the defaults.
type CoalescerOptions struct {
	Level      zapcore.Level // the zero value is info; NewCoalescer uses warn
	CountField string        // field with the count since the last line; default "count"
	TotalField string        // field with the count since NewCoalescer; default "total"
	Clock      Clock         // default: the monotonic wall clock
}

// Coalescer turns a condition that can repeat on a hot path (events
// dropped, late answers, failed connection attempts ...) into at most one
// log line per interval, carrying the count since the previous line and the
// total. It is the one rate-limited logger of amibus: every component that
// logs a per-event or repeated condition logs it through one.
//
// It has no goroutine of its own. The first Add after a quiet interval
// logs at once; Adds within the interval only count, with atomics and a
// clock reading, and the first of them arms a one-shot timer
// (time.AfterFunc) for the end of the interval, which logs what
// accumulated. So a burst is reported when it
// starts and when the interval ends, never later, and an idle Coalescer
// costs nothing: no goroutine, no ticker. The timer's goroutine exists only
// while it logs; the owner calls Stop to disarm it and log the remainder.
// Compared with one owned goroutine and Run(ctx) per Coalescer (one per
// node and condition), this keeps Add's cost to a few atomics and a clock
// reading, and needs no lifecycle from the many places that count
// something.
type Coalescer struct {
	logger     *zap.Logger
	msg        string
	level      zapcore.Level
	interval   int64
	countField string
	totalField string
	fields     []zap.Field
	clock      Clock

	pending atomic.Uint64
	total   atomic.Uint64
	// logged is the count already reported by a line or dropped by End; a
	// line's total field is taken from it, so each line's total is exactly
	// the sum of the counts up to it even while Adds race the line.
	logged atomic.Uint64
	last   atomic.Int64 // clock reading of the last line
	armed  atomic.Bool  // a timer will log the pending count

	active atomic.Bool // an Add since NewCoalescer or the last End

	mu      sync.Mutex // guards timer, stopped and latest against arm/Stop races
	timer   Timer
	stopped bool
	latest  []zap.Field // of the latest AddWith, logged with the next line
}

// NewCoalescer logs msg at warn level with fields, a "count" field (since
// the last line) and a "total" field, at most once per interval.
func NewCoalescer(logger *zap.Logger, msg string, interval time.Duration, fields ...zap.Field) *Coalescer {
	return NewCoalescerWith(logger, msg, interval, CoalescerOptions{Level: zapcore.WarnLevel}, fields...)
}

// NewCoalescerWith is NewCoalescer with a level, field names or a clock.
// An interval below one millisecond is raised to one millisecond.
func NewCoalescerWith(logger *zap.Logger, msg string, interval time.Duration, o CoalescerOptions, fields ...zap.Field) *Coalescer {
	if interval < time.Millisecond {
		interval = time.Millisecond
	}
	c := &Coalescer{
		logger:     logger,
		msg:        msg,
		level:      o.Level,
		interval:   int64(interval),
		countField: "count",
		totalField: "total",
		fields:     fields,
		clock:      o.Clock,
	}
	if o.CountField != "" {
		c.countField = o.CountField
	}
	if o.TotalField != "" {
		c.totalField = o.TotalField
	}
	if c.clock == nil {
		c.clock = realClock{origin: time.Now()}
	}
	// The first Add logs at once.
	c.last.Store(int64(c.clock.Now()) - c.interval)
	return c
}

// Add counts n occurrences. It never blocks and logs at most once per
// interval; safe for concurrent use.
func (c *Coalescer) Add(n uint64) {
	if n == 0 {
		return
	}
	c.pending.Add(n)
	c.total.Add(n)
	if !c.active.Load() {
		c.active.Store(true)
	}
	// Due even while a timer is armed: with a clock that follows the
	// callers' own timeline (eventq's), an Add can be the first to see the
	// interval end.
	now := int64(c.clock.Now())
	if last := c.last.Load(); now-last >= c.interval && c.last.CompareAndSwap(last, now) {
		c.emit()
		return
	}
	if !c.armed.Load() {
		c.arm(now)
	}
}

// AddWith is Add for a condition whose details vary: fields describe the
// latest occurrence (its error, its size ...) and go out with the next
// line, after the fixed fields. It takes a lock, so it is meant for
// conditions rarer than events (failures, oversized messages).
func (c *Coalescer) AddWith(n uint64, fields ...zap.Field) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	c.latest = append(c.latest[:0], fields...)
	c.mu.Unlock()
	c.Add(n)
}

// End marks the condition over (the PBX answered, the renewal succeeded):
// the count not yet logged is dropped and returned, the next Add logs at
// once, and active reports whether there was an Add since NewCoalescer or
// the previous End. The owner logs the recovery itself if it wants a line.
func (c *Coalescer) End() (unlogged uint64, active bool) {
	c.mu.Lock()
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.latest = c.latest[:0]
	c.mu.Unlock()
	c.armed.Store(false)
	unlogged = c.pending.Swap(0)
	c.logged.Add(unlogged)
	c.last.Store(int64(c.clock.Now()) - c.interval)
	return unlogged, c.active.Swap(false)
}

// Total returns the count since NewCoalescer.
func (c *Coalescer) Total() uint64 { return c.total.Load() }

// Flush logs the count not yet reported, if any, regardless of the
// interval, and then starts a new interval. For the owner, at shutdown or
// at a point worth a line of its own.
func (c *Coalescer) Flush() {
	if c.pending.Load() == 0 {
		return
	}
	c.last.Store(int64(c.clock.Now()))
	c.emit()
}

// Stop disarms the timer and flushes. Later Adds still count and may log
// from Add, but arm no timer: call Flush to report them.
func (c *Coalescer) Stop() {
	c.mu.Lock()
	c.stopped = true
	if c.timer != nil {
		c.timer.Stop()
		c.timer = nil
	}
	c.mu.Unlock()
	c.Flush()
}

func (c *Coalescer) arm(now int64) {
	if !c.armed.CompareAndSwap(false, true) {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.stopped {
		c.armed.Store(false)
		return
	}
	wait := c.last.Load() + c.interval - now
	c.timer = c.clock.AfterFunc(time.Duration(max(wait, 0)), c.fire)
}

func (c *Coalescer) fire() {
	// Clear armed before taking the count: an Add that lands after the
	// Swap below then sees armed false and arms the next timer.
	c.armed.Store(false)
	now := int64(c.clock.Now())
	if last := c.last.Load(); now-last >= c.interval && c.last.CompareAndSwap(last, now) {
		c.emit()
		return
	}
	// A Flush or an Add logged in between: wait for the next interval.
	if c.pending.Load() > 0 {
		c.arm(now)
	}
}

func (c *Coalescer) emit() {
	n := c.pending.Swap(0)
	if n == 0 {
		return
	}
	total := c.logged.Add(n)
	if ce := c.logger.Check(c.level, c.msg); ce != nil {
		c.mu.Lock()
		fs := make([]zap.Field, 0, len(c.fields)+len(c.latest)+2)
		fs = append(fs, c.fields...)
		fs = append(fs, c.latest...)
		c.mu.Unlock()
		fs = append(fs, zap.Uint64(c.countField, n), zap.Uint64(c.totalField, total))
		ce.Write(fs...)
	}
}
