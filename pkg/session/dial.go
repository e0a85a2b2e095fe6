package session

import (
	"context"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// DialLimiter caps how many connection attempts run at once across the
// sessions that share it, so that a fleet-wide reconnect (every PBX
// restarted, a network blip) cannot storm the network, the PBXs or this
// process with TLS handshakes. An attempt holds its slot from dial to the
// login's outcome, so a slot is held at most DialTimeout + BannerTimeout +
// LoginTimeout.
type DialLimiter struct {
	sem chan struct{} // capacity = the cap; what happens at it: wait, counted in DialsWaiting
}

// NewDialLimiter returns a limiter allowing n concurrent attempts
// (n <= 0: DefaultMaxDials).
func NewDialLimiter(n int) *DialLimiter {
	if n <= 0 {
		n = DefaultMaxDials
	}
	return &DialLimiter{sem: make(chan struct{}, n)}
}

// Cap returns the number of concurrent attempts allowed.
func (l *DialLimiter) Cap() int { return cap(l.sem) }

var (
	processLimiterOnce sync.Once
	processLimiter     *DialLimiter
)

// ProcessDialLimiter returns the limiter, with DefaultMaxDials slots, that
// sessions created without WithDialLimiter share.
func ProcessDialLimiter() *DialLimiter {
	processLimiterOnce.Do(func() { processLimiter = NewDialLimiter(DefaultMaxDials) })
	return processLimiter
}

// acquire waits for a slot or ctx. waiting counts the attempts blocked here.
// inProgress and attempts count the slots taken.
func (l *DialLimiter) acquire(ctx context.Context, waiting, inProgress prometheus.Gauge, attempts prometheus.Counter) (release func(), err error) {
	release = func() {
		inProgress.Dec()
		<-l.sem
	}
	select {
	case l.sem <- struct{}{}:
		inProgress.Inc()
		attempts.Inc()
		return release, nil
	default:
	}
	waiting.Inc()
	defer waiting.Dec()
	select {
	case l.sem <- struct{}{}:
		inProgress.Inc()
		attempts.Inc()
		return release, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
