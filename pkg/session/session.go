package session

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cenkalti/backoff/v4"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/logging"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/pkg/amiwire"
)

// Reasons a session ended, as passed to Handler.SessionEnded.
const (
	// ReasonClosed: the owner closed the session (Close, Pool.Remove).
	ReasonClosed = "closed"
	// ReasonShutdown: the PBX sent Event: Shutdown and closed (restart).
	ReasonShutdown = "shutdown"
	// ReasonEOF: the PBX closed the connection between two messages.
	ReasonEOF = "eof"
	// ReasonTruncated: the PBX closed in the middle of a message, as
	// Asterisk does when it drops a client that reads too slowly.
	ReasonTruncated = "eof_mid_message"
	// ReasonReadError: reading failed (reset, network error).
	ReasonReadError = "read_error"
	// ReasonWriteError: writing failed or blocked longer than PingTimeout.
	ReasonWriteError = "write_error"
	// ReasonKeepalive: a Ping went unanswered for PingTimeout.
	ReasonKeepalive = "keepalive_timeout"
	// ReasonRemoved: the owner closed the session because its node left the
	// configuration (CloseWithReason; a live reload).
	ReasonRemoved = "removed"
	// ReasonReconfigured: the owner closed the session to start it again
	// with the node's new settings (CloseWithReason; a live reload).
	ReasonReconfigured = "reconfigured"
)

// restartRetryWindow is how long after the PBX announced a shutdown the
// session retries every BackoffInitial (jittered) instead of backing off:
// Asterisk refuses connections for under a second while it restarts
// (transcript 11-restart), and the session should be back within about
// BackoffInitial of it.
const restartRetryWindow = 3 * time.Second

// Session keeps one AMI connection to one PBX up: it dials, logs in,
// delivers events to its Handler, sends actions with Send, pings an idle
// PBX, and reconnects with backoff until Close.
//
// Goroutines: Start launches one supervisor; per connection the supervisor
// starts a reader and a keepalive timer, then runs the OnUp hook itself, if
// set; a writer runs while actions wait to be written, a pinger while a
// keepalive Ping waits for its answer, a closer from Close until its Logoff
// is answered; the supervisor waits for all of them before the next dial.
// Close cancels the supervisor and returns when every one of them has
// ended.
type Session struct {
	node, addr string
	cfg        Config
	log        *zap.Logger
	handler    Handler
	oversized  OversizedHandler // the Handler's optional extension, or nil
	m          *metrics.Metrics

	// Metric children resolved once, so the hot paths do no label lookups.
	upGauge, pendingGauge                      prometheus.Gauge
	reconnects, loginFailed, oversizedMessages prometheus.Counter
	filtered, lateCounter, oversizedAnswers    prometheus.Counter

	ctx       context.Context // ends at Close
	cancel    context.CancelFunc
	wg        sync.WaitGroup // the supervisor
	startMu   sync.Mutex
	started   bool
	closeOnce sync.Once
	// closeReason is the end reason of a session closed by its owner.
	closeReason string
	closed      atomic.Bool
	cur         atomic.Pointer[conn] // the logged-in connection, or nil

	// Repeated conditions, one line per LogInterval at most (owner: run).
	connFailLog  *logging.Coalescer // connection attempts failing while the PBX is unreachable
	oversizedLog *logging.Coalescer // messages over the reader's caps
	malformedLog *logging.Coalescer // messages that break the protocol
}

// New validates the options and returns a session for node at addr
// (host:port); Start connects it.
func New(node, addr string, opts ...Option) (*Session, error) {
	if err := validateTarget(node, addr); err != nil {
		return nil, fmt.Errorf("session: %w", err)
	}
	cfg := defaultConfig()
	for _, o := range opts {
		if err := o(&cfg); err != nil {
			return nil, fmt.Errorf("session: node %s: %w", node, err)
		}
	}
	if cfg.secret == nil {
		return nil, fmt.Errorf("session: node %s: credentials: missing (WithCredentials)", node)
	}
	if cfg.Instance == "" {
		cfg.Instance = ProcessInstance()
	}
	if cfg.DialLimiter == nil {
		cfg.DialLimiter = ProcessDialLimiter()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = metrics.New()
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	s := &Session{
		node:    node,
		addr:    addr,
		cfg:     cfg,
		handler: cfg.Handler,
		m:       cfg.Metrics,
		// WithLazy: the fields are encoded at the first line, not now. An
		// eager With copies the JSON encoder with a 1 KiB buffer per
		// session, about 10 MiB at 10,000 nodes that mostly never log.
		log: cfg.Logger.WithLazy(zap.String("node", node), zap.String("addr", addr)),
	}
	if s.handler == nil {
		s.handler = nopHandler{}
	}
	s.oversized, _ = s.handler.(OversizedHandler)
	s.upGauge = s.m.SessionUp.WithLabelValues(node)
	s.reconnects = s.m.SessionReconnects.WithLabelValues(node)
	s.loginFailed = s.m.SessionLoginFailed.WithLabelValues(node)
	s.oversizedMessages = s.m.MessagesOversized.WithLabelValues(node)
	if s.m.Exports(metrics.FamilyIngest) {
		s.filtered = s.m.EventsFiltered.WithLabelValues(node)
	} else {
		s.filtered, _ = s.m.Sink() // ami-actor: no event metrics
	}
	if s.m.Exports(metrics.FamilyActor) {
		s.pendingGauge = s.m.ActionsPending.WithLabelValues(node)
		s.lateCounter = s.m.LateResponses.WithLabelValues(node)
		s.oversizedAnswers = s.m.ActionsOversized.WithLabelValues(node)
	} else {
		// ami-ingest exports no action metrics: three series per node
		// that nobody could read would cost about 1 KiB per node.
		var sink prometheus.Counter
		sink, s.pendingGauge = s.m.Sink()
		s.lateCounter, s.oversizedAnswers = sink, sink
	}
	s.connFailLog = logging.NewCoalescer(s.log, "AMI connection attempt failed", cfg.LogInterval)
	s.oversizedLog = logging.NewCoalescer(s.log, "AMI message over the reader's cap skipped", cfg.LogInterval)
	s.malformedLog = logging.NewCoalescer(s.log, "malformed AMI message skipped", cfg.LogInterval)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	return s, nil
}

// Node returns the node name.
func (s *Session) Node() string { return s.node }

// Addr returns the PBX address.
func (s *Session) Addr() string { return s.addr }

// Config returns a copy of the session's settings (without the secret).
func (s *Session) Config() Config { return s.cfg }

// Up reports whether a connection is logged in right now.
func (s *Session) Up() bool { return s.cur.Load() != nil }

// ID returns the current session ID, or "" when not logged in.
func (s *Session) ID() string {
	if c := s.cur.Load(); c != nil {
		return c.ids.session
	}
	return ""
}

// Owed returns how many answers the PBX owes the current connection
// (actions written or queued, timed-out ones whose answer is still to
// come, the session's own Ping), or -1 when not logged in. The PBX answers
// a session's actions one at a time, so an action sent now waits behind
// all of them.
func (s *Session) Owed() int {
	if c := s.cur.Load(); c != nil {
		return int(c.owed.Load())
	}
	return -1
}

// Version returns the AMI version from the current connection's banner, or
// "" when not logged in.
func (s *Session) Version() string {
	if c := s.cur.Load(); c != nil {
		return c.version
	}
	return ""
}

// Start launches the session's supervisor, which connects and reconnects
// until Close. It returns at once; it fails only if the session was already
// started or closed.
func (s *Session) Start() error {
	s.startMu.Lock()
	defer s.startMu.Unlock()
	if s.closed.Load() {
		return ErrClosed
	}
	if s.started {
		return fmt.Errorf("session: %w", ErrStarted)
	}
	s.started = true
	s.wg.Add(1)
	go s.run()
	return nil
}

// Close logs off (best effort, bounded by LogoffTimeout), fails pending
// actions with ErrDisconnected, and returns when all of the session's
// goroutines have ended. It is safe to call more than once.
func (s *Session) Close() {
	s.CloseWithReason(ReasonClosed)
}

// CloseWithReason is Close, the end of a session that is up being reported
// to the Handler with reason (ReasonRemoved ...) instead of ReasonClosed.
// Only the first Close or CloseWithReason sets the reason.
func (s *Session) CloseWithReason(reason string) {
	s.closeOnce.Do(func() {
		// Written before cancel, read after ctx.Done: ordered by the
		// context's channel.
		s.closeReason = reason
		s.startMu.Lock()
		s.closed.Store(true)
		s.startMu.Unlock()
		s.cancel()
	})
	s.wg.Wait()
}

// Send writes action a with a new ActionID and waits for its complete
// answer: the response, every list event of an event-list action (up to
// the "EventList: Complete" event), Command output. A PBX error answer
// (Response: Error) is a Result, not an error.
//
// Errors: ErrNotConnected at once when no connection is logged in;
// ErrInvalidAction (nothing written); ErrOverloaded at MaxPending;
// ErrTimeout when ctx's deadline passes first (the late answer is
// discarded and counted; an action not yet written never will be);
// ErrDisconnected when the connection drops first; ErrTooLarge when the
// answer crosses MaxAnswerBytes, MaxListEvents or MaxMessageBytes; ErrClosed
// after Close.
func (s *Session) Send(ctx context.Context, a Action) (*Result, error) {
	if s.closed.Load() {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, sendCtxError(err)
	}
	c := s.cur.Load()
	if c == nil {
		return nil, ErrNotConnected
	}
	return c.send(ctx, a, false)
}

// sendCtxError maps a context error to the Send error: a deadline is
// ErrTimeout, a cancellation stays context.Canceled; both keep ctx's error
// for errors.Is.
func sendCtxError(err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	return fmt.Errorf("session: send abandoned: %w", err)
}

// run is the supervisor: connect, serve, back off, until Close.
func (s *Session) run() {
	defer s.wg.Done()
	defer s.connFailLog.Stop()
	defer s.oversizedLog.Stop()
	defer s.malformedLog.Stop()
	bo := backoff.NewExponentialBackOff(
		backoff.WithInitialInterval(s.cfg.BackoffInitial),
		backoff.WithMaxInterval(s.cfg.BackoffMax),
		backoff.WithMaxElapsedTime(0),
	)
	var (
		fastUntil time.Time // retry quickly until then (PBX restarting)
		everUp    bool
		failures  int // consecutive failed attempts
	)
	for {
		c, err := s.connect()
		if s.ctx.Err() != nil {
			if c != nil {
				c.cancel()
				c.nc.Close()
			}
			return
		}
		var delay time.Duration
		if err != nil && s.cfg.OnConnectError != nil && s.cfg.OnConnectError(err) {
			// The owner gives this session up (an extra session the PBX
			// refused); it says so itself, and Close ends the rest.
			return
		}
		if err != nil {
			failures++
			if errors.Is(err, ErrAuth) {
				// A wrong secret stays wrong: wait long, and say so every
				// time (these lines are AuthFailureBackoff apart).
				s.loginFailed.Inc()
				fastUntil = time.Time{}
				delay = max(s.cfg.AuthFailureBackoff, bo.NextBackOff())
				s.log.Error("PBX refused the login (wrong username or secret); retrying slowly",
					zap.String("username", s.cfg.Username), zap.Stringer("auth", s.cfg.Auth),
					zap.Error(err), zap.Duration("retry_in", delay))
			} else {
				delay = s.retryDelay(bo, fastUntil)
				s.connFailLog.AddWith(1, zap.Error(err), zap.Int("failed_attempts", failures),
					zap.Duration("retry_in", delay))
			}
		} else {
			if everUp {
				s.reconnects.Inc()
			}
			everUp = true
			s.connFailLog.End()
			upFor := s.serve(c, failures)
			failures = 0
			if s.ctx.Err() != nil {
				return
			}
			if upFor >= s.cfg.HealthyAfter || c.sawShutdown.Load() {
				bo.Reset()
			}
			if c.sawShutdown.Load() {
				fastUntil = time.Now().Add(restartRetryWindow)
			}
			delay = s.retryDelay(bo, fastUntil)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-s.ctx.Done():
			t.Stop()
			return
		}
	}
}

// retryDelay is BackoffInitial ±50% while a restarting PBX is expected
// back, else the next exponential backoff.
func (s *Session) retryDelay(bo *backoff.ExponentialBackOff, fastUntil time.Time) time.Duration {
	if time.Now().Before(fastUntil) {
		d := s.cfg.BackoffInitial
		return d/2 + rand.N(d)
	}
	return bo.NextBackOff()
}

// serve runs one logged-in connection until it ends, tears it down, and
// returns how long it was up.
func (s *Session) serve(c *conn, failures int) time.Duration {
	upAt := time.Now()
	// Sends may start queueing before the Handler hears of the session;
	// the reader starts right after (a send starts the writer).
	s.cur.Store(c)
	s.upGauge.Inc()
	// Logged before the Handler hears of it, so that whoever waits on the
	// Handler finds the line written.
	s.log.Info("AMI session up",
		zap.String("session", c.ids.session), zap.String("version", c.version),
		zap.String("username", s.cfg.Username), zap.String("events", s.cfg.Events),
		zap.Int("failed_attempts_before", failures))
	s.handler.SessionStarted(c.ids.session, c.version, upAt)

	c.wg.Add(1)
	go c.readLoop()
	c.startKeepalive()
	// Close ends the connection with a Logoff. That runs on a goroutine
	// of its own that exists only from Close on (context.AfterFunc), so
	// that the supervisor itself can run OnUp: one goroutine (and its
	// stack, several KiB) less per connected node, 10,000 of them at
	// 10,000 nodes.
	closed := make(chan struct{})
	stopClose := context.AfterFunc(s.ctx, func() {
		defer close(closed)
		c.closing.Store(true)
		c.logoff()
		c.fail(ReasonClosed, nil) // closing: fail gives the close reason
	})
	if s.cfg.OnUp != nil {
		s.cfg.OnUp(c.ctx, s, c.ids.session)
	}
	<-c.ctx.Done()
	if !stopClose() {
		<-closed // Close came: its Logoff and fail run, or ran
	}
	c.wg.Wait()
	s.upGauge.Dec()
	end := time.Now()
	reason, cause := c.endReason()
	s.handler.SessionEnded(c.ids.session, end, reason, c.lastSeq)
	fields := []zap.Field{zap.String("session", c.ids.session), zap.String("reason", reason),
		zap.Uint64("last_seq", c.lastSeq), zap.Duration("up_for", end.Sub(upAt))}
	if cause != nil {
		fields = append(fields, zap.Error(cause))
	}
	s.log.Info("AMI session ended", fields...)
	return end.Sub(upAt)
}

// nopHandler discards events (an action-only session).
type nopHandler struct{}

func (nopHandler) SessionStarted(string, string, time.Time)          {}
func (nopHandler) Event(string, uint64, time.Time, *amiwire.Message) {}
func (nopHandler) SessionEnded(string, time.Time, string, uint64)    {}
