// Package actor wires ami-actor: one action-only AMI session per configured
// node and the command server that answers action requests from NATS with
// them. The main only parses flags, loads the configuration, handles
// signals and serves HTTP; everything between NATS and the PBXs is here.
package actor

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/command"
	"github.com/amibus/amibus/pkg/config"
	"github.com/amibus/amibus/pkg/metrics"
	"github.com/amibus/amibus/pkg/session"
	"github.com/amibus/amibus/pkg/sessionconf"
)

// Errors of Run and WaitUp.
var (
	// ErrRunTwice: Run was called more than once on one Service.
	ErrRunTwice = errors.New("actor: Run called twice")
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
// starts the sessions, serves until its context ends and shuts down.
type Service struct {
	nc  *nats.Conn
	log *zap.Logger

	sessions []*session.Session // one per configured node, in config order
	byName   map[string]*session.Session
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
		byName:          make(map[string]*session.Session, len(cfg.Nodes)),
		shutdownTimeout: time.Duration(a.MaxTimeoutMS)*time.Millisecond + shutdownMargin,
		upChanged:       make(chan struct{}),
		subscribed:      make(chan struct{}),
	}
	// An answer is read whole up to max_answer_bytes, so that big Command
	// outputs and lists fit; a header is at least 8 wire bytes, so the
	// header cap follows from the byte cap.
	common := append(sessionconf.Common(cfg.Session),
		session.WithInstance(session.ProcessInstance()),
		session.WithMetrics(m),
		session.WithLogger(log),
		session.WithDialLimiter(session.NewDialLimiter(cfg.Session.MaxConcurrentDials)),
		session.WithMaxPending(a.MaxPending),
		session.WithReaderLimits(a.MaxAnswerBytes, max(1, a.MaxAnswerBytes/8)),
		session.WithAnswerLimits(a.MaxAnswerBytes, a.MaxListEvents),
		session.WithOnUp(s.onUp),
	)
	nodes := make(command.Nodes, len(cfg.Nodes))
	for _, n := range cfg.Nodes {
		opts, err := sessionconf.Node(cfg, n, sessionconf.Actor)
		if err != nil {
			return nil, err
		}
		sess, err := session.New(n.Name, n.Address, append(common[:len(common):len(common)], opts...)...)
		if err != nil {
			return nil, err
		}
		s.sessions = append(s.sessions, sess)
		s.byName[n.Name] = sess
		nodes[n.Name] = sess
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
		// Each node's session caps its own pending actions; this caps the
		// process as a whole at the same total.
		command.WithMaxInflight(max(1, a.MaxPending*len(cfg.Nodes))),
		command.WithMaxRequestBytes(a.MaxRequestBytes),
		command.WithShutdownTimeout(s.shutdownTimeout),
	)
	if err != nil {
		return nil, err
	}
	if s.drops, err = newDropCounter(m, log); err != nil {
		return nil, err
	}
	return s, nil
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
	for _, sess := range s.sessions {
		if err := sess.Start(); err != nil {
			// Fresh sessions start; this is a bug, not a condition.
			s.closeSessions()
			return fmt.Errorf("actor: start node %s: %w", sess.Node(), err)
		}
	}
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
	s.log.Info("ami-actor serving", zap.Int("nodes", len(s.sessions)))
	<-ctx.Done()
	s.serving.Store(false)

	sctx, cancel := context.WithTimeout(context.Background(), s.shutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	// Only now: a request still in flight above needs its session.
	s.closeSessions()
	return err
}

// waitNATS returns once nc is connected. natsconn connects with
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
// returns when every session goroutine has ended.
func (s *Service) closeSessions() {
	var wg sync.WaitGroup
	for _, sess := range s.sessions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = sess.Close() // always nil
		}()
	}
	wg.Wait()
}

// onUp runs after every AMI login (session.WithOnUp); it only wakes
// WaitUp callers, so it returns at once as OnUp must.
func (s *Service) onUp(context.Context, *session.Session, string) {
	s.upMu.Lock()
	close(s.upChanged)
	s.upChanged = make(chan struct{})
	s.upMu.Unlock()
}

// WaitUp returns nil once the AMI session of every named node (every
// configured node when none is named) is logged in at the same moment, or
// ctx's error. It waits on logins, never polls. The demo runner and tests
// use it; serving does not need it, since a request for a node that is down
// is answered unavailable.
func (s *Service) WaitUp(ctx context.Context, nodes ...string) error {
	want := s.sessions
	if len(nodes) > 0 {
		want = make([]*session.Session, 0, len(nodes))
		for _, n := range nodes {
			sess, ok := s.byName[n]
			if !ok {
				return fmt.Errorf("%w: %q", ErrUnknownNode, n)
			}
			want = append(want, sess)
		}
	}
	for {
		s.upMu.Lock()
		changed := s.upChanged
		s.upMu.Unlock()
		all := true
		for _, sess := range want {
			if !sess.Up() {
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
