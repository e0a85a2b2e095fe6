package amisim

import (
	"context"
	"strings"
	"sync/atomic"
)

// Action is one message a client sent, as received.
type Action struct {
	// Conn numbers the connection, 1 for the first accepted.
	Conn int
	// Name is the Action header's value as sent ("" if there was none).
	Name string
	// ActionID is the ActionID header's value ("" if none).
	ActionID string
	// Headers are every line in order; a line without a colon has an empty
	// key and the whole line as value.
	Headers [][2]string
}

// Header returns the value of a's first header named key, in any case (as
// Asterisk reads an action's headers), and whether a carries one.
func (a Action) Header(key string) (string, bool) {
	for _, h := range a.Headers {
		if strings.EqualFold(h[0], key) {
			return h[1], true
		}
	}
	return "", false
}

// SentEvent is one unsolicited event written whole to a client. Responses
// and their event-list items are not events in this sense and are not
// recorded here.
type SentEvent struct {
	Conn int
	// Headers exactly as written on the wire, in order.
	Headers [][2]string
}

type sentRec struct {
	conn int
	b    []byte
}

// counters are the Server's counts of what happened at each cap and fault.
type counters struct {
	accepted, refused, overConnCap                       atomic.Int64
	slowClientDrops, queueFullDrops, authTimeouts        atomic.Int64
	loginFailures, actionsNotRecorded, eventsNotRecorded atomic.Int64
	callsStarted, callsRejected, filterCapHits           atomic.Int64
	eventsBroadcast, rawWrites                           atomic.Int64
}

// Stats is a snapshot of the Server's counters.
type Stats struct {
	// Accepted connections (refused ones not included).
	Accepted int64
	// Refused connections: reset with no banner by SetRefuse or a Restart.
	Refused int64
	// OverConnCap: connections reset because MaxConns were open.
	OverConnCap int64
	// SlowClientDrops: clients dropped because their socket accepted no
	// byte for WriteTimeout (Asterisk's writetimeout).
	SlowClientDrops int64
	// QueueFullDrops: clients dropped because their queue stayed at
	// QueueBytes for WriteTimeout.
	QueueFullDrops int64
	// AuthTimeouts: connections closed for not logging in in AuthTimeout.
	AuthTimeouts int64
	// LoginFailures: "Authentication failed" answers.
	LoginFailures int64
	// ActionsNotRecorded and EventsNotRecorded count what RecordLimit left
	// out of Received and SentEvents.
	ActionsNotRecorded int64
	EventsNotRecorded  int64
	// CallsStarted and CallsRejected (over MaxCalls).
	CallsStarted  int64
	CallsRejected int64
	// FilterCapHits: Filter actions refused at DefaultMaxFilters.
	FilterCapHits int64
	// EventsBroadcast: events offered to the sessions (each counted once).
	EventsBroadcast int64
	// RawWrites: EmitRaw calls.
	RawWrites int64
}

// Stats returns the Server's counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Accepted: c.accepted.Load(), Refused: c.refused.Load(), OverConnCap: c.overConnCap.Load(),
		SlowClientDrops: c.slowClientDrops.Load(), QueueFullDrops: c.queueFullDrops.Load(),
		AuthTimeouts: c.authTimeouts.Load(), LoginFailures: c.loginFailures.Load(),
		ActionsNotRecorded: c.actionsNotRecorded.Load(), EventsNotRecorded: c.eventsNotRecorded.Load(),
		CallsStarted: c.callsStarted.Load(), CallsRejected: c.callsRejected.Load(),
		FilterCapHits: c.filterCapHits.Load(), EventsBroadcast: c.eventsBroadcast.Load(),
		RawWrites: c.rawWrites.Load(),
	}
}

// recordAction records a complete client message. It reports false when
// the connection was closed meanwhile: after DropConnections returns, no
// message of a dropped connection is recorded or answered.
func (s *Server) recordAction(c *conn, req *request) bool {
	c.closeMu.Lock()
	if c.closed {
		c.closeMu.Unlock()
		return false
	}
	s.mu.Lock()
	if s.cfg.RecordLimit >= 0 && len(s.received) < s.cfg.RecordLimit {
		s.received = append(s.received, Action{
			Conn: c.id, Name: req.getNonEmpty("Action"), ActionID: req.get("ActionID"), Headers: req.pairs(),
		})
	} else {
		s.stats.actionsNotRecorded.Add(1)
	}
	s.mu.Unlock()
	c.closeMu.Unlock()
	s.notify()
	return true
}

// recordSent records the first n event items of items, written to c.
func (s *Server) recordSent(c *conn, items []outItem, n int) {
	s.mu.Lock()
	for _, it := range items {
		if n == 0 {
			break
		}
		if !it.event {
			continue
		}
		n--
		if s.cfg.RecordLimit >= 0 && len(s.sent) < s.cfg.RecordLimit {
			s.sent = append(s.sent, sentRec{conn: c.id, b: it.b})
		} else {
			s.stats.eventsNotRecorded.Add(1)
		}
	}
	s.mu.Unlock()
	s.notify()
}

// Received returns every message received, all connections, in order.
func (s *Server) Received() []Action {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Action, len(s.received))
	copy(out, s.received)
	return out
}

// SentEvents returns every unsolicited event written whole, in order.
func (s *Server) SentEvents() []SentEvent {
	s.mu.Lock()
	recs := make([]sentRec, len(s.sent))
	copy(recs, s.sent)
	s.mu.Unlock()
	out := make([]SentEvent, len(recs))
	for i, r := range recs {
		out[i] = SentEvent{Conn: r.conn, Headers: parseMessage(r.b)}
	}
	return out
}

// SentEventCount returns len(SentEvents()) without copying them.
func (s *Server) SentEventCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sent)
}

// Logins returns the number of successful logins so far.
func (s *Server) Logins() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.logins
}

// ActiveSessions returns the logged-in sessions now for user ("" = all).
func (s *Server) ActiveSessions(user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.active[strings.ToLower(user)]
}

// MaxConcurrentLogins returns the most sessions of user ("" = all) that
// were logged in at the same time.
func (s *Server) MaxConcurrentLogins(user string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.maxActive[strings.ToLower(user)]
}

// Connections returns the number of open client connections.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// login counts a successful login of c.
func (s *Server) login(c *conn) {
	s.mu.Lock()
	s.logins++
	for _, k := range []string{"", c.user} {
		s.active[k]++
		if s.active[k] > s.maxActive[k] {
			s.maxActive[k] = s.active[k]
		}
	}
	s.mu.Unlock()
}

// logout forgets a logged-in session that ended.
func (s *Server) logout(c *conn) {
	s.setLoggedIn(c, false)
	s.mu.Lock()
	s.active[""]--
	s.active[c.user]--
	s.mu.Unlock()
	s.notify()
}

// notify wakes WaitUntil callers. It costs nothing when none waits.
func (s *Server) notify() {
	if s.waiters.Load() == 0 {
		return
	}
	s.mu.Lock()
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// WaitUntil returns nil once cond() is true. It re-checks cond after every
// state change (connection, login, logout, action received, event sent, call
// progress), never by polling. It returns ctx.Err() or ErrClosed otherwise.
// cond must not block; it may call the Server's observation methods.
func (s *Server) WaitUntil(ctx context.Context, cond func() bool) error {
	s.waiters.Add(1)
	defer s.waiters.Add(-1)
	for {
		s.mu.Lock()
		ch, closed := s.changed, s.closed
		s.mu.Unlock()
		if cond() {
			return nil
		}
		if closed && s.ctx.Err() != nil {
			return ErrClosed
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.ctx.Done():
			// Close is under way: one last look once it is done.
			s.wg.Wait()
			if cond() {
				return nil
			}
			return ErrClosed
		}
	}
}
