// Package actor wires ami-actor: action-only AMI sessions to every
// configured node (one always, more on demand up to
// actor.sessions_per_node, see nodeSessions) and the command server that
// answers action requests from NATS with them. The main only parses flags, loads the configuration, handles
// signals and serves HTTP; everything between NATS and the PBXs is here.
package actor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/daemon"
	"github.com/amibus/amibus/internal/lifecycle"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/command"
	"github.com/amibus/amibus/pkg/session"
)

// Errors of Run and WaitUp.
var (
	// ErrRunTwice: Run was called more than once on one Service; it is
	// lifecycle.ErrStarted, the one error of a second start.
	ErrRunTwice = fmt.Errorf("actor: %w", lifecycle.ErrStarted)
	// ErrUnknownNode: WaitUp was asked for a node that is not configured.
	ErrUnknownNode = errors.New("actor: unknown node")
	// ErrNATSClosed: the NATS connection was closed before the Service
	// could subscribe.
	ErrNATSClosed = errors.New("actor: NATS connection closed")
)

// shutdownMargin is added to actor.max_timeout_ms to bound the graceful
// shutdown: every request in flight reaches its own deadline within
// max_timeout_ms, and its reply needs a moment to be flushed.
const shutdownMargin = 5 * time.Second

// Service is ami-actor in one process. New builds and validates it; Run
// starts the sessions, serves until its context ends and shuts down;
// Reload changes its node list meanwhile.
type Service struct {
	nc  *nats.Conn
	log *zap.Logger
	cfg *config.Config // as at start-up: what a reload may not change
	m   *metrics.Metrics
	// common is every node's session options but its own (NodeSessionOptions).
	common []session.Option

	// reloadMu runs reloads one at a time, and the final close of the
	// sessions after any reload under way.
	reloadMu sync.Mutex
	// mu guards the node list, which a reload replaces.
	mu       sync.Mutex
	nodes    []*nodeSessions // one per configured node, in config order
	byName   map[string]*nodeSessions
	applied  *config.Config // the file applied last
	running  bool           // Run started the sessions
	stopping bool           // shutting down: reloads are refused
	srv      *command.Server
	drops    *dropCounter

	shutdownTimeout time.Duration

	ran        atomic.Bool
	serving    atomic.Bool   // subscribed and not shutting down
	subscribed chan struct{} // closed once subscribed; see Serving

	// upChanged is closed and replaced after every AMI login of any node,
	// so that WaitUp waits on a channel rather than polling.
	upMu      sync.Mutex
	upChanged chan struct{}
}

// New builds the Service for cfg on nc, counting in m and logging to log.
// Nothing connects or subscribes until Run; every node's session options
// are validated here, so a bad node fails at start-up with its name. The
// caller keeps ownership of nc and closes it after Run has returned.
func New(cfg *config.Config, nc *nats.Conn, m *metrics.Metrics, log *zap.Logger) (*Service, error) {
	switch {
	case cfg == nil:
		return nil, errors.New("actor: nil configuration")
	case nc == nil:
		return nil, errors.New("actor: nil NATS connection")
	case m == nil:
		return nil, errors.New("actor: nil metrics")
	}
	if log == nil {
		log = zap.NewNop()
	}
	a := cfg.Actor
	if a.MaxAnswerBytes > amiwire.MaxBytesLimit {
		// The reader's hard limit; the config package does not know it.
		return nil, fmt.Errorf("actor.max_answer_bytes: %d is over the limit of %d", a.MaxAnswerBytes, amiwire.MaxBytesLimit)
	}
	s := &Service{
		nc:              nc,
		log:             log,
		cfg:             cfg,
		applied:         cfg,
		m:               m,
		byName:          make(map[string]*nodeSessions, len(cfg.Nodes)),
		shutdownTimeout: time.Duration(a.MaxTimeoutMS)*time.Millisecond + shutdownMargin,
		upChanged:       make(chan struct{}),
		subscribed:      make(chan struct{}),
	}
	// An answer is read whole up to max_answer_bytes, so that big Command
	// outputs and lists fit; a header is at least 8 wire bytes, so the
	// header cap follows from the byte cap.
	s.common = append(cfg.Session.Options(),
		session.WithInstance(session.ProcessInstance()),
		session.WithMetrics(m),
		session.WithLogger(log),
		session.WithDialLimiter(session.NewDialLimiter(cfg.Session.MaxConcurrentDials)),
		session.WithMaxPending(a.MaxPending),
		session.WithReaderLimits(a.MaxAnswerBytes, max(1, a.MaxAnswerBytes/8)),
		session.WithAnswerLimits(a.MaxAnswerBytes, a.MaxListEvents),
	)
	s.common = slices.Clip(s.common)
	nodes := make(command.Nodes, len(cfg.Nodes))
	for _, n := range cfg.Nodes {
		ns, err := s.newNode(n)
		if err != nil {
			return nil, err
		}
		s.nodes = append(s.nodes, ns)
		s.byName[n.Name] = ns
		nodes[n.Name] = ns
	}
	policy, err := command.NewPolicy(a.Allow, a.Deny)
	if err != nil {
		return nil, fmt.Errorf("actor: %w", err)
	}
	s.srv, err = command.New(nc, nodes,
		command.WithSubjectPrefix(cfg.NATS.SubjectPrefix),
		command.WithQueueGroup(a.QueueGroup),
		command.WithTimeouts(time.Duration(a.DefaultTimeoutMS)*time.Millisecond,
			time.Duration(a.MaxTimeoutMS)*time.Millisecond),
		command.WithPolicy(policy),
		command.WithMetrics(m),
		command.WithLogger(log),
		// Each node's sessions cap its pending actions together; this caps
		// the process as a whole at the same total.
		command.WithMaxInflight(max(1, a.MaxPending*len(cfg.Nodes))),
		command.WithMaxRequestBytes(a.MaxRequestBytes),
		command.WithShutdownTimeout(s.shutdownTimeout),
		command.WithBodyForm(a.BodyForm),
	)
	if err != nil {
		return nil, err
	}
	if s.drops, err = newDropCounter(m, log); err != nil {
		return nil, err
	}
	return s, nil
}

// newNode builds (does not start) the sessions of node n.
func (s *Service) newNode(n config.Node) (*nodeSessions, error) {
	opts, err := daemon.NodeSessionOptions(s.cfg, n, daemon.RoleActor)
	if err != nil {
		return nil, err
	}
	a := s.cfg.Actor
	return newNodeSessions(n.Name, n.Address, append(s.common, opts...),
		a.SessionsPerNode, a.MaxPending, a.ExtraSessionIdle,
		s.m.ExtraSessionsRefused.WithLabelValues(n.Name), s.onUp, s.log)
}

// Ready reports whether the Service takes requests: connected to NATS and
// subscribed. A PBX that is down does not make it unready: requests for
// that node are answered unavailable, which is the contract.
func (s *Service) Ready() error {
	if !s.nc.IsConnected() {
		return errors.New("nats: not connected")
	}
	if !s.serving.Load() {
		return errors.New("not subscribed to action requests (starting or shutting down)")
	}
	return nil
}

// Serving returns a channel closed once Run has subscribed to action
// requests. It stays closed through shutdown; Ready tells the current state.
func (s *Service) Serving() <-chan struct{} { return s.subscribed }

// Run starts every node's AMI session, waits for NATS if it is not
// connected yet, subscribes, and serves until ctx ends. It then shuts down
// in this order: the command server stops taking requests and answers
// every request in flight (each by its deadline at the latest, bounded by
// actor.max_timeout_ms plus 5 s), then the AMI sessions log off and close.
// The NATS connection is the caller's to close afterwards. Run returns nil
// after a clean shutdown.
func (s *Service) Run(ctx context.Context) error {
	if !s.ran.CompareAndSwap(false, true) {
		return ErrRunTwice
	}
	s.drops.install(s.nc)
	defer s.drops.uninstall(s.nc)
	s.mu.Lock()
	s.running = true
	for _, n := range s.nodes {
		if err := n.start(); err != nil {
			s.mu.Unlock()
			// Fresh sessions start; this is a bug, not a condition.
			s.closeSessions()
			return fmt.Errorf("actor: start node %s: %w", n.name, err)
		}
	}
	nodeCount := len(s.nodes)
	s.mu.Unlock()
	if err := s.waitNATS(ctx); err != nil {
		s.closeSessions()
		if ctx.Err() != nil {
			return nil // asked to stop before there was anything to drain
		}
		return err
	}
	if err := s.srv.Start(); err != nil {
		s.closeSessions()
		return err
	}
	s.serving.Store(true)
	close(s.subscribed)
	s.log.Info("ami-actor serving", zap.Int("nodes", nodeCount))
	<-ctx.Done()
	s.serving.Store(false)
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()

	sctx, cancel := context.WithTimeout(context.Background(), s.shutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	// Only now: a request still in flight above needs its session.
	s.closeSessions()
	return err
}

// waitNATS returns once nc is connected. daemon.ConnectNATS connects with
// RetryOnFailedConnect, so the process may start before NATS does; the
// command server subscribes only on a live connection.
func (s *Service) waitNATS(ctx context.Context) error {
	ch := s.nc.StatusChanged(nats.CONNECTED, nats.CLOSED)
	defer s.nc.RemoveStatusListener(ch)
	logged := false
	for !s.nc.IsConnected() {
		if s.nc.IsClosed() {
			return ErrNATSClosed
		}
		if !logged {
			s.log.Info("waiting for NATS before subscribing to action requests")
			logged = true
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// closeSessions logs every session off and closes them all at once; it
// returns when every session goroutine has ended. A reload under way ends
// first (its drains are bounded), and none starts afterwards.
func (s *Service) closeSessions() {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.mu.Lock()
	s.stopping = true
	nodes := s.nodes
	s.mu.Unlock()
	lifecycle.CloseAll(nodes, (*nodeSessions).Close)
}

// onUp runs after every AMI login (session.WithOnUp); it only wakes
// WaitUp callers, so it returns at once as OnUp must.
func (s *Service) onUp(context.Context, *session.Session, string) {
	s.upMu.Lock()
	close(s.upChanged)
	s.upChanged = make(chan struct{})
	s.upMu.Unlock()
}

// WaitUp returns nil once the first AMI session of every named node (every
// configured node when none is named) is logged in at the same moment, or
// ctx's error. It waits on logins, never polls. The demo runner and tests
// use it; serving does not need it, since a request for a node that is down
// is answered unavailable.
func (s *Service) WaitUp(ctx context.Context, nodes ...string) error {
	s.mu.Lock()
	want := s.nodes
	if len(nodes) > 0 {
		want = make([]*nodeSessions, 0, len(nodes))
		for _, n := range nodes {
			ns, ok := s.byName[n]
			if !ok {
				s.mu.Unlock()
				return fmt.Errorf("%w: %q", ErrUnknownNode, n)
			}
			want = append(want, ns)
		}
	}
	s.mu.Unlock()
	for {
		s.upMu.Lock()
		changed := s.upChanged
		s.upMu.Unlock()
		all := true
		for _, n := range want {
			if !n.up() {
				all = false
				break
			}
		}
		if all {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}
