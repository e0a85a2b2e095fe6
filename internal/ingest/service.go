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

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/daemon"
	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/internal/lifecycle"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/ownership"
	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/publish"
	"github.com/amibus/amibus/pkg/session"
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

	// reloadMu orders Reload against the start of the nodes and the
	// shutdown; applied (the last configuration applied, which differs
	// from cfg only in its nodes) and stopping are guarded by it.
	reloadMu sync.Mutex
	applied  *config.Config
	stopping bool
	// nodesStarted: Run started the nodes of applied (without HA), so a
	// reload starts the nodes it adds; before that Run starts them.
	nodesStarted bool
	mgr          *ownership.Manager // under HA, once runHA made it

	// actionTimeout bounds each action run after login (Filter, snapshots).
	actionTimeout time.Duration
	// snapInterval is ingest.snapshot_interval (tests may shorten it).
	snapInterval time.Duration
	// leases is the JetStream context of the ownership leases: on a
	// connection of their own when WithLeaseConn is given.
	leases jetstream.JetStream

	streamReady atomic.Bool
	started     lifecycle.Once

	mu    sync.Mutex
	nodes map[string]config.Node // configured nodes, replaced by Reload
	// locks orders the start and stop of one node's session: under HA a
	// reload's restart may meet the manager's Release. One per node ever
	// configured.
	locks map[string]*sync.Mutex
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
		// A stream lost while running (deleted, or a NATS server back
		// without its storage) is recreated as configured.
		publish.WithStream(streamConfig(cfg)),
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
		applied:       cfg,
		locks:         make(map[string]*sync.Mutex, len(cfg.Nodes)),
		actionTimeout: DefaultActionTimeout,
		snapInterval:  cfg.Ingest.SnapshotInterval,
		leases:        leases,
	}
	opts := append(cfg.Session.Options(),
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
		if _, err := daemon.NodeSessionOptions(cfg, n, daemon.RoleIngest); err != nil {
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
	if err := s.started.Start("ingest"); err != nil {
		return err
	}
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
		// Under reloadMu: the nodes started are those of the file applied
		// last, and a reload waits until they are.
		s.reloadMu.Lock()
		s.nodesStarted = true
		for _, n := range s.applied.Nodes {
			if err := s.startNode(n.Name); err != nil {
				runErr = fmt.Errorf("node %s: %w", n.Name, err)
				break
			}
		}
		s.reloadMu.Unlock()
		if runErr == nil {
			<-runCtx.Done()
		}
	}
	cancel()
	wg.Wait()
	s.reloadMu.Lock()
	s.stopping = true
	s.reloadMu.Unlock()
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
			// flood the log. While not connected, nats.go's error
			// (outbound buffer limit exceeded) would mislead: the
			// connection's own lines give the cause.
			if !s.nc.IsConnected() {
				s.log.Warn("stream not created yet: NATS not connected (see the NATS connection lines for the cause), retrying",
					zap.String("stream", sc.Name))
			} else {
				s.log.Warn("stream not created yet, retrying", zap.String("stream", sc.Name), zap.Error(err))
			}
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
	// Under reloadMu: the manager starts from the file applied last, and
	// a reload after this goes through it.
	s.reloadMu.Lock()
	mgr, err := ownership.New(s.leases, s.instance, nodeNames(s.applied),
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
	if err == nil {
		s.mgr = mgr
	}
	s.reloadMu.Unlock()
	if err != nil {
		return err
	}
	// The manager releases every node (draining each) before it returns.
	return mgr.Run(ctx)
}

// nodeNames lists cfg's nodes.
func nodeNames(cfg *config.Config) []string {
	names := make([]string, 0, len(cfg.Nodes))
	for _, n := range cfg.Nodes {
		names = append(names, n.Name)
	}
	return names
}

// lock returns the lock of node's start and stop.
func (s *Service) lock(name string) *sync.Mutex {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.locks[name]
	if l == nil {
		l = new(sync.Mutex)
		s.locks[name] = l
	}
	return l
}

// startNode starts the buffer, publisher worker and AMI session of node.
func (s *Service) startNode(name string) error {
	l := s.lock(name)
	l.Lock()
	defer l.Unlock()
	return s.startNodeLocked(name)
}

func (s *Service) startNodeLocked(name string) error {
	s.mu.Lock()
	n, ok := s.nodes[name]
	s.mu.Unlock()
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
	nodeOpts, err := daemon.NodeSessionOptions(s.cfg, n, daemon.RoleIngest)
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
	return nil
}

// stopNode closes node's session (its session_end is queued), then publishes
// what its buffer holds until ctx ends: a hand-over gives the node away only
// after its events are stored.
func (s *Service) stopNode(ctx context.Context, name string) {
	reason := session.ReasonClosed
	s.mu.Lock()
	if _, ok := s.nodes[name]; !ok {
		reason = session.ReasonRemoved // released because a reload removed it
	}
	s.mu.Unlock()
	s.endNode(ctx, name, reason)
}

// endNode is stopNode with the session_end reason given.
func (s *Service) endNode(ctx context.Context, name, reason string) {
	l := s.lock(name)
	l.Lock()
	defer l.Unlock()
	s.endNodeLocked(ctx, name, reason)
}

// restartNode ends node's session (reason reconfigured) and starts it again
// with its new settings, if this process runs it.
func (s *Service) restartNode(ctx context.Context, name string) error {
	l := s.lock(name)
	l.Lock()
	defer l.Unlock()
	if _, running := s.pool.Get(name); !running {
		return nil // under HA: not ours (or released meanwhile)
	}
	s.endNodeLocked(ctx, name, session.ReasonReconfigured)
	return s.startNodeLocked(name)
}

func (s *Service) endNodeLocked(ctx context.Context, name, reason string) {
	s.pool.RemoveWithReason(name, reason)
	if err := s.pub.Remove(ctx, name); err != nil {
		s.log.Warn("node handed over with events not stored", zap.String("node", name), zap.Error(err))
	}
}

// onUp runs after each login, for the connection's life: it asks the PBX to
// filter events itself, takes the snapshots that event sourcing needs after
// a (re)connect, then takes them again after every gap (snapshotAfterGaps).
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
	last := time.Now()
	actions := s.snapshot(ctx, sess, id, q, n.Name, metrics.SnapshotLogin, s.cfg.Ingest.SnapshotActions)
	s.snapshotAfterGaps(ctx, sess, id, q, n.Name, last, actions)
}

// snapshotAfterGaps takes the node's snapshots again whenever the queue
// reports events of this session lost and the buffer has room (a gap was
// written), unless a snapshot taken since already covers them; at most one
// round per ingest.snapshot_interval from the start of the previous one
// (login included), so a node that keeps dropping adds no load. A gap
// within the interval waits for its end and shares that round. It returns
// when the connection ends.
func (s *Service) snapshotAfterGaps(ctx context.Context, sess *session.Session, id string, q *eventq.Queue, node string,
	last time.Time, actions []string) {
	if len(actions) == 0 {
		return
	}
	skipped := s.m.SnapshotsSkipped.WithLabelValues(node)
	var (
		timer *time.Timer
		due   <-chan time.Time // set while a round waits for the interval
	)
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case <-q.SnapshotWanted():
			if !q.SnapshotNeeded(id, actions) {
				continue
			}
			if due != nil {
				skipped.Inc()
				continue
			}
			if wait := s.snapInterval - time.Since(last); wait > 0 {
				skipped.Inc()
				timer = time.NewTimer(wait)
				due = timer.C
				continue
			}
		case <-due:
			due = nil
			if !q.SnapshotNeeded(id, actions) {
				continue
			}
		}
		last = time.Now()
		actions = s.snapshot(ctx, sess, id, q, node, metrics.SnapshotGap, actions)
		if len(actions) == 0 {
			return
		}
	}
}

// snapshot runs each of actions once and returns those the PBX did not
// refuse: an action it answers with an error (unknown to this Asterisk, or
// not permitted to the user) is not asked again in this session. Each answer is queued by the
// session's reader at the place its list completed (Action.OnAnswer): the
// PBX sends a list whole and holds its events back meanwhile, so there the
// snapshot is exactly the state that the events after it change.
func (s *Service) snapshot(ctx context.Context, sess *session.Session, id string, q *eventq.Queue,
	node, trigger string, actions []string) []string {
	taken := s.m.Snapshots.WithLabelValues(node, trigger)
	kept := make([]string, 0, len(actions))
	for _, action := range actions {
		queued := make(chan struct{})
		a := session.Action{Name: action, OnAnswer: func(res *session.Result) {
			defer close(queued)
			if isSuccess(res) {
				// The queue takes the list's messages: nothing below
				// reads res.Events.
				q.PushSnapshot(id, action, listItems(res), time.Now())
				taken.Inc()
			}
		}}
		res, err := s.send(ctx, sess, a)
		if err == nil {
			// OnAnswer may still be running on the reader: wait for it, so
			// that the next action and SnapshotNeeded see this one queued.
			select {
			case <-queued:
			case <-ctx.Done():
			}
		}
		if err == nil && !isSuccess(res) {
			s.log.Warn("snapshot action refused by the PBX; not asked again in this session",
				zap.String("node", node), zap.String("action", action), zap.String("session", id),
				zap.String("message", message(res)))
			continue
		}
		kept = append(kept, action)
		if err != nil && ctx.Err() == nil {
			s.log.Warn("snapshot failed", zap.String("node", node), zap.String("action", action),
				zap.String("trigger", trigger), zap.Error(err))
		}
	}
	return kept
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

// ErrReloadRefused: the new configuration changes a setting that the
// running process cannot apply; nothing was changed. It is
// config.ErrReloadRefused, shared with ami-actor.
var ErrReloadRefused = config.ErrReloadRefused

// Reload applies next, a configuration parsed and validated as at
// start-up, to the running pipeline, changing only its node list: a node
// added starts its session; a node removed ends its session (session_end
// reason "removed") after its buffer is stored (within
// ingest.drain_timeout); a node whose settings changed restarts its session
// (reason "reconfigured"); every other session goes on untouched. A change
// to anything else the ingest reads (config.Fixed) refuses the whole reload
// (ErrReloadRefused) and changes nothing. Reloads run one at a time.
func (s *Service) Reload(ctx context.Context, next *config.Config) (config.NodeChanges, error) {
	if err := config.CheckReload(s.cfg, next, config.BinaryIngest); err != nil {
		return config.NodeChanges{}, err
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	if s.stopping {
		return config.NodeChanges{}, fmt.Errorf("%w: shutting down", ErrReloadRefused)
	}
	ch := config.DiffNodes(s.applied, next, config.BinaryIngest)
	if ch.Empty() {
		s.applied = next
		return ch, nil
	}
	byName := make(map[string]config.Node, len(next.Nodes))
	for i, n := range next.Nodes {
		byName[n.Name] = n
		// As at start: a node that cannot be built (TLS CA file) fails
		// here, before anything changes.
		if _, err := daemon.NodeSessionOptions(s.cfg, n, daemon.RoleIngest); err != nil {
			return config.NodeChanges{}, fmt.Errorf("%w: nodes[%d]: %w", ErrReloadRefused, i, err)
		}
	}
	// The nodes first: the manager may release a removed node at once,
	// and the release tells removed from handed over by them.
	s.mu.Lock()
	before := s.nodes
	s.nodes = byName
	s.mu.Unlock()
	if s.mgr != nil {
		if err := s.mgr.SetNodes(nodeNames(next)); err != nil {
			s.mu.Lock()
			s.nodes = before
			s.mu.Unlock()
			return config.NodeChanges{}, fmt.Errorf("%w: nodes: %w", ErrReloadRefused, err)
		}
	}
	s.applied = next

	// Removed and changed nodes end first, all at once: each drains its
	// own buffer under the drain deadline. Under HA the manager ends the
	// removed ones it owns (Release) and places the added ones.
	dctx, cancel := context.WithTimeout(ctx, s.cfg.Ingest.DrainTimeout)
	defer cancel()
	ha := s.cfg.Ingest.HA.Enabled
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for _, n := range ch.Removed {
		if ha || !s.nodesStarted {
			break // the manager releases them, or they never started
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.endNode(dctx, n, session.ReasonRemoved)
		}()
	}
	for _, n := range ch.Changed {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.restartNode(dctx, n); err != nil {
				mu.Lock()
				errs = append(errs, fmt.Errorf("node %s: %w", n, err))
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	for _, n := range ch.Added {
		if ha || !s.nodesStarted {
			break // the manager places them, or Run starts them
		}
		if err := s.startNode(n); err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", n, err))
		}
	}
	s.log.Info("configuration reloaded", zap.Strings("added", ch.Added), zap.Strings("removed", ch.Removed),
		zap.Strings("restarted", ch.Changed))
	return ch, errors.Join(errs...)
}
