package eventq

import (
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/metrics"
)

// Defaults of a Queue's options.
const (
	// DefaultMaxEvents is the per-node cap on buffered events
	// (ingest.buffer_events).
	DefaultMaxEvents = 100000
	// DefaultLogInterval is the shortest time between two drop log lines of
	// one queue.
	DefaultLogInterval = 10 * time.Second
	// DefaultGapDelay is how long a run of drops may stay open, once
	// everything before it was taken, before it is queued on its own
	// (TryPop). Drops normally end with the next accepted event, which
	// queues the gap at once; the delay matters only when the PBX falls
	// silent after them, and bounds the markers of a node starved by the
	// shared budget to one per delay.
	DefaultGapDelay = time.Second
)

// ErrInvalidOption reports an option value that cannot work; the error names
// the option.
var ErrInvalidOption = errors.New("eventq: invalid option")

type config struct {
	maxEvents   int
	budget      *Budget
	metrics     *metrics.Metrics
	log         *zap.Logger
	logInterval time.Duration
	gapDelay    time.Duration
	owner       string
}

// Option configures a Queue.
type Option func(*config) error

// WithMaxEvents caps the events buffered for the node (accepted and not yet
// released); an event over the cap is dropped as buffer_full. n >= 1.
func WithMaxEvents(n int) Option {
	return func(c *config) error {
		if n < 1 {
			return fmt.Errorf("%w: max events %d: must be at least 1", ErrInvalidOption, n)
		}
		c.maxEvents = n
		return nil
	}
}

// WithBudget shares a process-wide byte budget; without it the queue gets a
// budget of its own of DefaultMaxBytes.
func WithBudget(b *Budget) Option {
	return func(c *config) error {
		if b == nil {
			return fmt.Errorf("%w: nil budget", ErrInvalidOption)
		}
		c.budget = b
		return nil
	}
}

// WithMetrics updates EventsReceived, EventsDropped, BufferEvents and
// BufferBytes. All queues sharing a Budget must share the Metrics too, as
// BufferBytes is one gauge for the process.
func WithMetrics(m *metrics.Metrics) Option {
	return func(c *config) error {
		c.metrics = m
		return nil
	}
}

// WithGapDelay sets DefaultGapDelay's delay; d >= 0.
func WithGapDelay(d time.Duration) Option {
	return func(c *config) error {
		if d < 0 {
			return fmt.Errorf("%w: gap delay %v: must not be negative", ErrInvalidOption, d)
		}
		c.gapDelay = d
		return nil
	}
}

// WithLogger sets the logger for the coalesced drop lines. It is called from
// the AMI reader goroutine (at most once per log interval), so it must not
// block on its output: use a non-blocking core.
func WithLogger(l *zap.Logger) Option {
	return func(c *config) error {
		if l == nil {
			l = zap.NewNop()
		}
		c.log = l
		return nil
	}
}

// WithLogInterval sets the shortest time between two drop log lines.
func WithLogInterval(d time.Duration) Option {
	return func(c *config) error {
		if d <= 0 {
			return fmt.Errorf("%w: log interval %v: must be positive", ErrInvalidOption, d)
		}
		c.logInterval = d
		return nil
	}
}

// WithOwner sets the process instance recorded in session_start items.
func WithOwner(id string) Option {
	return func(c *config) error {
		c.owner = id
		return nil
	}
}
