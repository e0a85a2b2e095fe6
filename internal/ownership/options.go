package ownership

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/setting"
)

// Defaults for the options.
const (
	DefaultBucket       = "ami_owners"
	DefaultTTL          = 10 * time.Second
	DefaultStep         = 2
	DefaultReplicas     = 1
	DefaultDrainTimeout = 10 * time.Second

	// MinTTL is the shortest lease TTL: the server keeps expiry markers
	// for at least a second, and shorter leases leave no room for a
	// renewal round trip.
	MinTTL = time.Second
	// maxNameLen bounds instance, node and bucket names so that keys stay
	// short (KV keys are NATS subjects).
	maxNameLen = 128
)

type config struct {
	bucket       string
	ttl          time.Duration
	renew        time.Duration // 0 until New: TTL/3
	margin       time.Duration // 0 until New: TTL/2
	step         int
	replicas     int
	drainTimeout time.Duration
	log          *zap.Logger
	reg          prometheus.Registerer
	acquire      func(node string)
	release      func(ctx context.Context, node string)
}

func defaults() config {
	return config{
		bucket:       DefaultBucket,
		ttl:          DefaultTTL,
		step:         DefaultStep,
		replicas:     DefaultReplicas,
		drainTimeout: DefaultDrainTimeout,
		log:          zap.NewNop(),
	}
}

// Option configures a Manager. New applies the options in order and then
// checks them together; it reports a refused value wrapped in
// ErrInvalidOption (a bad name in ErrInvalidName).
type Option func(*config) error

// WithBucket sets the key-value bucket holding the liveness keys and the
// node entries.
func WithBucket(name string) Option {
	return func(c *config) error { c.bucket = name; return checkName("bucket", name) }
}

// WithTTL sets the liveness TTL (at least MinTTL). It is also the bucket's
// TTL, so every replica sharing a bucket must use the same value. Node
// entries do not expire (see the package doc).
func WithTTL(d time.Duration) Option {
	return func(c *config) error {
		if d < MinTTL {
			return fmt.Errorf("ttl %v is below the minimum %v", d, MinTTL)
		}
		c.ttl = d
		return nil
	}
}

// WithRenewInterval sets how often the liveness key is rewritten (default
// TTL/3). It must be shorter than TTL minus the safety margin, so that the
// liveness gets at least one renewal attempt before the nodes are given up.
func WithRenewInterval(d time.Duration) Option {
	return func(c *config) error { c.renew = d; return setting.Positive("renew interval", d) }
}

// WithSafetyMargin sets how long before the liveness key's earliest expiry
// in the store the nodes are given up when it could not be renewed (default
// TTL/2). The margin covers the caller's Release and clock differences
// between this process and the NATS servers.
func WithSafetyMargin(d time.Duration) Option {
	return func(c *config) error { c.margin = d; return setting.Positive("safety margin", d) }
}

// WithStep sets the most nodes given up for rebalancing per renew round,
// which is also the most rebalancing hand-overs in flight (default 2).
func WithStep(n int) Option {
	return func(c *config) error { c.step = n; return setting.AtLeast("step", n, 1) }
}

// WithReplicas sets the number of replicas of the bucket when the Manager
// creates it (1 to 5; 3 in a NATS cluster).
func WithReplicas(n int) Option {
	return func(c *config) error { c.replicas = n; return setting.Between("bucket replicas", n, 1, 5) }
}

// WithDrainTimeout sets how long a graceful Release (rebalance, shutdown)
// may take before its context is cancelled (default 10s).
func WithDrainTimeout(d time.Duration) Option {
	return func(c *config) error { c.drainTimeout = d; return setting.Positive("drain timeout", d) }
}

// WithLogger sets the logger (default: none).
func WithLogger(l *zap.Logger) Option {
	return func(c *config) error { c.log = l; return setting.NotNil("logger", l) }
}

// WithRegisterer registers the Manager's metrics (ami_ownership_*) on r.
// Without it the metrics are kept but not exported.
func WithRegisterer(r prometheus.Registerer) Option {
	return func(c *config) error { c.reg = r; return nil }
}

// WithAcquire sets the function called, on the Manager's goroutine, right
// after a node's entry was written: the caller starts the node's AMI
// session. It must not block. Required.
func WithAcquire(f func(node string)) Option {
	return func(c *config) error { c.acquire = f; return nil }
}

// WithRelease sets the function called when the Manager gives a node up:
// to rebalance, on shutdown, or because it is lost or at risk.
// Required.
//
// It runs on a goroutine of its own, at most one per node, never while
// Acquire for that node runs. It must first close the node's AMI session
// (stop reading), and may then flush what the session already read, until
// ctx is done; once ctx is done it must return at once. The Manager keeps
// renewing its liveness while Release runs and deletes the node's entry
// (handing the node over) only after Release has returned. ctx is cancelled
// at the drain timeout, and early when the node can no longer be trusted;
// for a node at risk, ctx's deadline is the time after which another
// replica may own the node, less half the safety margin.
func WithRelease(f func(ctx context.Context, node string)) Option {
	return func(c *config) error { c.release = f; return nil }
}

// finish fills the derived defaults and checks the options together.
func (c *config) finish() error {
	if c.margin == 0 {
		c.margin = c.ttl / 2
	}
	if c.renew == 0 {
		c.renew = c.ttl / 3
	}
	if c.margin >= c.ttl {
		return fmt.Errorf("%w: safety margin %v must be below ttl %v", ErrInvalidOption, c.margin, c.ttl)
	}
	if c.renew >= c.ttl-c.margin {
		return fmt.Errorf("%w: renew interval %v must be below ttl %v minus safety margin %v", ErrInvalidOption, c.renew, c.ttl, c.margin)
	}
	if c.acquire == nil || c.release == nil {
		return fmt.Errorf("%w: WithAcquire and WithRelease are required", ErrInvalidOption)
	}
	return nil
}

// checkName accepts [A-Za-z0-9_-]{1,maxNameLen}: a valid NATS subject token
// and KV key part.
func checkName(what, s string) error {
	if s == "" {
		return fmt.Errorf("%w: %s is empty", ErrInvalidName, what)
	}
	if len(s) > maxNameLen {
		return fmt.Errorf("%w: %s is longer than %d bytes", ErrInvalidName, what, maxNameLen)
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if !(b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || b == '_' || b == '-') {
			return fmt.Errorf("%w: %s %q has character %q at %d (allowed: A-Z a-z 0-9 _ -)", ErrInvalidName, what, s, b, i)
		}
	}
	return nil
}
