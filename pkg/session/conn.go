package session

import (
	"bufio"
	"bytes"
	"context"
	"crypto/md5"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/amibus/amibus/pkg/amiwire"
)

const (
	// readBufferSize is the bufio buffer under the AMI reader, per
	// connection: large enough that a burst of ~380-byte events costs few
	// syscalls, small enough for a thousand nodes.
	readBufferSize = 32 << 10
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
	msg     *amiwire.Message // reused by the handshake, then by the reader
	ids     *ids
	version string

	ctx    context.Context // ends when the connection does
	cancel context.CancelFunc
	wg     sync.WaitGroup // reader, writer, keepalive, OnUp

	// writeq feeds the writer. Capacity MaxPending+internalSlots: register
	// admits at most that many live entries; at the cap (only when
	// cancelled entries still sit behind a stalled write) Send returns
	// ErrOverloaded.
	writeq chan *pending

	mu      sync.Mutex
	pending map[string]*pending // by ActionID; at most MaxPending user entries + internal ones
	nUser   int                 // user entries in pending, abandoned ones included
	dead    bool
	reason  string
	cause   error

	listing     atomic.Int32 // entries in stateListing: events need an ActionID check only then
	lastRead    atomic.Int64 // unix nanos of the last message read (keepalive)
	sawShutdown atomic.Bool  // the PBX sent Event: Shutdown
	closing     atomic.Bool  // the owner is closing: any end is ReasonClosed
	lastSeq     uint64       // written by the reader before it exits
}

// connect waits for a dial slot, dials, and logs in.
func (s *Session) connect() (*conn, error) {
	release, err := s.cfg.DialLimiter.acquire(s.ctx, s.m.DialsWaiting)
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
		writeq:  make(chan *pending, s.cfg.MaxPending+internalSlots),
		pending: make(map[string]*pending),
	}
	c.r = amiwire.NewReader(bufio.NewReaderSize(nc, readBufferSize),
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
	d := &net.Dialer{}
	if s.cfg.TLS != nil {
		return (&tls.Dialer{NetDialer: d, Config: s.cfg.TLS}).DialContext(ctx, "tcp", s.addr)
	}
	return d.DialContext(ctx, "tcp", s.addr)
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
		reason, err = ReasonClosed, nil
	case reason == ReasonEOF && c.sawShutdown.Load():
		reason = ReasonShutdown
	}
	c.reason, c.cause = reason, err
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
		command:  strings.EqualFold(a.Name, "Command"),
		done:     make(chan struct{}),
	}
	if err := c.register(p); err != nil {
		return nil, err
	}
	select {
	case c.writeq <- p:
	default:
		c.mu.Lock()
		if !c.dead {
			p.state = stateCancelled
			c.removeLocked(p)
		}
		c.mu.Unlock()
		return nil, ErrOverloaded
	}
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

// logoff says goodbye, best effort, within LogoffTimeout.
func (c *conn) logoff() {
	ctx, cancel := context.WithTimeout(context.Background(), c.s.cfg.LogoffTimeout)
	defer cancel()
	_, _ = c.send(ctx, Action{Name: "Logoff"}, true)
}

// writeLoop is the connection's only writer. It takes queued actions,
// gathers what is ready into one write, and writes under a deadline of
// PingTimeout: a peer that stops reading long enough is declared dead.
func (c *conn) writeLoop() {
	defer c.wg.Done()
	buf := make([]byte, 0, 4096)
	for {
		var p *pending
		select {
		case <-c.ctx.Done():
			return
		case p = <-c.writeq:
		}
		buf = buf[:0]
		c.mu.Lock()
		buf = c.claimLocked(buf, p)
	gather:
		for len(buf) < maxWriteBatch {
			select {
			case p = <-c.writeq:
				buf = c.claimLocked(buf, p)
			default:
				break gather
			}
		}
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
			buf = make([]byte, 0, 4096)
		}
	}
}

// keepalive pings after PingInterval without anything read, and declares
// the connection dead when a Ping goes unanswered for PingTimeout. It is a
// timer, not a poll: on a busy connection it wakes once per interval and
// sends nothing.
func (c *conn) keepalive() {
	defer c.wg.Done()
	s := c.s
	t := time.NewTimer(s.cfg.PingInterval)
	defer t.Stop()
	for {
		select {
		case <-c.ctx.Done():
			return
		case <-t.C:
		}
		idle := time.Since(time.Unix(0, c.lastRead.Load()))
		if idle < s.cfg.PingInterval {
			t.Reset(s.cfg.PingInterval - idle)
			continue
		}
		ctx, cancel := context.WithTimeout(c.ctx, s.cfg.PingTimeout)
		_, err := c.send(ctx, Action{Name: "Ping"}, true)
		cancel()
		switch {
		case errors.Is(err, ErrTimeout):
			c.fail(ReasonKeepalive, fmt.Errorf("no answer to Ping within %v", s.cfg.PingTimeout))
			return
		case errors.Is(err, ErrNotConnected), errors.Is(err, ErrDisconnected), c.ctx.Err() != nil:
			return
		}
		// Answered, or ErrOverloaded: the write path is backed up behind a
		// stalled write, whose own deadline ends the connection. Either
		// way, next look is PingInterval after the last read, so a timer
		// that fires finds the session idle for a full interval.
		t.Reset(max(s.cfg.PingInterval-time.Since(time.Unix(0, c.lastRead.Load())), 0))
	}
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
		if m.Size() > shrinkAbove {
			m = new(amiwire.Message)
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
		if ok, n := s.readLog.note(now); ok {
			s.log.Warn("AMI message over the reader's cap skipped",
				zap.String("kind", le.Kind.String()), zap.String("name", le.Name),
				zap.Int("size", le.Size), zap.Int("limit", le.Limit),
				zap.Int("unlogged_since_last_line", n))
		}
		return false
	}
	if errors.Is(err, amiwire.ErrProtocol) && !errors.Is(err, io.ErrUnexpectedEOF) {
		if ok, n := s.readLog.note(now); ok {
			s.log.Warn("malformed AMI message skipped", zap.Error(err),
				zap.Int("unlogged_since_last_line", n))
		}
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
