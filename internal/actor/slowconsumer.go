package actor

import (
	"errors"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/logging"
	"github.com/amibus/amibus/internal/metrics"
)

// Metric names of the slow-consumer accounting, defined here because the
// condition is ami-actor's alone: the command server's request channel
// (capacity 1024) is where nats.go drops requests when the dispatcher
// falls behind, and the requester then gets no reply at all.
const (
	metricSlowConsumers   = "ami_nats_slow_consumers_total"
	metricRequestsDropped = "ami_requests_dropped_total"
)

// maxTrackedSubs caps the subscriptions whose drop counts are summed. The
// actor's connection has two (the command server's); the cap only keeps a
// bug elsewhere from growing the set.
const maxTrackedSubs = 16

// slowLogInterval is the least time between two log lines about slow
// consumer reports; each line carries the count since the previous one.
const slowLogInterval = time.Minute

// dropCounter counts what nats.go drops on the actor's connection because
// a subscription's pending queue was full. nats.go reports a slow consumer
// through the connection's async error handler only at the start of each
// streak of drops, so the number of requests dropped is read from the
// subscriptions themselves (Subscription.Dropped) when Prometheus scrapes.
type dropCounter struct {
	reports prometheus.Counter
	desc    *prometheus.Desc
	logLine *logging.Coalescer

	mu   sync.Mutex
	subs map[*nats.Subscription]int // last Dropped() read; kept after the subscription closes
	prev nats.ErrHandler            // the handler installed before ours (daemon.NATSOptions' logger)

	// testHookReported, when set, runs after a slow-consumer report is
	// counted.
	testHookReported func()
}

func newDropCounter(m *metrics.Metrics, log *zap.Logger) (*dropCounter, error) {
	d := &dropCounter{
		reports: prometheus.NewCounter(prometheus.CounterOpts{
			Name: metricSlowConsumers,
			Help: "Times nats.go reported a subscription of ami-actor as a slow consumer (start of a streak of dropped requests).",
		}),
		desc: prometheus.NewDesc(metricRequestsDropped,
			"Action requests nats.go dropped before ami-actor saw them (slow consumer); their requesters get no reply.",
			nil, nil),
		logLine: logging.NewCoalescer(log,
			"NATS dropped action requests: ami-actor is a slow consumer (see "+metricRequestsDropped+")", slowLogInterval),
		subs: make(map[*nats.Subscription]int),
	}
	if err := m.Registry.Register(d.reports); err != nil {
		return nil, err
	}
	if err := m.Registry.Register(d); err != nil {
		m.Registry.Unregister(d.reports)
		return nil, err
	}
	return d, nil
}

// install makes d the connection's async error handler; errors other than
// slow consumers go on to the handler that was there before.
func (d *dropCounter) install(nc *nats.Conn) {
	d.mu.Lock()
	d.prev = nc.ErrorHandler()
	d.mu.Unlock()
	nc.SetErrorHandler(d.handle)
}

// uninstall puts the previous handler back and logs what is left to log.
func (d *dropCounter) uninstall(nc *nats.Conn) {
	d.mu.Lock()
	prev := d.prev
	d.mu.Unlock()
	nc.SetErrorHandler(prev)
	d.logLine.Stop()
}

// handle is a nats.ErrHandler. A slow-consumer report is counted and
// logged coalesced instead of once per streak, which a request burst can
// repeat many times a second.
func (d *dropCounter) handle(nc *nats.Conn, sub *nats.Subscription, err error) {
	if !errors.Is(err, nats.ErrSlowConsumer) {
		d.mu.Lock()
		prev := d.prev
		d.mu.Unlock()
		if prev != nil {
			prev(nc, sub, err)
		}
		return
	}
	d.reports.Inc()
	d.logLine.Add(1)
	if sub != nil {
		d.mu.Lock()
		if _, ok := d.subs[sub]; ok || len(d.subs) < maxTrackedSubs {
			d.refreshLocked(sub)
		}
		d.mu.Unlock()
	}
	if d.testHookReported != nil {
		d.testHookReported()
	}
}

// refreshLocked records sub's drop count if the subscription is still
// open; a closed one keeps its last count.
func (d *dropCounter) refreshLocked(sub *nats.Subscription) {
	if n, err := sub.Dropped(); err == nil && n > d.subs[sub] {
		d.subs[sub] = n
		return
	}
	if _, ok := d.subs[sub]; !ok {
		d.subs[sub] = 0
	}
}

// dropped returns the requests dropped so far on every tracked subscription.
func (d *dropCounter) dropped() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	total := 0
	for sub := range d.subs {
		d.refreshLocked(sub)
		total += d.subs[sub]
	}
	return total
}

// Describe implements prometheus.Collector.
func (d *dropCounter) Describe(ch chan<- *prometheus.Desc) { ch <- d.desc }

// Collect implements prometheus.Collector.
func (d *dropCounter) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.MustNewConstMetric(d.desc, prometheus.CounterValue, float64(d.dropped()))
}
