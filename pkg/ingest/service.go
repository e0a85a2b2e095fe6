// Package ingest wires ami-ingest: one AMI session per owned node, each
// feeding a bounded eventq buffer that the publisher drains into JetStream,
// with snapshots after every login and, with HA on, node ownership leases.
package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/config"
	"github.com/amibus/amibus/pkg/eventq"
	"github.com/amibus/amibus/pkg/metrics"
	"github.com/amibus/amibus/pkg/ownership"
	"github.com/amibus/amibus/pkg/publish"
	"github.com/amibus/amibus/pkg/session"
	"github.com/amibus/amibus/pkg/sessionconf"
)

// DefaultActionTimeout bounds each action the ingest runs after a login
// (Filter, snapshot lists). A list of thousands of channels takes Asterisk
// well under a second; a PBX that has not answered in this time is not
// going to, and the session goes on without that snapshot.
const DefaultActionTimeout = 30 * time.Second

// Service is the ami-ingest pipeline of one process.
type Service struct {
	cfg      *config.Config
	nc       *nats.Conn
	js       jetstream.JetStream
	m        *metrics.Metrics
	log      *zap.Logger
	instance string

	budget *eventq.Budget
	pool   *session.Pool
	pub    *publish.Publisher
	nodes  map[string]config.Node // configured nodes, fixed at start

	// actionTimeout bounds each action run after login (Filter, snapshots).
	actionTimeout time.Duration
	// leases is the JetStream context of the ownership leases: on a
	// connection of their own when WithLeaseConn is given.
	leases jetstream.JetStream

	streamReady atomic.Bool

	mu     sync.Mutex
	queues map[string]*eventq.Queue // nodes this process runs now
}

// Option configures a Service beyond its configuration file.
type Option func(*options)

type options struct {
	leaseConn *nats.Conn
	fence     func()
}

// WithLeaseConn runs the ownership leases (HA) on their own connection.
// Why: on the events' connection a lease renewal waits behind the event
// publishes, and when the network to NATS stops draining, nats.go holds
// that connection's lock for as long as a socket write may take, whatever
// a call's context says; the leases must be renewed, or given up, on time.
func WithLeaseConn(nc *nats.Conn) Option { return func(o *options) { o.leaseConn = nc } }

// WithFence sets what aborts the events connection's socket when a node is
// given up with publishes still in flight (see publish.WithFence).
func WithFence(f func()) Option { return func(o *options) { o.fence = f } }

// New builds the pipeline; nothing runs until Run. nc must have been
// connected with nats.ReconnectBufSize(-1) (see publish.NewPublisher).
func New(cfg *config.Config, nc *nats.Conn, m *metrics.Metrics, log *zap.Logger, with ...Option) (*Service, error) {
	var o options
	for _, f := range with {
		f(&o)
	}
	instance := session.ProcessInstance()
	pub, err := publish.NewPublisher(nc,
		publish.WithFence(o.fence),
		publish.WithPrefix(cfg.NATS.SubjectPrefix),
		publish.WithMaxInflight(cfg.Ingest.MaxInflight),
		publish.WithRedactFields(cfg.Ingest.RedactFields...),
		publish.WithSnapshotMaxItems(cfg.Ingest.SnapshotMaxItems),
		publish.WithMetrics(m),
		publish.WithLogger(log),
	)
	if err != nil {
		return nil, err
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	leases := js
	if o.leaseConn != nil {
		if leases, err = jetstream.New(o.leaseConn); err != nil {
			return nil, err
		}
	}
	s := &Service{
		cfg: cfg, nc: nc, js: js, m: m, log: log, instance: instance,
		budget:        eventq.NewBudget(cfg.Ingest.BufferBytes),
		pub:           pub,
		nodes:         make(map[string]config.Node, len(cfg.Nodes)),
		queues:        make(map[string]*eventq.Queue, len(cfg.Nodes)),
		actionTimeout: DefaultActionTimeout,
		leases:        leases,
	}
	opts := append(sessionconf.Common(cfg.Session),
		session.WithInstance(instance),
		session.WithMetrics(m),
		session.WithLogger(log),
		session.WithDialLimiter(session.NewDialLimiter(cfg.Session.MaxConcurrentDials)),
		// A snapshot list is bounded twice: here, by what the session
		// collects, and in the envelope, by snapshot_max_items.
		session.WithAnswerLimits(cfg.Actor.MaxAnswerBytes, cfg.Ingest.SnapshotMaxItems+1),
	)
	s.pool = session.NewPool(opts...)
	for _, n := range cfg.Nodes {
		s.nodes[n.Name] = n
		// Build once now so that a bad node (TLS CA file) fails at start.
		if _, err := sessionconf.Node(cfg, n, sessionconf.Ingest); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// Instance is the process instance recorded as owner in session_start.
func (s *Service) Instance() string { return s.instance }

// Ready reports whether events can be stored: NATS connected and the
// stream created.
func (s *Service) Ready() error {
	if !s.nc.IsConnected() {
		return errors.New("nats: not connected")
	}
	if !s.streamReady.Load() {
		return fmt.Errorf("stream %s: not created yet", s.cfg.Stream.Name)
	}
	return nil
}

// Run runs the pipeline until ctx ends, then shuts down gracefully: it stops
// reading from the PBXs, drains the buffers to JetStream within
// ingest.drain_timeout, and returns. Only a failure to start is an error.
func (s *Service) Run(ctx context.Context) error {
	// runCtx also ends when starting fails, so that ensureStream, which
	// may be waiting for NATS, does not hold Run up.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if !s.ensureStream(runCtx) {
			return
		}
		// Publishing starts only once the stream exists. Messages sent
		// before would fail (no responders) and be resent, and if the
		// stream appeared while some were in flight, a later one could be
		// stored before an earlier one's resend. Until then the sessions
		// fill the buffers. The publisher outlives ctx: shutdown drains it,
		// after the sessions have stopped, under its own deadline.
		if err := s.pub.Start(context.WithoutCancel(ctx)); err != nil {
			s.log.Error("publisher not started", zap.Error(err))
		}
	}()

	var runErr error
	if s.cfg.Ingest.HA.Enabled {
		// Leases are taken only once the stream exists: a replica whose
		// stream set-up hangs would otherwise read its nodes' events only
		// to drop them when it hands the nodes over, while a replica that
		// can publish would have taken them.
		wg.Wait()
		if s.streamReady.Load() {
			runErr = s.runHA(runCtx)
		}
	} else {
		for _, n := range s.cfg.Nodes {
			if err := s.startNode(n.Name); err != nil {
				runErr = fmt.Errorf("node %s: %w", n.Name, err)
				break
			}
		}
		if runErr == nil {
			<-runCtx.Done()
		}
	}
	cancel()
	wg.Wait()
	s.shutdown()
	return runErr
}

// streamConfig is the stream the configuration asks for.
func streamConfig(cfg *config.Config) publish.StreamConfig {
	storage := jetstream.FileStorage
	if cfg.Stream.Storage == "memory" {
		storage = jetstream.MemoryStorage
	}
	return publish.StreamConfig{
		Name:            cfg.Stream.Name,
		Prefix:          cfg.NATS.SubjectPrefix,
		MaxAge:          cfg.Stream.MaxAge,
		MaxBytes:        cfg.Stream.MaxBytes,
		Storage:         storage,
		Replicas:        cfg.Stream.Replicas,
		DuplicateWindow: cfg.Stream.DuplicateWindow,
	}
}

// ensureStream creates or updates the stream, retrying while NATS is
// unreachable; events meanwhile wait in the buffers. It reports false if ctx
// ended first.
func (s *Service) ensureStream(ctx context.Context) bool {
	sc := streamConfig(s.cfg)
	wait := 100 * time.Millisecond
	logged := false
	for {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := publish.EnsureStream(cctx, s.js, sc)
		cancel()
		if err == nil {
			s.streamReady.Store(true)
			s.log.Info("stream ready", zap.String("stream", sc.Name))
			return true
		}
		if !logged {
			// One line, not one per retry: a long NATS outage must not
			// flood the log.
			s.log.Warn("stream not created yet, retrying", zap.String("stream", sc.Name), zap.Error(err))
			logged = true
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return false
		case <-t.C:
		}
		wait = min(2*wait, 5*time.Second)
	}
}

// runHA lets the ownership manager start and stop node sessions.
func (s *Service) runHA(ctx context.Context) error {
	names := make([]string, 0, len(s.cfg.Nodes))
	for _, n := range s.cfg.Nodes {
		names = append(names, n.Name)
	}
	mgr, err := ownership.New(s.leases, s.instance, names,
		ownership.WithBucket(s.cfg.Ingest.HA.Bucket),
		ownership.WithTTL(s.cfg.Ingest.HA.TTL),
		ownership.WithReplicas(s.cfg.Stream.Replicas),
		ownership.WithLogger(s.log),
		ownership.WithRegisterer(s.m.Registry),
		ownership.WithAcquire(func(node string) {
			if err := s.startNode(node); err != nil {
				s.log.Error("cannot start node session", zap.String("node", node), zap.Error(err))
			}
		}),
		ownership.WithRelease(func(ctx context.Context, node string) {
			s.stopNode(ctx, node)
		}),
	)
	if err != nil {
		return err
	}
	// The manager releases every node (draining each) before it returns.
	return mgr.Run(ctx)
}

// startNode starts the buffer, publisher worker and AMI session of node.
func (s *Service) startNode(name string) error {
	n, ok := s.nodes[name]
	if !ok {
		return fmt.Errorf("unknown node %q", name)
	}
	q, err := eventq.New(name,
		eventq.WithMaxEvents(s.cfg.Ingest.BufferEvents),
		eventq.WithBudget(s.budget),
		eventq.WithMetrics(s.m),
		eventq.WithLogger(s.log),
		eventq.WithOwner(s.instance),
	)
	if err != nil {
		return err
	}
	nodeOpts, err := sessionconf.Node(s.cfg, n, sessionconf.Ingest)
	if err != nil {
		return err
	}
	if err := s.pub.Add(name, q); err != nil {
		return err
	}
	f := newFilter(n.Include, n.Exclude)
	nodeOpts = append(nodeOpts,
		session.WithHandler(q),
		session.WithAccept(f.accept),
		session.WithOnUp(func(ctx context.Context, sess *session.Session, id string) {
			s.onUp(ctx, sess, id, q, n)
		}),
	)
	if _, err := s.pool.Add(name, n.Address, nodeOpts...); err != nil {
		_ = s.pub.Remove(context.Background(), name)
		return err
	}
	s.mu.Lock()
	s.queues[name] = q
	s.mu.Unlock()
	return nil
}

// stopNode closes node's session (its session_end is queued), then publishes
// what its buffer holds until ctx ends: a hand-over gives the node away only
// after its events are stored.
func (s *Service) stopNode(ctx context.Context, name string) {
	s.pool.Remove(name)
	s.mu.Lock()
	delete(s.queues, name)
	s.mu.Unlock()
	if err := s.pub.Remove(ctx, name); err != nil {
		s.log.Warn("node handed over with events not stored", zap.String("node", name), zap.Error(err))
	}
}

// onUp runs after each login: it asks the PBX to filter events itself, then
// takes the snapshots that event sourcing needs after a (re)connect.
func (s *Service) onUp(ctx context.Context, sess *session.Session, id string, q *eventq.Queue, n config.Node) {
	for _, a := range pbxFilters(n.Include, n.Exclude) {
		res, err := s.send(ctx, sess, a)
		if err != nil || !isSuccess(res) {
			// The ingest filter still applies; only bandwidth is lost.
			s.log.Info("PBX-side event filter not applied; filtering in the ingest",
				zap.String("node", n.Name), zap.Error(err), zap.String("message", message(res)))
			break
		}
	}
	for _, action := range s.cfg.Ingest.SnapshotActions {
		res, err := s.send(ctx, sess, session.Action{Name: action})
		if err != nil || !isSuccess(res) {
			if ctx.Err() == nil {
				s.log.Warn("snapshot failed", zap.String("node", n.Name), zap.String("action", action),
					zap.Error(err), zap.String("message", message(res)))
			}
			continue
		}
		q.PushSnapshot(id, action, listItems(res), time.Now())
	}
}

// send runs one set-up action under actionTimeout: a PBX that never
// answers one must not keep the session's later snapshots waiting forever.
func (s *Service) send(ctx context.Context, sess *session.Session, a session.Action) (*session.Result, error) {
	ctx, cancel := context.WithTimeout(ctx, s.actionTimeout)
	defer cancel()
	return sess.Send(ctx, a)
}

func isSuccess(res *session.Result) bool {
	return res != nil && res.Response != nil && string(res.Response.Name()) == "Success"
}

func message(res *session.Result) string {
	if res == nil || res.Response == nil {
		return ""
	}
	return res.Response.Get("Message")
}

// listItems returns the list events without the completion event.
func listItems(res *session.Result) []*amiwire.Message {
	items := res.Events
	if k := len(items); k > 0 && items[k-1].Get("EventList") == "Complete" {
		items = items[:k-1]
	}
	return items
}

// shutdown stops every session, then drains all buffers within the deadline.
func (s *Service) shutdown() {
	s.pool.Close()
	ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Ingest.DrainTimeout)
	defer cancel()
	if err := s.pub.Drain(ctx); err != nil {
		s.log.Warn("shutdown: not every event could be stored", zap.Error(err))
	} else {
		s.log.Info("shutdown: every buffered event stored")
	}
}
