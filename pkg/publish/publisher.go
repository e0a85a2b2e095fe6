package publish

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/internal/lifecycle"
	"github.com/amibus/amibus/internal/logging"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/setting"
)

// Publisher defaults.
const (
	// DefaultMaxInflight is the cap on unacknowledged publishes of the
	// whole process (ingest.max_inflight).
	DefaultMaxInflight = 4096
	// DefaultAckTimeout is how long a publish waits for its ack before it is
	// retried (with the same Nats-Msg-Id).
	DefaultAckTimeout = 5 * time.Second
	// DefaultSnapshotMaxItems caps the list events of one snapshot message.
	DefaultSnapshotMaxItems = 10000
	// DefaultRetryMin and DefaultRetryMax bound the wait before a node's
	// failed publishes are sent again; it doubles on each failure and is
	// reset by an ack.
	DefaultRetryMin = 50 * time.Millisecond
	DefaultRetryMax = time.Second
	// DefaultLogInterval is the shortest time between two lines about
	// messages refused for good, per node.
	DefaultLogInterval = 10 * time.Second
)

// Sentinel errors; check them with errors.Is.
var (
	// ErrInvalidOption reports an option value that cannot work.
	ErrInvalidOption = errors.New("publish: invalid option")
	// ErrReconnectBuffer: the connection buffers publishes while it
	// reconnects. Messages sent after a disconnect would then be stored
	// before the retries of those the disconnect lost, breaking per-node
	// order; connect with nats.ReconnectBufSize(-1).
	ErrReconnectBuffer = errors.New("publish: the NATS connection must be made with nats.ReconnectBufSize(-1)")
	// ErrClosed: the Publisher was drained; it takes no more nodes.
	ErrClosed = errors.New("publish: publisher closed")
	// ErrStarted: Start was called twice.
	// It is lifecycle.ErrStarted, the one error of a second start.
	ErrStarted = lifecycle.ErrStarted
	// ErrDuplicateNode: Add was called twice for one node.
	ErrDuplicateNode = errors.New("publish: node already added")
	// ErrUnknownNode: no queue was added for that node.
	ErrUnknownNode = errors.New("publish: unknown node")
	// ErrDrainIncomplete: the drain deadline passed, or NATS was not
	// there, before every buffered item was stored; the rest was counted as
	// dropped (reason shutdown).
	ErrDrainIncomplete = errors.New("publish: drain incomplete")
)

type options struct {
	prefix      string
	maxInflight int
	ackTimeout  time.Duration
	redact      []string
	snapMax     int
	retryMin    time.Duration
	retryMax    time.Duration
	logInterval time.Duration
	metrics     *metrics.Metrics
	log         *zap.Logger
	fence       func()
	stream      *StreamConfig
}

// Option configures a Publisher. New reports a refused one wrapped in
// ErrInvalidOption.
type Option func(*options) error

// WithPrefix sets the subject prefix (default "ami").
func WithPrefix(p string) Option {
	return func(o *options) error { o.prefix = p; return validPrefix(p) }
}

// WithMaxInflight caps the unacknowledged publishes of the process; a node
// waits for a free slot (back-pressure), it never fails for lack of one.
func WithMaxInflight(n int) Option {
	return func(o *options) error { o.maxInflight = n; return setting.AtLeast("max inflight", n, 1) }
}

// WithAckTimeout sets how long a publish waits for its ack before it is
// sent again with the same Nats-Msg-Id.
func WithAckTimeout(d time.Duration) Option {
	return func(o *options) error { o.ackTimeout = d; return setting.Positive("ack timeout", d) }
}

// WithRedactFields sets the field names whose values are replaced by
// RedactedValue (ASCII case ignored); default DefaultRedactFields. No names:
// nothing is redacted.
func WithRedactFields(names ...string) Option {
	return func(o *options) error { o.redact = append([]string{}, names...); return nil }
}

// WithSnapshotMaxItems caps the list events of one snapshot message.
func WithSnapshotMaxItems(n int) Option {
	return func(o *options) error { o.snapMax = n; return setting.AtLeast("snapshot max items", n, 1) }
}

// WithRetryBackoff bounds the wait before failed publishes are sent again.
func WithRetryBackoff(minWait, maxWait time.Duration) Option {
	return func(o *options) error {
		o.retryMin, o.retryMax = minWait, maxWait
		if err := setting.Positive("retry backoff min", minWait); err != nil {
			return err
		}
		return setting.AtLeast("retry backoff max", maxWait, minWait)
	}
}

// WithLogInterval sets the shortest time between two lines, per node, about
// messages JetStream refused for good.
func WithLogInterval(d time.Duration) Option {
	return func(o *options) error { o.logInterval = d; return setting.Positive("log interval", d) }
}

// WithMetrics updates EventsPublished, PublishRetries, MetaPublished and
// EventsRedacted (the queues count received and dropped events).
func WithMetrics(m *metrics.Metrics) Option {
	return func(o *options) error { o.metrics = m; return nil }
}

// WithFence sets the function that makes every publish handed to nats.go
// and not yet acknowledged unable to reach the stream (daemon.ResetDialer's
// Reset, which aborts the socket). Drain and Remove call it when their
// deadline passes while a node still has publishes in flight or is blocked
// inside nats.go: otherwise those could be stored after the node was handed
// to another replica, interleaving two sessions in its history. Without it,
// the deadline only stops waiting.
func WithFence(f func()) Option {
	return func(o *options) error { o.fence = f; return nil }
}

// WithStream makes the Publisher recreate the stream with cfg when
// publishes find none (JetStream answers "no responders": the stream was
// deleted, or a NATS server came back without its storage). What the lost
// stream held cannot be known here; what the queues buffered is then
// published in order. Without it, such publishes are retried until a stream
// appears.
func WithStream(cfg StreamConfig) Option {
	return func(o *options) error {
		c, err := cfg.withDefaults()
		o.stream = &c
		return err
	}
}

// WithLogger sets the logger; it writes a few lines per outage and per node,
// never one per event.
func WithLogger(l *zap.Logger) Option {
	return func(o *options) error { o.log = logging.OrNop(l); return nil }
}

// Publisher publishes the items of node queues to JetStream: one per
// process, one goroutine per node while that node has something to publish
// (an idle node's worker parks, see worker.park), all nodes sharing one cap
// on unacknowledged publishes.
//
// Per node, items are published in queue order, each event with
// Nats-Msg-Id "<session>-<seq>" and each marker with a deterministic id
// ("<session>-start", "<session>-end", "<session>-gap-<first_seq>",
// "<session>-snap-<action>-<seq>", with "-2", "-3" ... appended to a later
// snapshot of the same action at the same seq), so that any retry is deduplicated by
// JetStream within the stream's duplicate window.
//
// Order: JetStream stores the messages of one connection in the order they
// were sent. When a publish fails with a retryable error (ack timeout, no
// responders, disconnect), the node stops sending, waits until every one of
// its unacknowledged publishes has an outcome, then sends again, in order and
// with their ids, all that were not acknowledged; those already stored are
// deduplicated. The stream order therefore equals the queue order whenever
// the messages stored during a failure are a prefix of those sent, which is
// the case for a lost connection (hence nats.ReconnectBufSize(-1)) and for
// lost acks. It is not the case if JetStream rejects message k and stores
// k+1, k+2 ... that were already in flight (at most max inflight of them):
// then a retried k is stored after them (its seq shows where it belongs),
// and for a k rejected for good (publish_failed) the gap marker follows them.
// A publish refused before sending (over max payload) is marked in exact
// order, as nothing after it was sent.
//
// An event counts as published only on its ack, and as dropped
// (publish_failed) only on an error that retrying cannot fix (size limits,
// malformed message); anything else is retried until Drain's deadline.
type Publisher struct {
	nc      *nats.Conn
	js      jetstream.JetStream
	o       options
	redact  func([]byte) bool
	pubOpts []jetstream.PublishOpt

	// sem holds one token per unacknowledged publish of the process: the
	// process-wide cap (max inflight). Taken before PublishMsgAsync, given
	// back when the publish has an outcome.
	sem chan struct{}

	// amu guards inflight and the state of every registered entry; the ack
	// handlers take it on nats.go's goroutines.
	amu      sync.Mutex
	inflight map[*nats.Msg]*entry
	// gate, guarded by amu, is non-nil while the stream is being checked
	// (WithStream): no publish is sent, and the channel is closed when
	// sending may resume. idle is signalled when, gated, the last publish
	// in flight has its outcome.
	gate chan struct{}
	idle chan struct{}
	// lost is signalled by a publish that found no stream; watchStream,
	// owned by the Publisher (Start to Drain), answers it.
	lost      chan struct{}
	watchDone chan struct{}

	mu      sync.Mutex
	workers map[string]*worker
	ctx     context.Context
	cancel  context.CancelFunc
	started bool
	closed  bool
}

// NewPublisher returns a Publisher on nc, which must have been connected
// with nats.ReconnectBufSize(-1) (see ErrReconnectBuffer).
func NewPublisher(nc *nats.Conn, opts ...Option) (*Publisher, error) {
	if nc == nil {
		return nil, fmt.Errorf("%w: nil connection", ErrInvalidOption)
	}
	if nc.Opts.ReconnectBufSize >= 0 {
		return nil, ErrReconnectBuffer
	}
	o := options{
		prefix:      DefaultPrefix,
		maxInflight: DefaultMaxInflight,
		ackTimeout:  DefaultAckTimeout,
		redact:      DefaultRedactFields,
		snapMax:     DefaultSnapshotMaxItems,
		retryMin:    DefaultRetryMin,
		retryMax:    DefaultRetryMax,
		logInterval: DefaultLogInterval,
		log:         zap.NewNop(),
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
		}
	}
	p := &Publisher{
		nc:       nc,
		o:        o,
		redact:   RedactFields(o.redact...),
		sem:      make(chan struct{}, o.maxInflight),
		inflight: make(map[*nats.Msg]*entry, o.maxInflight),
		workers:  make(map[string]*worker),
		idle:     make(chan struct{}, 1),
		lost:     make(chan struct{}, 1),
		// nats.go's own no-responders retries run on timers, behind later
		// publishes: they could store a message after its successors. The
		// Publisher retries itself, in order.
		pubOpts: []jetstream.PublishOpt{jetstream.WithRetryAttempts(0)},
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(o.maxInflight),
		jetstream.WithPublishAsyncTimeout(o.ackTimeout),
		jetstream.WithPublishAsyncAckHandler(p.onAck),
		jetstream.WithPublishAsyncErrHandler(p.onErr),
	)
	if err != nil {
		return nil, fmt.Errorf("publish: jetstream: %w", err)
	}
	p.js = js
	return p, nil
}

// Add serves q as the queue of node (a valid subject token). It may be
// called before or after Start; the node's publishing starts with the later
// of the two.
func (p *Publisher) Add(node string, q *eventq.Queue) error {
	if !ValidToken(node) {
		return fmt.Errorf("%w: node %q: must be [A-Za-z0-9_-]+", ErrInvalidSubject, node)
	}
	if q == nil {
		return fmt.Errorf("%w: nil queue for node %q", ErrInvalidOption, node)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if _, ok := p.workers[node]; ok {
		return fmt.Errorf("%w: %q", ErrDuplicateNode, node)
	}
	w := newWorker(p, node, q)
	p.workers[node] = w
	if p.started {
		w.start(p.ctx)
	}
	return nil
}

// Start starts publishing. The node goroutines run until Drain or Remove
// stops them, or until ctx is cancelled, which stops them at once (what was
// not stored then is accounted for by Drain, which must still be called).
func (p *Publisher) Start(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return ErrClosed
	}
	if p.started {
		return fmt.Errorf("publish: %w", ErrStarted)
	}
	p.started = true
	p.ctx, p.cancel = context.WithCancel(ctx)
	if p.o.stream != nil {
		p.watchDone = make(chan struct{})
		go p.watchStream(p.ctx)
	}
	for _, w := range p.workers {
		w.start(p.ctx)
	}
	return nil
}

// Drain ends the Publisher: it closes every queue (they take no more items),
// publishes what they hold until ctx ends, then stops every node goroutine
// and waits for it, and counts what is left as dropped (reason shutdown),
// including publishes sent but not acknowledged by then (JetStream may have
// stored them: only an ack counts as published). It logs a summary per node
// and returns ErrDrainIncomplete if anything was dropped. Call it once, also
// after the Start context was cancelled.
func (p *Publisher) Drain(ctx context.Context) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrClosed
	}
	p.closed = true
	ws := make([]*worker, 0, len(p.workers))
	for _, w := range p.workers {
		ws = append(ws, w)
	}
	p.mu.Unlock()

	err := p.stop(ctx, ws)
	if p.cancel != nil {
		p.cancel()
	}
	if p.watchDone != nil {
		<-p.watchDone
	}
	// Drops nats.go's pending acks and its reply subscription and status
	// listener goroutine; late outcomes are ignored (not in inflight).
	p.js.CleanupPublisher()
	return err
}

// Remove stops publishing node as Drain does for all nodes (closing its
// queue, publishing what it holds until ctx ends), and forgets the node: a
// hand-over uses it to give a node away only after its buffer is stored.
func (p *Publisher) Remove(ctx context.Context, node string) error {
	p.mu.Lock()
	w, ok := p.workers[node]
	if ok {
		delete(p.workers, node)
	}
	p.mu.Unlock()
	if !ok {
		return fmt.Errorf("%w: %q", ErrUnknownNode, node)
	}
	return p.stop(ctx, []*worker{w})
}

func (p *Publisher) stop(ctx context.Context, ws []*worker) error {
	base := make([]uint64, len(ws))
	for i, w := range ws {
		base[i] = w.q.Stats().DroppedShutdown
		w.q.Close()
	}
	for _, w := range ws {
		if w.done == nil {
			continue
		}
		select {
		case <-w.done:
		case <-ctx.Done():
		}
	}
	late := 0
	for _, w := range ws {
		if w.done == nil {
			continue
		}
		select {
		case <-w.done:
		default:
			late++
		}
	}
	if late > 0 && p.o.fence != nil {
		// A node still running at the deadline has publishes in flight or
		// a goroutine inside nats.go (a socket that stopped draining holds
		// its lock). Abort the socket before giving the node up, so none of
		// them is stored after the next owner's; the other nodes' in-flight
		// publishes fail and are resent with their ids (deduplicated).
		p.o.fence()
		if p.o.metrics != nil {
			p.o.metrics.PublishFences.Inc()
		}
		p.o.log.Warn("drain deadline passed with publishes in flight: NATS socket aborted so that none is stored late",
			zap.Int("nodes_in_flight", late))
	}
	for _, w := range ws {
		if w.done != nil {
			w.cancel()
			<-w.done
		}
	}
	var dropped uint64
	for i, w := range ws {
		dropped += w.sweep(base[i])
	}
	if dropped > 0 {
		return fmt.Errorf("%w: %d events dropped", ErrDrainIncomplete, dropped)
	}
	return nil
}

// NodeStats is a node's accounting: the queue's (received = published +
// dropped + buffered) and the publisher's own counts.
type NodeStats struct {
	eventq.Stats
	// MetaPublished counts lifecycle, gap and snapshot messages stored.
	MetaPublished uint64
	// MetaDropped counts markers that could not be stored (refused for good,
	// or left at shutdown).
	MetaDropped uint64
	// Retries counts publishes sent again after a failure.
	Retries uint64
	// Redacted counts messages in which a field was redacted.
	Redacted uint64
}

// Stats returns the accounting of node.
func (p *Publisher) Stats(node string) (NodeStats, error) {
	p.mu.Lock()
	w, ok := p.workers[node]
	p.mu.Unlock()
	if !ok {
		return NodeStats{}, fmt.Errorf("%w: %q", ErrUnknownNode, node)
	}
	return w.stats(), nil
}

func (p *Publisher) onAck(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) {
	p.resolve(m, nil)
}

func (p *Publisher) onErr(_ jetstream.JetStream, m *nats.Msg, err error) {
	p.resolve(m, err)
}

// resolve records the outcome of one publish. It runs on nats.go's
// goroutines (sometimes under nats.go's publisher lock), so it only records
// and signals: it never blocks and never calls into nats.go.
func (p *Publisher) resolve(m *nats.Msg, err error) {
	p.amu.Lock()
	e, ok := p.inflight[m]
	if !ok {
		p.amu.Unlock()
		return
	}
	delete(p.inflight, m)
	e.setOutcome(err)
	w := e.w
	w.inflightN--
	if err != nil && e.retryable {
		w.failSeen = true
	}
	p.noteIdleLocked()
	p.amu.Unlock()
	<-p.sem
	if p.o.stream != nil && isNoStream(err) {
		select {
		case p.lost <- struct{}{}:
		default:
		}
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// retryable tells whether sending the same message again can succeed. Size
// limits and malformed messages cannot; JetStream API errors below 500 are
// refusals of this message; anything else (timeouts, no responders, a lost
// or closed connection, 503 unavailable) is worth retrying.
func retryable(err error) bool {
	switch {
	case errors.Is(err, nats.ErrMaxPayload),
		errors.Is(err, nats.ErrBadSubject),
		errors.Is(err, nats.ErrHeadersNotSupported),
		errors.Is(err, nats.ErrInvalidMsg),
		errors.Is(err, nats.ErrBadHeaderMsg),
		errors.Is(err, jetstream.ErrAsyncPublishReplySubjectSet):
		return false
	}
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) && apiErr.Code > 0 && apiErr.Code < 500 {
		return false
	}
	return true
}
