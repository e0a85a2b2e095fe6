package amisim

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// ErrClosed is returned by WaitUntil when the Server closed before the
// condition held.
var ErrClosed = errors.New("amisim: server closed")

// Server is one simulated Asterisk AMI endpoint.
type Server struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	// wg counts every goroutine the Server started; Close waits for it.
	wg        sync.WaitGroup
	closeOnce sync.Once

	// lifeMu serialises listener changes (Restart) against Close.
	lifeMu sync.Mutex
	addr   string // host:port actually listened on; fixed for life

	// emitMu serialises event fan-out so that every session sees events in
	// one global order, as from Asterisk's single event queue. Lock order:
	// emitMu before mu.
	emitMu sync.Mutex

	// loggedIn is the copy-on-write list of authenticated connections that
	// fan-out reads without locking.
	loggedIn atomic.Pointer[[]*conn]

	mu          sync.Mutex
	closed      bool
	ln          net.Listener
	acceptDone  chan struct{}
	conns       map[int]*conn
	nextConn    int
	refuse      bool
	restarting  bool
	booted      bool
	startTime   time.Time
	reloadTime  time.Time
	stopReading bool
	// resumed is closed and replaced when SetStopReading(false) is called.
	resumed     chan struct{}
	neverAnswer map[string]bool
	answerDelay map[string]time.Duration
	verbose     int

	// calls and channels; see calls.go
	calls          callHeap
	chans          map[string]*channel
	bridges        map[string]*bridge // by BridgeUniqueid; see truth.go
	bridgeSeq      int64              // creation order of bridges
	queues         []*queueState
	chanSeq        int64 // creation order of channels, for listings
	localSeq       int   // Local/...-%08x counter
	pjsipSeq       int   // PJSIP/...-%08x counter
	optimizeSeq    int   // LocalOptimizationBegin/End Id
	uidSeq         int   // Uniqueid counter
	uidEpoch       int64
	processedCalls int
	ending         int // calls done but still queueing their last events
	starting       int // Originates answered, their call not yet scheduled
	schedWake      chan struct{}

	traffic *runner

	// listObserver receives the state each list answer is rendered from;
	// see ObserveLists. Under mu.
	listObserver func(action, actionID string, t Truth)
	// sendHook, set by tests (under mu), runs in the scheduler between
	// applying a batch of call events to the state and sending them.
	sendHook func()

	// record; see record.go
	received    []Action
	sent        []sentRec
	logins      int
	active      map[string]int
	maxActive   map[string]int
	changed     chan struct{}
	waiters     atomic.Int32
	stats       counters
	extensions  map[string]bool
	sessionBase uint64
}

// Start listens on cfg.Addr and serves AMI until Close.
func Start(cfg Config) (*Server, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("amisim: listen %s: %w", cfg.Addr, err)
	}
	now := time.Now()
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:         cfg,
		ctx:         ctx,
		cancel:      cancel,
		addr:        ln.Addr().String(),
		ln:          ln,
		conns:       make(map[int]*conn),
		booted:      true,
		startTime:   now,
		reloadTime:  now,
		resumed:     make(chan struct{}),
		neverAnswer: make(map[string]bool),
		answerDelay: make(map[string]time.Duration),
		verbose:     3,
		chans:       make(map[string]*channel),
		bridges:     make(map[string]*bridge),
		queues:      newQueueStates(),
		uidEpoch:    now.Unix(),
		schedWake:   make(chan struct{}, 1),
		active:      make(map[string]int),
		maxActive:   make(map[string]int),
		changed:     make(chan struct{}),
		extensions:  make(map[string]bool, len(cfg.Extensions)),
		sessionBase: 0x7f9c00001000 + uint64(now.UnixNano()&0xfff)<<20,
	}
	for _, e := range cfg.Extensions {
		s.extensions[e] = true
	}
	empty := []*conn{}
	s.loggedIn.Store(&empty)
	s.startAccepting(ln)
	s.wg.Add(1)
	go s.runScheduler()
	cfg.Logger.Info("amisim listening", zap.String("addr", s.addr), zap.String("node", cfg.Node),
		zap.Bool("tls", cfg.TLSConfig != nil))
	return s, nil
}

// Addr returns the host:port the Server listens on (unchanged by Restart).
func (s *Server) Addr() string { return s.addr }

// Node returns the configured node name (systemname).
func (s *Server) Node() string { return s.cfg.Node }

// Close closes the listener and every connection, stops traffic and waits
// for every goroutine of the Server to end.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		s.lifeMu.Lock()
		s.mu.Lock()
		s.closed = true
		ln := s.ln
		conns := make([]*conn, 0, len(s.conns))
		for _, c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		if ln != nil {
			_ = ln.Close()
		}
		for _, c := range conns {
			c.closeHard()
		}
		s.lifeMu.Unlock()
		s.wg.Wait()
		s.notify()
	})
	return nil
}

// startAccepting runs an accept loop on ln until ln closes.
func (s *Server) startAccepting(ln net.Listener) {
	done := make(chan struct{})
	s.mu.Lock()
	s.ln = ln
	s.acceptDone = done
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(done)
		s.acceptLoop(ln)
	}()
}

func (s *Server) acceptLoop(ln net.Listener) {
	var backoff time.Duration
	for {
		raw, err := ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.ctx.Err() != nil {
				return
			}
			// Out of file descriptors and the like: wait as net/http does.
			if backoff == 0 {
				backoff = 5 * time.Millisecond
			} else if backoff < time.Second {
				backoff *= 2
			}
			s.cfg.Logger.Warn("amisim accept failed", zap.Error(err), zap.Duration("retry_in", backoff))
			t := time.NewTimer(backoff)
			select {
			case <-t.C:
			case <-s.ctx.Done():
				t.Stop()
				return
			}
			continue
		}
		backoff = 0
		s.accept(raw)
	}
}

// accept admits, refuses or resets one new TCP connection.
func (s *Server) accept(raw net.Conn) {
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		_ = raw.Close()
		return
	case s.refuse || s.restarting:
		s.mu.Unlock()
		s.stats.refused.Add(1)
		reset(raw)
		return
	case len(s.conns) >= s.cfg.MaxConns:
		s.mu.Unlock()
		s.stats.overConnCap.Add(1)
		reset(raw)
		return
	}
	s.nextConn++
	c := newConn(s, s.nextConn, raw)
	s.conns[c.id] = c
	s.wg.Add(1)
	s.mu.Unlock()
	s.stats.accepted.Add(1)
	go c.serve()
	s.notify()
}

// reset closes a connection with an RST and no banner, as the listener of a
// restarting Asterisk did (transcript 11).
func reset(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
}

// removeConn forgets a closed connection.
func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c.id)
	s.mu.Unlock()
	s.notify()
}

// DropConnections closes every client connection now. After it returns no
// further action from those connections is processed or recorded.
func (s *Server) DropConnections() {
	for _, c := range s.connList() {
		c.closeHard()
	}
}

func (s *Server) connList() []*conn {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*conn, 0, len(s.conns))
	for _, c := range s.conns {
		out = append(out, c)
	}
	return out
}

// SetStopReading stops (on) or resumes (off) reading client bytes on every
// connection, current and new. While stopped nothing more is processed, so
// the client's writes back up in the kernel. At most one read of up to 1 KiB
// already in progress completes.
func (s *Server) SetStopReading(on bool) {
	s.mu.Lock()
	if s.stopReading && !on {
		close(s.resumed)
		s.resumed = make(chan struct{})
	}
	s.stopReading = on
	s.mu.Unlock()
}

// waitReading blocks while reading is stopped; false if c closed meanwhile.
func (s *Server) waitReading(c *conn) bool {
	for {
		s.mu.Lock()
		on, ch := s.stopReading, s.resumed
		s.mu.Unlock()
		if !on {
			return true
		}
		select {
		case <-ch:
		case <-c.done:
			return false
		}
	}
}

// SetNeverAnswer makes the Server read and record the named action (any
// case) but never answer it.
func (s *Server) SetNeverAnswer(action string, on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if on {
		s.neverAnswer[strings.ToLower(action)] = true
	} else {
		delete(s.neverAnswer, strings.ToLower(action))
	}
}

// SetAnswerDelay delays the answer to the named action (any case) by d; 0
// removes the delay. Like Asterisk, a session handles its actions one at a
// time, so later actions on that connection wait too.
func (s *Server) SetAnswerDelay(action string, d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d > 0 {
		s.answerDelay[strings.ToLower(action)] = d
	} else {
		delete(s.answerDelay, strings.ToLower(action))
	}
}

// SetRefuse makes the Server accept new connections and reset them at once
// with no banner, like a restarting PBX; existing connections stay.
func (s *Server) SetRefuse(on bool) {
	s.mu.Lock()
	s.refuse = on
	s.mu.Unlock()
}

// Restart simulates "core restart now" (transcript 11): Event: Shutdown to
// every session that takes system events, every connection closed after its
// queued bytes, new connections reset meanwhile, then no listener at all
// (connection refused) for down, then a new "process": counters and calls
// start over, the banner is sent again, and BootDelay later FullyBooted is
// broadcast in its post-restart header order; logins before that get no
// FullyBooted after their response. Restart returns once booted, or when the
// Server is closed.
func (s *Server) Restart(down time.Duration) {
	s.lifeMu.Lock()
	defer s.lifeMu.Unlock()
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.restarting = true
	s.mu.Unlock()
	s.clearCalls()
	s.broadcastNew("Shutdown", classSystem, [][2]string{{"Shutdown", "Cleanly"}, {"Restart", "True"}})
	conns := s.connList()
	for _, c := range conns {
		c.closeGraceful()
	}
	for _, c := range conns {
		select {
		case <-c.done:
		case <-s.ctx.Done():
			return
		}
	}
	s.mu.Lock()
	ln, acceptDone := s.ln, s.acceptDone
	s.ln = nil
	s.mu.Unlock()
	if ln != nil { // nil after a Restart that could not listen again
		_ = ln.Close()
		<-acceptDone
	}
	s.notify()
	if !sleepCtx(s.ctx, down) {
		return
	}
	now := time.Now()
	s.mu.Lock()
	s.startTime, s.reloadTime = now, now
	s.uidEpoch = now.Unix()
	s.localSeq, s.uidSeq, s.processedCalls, s.pjsipSeq = 0, 0, 0, 0
	s.booted = false
	s.restarting = false
	s.mu.Unlock()
	ln2, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.cfg.Logger.Error("amisim restart: listen failed; the node stays down", zap.String("addr", s.addr), zap.Error(err))
		return
	}
	s.startAccepting(ln2)
	s.notify()
	if !sleepCtx(s.ctx, s.cfg.BootDelay) {
		return
	}
	s.mu.Lock()
	s.booted = true
	s.mu.Unlock()
	s.notify()
	s.broadcastNew("FullyBooted", classSystem, [][2]string{{"Status", "Fully Booted"}, {"Uptime", "0"}, {"LastReload", "0"}})
}

// sleepCtx waits d; false if ctx ended first.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// Emit broadcasts one event to the logged-in sessions whose permissions,
// event mask and filters allow it: "Event: <event>", "Privilege:
// <class>,all" (the class from a table of known events, call if unknown;
// or give a first header "Privilege" to choose it), a Timestamp if
// TimestampEvents, then headers.
func (s *Server) Emit(event string, headers ...[2]string) {
	class := eventClass(event)
	if len(headers) > 0 && strings.EqualFold(headers[0][0], "Privilege") {
		class = privilegeClass(headers[0][1])
		s.emitMu.Lock()
		s.broadcastLocked(renderEvent(event, headers[0][1], s.timestamp(), headers[1:]), class)
		s.emitMu.Unlock()
		return
	}
	s.broadcastNew(event, class, headers)
}

// EmitRaw writes b as it is to every logged-in session (garbage, an
// oversized message). It is not recorded as a sent event.
func (s *Server) EmitRaw(b []byte) {
	cp := append([]byte(nil), b...)
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	for _, c := range *s.loggedIn.Load() {
		c.enqueue(outItem{b: cp})
	}
	s.stats.rawWrites.Add(1)
}

// timestamp returns the Timestamp header value when timestampevents is on.
func (s *Server) timestamp() string {
	if !s.cfg.TimestampEvents {
		return ""
	}
	return epochMicro(time.Now())
}

// epochMicro formats t as Asterisk's "%ld.%06lu".
func epochMicro(t time.Time) string {
	return fmt.Sprintf("%d.%06d", t.Unix(), t.Nanosecond()/1000)
}

// broadcastNew renders and broadcasts one event.
func (s *Server) broadcastNew(event string, class int, headers [][2]string) {
	s.emitMu.Lock()
	s.broadcastLocked(renderEvent(event, authorityString(class), s.timestamp(), headers), class)
	s.emitMu.Unlock()
}

// renderEvent builds "Event: X\r\nPrivilege: P\r\n[Timestamp: T\r\n]...\r\n".
func renderEvent(event, privilege, ts string, headers [][2]string) []byte {
	m := msg{b: make([]byte, 0, 64+len(event)+len(privilege)+32*len(headers))}
	m.h("Event", event).h("Privilege", privilege)
	if ts != "" {
		m.h("Timestamp", ts)
	}
	for _, h := range headers {
		m.h(h[0], h[1])
	}
	return m.end().b
}

// broadcastLocked queues ev for every logged-in session that takes it.
// The caller holds emitMu.
func (s *Server) broadcastLocked(ev []byte, class int) {
	s.stats.eventsBroadcast.Add(1)
	for _, c := range *s.loggedIn.Load() {
		if c.wants(ev, class) {
			c.enqueue(outItem{b: ev, event: true})
		}
	}
}

// setLoggedIn adds or removes c from the fan-out list.
func (s *Server) setLoggedIn(c *conn, in bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.loggedIn.Load()
	next := make([]*conn, 0, len(old)+1)
	for _, o := range old {
		if o != c {
			next = append(next, o)
		}
	}
	if in {
		next = append(next, c)
	}
	s.loggedIn.Store(&next)
}

// newTLS wraps raw when the Server serves TLS.
func (s *Server) newTLS(raw net.Conn) net.Conn {
	if s.cfg.TLSConfig == nil {
		return raw
	}
	return tls.Server(raw, s.cfg.TLSConfig)
}
