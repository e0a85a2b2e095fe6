package session

import (
	"bytes"
	"errors"
	"sync/atomic"

	"github.com/amibus/amibus/pkg/amiwire"
)

// pstate is where an action is on its way to the PBX and back.
type pstate uint8

const (
	// stateQueued: in the connection's write queue, not yet handed to the
	// socket; a timeout here cancels it for good (the writer skips it).
	stateQueued pstate = iota
	// stateWritten: handed to the socket; the PBX owes an answer.
	stateWritten
	// stateListing: the response said "EventList: start"; list events with
	// this ActionID belong to it until "EventList: Complete".
	stateListing
	// stateCancelled: timed out while queued; never written.
	stateCancelled
)

// pending is one action between Send and its answer. Every field but done
// and the immutable ones is guarded by conn.mu.
type pending struct {
	id       string
	wire     []byte // the encoded action; dropped once written
	internal bool   // Ping or Logoff sent by the session itself
	// idleOnly: register only on a connection that owes nothing (the
	// keepalive Ping, which must not wait behind a slow action).
	idleOnly bool
	// deadline (unix nanos) is when the action's answer is due at the
	// latest: the keepalive declares the connection dead only once every
	// owed answer is PingTimeout past its deadline.
	deadline int64
	command  bool // a Command action: fill Result.Output
	state    pstate
	// abandoned: the caller is gone (timeout, cancel, ErrTooLarge); what
	// is still owed is read and discarded. The entry stays in the map,
	// and against MaxPending, until the answer ends or the connection
	// does: the PBX handles one session's actions in order, so an owed
	// answer delays every later one anyway.
	abandoned bool
	late      bool // abandoned by the caller's context: count the answer as late
	res       Result
	err       error
	done      chan struct{} // closed once res or err is final, never after abandoned
	onAnswer  func(*Result) // Action.OnAnswer
}

// errOwing: an idle-only action (the keepalive Ping) found the connection
// owing an answer; it is not sent.
var errOwing = errors.New("session: answers owed")

// register adds p to the pending map, or says why it cannot.
func (c *conn) register(p *pending) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return ErrNotConnected
	}
	if p.idleOnly && len(c.pending) > 0 {
		return errOwing
	}
	if !p.internal {
		if c.nUser >= c.s.cfg.MaxPending {
			return ErrOverloaded
		}
		if l := c.s.cfg.PendingLimit; l != nil && !l.take() {
			return ErrOverloaded
		}
		c.nUser++
		c.s.pendingGauge.Inc()
	}
	c.pending[p.id] = p
	c.owed.Store(int32(len(c.pending)))
	return nil
}

// removeLocked drops p from the map and its count.
func (c *conn) removeLocked(p *pending) {
	delete(c.pending, p.id)
	c.owed.Store(int32(len(c.pending)))
	if !p.internal {
		c.nUser--
		c.s.pendingGauge.Dec()
		if l := c.s.cfg.PendingLimit; l != nil {
			l.give(1)
		}
	}
}

// owedLocked returns how many answers are owed and the latest deadline
// among them (unix nanos).
func (c *conn) owedLocked() (n int, latest int64) {
	for _, p := range c.pending {
		latest = max(latest, p.deadline)
	}
	return len(c.pending), latest
}

// finishLocked removes p and wakes its caller with err (nil: p.res).
func (c *conn) finishLocked(p *pending, err error) {
	c.removeLocked(p)
	if p.state == stateListing {
		c.listing.Add(-1)
	}
	p.err = err
	close(p.done)
	if err == nil && p.onAnswer != nil {
		// Only the reader completes an answer without error: it calls
		// onAnswer once it has let go of c.mu, before its next read.
		c.answered = p
	}
}

// endAnswerLocked removes an abandoned p whose owed answer has now ended.
func (c *conn) endAnswerLocked(p *pending) {
	if p.state == stateListing {
		c.listing.Add(-1)
	}
	c.removeLocked(p)
	if p.late {
		c.s.lateCounter.Inc()
	}
}

// abandon is called by Send when its context ends first. It returns the
// answer if it won the race, else the caller's error.
func (c *conn) abandon(p *pending, ctxErr error) (*Result, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	select {
	case <-p.done:
		if p.err != nil {
			return nil, p.err
		}
		return &p.res, nil
	default:
	}
	err := sendCtxError(ctxErr)
	if c.dead {
		// failAllLocked closes done for every caller still waiting, so
		// this is unreachable; it guards the counts against a double
		// removal should that ever change.
		return nil, err
	}
	switch p.state {
	case stateQueued:
		// Never written, and now never will be.
		p.state = stateCancelled
		p.wire = nil
		c.removeLocked(p)
	default:
		p.abandoned, p.late = true, true
		p.res = Result{}
	}
	return nil, err
}

// failAllLocked fails every waiting caller with ErrDisconnected.
func (c *conn) failAllLocked() {
	for _, p := range c.pending {
		if !p.abandoned {
			p.err = ErrDisconnected
			close(p.done)
		}
		if !p.internal {
			c.s.pendingGauge.Dec()
		}
	}
	clear(c.pending)
	c.owed.Store(0)
	if l := c.s.cfg.PendingLimit; l != nil {
		l.give(c.nUser)
	}
	c.nUser = 0
	c.listing.Store(0)
}

// claimLocked appends p's bytes to buf if p may still be written. Its one
// caller, writeLoop, has checked under the same lock that the connection
// is not dead (fail tells every caller ErrDisconnected under that lock).
func (c *conn) claimLocked(buf []byte, p *pending) []byte {
	if p.state != stateQueued {
		return buf
	}
	p.state = stateWritten
	buf = append(buf, p.wire...)
	p.wire = nil
	return buf
}

// onResponse routes a response to the action with its ActionID, if any
// still waits for one.
func (c *conn) onResponse(m *amiwire.Message) {
	id := m.ActionID()
	if len(id) == 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending[string(id)]
	if p == nil || p.state != stateWritten {
		// Not ours, or a second response to a listing action: nothing
		// waits for it.
		return
	}
	list := isListStart(m)
	if p.abandoned {
		if list {
			p.state = stateListing
			c.listing.Add(1)
			return
		}
		c.endAnswerLocked(p)
		return
	}
	if m.Size() > c.s.cfg.MaxAnswerBytes {
		c.tooLargeLocked(p, list)
		return
	}
	p.res.ActionID = p.id
	p.res.Response = m.Clone()
	p.res.Size = m.Size()
	if p.command || m.IsFollows() {
		p.res.Output = amiwire.CommandOutput(m)
	}
	if list {
		p.state = stateListing
		c.listing.Add(1)
		return
	}
	c.finishLocked(p, nil)
}

// onListEvent takes an event carrying ActionID id if it belongs to a
// listing action, and reports whether it did.
func (c *conn) onListEvent(id []byte, m *amiwire.Message) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending[string(id)]
	if p == nil || p.state != stateListing {
		// OriginateResponse carries its Originate's ActionID after the
		// Originate was answered: an event for the Handler.
		return false
	}
	complete := isListComplete(m)
	if p.abandoned {
		if complete {
			c.endAnswerLocked(p)
		}
		return true
	}
	p.res.Size += m.Size()
	if len(p.res.Events) >= c.s.cfg.MaxListEvents || p.res.Size > c.s.cfg.MaxAnswerBytes {
		c.tooLargeLocked(p, !complete)
		return true
	}
	p.res.Events = append(p.res.Events, m.Clone())
	if complete {
		c.finishLocked(p, nil)
	}
	return true
}

// tooLargeLocked fails p's caller with ErrTooLarge at once; if more of the
// answer is owed (more list events), p stays to discard it.
func (c *conn) tooLargeLocked(p *pending, more bool) {
	c.s.oversizedAnswers.Inc()
	if !more {
		c.finishLocked(p, ErrTooLarge)
		return
	}
	if p.state != stateListing {
		p.state = stateListing
		c.listing.Add(1)
	}
	p.err = ErrTooLarge
	p.res = Result{}
	close(p.done)
	p.abandoned = true
}

// onLimit handles a message the reader skipped for crossing a cap: an
// answer's message fails its action with ErrTooLarge. It reports whether
// the message belonged to an action.
func (c *conn) onLimit(le *amiwire.LimitError) bool {
	if le.ActionID == "" || (le.Kind == amiwire.KindEvent && c.listing.Load() == 0) {
		return false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	p := c.pending[le.ActionID]
	if p == nil {
		return false
	}
	switch {
	case le.Kind == amiwire.KindResponse && p.state == stateWritten:
		if p.abandoned {
			c.endAnswerLocked(p)
			return true
		}
		// Whether a list would have followed is unknown: a list's later
		// events then reach the Handler, which is the lesser harm than
		// keeping a tombstone that no Complete may ever end.
		c.tooLargeLocked(p, false)
		return true
	case le.Kind == amiwire.KindEvent && p.state == stateListing:
		if !p.abandoned {
			c.tooLargeLocked(p, true)
		}
		return true
	}
	return false
}

func isListStart(m *amiwire.Message) bool {
	v, ok := m.Lookup("EventList")
	return ok && bytes.EqualFold(v, []byte("start"))
}

func isListComplete(m *amiwire.Message) bool {
	v, ok := m.Lookup("EventList")
	return ok && bytes.EqualFold(v, []byte("Complete"))
}

// PendingLimit is a cap on pending actions shared by several sessions, so
// that sessions opened side by side to one node hold no more than the
// node's cap together. Its zero value is unusable; see NewPendingLimit.
type PendingLimit struct {
	n   atomic.Int64
	max int64
}

// NewPendingLimit returns a shared cap of n pending actions (n >= 1).
func NewPendingLimit(n int) *PendingLimit {
	return &PendingLimit{max: int64(max(n, 1))}
}

// Full reports whether the cap is reached right now.
func (l *PendingLimit) Full() bool { return l.n.Load() >= l.max }

// Pending returns the actions counted against the cap.
func (l *PendingLimit) Pending() int { return int(l.n.Load()) }

func (l *PendingLimit) take() bool {
	if l.n.Add(1) > l.max {
		l.n.Add(-1)
		return false
	}
	return true
}

func (l *PendingLimit) give(n int) { l.n.Add(-int64(n)) }
