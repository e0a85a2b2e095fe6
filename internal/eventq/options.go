package eventq

import (
	"errors"
	"time"

	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/logging"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/setting"
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

// Option configures a Queue. New reports a refused one wrapped in
// ErrInvalidOption.
type Option func(*config) error

// WithMaxEvents caps the events buffered for the node (accepted and not yet
// released); an event over the cap is dropped as buffer_full. n >= 1.
func WithMaxEvents(n int) Option {
	return func(c *config) error { c.maxEvents = n; return setting.AtLeast("max events", n, 1) }
}

// WithBudget shares a process-wide byte budget; without it the queue gets a
// budget of its own of DefaultMaxBytes.
func WithBudget(b *Budget) Option {
	return func(c *config) error { c.budget = b; return setting.NotNil("budget", b) }
}

// WithMetrics updates EventsReceived, EventsDropped, BufferEvents and
// BufferBytes. All queues sharing a Budget must share the Metrics too, as
// BufferBytes is one gauge for the process.
func WithMetrics(m *metrics.Metrics) Option {
	return func(c *config) error { c.metrics = m; return nil }
}

// WithGapDelay sets DefaultGapDelay's delay; d >= 0.
func WithGapDelay(d time.Duration) Option {
	return func(c *config) error { c.gapDelay = d; return setting.NotNegative("gap delay", d) }
}

// WithLogger sets the logger for the coalesced drop lines. It is called from
// the AMI reader goroutine (at most once per log interval), so it must not
// block on its output: use a non-blocking core.
func WithLogger(l *zap.Logger) Option {
	return func(c *config) error { c.log = logging.OrNop(l); return nil }
}

// WithLogInterval sets the shortest time between two drop log lines.
func WithLogInterval(d time.Duration) Option {
	return func(c *config) error { c.logInterval = d; return setting.Positive("log interval", d) }
}

// WithOwner sets the process instance recorded in session_start items.
func WithOwner(id string) Option {
	return func(c *config) error { c.owner = id; return nil }
}
