package amisim

import (
	"crypto/tls"
	"errors"
	"net"
	"regexp"
	"sync"
	"sync/atomic"
	"time"
)

// tlsHandshakeTimeout bounds a TLS client that connects and never speaks.
const tlsHandshakeTimeout = 10 * time.Second

// outItem is one queued write: a whole message (or raw bytes), never split,
// so nothing is ever interleaved inside a response or an event list.
type outItem struct {
	b []byte
	// event marks an unsolicited event, recorded in SentEvents once written.
	event bool
	// closeAfter closes the connection once everything before it is written.
	closeAfter bool
}

// filterSet is a session's Filter regexes (manager.c's include and exclude
// filter containers).
type filterSet struct {
	include []*regexp.Regexp
	exclude []*regexp.Regexp
}

// match is manager.c's match_filter.
func (f *filterSet) match(ev []byte) bool {
	if f == nil || (len(f.include) == 0 && len(f.exclude) == 0) {
		return true
	}
	if len(f.include) > 0 {
		ok := false
		for _, re := range f.include {
			if re.Match(ev) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	for _, re := range f.exclude {
		if re.Match(ev) {
			return false
		}
	}
	return true
}

// conn is one client connection: a session goroutine that reads and runs
// actions one at a time (as an Asterisk session thread does) and a writer
// goroutine that drains the connection's bounded queue.
type conn struct {
	s    *Server
	id   int
	raw  net.Conn
	nc   net.Conn
	done chan struct{}

	// closeMu guards closed and the login bookkeeping against a close.
	// Lock order: emitMu, then closeMu, then Server.mu; qmu before closeMu.
	closeMu sync.Mutex
	closed  bool

	// Session state. Written by the session goroutine; the fields read by
	// fan-out are atomic.
	authed    atomic.Bool
	user      string // lower case, the key of Config.Users
	account   string // as the client spelt it, for AccountID
	readPerm  atomic.Int64
	writePerm int
	mask      atomic.Int64
	filters   atomic.Pointer[filterSet]
	challenge string
	loginTime time.Time

	// Queue of unwritten bytes, capped at cfg.QueueBytes.
	qmu      sync.Mutex
	q        []outItem
	qbytes   int
	qclosing bool
	wake     chan struct{}
	// space is closed and replaced whenever written bytes leave the queue.
	space chan struct{}
}

func newConn(s *Server, id int, raw net.Conn) *conn {
	c := &conn{
		s:     s,
		id:    id,
		raw:   raw,
		nc:    s.newTLS(raw),
		done:  make(chan struct{}),
		wake:  make(chan struct{}, 1),
		space: make(chan struct{}),
	}
	// Asterisk's session starts with every event class enabled (-1).
	c.mask.Store(classAll)
	return c
}

// sessionID is the "%p" of the session in security events.
func (c *conn) sessionID() string {
	return "0x" + hexString(c.s.sessionBase+uint64(c.id)*0x1a30)
}

func hexString(v uint64) string {
	const digits = "0123456789abcdef"
	var b [16]byte
	i := len(b)
	for {
		i--
		b[i] = digits[v&0xf]
		v >>= 4
		if v == 0 {
			return string(b[i:])
		}
	}
}

// wants reports whether the session takes an event of this class
// (manager.c process_events: read permission, event mask, filters).
func (c *conn) wants(ev []byte, class int) bool {
	if int(c.readPerm.Load())&class != class || int(c.mask.Load())&class != class {
		return false
	}
	return c.filters.Load().match(ev)
}

// enqueue queues one item. When the queue is full it waits for the writer,
// up to the write timeout; a queue that stays full that long belongs to a
// client whose socket is blocked, which Asterisk would drop, and so does
// this. It reports whether the item was queued.
func (c *conn) enqueue(it outItem) bool {
	return c.enqueueAll(it)
}

// enqueueAll queues items together: the writer sees all or none of them.
func (c *conn) enqueueAll(items ...outItem) bool {
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		c.qmu.Lock()
		if c.qclosing || c.isClosed() {
			c.qmu.Unlock()
			return false
		}
		size := 0
		for _, it := range items {
			size += len(it.b)
		}
		if c.qbytes == 0 || c.qbytes+size <= c.s.cfg.QueueBytes {
			for _, it := range items {
				c.q = append(c.q, it)
				if it.closeAfter {
					c.qclosing = true
				}
			}
			c.qbytes += size
			c.qmu.Unlock()
			select {
			case c.wake <- struct{}{}:
			default:
			}
			return true
		}
		space := c.space
		c.qmu.Unlock()
		if t == nil {
			t = time.NewTimer(c.s.cfg.WriteTimeout)
		}
		select {
		case <-space:
		case <-c.done:
			return false
		case <-t.C:
			c.s.stats.queueFullDrops.Add(1)
			c.closeHard()
			return false
		}
	}
}

// closeGraceful closes the connection after everything queued is written.
func (c *conn) closeGraceful() {
	if !c.enqueue(outItem{closeAfter: true}) {
		c.closeHard()
	}
}

func (c *conn) isClosed() bool {
	c.closeMu.Lock()
	defer c.closeMu.Unlock()
	return c.closed
}

// closeHard closes the socket now, mid-message if a write is in progress.
func (c *conn) closeHard() {
	c.closeMu.Lock()
	if c.closed {
		c.closeMu.Unlock()
		return
	}
	c.closed = true
	authed := c.authed.Load()
	c.closeMu.Unlock()
	close(c.done)
	_ = c.nc.Close()
	if authed {
		c.s.logout(c)
	}
}

// serve is the session goroutine.
func (c *conn) serve() {
	defer c.s.wg.Done()
	defer c.s.removeConn(c)
	defer func() {
		// After Logoff or a failed login the writer closes the socket once
		// the answer is out; anything else ends the connection now.
		c.qmu.Lock()
		graceful := c.qclosing
		c.qmu.Unlock()
		if graceful {
			<-c.done
		} else {
			c.closeHard()
		}
	}()
	if tc, ok := c.nc.(*tls.Conn); ok {
		_ = tc.SetDeadline(time.Now().Add(tlsHandshakeTimeout))
		if err := tc.Handshake(); err != nil {
			return
		}
		_ = tc.SetDeadline(time.Time{})
	}
	c.enqueue(outItem{b: []byte("Asterisk Call Manager/" + c.s.cfg.Version + "\r\n")})
	c.s.wg.Add(1)
	go c.writeLoop()
	// authtimeout: a read deadline until login, so no timer goroutine.
	_ = c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.AuthTimeout))
	lr := &lineReader{r: c.nc}
	var lines []string
	hdrLoss := false
	for {
		if !c.s.waitReading(c) {
			return
		}
		line, err := lr.readLine()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() && !c.authed.Load() {
				c.s.stats.authTimeouts.Add(1)
			}
			return
		}
		if line != "" {
			if len(lines) < maxHeaderLines {
				lines = append(lines, line)
			} else {
				hdrLoss = true
			}
			continue
		}
		req := &request{lines: lines}
		lines = nil
		loss := hdrLoss
		hdrLoss = false
		if !c.s.recordAction(c, req) {
			return
		}
		var keep bool
		switch {
		case loss:
			keep = c.send(response("Error", req.get("ActionID")).h("Message", errTooManyLines).end())
		case lr.tooLong:
			lr.tooLong = false
			keep = c.send(response("Error", req.get("ActionID")).h("Message", errLineTooLong).end())
		default:
			keep = c.handle(req)
		}
		if !keep {
			return
		}
	}
}

// send queues a response; false if the connection is gone.
func (c *conn) send(m *msg) bool {
	return c.enqueue(outItem{b: m.b})
}

// writeLoop drains the queue to the socket with Asterisk's write timeout:
// a client is dropped, mid-message, when its socket accepts no byte for
// WriteTimeout. Items are written in batches with one writev.
func (c *conn) writeLoop() {
	defer c.s.wg.Done()
	var batch []outItem
	var bufs net.Buffers
	for {
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
		for {
			c.qmu.Lock()
			if len(c.q) == 0 {
				c.qmu.Unlock()
				break
			}
			batch, c.q = c.q, batch[:0]
			c.qmu.Unlock()
			bufs = bufs[:0]
			total, closeAfter := 0, false
			for _, it := range batch {
				if it.closeAfter {
					closeAfter = true
					break
				}
				if len(it.b) > 0 {
					bufs = append(bufs, it.b)
					total += len(it.b)
				}
			}
			written, err := c.write(&bufs)
			// Record, then release the bytes: an observer that sees the
			// queue empty finds every written event recorded.
			c.recordWritten(batch, written)
			c.qmu.Lock()
			c.qbytes -= total
			close(c.space) // wakes every producer waiting for room
			c.space = make(chan struct{})
			c.qmu.Unlock()
			c.s.notify()
			clear(batch)
			if err != nil {
				c.closeHard()
				return
			}
			if closeAfter {
				c.closeHard()
				return
			}
		}
	}
}

// write writes bufs, renewing the deadline while the socket makes progress.
// A TLS connection cannot continue after a timeout, so there any timeout
// ends it.
func (c *conn) write(bufs *net.Buffers) (int, error) {
	written := 0
	_, isTLS := c.nc.(*tls.Conn)
	for len(*bufs) > 0 {
		_ = c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
		n, err := bufs.WriteTo(c.nc)
		written += int(n)
		if err == nil {
			break
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			if n > 0 && !isTLS {
				continue
			}
			c.s.stats.slowClientDrops.Add(1)
		}
		return written, err
	}
	return written, nil
}

// recordWritten records the events of batch that were written whole.
func (c *conn) recordWritten(batch []outItem, written int) {
	off, first, n := 0, -1, 0
	for i, it := range batch {
		off += len(it.b)
		if it.closeAfter || off > written {
			break
		}
		if it.event {
			if first < 0 {
				first = i
			}
			n++
		}
	}
	if n > 0 {
		c.s.recordSent(c, batch[first:], n)
	}
}
