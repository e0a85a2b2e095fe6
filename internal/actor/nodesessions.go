package actor

import (
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/lifecycle"
	"github.com/amibus/amibus/pkg/session"
)

// refusedRetry is how long a node whose PBX refused an extra login runs
// with the sessions it has before it tries an extra one again, so that a
// manager.conf change (allowmultiplelogin) is picked up without a restart.
const refusedRetry = 5 * time.Minute

// extraFailedRetry is how long a node whose extra session failed for
// another reason (dial, banner, login timeout: a PBX that is overloaded
// or drops new connections) waits before it opens an extra one again, so
// that requests queueing behind a slow action do not each bring a new
// connection attempt.
const extraFailedRetry = 10 * time.Second

// nodeSessions is one node's AMI sessions in ami-actor, and the Sender the
// command server uses for the node. Asterisk runs one session's actions one
// after another, so a slow action (a sync Originate rings up to its
// Timeout) holds every later action of its session. The first session is
// always open; while every open one owes an answer, a request opens
// another, up to max; an extra session idle for idle logs off again. A
// request goes to a session that owes nothing, else to the one owing least.
// pending caps the node's pending actions over all its sessions.
//
// Goroutines: each session's own (owned by the session), and one manager
// per node that closes extra sessions that failed or went idle; Close
// stops it and closes every session.
type nodeSessions struct {
	name, addr string
	opts       []session.Option // the node's session options, without the per-slot ones
	max        int
	idle       time.Duration
	pending    *session.PendingLimit
	log        *zap.Logger
	refused    prometheus.Counter
	onUp       func(context.Context, *session.Session, string)

	firstSlot *slot // slots[0], set once by newNodeSessions

	mu           sync.Mutex
	slots        []*slot // slots[0] is the first session; at most max
	opening      *slot   // an extra session not yet logged in, or nil
	refusedUntil time.Time
	refusedOnce  bool // the refusal was logged
	closed       bool
	started      atomic.Bool // the manager runs
	// sends counts the Sends under way; retiring refuses new ones, and
	// drained is closed once retiring and none is left (see retire).
	sends    int
	retiring bool
	retired  chan struct{} // closed when retiring starts
	drained  chan struct{}

	wake chan struct{} // capacity 1: the manager should look again
	stop chan struct{}
	done chan struct{}
}

// slot is one session of a node.
type slot struct {
	sess *session.Session
	// users counts Sends that picked this slot and have not returned; the
	// manager closes only a slot nobody uses (both under nodeSessions.mu
	// or after it).
	users    atomic.Int32
	lastUsed atomic.Int64 // unix nanos of the last Send's start or end
	// resolved is closed once the first login succeeded or failed.
	resolved    chan struct{}
	resolveOnce sync.Once
	failed      atomic.Bool // gave up (an extra whose login failed)
}

func (sl *slot) resolve() { sl.resolveOnce.Do(func() { close(sl.resolved) }) }

// newNodeSessions builds the node's first session (validating opts) and
// its manager; start launches them.
func newNodeSessions(name, addr string, opts []session.Option, maxSessions, maxPending int, idle time.Duration,
	refused prometheus.Counter, onUp func(context.Context, *session.Session, string), log *zap.Logger) (*nodeSessions, error) {
	n := &nodeSessions{
		name: name, addr: addr, opts: slices.Clip(opts), max: max(1, maxSessions), idle: idle,
		pending: session.NewPendingLimit(maxPending),
		log:     log.With(zap.String("node", name)),
		refused: refused, onUp: onUp,
		wake: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{}),
		retired: make(chan struct{}), drained: make(chan struct{}),
	}
	first, err := n.newSlot(false)
	if err != nil {
		return nil, err
	}
	n.firstSlot = first
	n.slots = []*slot{first}
	return n, nil
}

// newSlot builds (does not start) one session of the node.
func (n *nodeSessions) newSlot(extra bool) (*slot, error) {
	sl := &slot{resolved: make(chan struct{})}
	sl.lastUsed.Store(time.Now().UnixNano())
	opts := append(n.opts, session.WithPendingLimit(n.pending),
		session.WithOnUp(func(ctx context.Context, s *session.Session, id string) {
			sl.resolve()
			n.onUp(ctx, s, id)
		}))
	if extra {
		opts = append(opts, session.WithOnConnectError(func(err error) bool {
			n.extraFailed(sl, err)
			return true
		}))
	}
	s, err := session.New(n.name, n.addr, opts...)
	if err != nil {
		return nil, err
	}
	sl.sess = s
	return sl, nil
}

// start starts the first session and the manager.
func (n *nodeSessions) start() error {
	if err := n.firstSlot.sess.Start(); err != nil {
		return err
	}
	n.started.Store(true)
	go n.manage()
	return nil
}

// first returns the node's permanent session.
func (n *nodeSessions) first() *session.Session { return n.firstSlot.sess }

// up reports whether the first session is logged in.
func (n *nodeSessions) up() bool { return n.first().Up() }

// Send runs a on the session that owes least, opening another one first
// when every open one owes something and the node may have more.
func (n *nodeSessions) Send(ctx context.Context, a session.Action) (*session.Result, error) {
	if n.pending.Full() {
		return nil, session.ErrOverloaded
	}
	if !n.enter() {
		// Removed or reconfigured by a reload: nothing was sent.
		return nil, session.ErrNotConnected
	}
	defer n.leave()
	// A request that finds every session owing waits for the login of the
	// one being opened; when another request took that one first, it may
	// wait for the next, at most once per session the node may open.
	for waits := 0; ; waits++ {
		sl, _, wait := n.pick()
		if wait != nil && waits < n.max && ctx.Err() == nil {
			sl.users.Add(-1)
			select {
			case <-wait:
			case <-n.retired:
				// Not sent, and the node is going away: unavailable,
				// never disconnected.
				return nil, session.ErrNotConnected
			case <-ctx.Done():
				// Out of time while a login was under way: the Send
				// below answers the deadline at once.
			}
			continue
		}
		if sl == nil {
			return nil, session.ErrNotConnected
		}
		sl.lastUsed.Store(time.Now().UnixNano())
		res, err := sl.sess.Send(ctx, a)
		sl.lastUsed.Store(time.Now().UnixNano())
		sl.users.Add(-1)
		return res, err
	}
}

// pick returns the logged-in slot owing least (nil if none), marked as
// used, what it owes, and, when it owes something and another session is
// being opened or may be, a channel closed once that one's login is
// resolved (pick starts it). What a slot owes is the larger of what its
// session owes and the Sends on it, which count from the pick on, so that
// requests arriving together spread at once.
func (n *nodeSessions) pick() (best *slot, owed int, wait <-chan struct{}) {
	n.mu.Lock()
	defer n.mu.Unlock()
	owed = -1
	for _, sl := range n.slots {
		o := sl.sess.Owed()
		if o < 0 || sl.failed.Load() {
			continue
		}
		o = max(o, int(sl.users.Load()))
		if best == nil || o < owed {
			best, owed = sl, o
			if o == 0 {
				break
			}
		}
	}
	if best != nil {
		best.users.Add(1)
	}
	if best == nil || owed == 0 || n.closed || n.retiring {
		// With no session up the node is down: the first session is
		// reconnecting, and the request is answered unavailable at once.
		return best, owed, nil
	}
	if n.opening != nil {
		select {
		case <-n.opening.resolved:
			n.opening = nil // logged in or failed: another may be opened
		default:
			return best, owed, n.opening.resolved
		}
	}
	if len(n.slots) >= n.max || time.Now().Before(n.refusedUntil) {
		return best, owed, nil
	}
	sl, err := n.newSlot(true)
	if err == nil {
		err = sl.sess.Start()
	}
	if err != nil {
		// The options were validated with the first session; this is a
		// bug, not a condition: go on with what is open.
		n.log.Error("extra AMI session not started", zap.Error(err))
		return best, owed, nil
	}
	n.slots = append(n.slots, sl)
	n.opening = sl
	return best, owed, sl.resolved
}

// extraFailed runs on an extra session's supervisor when a connection
// attempt fails: the session gives up and the manager closes it. A refused
// login means the PBX will not take more sessions of this user (for
// example allowmultiplelogin = no): the node goes on with what it has,
// says so once, and tries again after refusedRetry. Any other failure
// holds extra sessions back for extraFailedRetry.
func (n *nodeSessions) extraFailed(sl *slot, err error) {
	sl.failed.Store(true)
	refused := errors.Is(err, session.ErrAuth)
	retry := extraFailedRetry
	if refused {
		n.refused.Inc()
		retry = refusedRetry
	}
	n.mu.Lock()
	if until := time.Now().Add(retry); until.After(n.refusedUntil) {
		n.refusedUntil = until
	}
	logIt := refused && !n.refusedOnce
	n.refusedOnce = n.refusedOnce || refused
	open := len(n.slots) - 1
	n.mu.Unlock()
	if logIt {
		n.log.Warn("the PBX refused an extra AMI session (allowmultiplelogin = no, or a session limit?); "+
			"the node runs with the sessions it has, requests to it queue behind slow actions",
			zap.Int("sessions_open", open), zap.Int("sessions_per_node", n.max),
			zap.Duration("retry_in", refusedRetry), zap.Error(err))
	}
	sl.resolve()
	select {
	case n.wake <- struct{}{}:
	default:
	}
}

// manage is the node's manager goroutine: it closes extra sessions that
// gave up or sat idle, waking on a timer for the next idle deadline.
func (n *nodeSessions) manage() {
	defer close(n.done)
	t := time.NewTimer(n.idle)
	defer t.Stop()
	for {
		next := n.reap()
		t.Reset(next)
		select {
		case <-n.stop:
			return
		case <-n.wake:
		case <-t.C:
		}
	}
}

// reap closes the extra sessions that failed, or owe nothing, are used by
// nobody and were last used idle ago; it returns when to look again.
func (n *nodeSessions) reap() time.Duration {
	now := time.Now()
	next := n.idle
	var gone []*slot
	n.mu.Lock()
	keep := n.slots[:1]
	for _, sl := range n.slots[1:] {
		idleFor := now.Sub(time.Unix(0, sl.lastUsed.Load()))
		switch {
		case sl.users.Load() > 0:
		case sl.failed.Load(), idleFor >= n.idle && sl.sess.Owed() == 0:
			gone = append(gone, sl)
			continue
		default:
			next = min(next, max(n.idle-idleFor, time.Millisecond))
		}
		keep = append(keep, sl)
	}
	clear(n.slots[len(keep):])
	n.slots = keep
	n.mu.Unlock()
	for _, sl := range gone {
		sl.sess.Close() // logs off within LogoffTimeout
		sl.resolve()
	}
	return next
}

// enter counts a Send in, unless the node is retiring or closed.
func (n *nodeSessions) enter() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.retiring || n.closed {
		return false
	}
	n.sends++
	return true
}

// leave counts a Send out.
func (n *nodeSessions) leave() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.sends--
	if n.retiring && n.sends == 0 {
		close(n.drained)
	}
}

// retire ends the node for a reload that removed or reconfigured it: new
// requests and those still waiting for a session are refused with
// ErrNotConnected (answered unavailable: nothing was sent); the actions
// already given to a session keep their normal outcome, since the sessions
// close only once every Send has returned (each is bounded by its request's
// deadline) or ctx ends, whichever is first. Then it closes every session.
func (n *nodeSessions) retire(ctx context.Context) {
	n.mu.Lock()
	if !n.retiring && !n.closed {
		n.retiring = true
		close(n.retired)
		if n.sends == 0 {
			close(n.drained)
		}
	}
	drained := n.drained
	if n.closed {
		drained = nil // Close already ran: nothing to wait for
	}
	n.mu.Unlock()
	if drained != nil {
		select {
		case <-drained:
		case <-ctx.Done():
		}
	}
	n.Close()
}

// Close stops the manager and closes every session at once; it returns
// when all of them have ended.
func (n *nodeSessions) Close() {
	n.mu.Lock()
	if n.closed {
		n.mu.Unlock()
		return
	}
	n.closed = true
	slots := slices.Clone(n.slots)
	n.mu.Unlock()
	close(n.stop)
	if n.started.Load() {
		<-n.done
	}
	lifecycle.CloseAll(slots, func(sl *slot) {
		sl.sess.Close()
		sl.resolve()
	})
}
