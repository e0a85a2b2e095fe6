package session

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/amibus/amibus/pkg/amiwire"
)

const (
	// maxWriteBatch bounds the bytes the writer gathers for one write; the
	// batch buffer is dropped, not kept, if one action made it grow larger.
	maxWriteBatch = 64 << 10
	// internalSlots is room in the write queue, beyond MaxPending, for the
	// session's own Ping and Logoff.
	internalSlots = 2
	// shrinkAbove: after a message bigger than this (a large Command
	// answer), the reader starts over with a fresh Message so that one big
	// answer does not pin its buffer for the connection's life.
	shrinkAbove = 256 << 10
	// maxQuoted bounds how much of a PBX message an error quotes.
	maxQuoted = 128
)

// aLongTimeAgo is a deadline in the past: setting it unblocks any read.
var aLongTimeAgo = time.Unix(1, 0)

var shutdownEvent = []byte("Shutdown")

// conn is one TCP (or TLS) connection and its login. Everything it holds
// dies with it: its write queue, its pending actions, its IDs.
type conn struct {
	s       *Session
	nc      net.Conn
	r       *amiwire.Reader
	rb      *readBuf         // under r: small while the PBX is quiet (readbuf.go)
	msg     *amiwire.Message // reused by the handshake, then by the reader
	ids     *ids
	version string

	ctx    context.Context // ends when the connection does
	cancel context.CancelFunc
	wg     sync.WaitGroup // reader, writer, keepalive Ping

	// writeq feeds the writer (guarded by mu). Capped at
	// MaxPending+internalSlots entries: register admits at most that many
	// live entries; at the cap (only when cancelled entries still sit
	// behind a stalled write) Send returns ErrOverloaded. A slice that
	// grows on demand, not a channel of the cap's size, so that an idle
	// session holds no queue (a channel of 1,002 slots is 8 KiB per node).
	writeq []*pending
	// writing: a writer goroutine runs (guarded by mu). It is started by
	// the send that finds none and ends when the queue is empty, so an
	// idle session has no writer (one goroutine less per idle node; an
	// idle session writes a Ping per ping_interval).
	writing bool
	// pingTimer fires the keepalive (startKeepalive); guarded by mu.
	pingTimer *time.Timer

	mu      sync.Mutex
	pending map[string]*pending // by ActionID; at most MaxPending user entries + internal ones
	nUser   int                 // user entries in pending, abandoned ones included
	dead    bool
	reason  string
	cause   error

	owed        atomic.Int32 // len(pending), for Session.Owed without the lock
	listing     atomic.Int32 // entries in stateListing: events need an ActionID check only then
	lastRead    atomic.Int64 // unix nanos of the last message read (keepalive)
	sawShutdown atomic.Bool  // the PBX sent Event: Shutdown
	closing     atomic.Bool  // the owner is closing: any end is its close reason (ReasonClosed ...)
	lastSeq     uint64       // written by the reader before it exits
	answered    *pending     // reader only: an answer whose OnAnswer is due
}

// connect waits for a dial slot, dials, and logs in.
func (s *Session) connect() (*conn, error) {
	release, err := s.cfg.DialLimiter.acquire(s.ctx, s.m.DialsWaiting, s.m.DialsInProgress, s.m.DialAttempts)
	if err != nil {
		return nil, err
	}
	defer release()
	nc, err := s.dial()
	if err != nil {
		return nil, &stageError{stage: "dial", err: err}
	}
	c := &conn{
		s:       s,
		nc:      nc,
		msg:     new(amiwire.Message),
		ids:     newIDs(s.cfg.Instance, s.node),
		pending: make(map[string]*pending),
	}
	c.rb = newReadBuf(nc)
	c.r = amiwire.NewReader(c.rb.br,
		amiwire.WithMaxBytes(s.cfg.MaxMessageBytes), amiwire.WithMaxHeaders(s.cfg.MaxHeaders))
	if err := c.handshake(); err != nil {
		nc.Close()
		return nil, err
	}
	// Not derived from s.ctx: at Close the writer must still send Logoff;
	// fail cancels it.
	c.ctx, c.cancel = context.WithCancel(context.Background())
	c.lastRead.Store(time.Now().UnixNano())
	return c, nil
}

// dial connects within DialTimeout, DNS and TLS handshake included.
func (s *Session) dial() (net.Conn, error) {
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.DialTimeout)
	defer cancel()
	d := &net.Dialer{KeepAliveConfig: tcpKeepAlive(s.cfg)}
	if s.cfg.TLS != nil {
		return (&tls.Dialer{NetDialer: d, Config: s.cfg.TLS}).DialContext(ctx, "tcp", s.addr)
	}
	return d.DialContext(ctx, "tcp", s.addr)
}

// tcpKeepAlive is the TCP keepalive of every AMI socket. While the PBX
// works on a long action the session sends no Ping (it would wait behind
// the action), so the kernel's probes are what notice a peer that vanished
// (host gone, cable pulled, NAT entry dropped) meanwhile: after
// PingInterval without traffic, a probe every PingTimeout/3 (at least 1 s),
// and the socket fails after 3 unanswered ones.
func tcpKeepAlive(cfg Config) net.KeepAliveConfig {
	return net.KeepAliveConfig{
		Enable:   true,
		Idle:     cfg.PingInterval,
		Interval: max(cfg.PingTimeout/3, time.Second),
		Count:    3,
	}
}

// stageError says which step of a connection attempt failed.
type stageError struct {
	stage string // dial, banner, challenge, login
	err   error
}

func (e *stageError) Error() string { return e.stage + ": " + e.err.Error() }
func (e *stageError) Unwrap() error { return e.err }

// handshake reads the banner and logs in, on the supervisor goroutine,
// under BannerTimeout then LoginTimeout.
func (c *conn) handshake() error {
	s := c.s
	// Close must not wait out a handshake deadline.
	stop := context.AfterFunc(s.ctx, func() { c.nc.SetDeadline(aLongTimeAgo) })
	defer stop()

	c.nc.SetReadDeadline(time.Now().Add(s.cfg.BannerTimeout))
	v, err := c.r.ReadBanner()
	if err != nil {
		return &stageError{stage: "banner", err: err}
	}
	c.version = v

	c.nc.SetDeadline(time.Now().Add(s.cfg.LoginTimeout))
	login := make([]Header, 0, 4)
	login = append(login, Header{Key: "Username", Value: s.cfg.Username})
	if s.cfg.Auth == AuthMD5 {
		m, err := c.roundTrip("Challenge", []Header{{Key: "AuthType", Value: "MD5"}})
		if err != nil {
			return &stageError{stage: "challenge", err: err}
		}
		challenge := m.Get("Challenge")
		if !bytes.EqualFold(m.Name(), []byte("Success")) || challenge == "" {
			return &stageError{stage: "challenge", err: fmt.Errorf("PBX answered %s: %q", m.Name(), quote(m.Get("Message")))}
		}
		sum := md5.Sum([]byte(challenge + s.cfg.secret()))
		login = append(login, Header{Key: "AuthType", Value: "MD5"}, Header{Key: "Key", Value: hex.EncodeToString(sum[:])})
	} else {
		login = append(login, Header{Key: "Secret", Value: s.cfg.secret()})
	}
	login = append(login, Header{Key: "Events", Value: s.cfg.Events})
	m, err := c.roundTrip("Login", login)
	if err != nil {
		return &stageError{stage: "login", err: err}
	}
	if !bytes.EqualFold(m.Name(), []byte("Success")) {
		// Asterisk answers a wrong user, secret or key alike, after 1 s,
		// and closes.
		return &stageError{stage: "login", err: fmt.Errorf("%w: PBX answered %s: %q", ErrAuth, m.Name(), quote(m.Get("Message")))}
	}
	if !stop() {
		// Close began: the deadline was poisoned and the owner is leaving.
		return &stageError{stage: "login", err: s.ctx.Err()}
	}
	c.nc.SetDeadline(time.Time{})
	return nil
}

// roundTrip writes one handshake action and reads until its response; what
// else comes first (events of another login, skipped messages) is dropped.
// The deadline set by handshake bounds it.
func (c *conn) roundTrip(name string, headers []Header) (*amiwire.Message, error) {
	id := c.ids.next()
	wire, err := amiwire.AppendAction(nil, name, id, headers)
	if err != nil {
		// EncodeError never quotes a value, and New validated the
		// credentials, so this names no secret.
		return nil, err
	}
	if _, err := c.nc.Write(wire); err != nil {
		return nil, err
	}
	for {
		err := c.r.ReadMessage(c.msg)
		var le *amiwire.LimitError
		switch {
		case errors.As(err, &le):
			c.s.oversizedMessages.Inc()
			continue
		case errors.Is(err, amiwire.ErrProtocol):
			continue
		case err != nil:
			return nil, err
		}
		if c.msg.Kind() == amiwire.KindResponse && string(c.msg.ActionID()) == id {
			return c.msg, nil
		}
	}
}

// quote shortens a PBX string for an error message.
func quote(s string) string {
	if len(s) > maxQuoted {
		return s[:maxQuoted] + "..."
	}
	return s
}

// fail ends the connection once: it records why, fails every waiting
// action with ErrDisconnected at once, and closes the socket, which stops
// the reader and writer. Queued bytes die with the connection.
func (c *conn) fail(reason string, err error) {
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	c.dead = true
	switch {
	case c.closing.Load():
		reason, err = c.s.closeReason, nil // set before closing (CloseWithReason)
	case reason == ReasonEOF && c.sawShutdown.Load():
		reason = ReasonShutdown
	}
	c.reason, c.cause = reason, err
	if c.pingTimer != nil {
		// A callback already running sees dead and does nothing.
		c.pingTimer.Stop()
	}
	c.failAllLocked()
	c.mu.Unlock()
	c.s.cur.CompareAndSwap(c, nil)
	c.cancel()
	c.nc.Close()
}

// endReason returns why the connection ended.
func (c *conn) endReason() (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reason, c.cause
}

// send registers, queues and waits for one action.
func (c *conn) send(ctx context.Context, a Action, internal bool) (*Result, error) {
	id := c.ids.next()
	wire, err := amiwire.AppendAction(nil, a.Name, id, a.Headers)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidAction, err)
	}
	p := &pending{
		id:       id,
		wire:     wire,
		internal: internal,
		idleOnly: internal && a.Name == "Ping",
		command:  strings.EqualFold(a.Name, "Command"),
		deadline: answerDue(ctx, a, time.Now(), c.s.cfg.PingInterval).UnixNano(),
		done:     make(chan struct{}),
		onAnswer: a.OnAnswer,
	}
	if err := c.register(p); err != nil {
		return nil, err
	}
	c.mu.Lock()
	if len(c.writeq) >= c.s.cfg.MaxPending+internalSlots {
		if !c.dead {
			p.state = stateCancelled
			c.removeLocked(p)
		}
		c.mu.Unlock()
		return nil, ErrOverloaded
	}
	c.writeq = append(c.writeq, p)
	if !c.writing && !c.dead {
		// Not dead: the reader is running and counted in wg (or serve has
		// not started waiting yet), so this Add cannot race with Wait.
		c.writing = true
		c.wg.Add(1)
		go c.writeLoop()
	}
	c.mu.Unlock()
	select {
	case <-p.done:
		if p.err != nil {
			return nil, p.err
		}
		return &p.res, nil
	case <-ctx.Done():
		return c.abandon(p, ctx.Err())
	}
}

// answerDue is when the PBX owes a's answer at the latest: the caller's
// deadline, or for a synchronous Originate its Timeout header (default
// 30 s) if later, since Asterisk holds the session that long whatever the
// caller waits. With no deadline at all it is PingInterval from now, as
// for an idle session.
func answerDue(ctx context.Context, a Action, now time.Time, idle time.Duration) time.Time {
	due, ok := ctx.Deadline()
	if !ok {
		due = now.Add(idle)
	}
	if strings.EqualFold(a.Name, "Originate") {
		if hold, sync := originateHold(a.Headers); sync {
			due = maxTime(due, now.Add(hold))
		}
	}
	return due
}

// defaultOriginateTimeout is Asterisk's Originate Timeout when the action
// sets none.
const defaultOriginateTimeout = 30 * time.Second

// originateHold reads an Originate's headers: whether it is synchronous
// (no true Async) and how long Asterisk may hold it (its Timeout in ms).
func originateHold(headers []Header) (hold time.Duration, sync bool) {
	hold, sync = defaultOriginateTimeout, true
	for _, h := range headers {
		switch {
		case strings.EqualFold(h.Key, "Async"):
			switch strings.ToLower(strings.TrimSpace(h.Value)) {
			case "yes", "true", "y", "t", "1", "on":
				sync = false
			}
		case strings.EqualFold(h.Key, "Timeout"):
			if ms, err := strconv.Atoi(strings.TrimSpace(h.Value)); err == nil && ms > 0 {
				hold = time.Duration(ms) * time.Millisecond
			}
		}
	}
	return hold, sync
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// logoff says goodbye, best effort, within LogoffTimeout.
func (c *conn) logoff() {
	ctx, cancel := context.WithTimeout(context.Background(), c.s.cfg.LogoffTimeout)
	defer cancel()
	_, _ = c.send(ctx, Action{Name: "Logoff"}, true)
}

// writeLoop is the connection's only writer while it runs (see writing).
// It takes queued actions, gathers what is ready into one write, and writes
// under a deadline of PingTimeout: a peer that stops reading long enough is
// declared dead. It returns when the queue is empty or the connection dead.
func (c *conn) writeLoop() {
	defer c.wg.Done()
	var buf []byte
	for {
		buf = buf[:0]
		c.mu.Lock()
		if len(c.writeq) == 0 || c.dead {
			c.writeq = nil
			c.writing = false
			c.mu.Unlock()
			return
		}
		i := 0
		for ; i < len(c.writeq) && len(buf) < maxWriteBatch; i++ {
			buf = c.claimLocked(buf, c.writeq[i])
			c.writeq[i] = nil
		}
		c.writeq = c.writeq[i:]
		c.mu.Unlock()
		if len(buf) == 0 {
			continue
		}
		c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.PingTimeout))
		if _, err := c.nc.Write(buf); err != nil {
			c.fail(ReasonWriteError, err)
			return
		}
		if cap(buf) > 2*maxWriteBatch {
			buf = nil
		}
	}
}

// startKeepalive arms the keepalive, which watches the connection by this
// rule:
//
//   - A connection that owes nothing and has read nothing for PingInterval
//     gets a Ping; no answer within PingTimeout ends it (keepalive_timeout).
//   - A connection that owes answers gets no Ping, which would only wait
//     behind them: Asterisk runs a session's actions one at a time. It is
//     alive while the latest owed answer is inside its own deadline (see
//     answerDue) plus PingTimeout, or something was read within the last
//     PingTimeout. Past both it ends (keepalive_timeout).
//   - Meanwhile TCP keepalive (tcpKeepAlive) catches a peer that vanished.
//
// It is a timer, not a goroutine or a poll: it fires at most once per
// PingInterval, or at the moment a deadline check falls due, and a
// goroutine (owned by c.wg) exists only while a Ping waits for its answer,
// so an idle session costs no goroutine for it. fail stops the timer.
func (c *conn) startKeepalive() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.dead {
		c.pingTimer = time.AfterFunc(c.s.cfg.PingInterval, c.keepaliveDue)
	}
}

// keepaliveDue runs when the timer fires (on the runtime's timer
// goroutine: it must not block).
func (c *conn) keepaliveDue() {
	s := c.s
	now := time.Now()
	lastRead := time.Unix(0, c.lastRead.Load())
	c.mu.Lock()
	if c.dead {
		c.mu.Unlock()
		return
	}
	owed, latest := c.owedLocked()
	if owed > 0 {
		due := maxTime(time.Unix(0, latest), lastRead).Add(s.cfg.PingTimeout)
		if !now.Before(due) {
			c.mu.Unlock()
			c.fail(ReasonKeepalive, fmt.Errorf("%d answers owed, none read within %v after the last deadline", owed, s.cfg.PingTimeout))
			return
		}
		c.pingTimer.Reset(min(due.Sub(now), s.cfg.PingInterval))
		c.mu.Unlock()
		return
	}
	if idle := now.Sub(lastRead); idle < s.cfg.PingInterval {
		c.pingTimer.Reset(s.cfg.PingInterval - idle)
		c.mu.Unlock()
		return
	}
	// Not dead: the reader runs and is counted in wg, so this Add cannot
	// race with serve's Wait.
	c.wg.Add(1)
	c.mu.Unlock()
	go c.ping()
}

// ping sends a keepalive Ping and waits for its answer, then re-arms the
// timer; an unanswered Ping ends the connection.
func (c *conn) ping() {
	defer c.wg.Done()
	s := c.s
	ctx, cancel := context.WithTimeout(c.ctx, s.cfg.PingTimeout)
	_, err := c.send(ctx, Action{Name: "Ping"}, true)
	cancel()
	next := time.Duration(-1)
	switch {
	case errors.Is(err, ErrTimeout):
		c.fail(ReasonKeepalive, fmt.Errorf("no answer to Ping within %v", s.cfg.PingTimeout))
		return
	case errors.Is(err, ErrNotConnected), errors.Is(err, ErrDisconnected), c.ctx.Err() != nil:
		return
	case errors.Is(err, errOwing):
		// An action came first: look again under the owed rule.
		next = 0
	}
	// Answered, or ErrOverloaded: the write path is backed up behind a
	// stalled write, whose own deadline ends the connection. Either way,
	// next look is PingInterval after the last read, so a timer that fires
	// finds the session idle for a full interval.
	if next < 0 {
		next = max(s.cfg.PingInterval-time.Since(time.Unix(0, c.lastRead.Load())), 0)
	}
	c.mu.Lock()
	if !c.dead {
		c.pingTimer.Reset(next)
	}
	c.mu.Unlock()
}

// readLoop is the connection's only reader. It waits on nothing but the
// socket: responses and list events go to their pending action, events to
// the Handler (which must not block), numbered 1, 2, 3 ... per session.
func (c *conn) readLoop() {
	defer c.wg.Done()
	s := c.s
	m := c.msg
	var seq uint64
	defer func() { c.lastSeq = seq }()
	for {
		err := c.r.ReadMessage(m)
		now := time.Now()
		c.lastRead.Store(now.UnixNano())
		if err != nil {
			if c.readFailed(err, now, &seq) {
				return
			}
			continue
		}
		switch m.Kind() {
		case amiwire.KindResponse:
			c.onResponse(m)
		case amiwire.KindEvent:
			if c.listing.Load() > 0 {
				if id := m.ActionID(); len(id) > 0 && c.onListEvent(id, m) {
					break
				}
			}
			if bytes.EqualFold(m.Name(), shutdownEvent) {
				c.sawShutdown.Store(true)
			}
			if s.cfg.Accept != nil && !s.cfg.Accept(m.Name()) {
				s.filtered.Inc()
				break
			}
			seq++
			s.handler.Event(c.ids.session, seq, now, m)
		}
		if p := c.answered; p != nil {
			c.answered = nil
			p.onAnswer(&p.res)
		}
		if m.Size() > shrinkAbove {
			m = new(amiwire.Message)
		}
		if br, changed := c.rb.adapt(now); changed {
			c.r.Reset(br)
		}
	}
}

// readFailed handles a read error and reports whether the connection is
// over. A skipped message (over a cap, or malformed) costs only itself.
func (c *conn) readFailed(err error, now time.Time, seq *uint64) bool {
	s := c.s
	var le *amiwire.LimitError
	if errors.As(err, &le) {
		s.oversizedMessages.Inc()
		if c.onLimit(le) {
			return false
		}
		if le.Kind == amiwire.KindEvent && s.oversized != nil &&
			(s.cfg.Accept == nil || s.cfg.Accept([]byte(le.Name))) {
			*seq++
			s.oversized.EventOversized(c.ids.session, *seq, now, le.Name, le.Size)
		}
		s.oversizedLog.AddWith(1, zap.String("kind", le.Kind.String()), zap.String("name", le.Name),
			zap.Int("size", le.Size), zap.Int("limit", le.Limit))
		return false
	}
	if errors.Is(err, amiwire.ErrProtocol) && !errors.Is(err, io.ErrUnexpectedEOF) {
		s.malformedLog.AddWith(1, zap.Error(err))
		return false
	}
	reason := ReasonReadError
	switch {
	case errors.Is(err, io.EOF):
		reason = ReasonEOF
	case errors.Is(err, io.ErrUnexpectedEOF):
		reason = ReasonTruncated
	}
	c.fail(reason, err)
	return true
}
