package command

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/lifecycle"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/setting"
	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/session"
)

// Sender runs one action on one node's AMI session. session's sessions
// implement it; Send should honour ctx, but the Server does not rely on it.
type Sender interface {
	Send(ctx context.Context, a session.Action) (*session.Result, error)
}

// Nodes maps each configured node name to its Sender.
type Nodes map[string]Sender

// ErrStarted: Start was called after Start or Shutdown. It is
// lifecycle.ErrStarted, the one error of a second start in amibus.
var ErrStarted = lifecycle.ErrStarted

// Defaults of the Server's options.
const (
	DefaultSubjectPrefix  = "ami"
	DefaultQueueGroup     = "ami-actor"
	DefaultTimeout        = 10 * time.Second
	DefaultMaxTimeout     = 60 * time.Second
	DefaultMaxInflight    = 4096
	shutdownTimeoutMargin = 5 * time.Second
)

// Metric label values.
const (
	labelUnknownNode     = "unknown"
	reasonNoReplySubject = "no_reply_subject"
)

// Option configures a Server.
type Option func(*options) error

type options struct {
	prefix          string
	queue           string
	defTimeout      time.Duration
	maxTimeout      time.Duration
	policy          *Policy
	metrics         *metrics.Metrics
	logger          *zap.Logger
	maxInflight     int
	maxRequestBytes int
	shutdownTimeout time.Duration
	bodyForm        bool
}

// WithSubjectPrefix sets the subject prefix (nats.subject_prefix, default
// "ami"); requests arrive on <prefix>.action.<node>[.<Action>].
func WithSubjectPrefix(p string) Option {
	return func(o *options) error {
		if err := checkSubject(p); err != nil {
			return fmt.Errorf("subject prefix %q: %w", p, err)
		}
		o.prefix = p
		return nil
	}
}

// WithQueueGroup sets the NATS queue group shared by actor replicas
// (actor.queue_group, default "ami-actor").
func WithQueueGroup(q string) Option {
	return func(o *options) error {
		if q == "" || strings.ContainsAny(q, " \t\r\n") {
			return fmt.Errorf("queue group %q: empty or contains white space", q)
		}
		o.queue = q
		return nil
	}
}

// WithTimeouts sets the timeout of a request without timeout_ms
// (actor.default_timeout_ms, default 10 s) and the cap to which a larger
// timeout_ms is lowered (actor.max_timeout_ms, default 60 s).
func WithTimeouts(def, max time.Duration) Option {
	return func(o *options) error {
		if def <= 0 || max <= 0 || def > max {
			return fmt.Errorf("timeouts: default %v and max %v must be positive with default <= max", def, max)
		}
		o.defTimeout, o.maxTimeout = def, max
		return nil
	}
}

// WithPolicy sets the allow/deny policy (default: everything but
// DefaultDeny).
func WithPolicy(p *Policy) Option {
	return func(o *options) error { o.policy = p; return setting.NotNil("policy", p) }
}

// WithMetrics sets where the Server counts (default: a private registry).
func WithMetrics(m *metrics.Metrics) Option {
	return func(o *options) error { o.metrics = m; return setting.NotNil("metrics", m) }
}

// WithLogger sets the logger (default: none). The Server never logs per
// request.
func WithLogger(l *zap.Logger) Option {
	return func(o *options) error { o.logger = l; return setting.NotNil("logger", l) }
}

// WithMaxInflight caps the requests this process works on at once
// (default 4096). A request over the cap is answered overloaded at once.
func WithMaxInflight(n int) Option {
	return func(o *options) error { o.maxInflight = n; return setting.AtLeast("max in-flight", n, 1) }
}

// WithMaxRequestBytes caps a request body (actor.max_request_bytes,
// default 1 MiB); a bigger body is a bad_request, refused before parsing.
func WithMaxRequestBytes(n int) Option {
	return func(o *options) error { o.maxRequestBytes = n; return setting.AtLeast("max request bytes", n, 1) }
}

// WithBodyForm turns the body form <prefix>.action.<node> on (the default)
// or off (actor.body_form). Off, such a request is refused bad_request and
// only <prefix>.action.<node>.<Action> runs actions, so that NATS subject
// permissions govern which actions a user may run.
func WithBodyForm(on bool) Option {
	return func(o *options) error { o.bodyForm = on; return nil }
}

// WithShutdownTimeout bounds the graceful shutdown Run does when its
// context ends (default: the max timeout plus 5 s, time enough for every
// request in flight to reach its own deadline).
func WithShutdownTimeout(d time.Duration) Option {
	return func(o *options) error { o.shutdownTimeout = d; return setting.Positive("shutdown timeout", d) }
}

// Server answers action requests from NATS. It has one owner, who calls
// Start once and Shutdown once (or Run, which does both).
type Server struct {
	nc *nats.Conn
	// nodes is replaced whole by SetNodes, never modified: a request
	// looks its node up once, in the map current when it arrives.
	nodes        atomic.Pointer[Nodes]
	o            options
	actionPrefix string // "<prefix>.action."

	// sem holds one token per request being worked on; its capacity is the
	// in-flight cap. Filling it at shutdown is how Shutdown waits for them.
	sem chan struct{}
	// msgs carries requests from nats.go to the dispatcher. Its capacity
	// (msgQueue) only absorbs bursts: the dispatcher does O(1) work per
	// request. When it is full nats.go drops requests and reports a slow
	// consumer to the connection's error handler.
	msgs chan *nats.Msg
	subs []*nats.Subscription

	mu      sync.Mutex
	started bool
	stopped bool

	stop         chan struct{} // closed by Shutdown to end the dispatcher
	dispatchDone chan struct{}

	// replyFailures counts replies nats.go refused (connection closed);
	// logged once at shutdown rather than per request.
	replyFailures atomic.Int64

	// testHookDrained, when set, runs once the subscriptions are drained.
	testHookDrained func()
}

// msgQueue is the capacity of Server.msgs: at most this many requests
// (each up to the NATS max payload) wait for the dispatcher.
const msgQueue = 1024

// New returns a Server for nc and the configured nodes. Node names must be
// valid subject tokens ([A-Za-z0-9_-]+) and their Senders non-nil.
func New(nc *nats.Conn, nodes Nodes, opts ...Option) (*Server, error) {
	if nc == nil {
		return nil, errors.New("command: nil NATS connection")
	}
	o := options{
		prefix:          DefaultSubjectPrefix,
		queue:           DefaultQueueGroup,
		defTimeout:      DefaultTimeout,
		maxTimeout:      DefaultMaxTimeout,
		maxInflight:     DefaultMaxInflight,
		maxRequestBytes: DefaultMaxRequestBytes,
		bodyForm:        true,
	}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("command: %w", err)
		}
	}
	if o.policy == nil {
		o.policy, _ = NewPolicy(nil, nil) // cannot fail: no names of ours to refuse
	}
	if o.metrics == nil {
		o.metrics = metrics.New()
	}
	if o.logger == nil {
		o.logger = zap.NewNop()
	}
	if o.shutdownTimeout == 0 {
		o.shutdownTimeout = o.maxTimeout + shutdownTimeoutMargin
	}
	ns, err := checkNodes(nodes)
	if err != nil {
		return nil, err
	}
	s := &Server{
		nc:           nc,
		o:            o,
		actionPrefix: o.prefix + ".action.",
		sem:          make(chan struct{}, o.maxInflight),
		msgs:         make(chan *nats.Msg, msgQueue),
		stop:         make(chan struct{}),
		dispatchDone: make(chan struct{}),
	}
	s.nodes.Store(&ns)
	return s, nil
}

// checkNodes copies nodes, checking every name and Sender.
func checkNodes(nodes Nodes) (Nodes, error) {
	ns := make(Nodes, len(nodes))
	for name, snd := range nodes {
		if !amiwire.ValidName(name) {
			return nil, fmt.Errorf("command: node name %q: not a valid subject token ([A-Za-z0-9_-]+)", name)
		}
		if snd == nil {
			return nil, fmt.Errorf("command: node %q: nil Sender", name)
		}
		ns[name] = snd
	}
	return ns, nil
}

// SetNodes replaces the configured nodes (a configuration reload), checked
// as by New; on error nothing changes. A request arriving afterwards for a
// node no longer in nodes is answered unknown_node; one that found its
// Sender before goes on with it, so the caller retires an old Sender only
// once the requests it holds have returned.
func (s *Server) SetNodes(nodes Nodes) error {
	ns, err := checkNodes(nodes)
	if err != nil {
		return err
	}
	s.nodes.Store(&ns)
	return nil
}

// Start subscribes, in the queue group, to <prefix>.action.* and
// <prefix>.action.*.*, and returns once the NATS server has the
// subscriptions.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.started || s.stopped {
		return fmt.Errorf("command: Start after Start or Shutdown: %w", ErrStarted)
	}
	for _, subj := range []string{s.actionPrefix + "*", s.actionPrefix + "*.*"} {
		sub, err := s.nc.ChanQueueSubscribe(subj, s.o.queue, s.msgs)
		if err != nil {
			s.unsubscribeAll()
			return fmt.Errorf("command: subscribe %s: %w", subj, err)
		}
		s.subs = append(s.subs, sub)
	}
	if err := s.nc.Flush(); err != nil {
		s.unsubscribeAll()
		return fmt.Errorf("command: flush subscriptions: %w", err)
	}
	s.started = true
	go s.dispatch()
	s.o.logger.Info("serving AMI actions",
		zap.String("subjects", s.actionPrefix+"*, "+s.actionPrefix+"*.*"),
		zap.String("queue_group", s.o.queue),
		zap.Int("nodes", len(*s.nodes.Load())),
		zap.Int("max_inflight", s.o.maxInflight))
	return nil
}

func (s *Server) unsubscribeAll() {
	for _, sub := range s.subs {
		_ = sub.Unsubscribe() // best effort on a failed start
	}
	s.subs = nil
}

// Run starts the Server, serves until ctx ends, then shuts down gracefully
// within the shutdown timeout.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Start(); err != nil {
		return err
	}
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), s.o.shutdownTimeout)
	defer cancel()
	return s.Shutdown(sctx)
}

// Shutdown stops taking requests (the subscriptions are drained, so
// requests already delivered to this process are still answered and new
// ones go to other replicas), waits until every request in flight has been
// answered (each by its own deadline at the latest) and flushes the
// replies. It returns ctx's error if ctx ends first; requests still in
// flight then are answered in the background. Only the first call acts.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return errors.New("command: Shutdown called twice")
	}
	s.stopped = true
	started := s.started
	s.mu.Unlock()
	if !started {
		return nil
	}
	drainErr := s.drainSubs(ctx)
	if drainErr != nil {
		// Out of time: stop deliveries at once rather than leave requests
		// in msgs with nobody to answer them.
		for _, sub := range s.subs {
			_ = sub.Unsubscribe() // fails only if already closed
		}
	}
	if s.testHookDrained != nil {
		s.testHookDrained()
	}
	// The dispatcher waits on nothing but msgs and stop (its replies are
	// buffered publishes), so this wait is short whatever ctx says.
	close(s.stop)
	<-s.dispatchDone
	if drainErr != nil {
		return drainErr
	}
	for i := 0; i < cap(s.sem); i++ {
		select {
		case s.sem <- struct{}{}:
		case <-ctx.Done():
			return fmt.Errorf("command: shutdown: %d requests still in flight: %w", cap(s.sem)-i, ctx.Err())
		}
	}
	if err := s.flushReplies(ctx); err != nil {
		return err
	}
	if n := s.replyFailures.Load(); n > 0 {
		s.o.logger.Warn("replies that NATS refused to send", zap.Int64("count", n))
	}
	s.o.logger.Info("stopped serving AMI actions")
	return nil
}

// maxReplyFlush bounds the wait for the server to confirm the last replies:
// a connected server answers a flush in milliseconds, and a shutdown must
// stay well inside an orchestrator's grace period.
const maxReplyFlush = 2 * time.Second

// flushReplies waits, briefly, until the NATS server has the replies. While
// disconnected there is nothing to wait for: replies held in nats.go's
// reconnect buffer go with the connection, and their requesters have their
// own deadlines.
func (s *Server) flushReplies(ctx context.Context) error {
	if !s.nc.IsConnected() {
		s.o.logger.Warn("shutdown while disconnected from NATS: replies not yet sent are lost")
		return nil
	}
	fctx, cancel := context.WithTimeout(ctx, maxReplyFlush)
	defer cancel()
	if err := s.nc.FlushWithContext(fctx); err != nil && !errors.Is(err, nats.ErrConnectionClosed) {
		return fmt.Errorf("command: shutdown: flush replies: %w", err)
	}
	return nil
}

// drainSubs drains every subscription and waits until nats.go has handed
// over all the requests it had for them, or the connection is closed. While
// disconnected a drain cannot complete (the server must confirm it) and no
// request can arrive, so it unsubscribes locally instead.
func (s *Server) drainSubs(ctx context.Context) error {
	if !s.nc.IsConnected() {
		for _, sub := range s.subs {
			_ = sub.Unsubscribe() // local bookkeeping; the server forgets it with the connection
		}
		return nil
	}
	connStatus := s.nc.StatusChanged(nats.CLOSED)
	defer s.nc.RemoveStatusListener(connStatus)
	for _, sub := range s.subs {
		closed := sub.StatusChanged(nats.SubscriptionClosed)
		if err := sub.Drain(); err != nil {
			continue // the connection is closed: so is the subscription
		}
		if s.nc.IsClosed() {
			continue
		}
		select {
		case <-closed:
		case <-connStatus:
		case <-ctx.Done():
			return fmt.Errorf("command: shutdown: drain %s: %w", sub.Subject, ctx.Err())
		}
	}
	return nil
}

// dispatch is the Server's one long-lived goroutine: it takes each request
// from msgs and either hands it to a handler goroutine (bounded by sem) or
// answers it at once. After stop it takes what is left in msgs, which is
// everything: the subscriptions are drained by then.
func (s *Server) dispatch() {
	defer close(s.dispatchDone)
	for {
		select {
		case m := <-s.msgs:
			s.accept(m)
		case <-s.stop:
			for {
				select {
				case m := <-s.msgs:
					s.accept(m)
				default:
					return
				}
			}
		}
	}
}

func (s *Server) accept(m *nats.Msg) {
	start := time.Now()
	if m.Reply == "" {
		s.o.metrics.RequestsIgnored.WithLabelValues(reasonNoReplySubject).Inc()
		return
	}
	node, subjAction := s.parseSubject(m.Subject)
	select {
	case s.sem <- struct{}{}:
		go s.handle(m, node, subjAction, start)
	default:
		c := s.newCall(m, *s.nodes.Load(), node, subjAction, start)
		c.fail(CodeOverloaded, fmt.Sprintf("this actor is already working on %d requests; retry later", cap(s.sem)))
	}
}

// parseSubject splits <prefix>.action.<node>[.<Action>]; the subscriptions
// guarantee the shape.
func (s *Server) parseSubject(subj string) (node, action string) {
	rest := strings.TrimPrefix(subj, s.actionPrefix)
	node, action, _ = strings.Cut(rest, ".")
	return node, action
}

// call is one request on its way to exactly one reply.
type call struct {
	s       *Server
	reply   string
	node    string // as named by the subject
	action  string // for the reply; "" until known to be a valid name
	nodeLbl string
	actLbl  string
	start   time.Time
	done    atomic.Bool
}

func (s *Server) newCall(m *nats.Msg, nodes Nodes, node, subjAction string, start time.Time) *call {
	c := &call{s: s, reply: m.Reply, node: node, start: start, nodeLbl: labelUnknownNode, actLbl: "other"}
	if _, ok := nodes[node]; ok {
		c.nodeLbl = node
	}
	if checkActionName("", subjAction) == nil {
		c.setAction(subjAction)
	}
	return c
}

func (c *call) setAction(name string) {
	c.action = name
	c.actLbl = c.s.o.policy.label(name)
}

// claim makes the caller the one that replies; it is true exactly once.
func (c *call) claim() bool { return c.done.CompareAndSwap(false, true) }

// fail replies with an error unless a reply was sent already.
func (c *call) fail(code Code, msg string) {
	if !c.claim() {
		return
	}
	c.sendFailure(code, msg)
}

func (c *call) sendFailure(code Code, msg string) {
	elapsed := time.Since(c.start)
	e := getEncoder()
	c.publish(e.failure(c.node, c.action, code, msg, elapsed), string(code), elapsed)
	putEncoder(e)
}

// publish counts the reply, then sends it: counted first, so that whoever
// has a reply sees it counted.
func (c *call) publish(data []byte, outcome string, elapsed time.Duration) {
	m := c.s.o.metrics
	m.Actions.WithLabelValues(c.nodeLbl, c.actLbl, outcome).Inc()
	m.ActionDuration.WithLabelValues(c.nodeLbl, c.actLbl).Observe(elapsed.Seconds())
	// nats.go copies data before Publish returns, so the encoder's buffer
	// can be reused at once.
	if err := c.s.nc.Publish(c.reply, data); err != nil {
		c.s.replyFailures.Add(1)
	}
}

// handle works on one request in its own goroutine, holding a sem token.
func (s *Server) handle(m *nats.Msg, node, subjAction string, start time.Time) {
	defer func() { <-s.sem }()
	nodes := *s.nodes.Load()
	c := s.newCall(m, nodes, node, subjAction, start)
	if subjAction == "" && !s.o.bodyForm {
		c.fail(CodeBadRequest, fmt.Sprintf("subject: the body form %s%s is turned off on this actor; name the action in the subject: %s%s.<Action>",
			s.actionPrefix, node, s.actionPrefix, node))
		return
	}
	if err := checkSubjectSpelling(s.actionPrefix, node, subjAction); err != nil {
		c.fail(CodeBadRequest, err.Error())
		return
	}
	req, err := DecodeRequest(m.Data, subjAction, s.o.maxRequestBytes)
	if err != nil {
		c.fail(CodeBadRequest, err.Error())
		return
	}
	c.setAction(req.Action)
	sender, ok := nodes[node]
	if !ok {
		c.fail(CodeUnknownNode, fmt.Sprintf("node %q is not configured", node))
		return
	}
	if !s.o.policy.Allowed(req.Action) {
		c.fail(CodeForbidden, fmt.Sprintf("action %q is not allowed by this actor's policy", req.Action))
		return
	}
	timeout := req.Timeout
	if timeout == 0 {
		timeout = s.o.defTimeout
	}
	timeout = min(timeout, s.o.maxTimeout)
	c.run(sender, session.Action{Name: req.Action, Headers: req.Headers}, timeout)
}

// run races the Sender against the deadline: the timeout reply goes out at
// the deadline even if the Sender ignores ctx, and whichever comes second
// is dropped (a late answer is counted). ami_actions_pending is the
// session's to keep: it knows what is written or queued, and counting here
// too would count every action twice.
func (c *call) run(sender Sender, a session.Action, timeout time.Duration) {
	s := c.s
	ctx, cancel := context.WithDeadline(context.Background(), c.start.Add(timeout))
	defer cancel()
	timerDone := make(chan struct{})
	stopTimer := context.AfterFunc(ctx, func() {
		defer close(timerDone)
		if c.claim() {
			c.sendFailure(CodeTimeout, fmt.Sprintf("no complete answer from node %s within %d ms", c.node, timeout.Milliseconds()))
		}
	})
	res, err := c.send(ctx, sender, a)
	if !stopTimer() {
		<-timerDone // the timeout reply is being sent: let it finish
	}
	if !c.claim() {
		if err == nil && res != nil {
			s.o.metrics.LateResponses.WithLabelValues(c.node).Inc()
		}
		return
	}
	switch {
	case err != nil:
		code := CodeOf(err)
		msg := fmt.Sprintf("node %s: %v", c.node, err)
		if code == CodeTimeout {
			msg = fmt.Sprintf("no complete answer from node %s within %d ms", c.node, timeout.Milliseconds())
		}
		c.sendFailure(code, msg)
	case res == nil || res.Response == nil:
		c.sendFailure(CodeInternal, fmt.Sprintf("node %s: the session returned neither an answer nor an error", c.node))
	default:
		c.sendResult(res)
	}
}

// send calls the Sender, turning a panic into an error so that the request
// still gets its one reply and the process goes on.
func (c *call) send(ctx context.Context, sender Sender, a session.Action) (res *session.Result, err error) {
	defer func() {
		if p := recover(); p != nil {
			c.s.o.logger.Error("Sender panicked", zap.String("node", c.node), zap.String("action", c.actLbl), zap.Any("panic", p), zap.Stack("stack"))
			res, err = nil, fmt.Errorf("sender panicked: %v", p)
		}
	}()
	return sender.Send(ctx, a)
}

func (c *call) sendResult(res *session.Result) {
	elapsed := time.Since(c.start)
	limit := int(c.s.nc.MaxPayload())
	e := getEncoder()
	defer putEncoder(e)
	data, amiErr, err := e.result(c.node, c.action, res, elapsed, limit)
	if err != nil {
		c.publish(e.failure(c.node, c.action, CodeTooLarge,
			fmt.Sprintf("the answer is over the NATS max payload of %d bytes", limit), elapsed), string(CodeTooLarge), elapsed)
		return
	}
	outcome := outcomeOK
	if amiErr {
		outcome = string(CodeAMIError)
	}
	c.publish(data, outcome, elapsed)
}

// checkSubject accepts a literal NATS subject: dot-separated non-empty
// tokens with no wildcards or white space.
func checkSubject(subj string) error {
	if subj == "" {
		return errors.New("empty")
	}
	for _, tok := range strings.Split(subj, ".") {
		if tok == "" {
			return errors.New("empty token")
		}
		if strings.ContainsAny(tok, " \t\r\n*>") {
			return errors.New("wildcard or white space in a token")
		}
	}
	return nil
}
