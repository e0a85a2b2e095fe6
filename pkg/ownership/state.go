package ownership

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

const (
	// maxPeers caps the table of other live replicas. Presence records
	// beyond it are ignored and counted (ami_ownership_presence_ignored_total);
	// ignoring one only makes this replica's share larger.
	maxPeers = 1024
	// renewWorkers caps the lease updates in flight during a renewal round,
	// so that a replica owning many nodes renews them in a fraction of the
	// round's time limit without one goroutine per node.
	renewWorkers = 16
	// watchBatch caps the queued watch entries handled in one loop turn
	// before acting on them (the nats.go watcher queues up to 256).
	watchBatch = 256
	// unknownOwner marks a node whose Create failed while the watch still
	// showed it free: someone holds it and the watch will say who.
	unknownOwner = "?"
)

// lease is a node this replica owns, from its Create until its Release
// returned.
type lease struct {
	node string
	rev  uint64 // revision of our latest write known to be stored
	// sent is when that write was sent (monotonic clock): the lease lives in
	// the store at least until sent+TTL.
	sent      time.Time
	releasing bool
	reason    string
	cancel    context.CancelFunc // of the context passed to Release
	lost      bool               // another writer changed or deleted it: never delete it
	atRisk    bool               // not renewed in time: Release's context is cancelled
}

// released reports that a node's Release returned, and when.
type released struct {
	node string
	at   time.Time
}

// viewEntry is the latest state of a node's lease key seen on the watch (or
// written by this replica).
type viewEntry struct {
	owner string // instance id; "" when free
	rev   uint64
}

// state is one Run: everything in it belongs to Run's goroutine, except
// what the Release and delete goroutines are handed as values.
type state struct {
	m    *Manager
	base context.Context // Run's context without its cancellation: KV calls go on during hand-over

	kv         jetstream.KeyValue
	w          jetstream.KeyWatcher
	wcancel    context.CancelFunc // ends the watch's subscription
	synced     bool               // the watch delivered the bucket's initial contents
	reconnects uint64             // NATS reconnects when the watch was started

	view   map[string]viewEntry // cap: one entry per configured node
	peers  map[string]struct{}  // other live instances; cap maxPeers
	leases map[string]*lease    // cap: one per configured node
	// creating holds, per node, when a Create that returned an error was
	// sent (it may still have been stored): if the watch shows it stored,
	// the lease is ours and lives at least until then + TTL. Cap: one per
	// configured node.
	creating map[string]time.Time
	// done carries Release completions. Cap len(nodes): there is at most
	// one Release per node in flight, so a send never blocks.
	done chan released
	wg   sync.WaitGroup // Release and lease-delete goroutines

	round       uint64
	closing     bool
	rebalancing int // rebalance Releases in flight, at most step

	due      time.Time // earliest release-by of the trusted leases; zero: none
	dueDirty bool

	// renewFailed: the latest renewal round had failures.
	renewFailed bool
	// stale counts the rounds in a row in which this replica was below its
	// share while some node was held, in its view, by no live replica.
	stale int

	renewLog, acquireLog, presenceLog, connectLog throttle
}

func newState(m *Manager, ctx context.Context) *state {
	return &state{
		m:           m,
		base:        context.WithoutCancel(ctx),
		view:        make(map[string]viewEntry, len(m.nodes)),
		peers:       make(map[string]struct{}),
		leases:      make(map[string]*lease, len(m.nodes)),
		creating:    make(map[string]time.Time),
		done:        make(chan released, len(m.nodes)),
		renewLog:    throttle{what: "lease renewal"},
		acquireLog:  throttle{what: "lease creation"},
		presenceLog: throttle{what: "presence renewal"},
		connectLog:  throttle{what: "lease bucket watch"},
	}
}

func (s *state) run(ctx context.Context) error {
	defer s.finish()
	ticker := time.NewTicker(s.m.cfg.renew)
	defer ticker.Stop()
	// safety fires at the earliest release-by of the owned leases, so a
	// lease whose renewals stall is given up in time even between ticks.
	safety := time.NewTimer(time.Hour)
	safety.Stop()
	defer safety.Stop()
	var armed time.Time

	if s.connected() {
		if err := s.connect(); errors.Is(err, ErrBucketConfig) {
			return err
		}
	}
	s.renew()
	done := ctx.Done()
	for !s.closing || len(s.leases) > 0 {
		// Release completions come first: a round of KV calls that time
		// out (NATS unreachable) takes longer than the renew interval, and
		// with the ticker always ready a random select could leave a
		// released node counted as owned, and its lease undeleted, for
		// several rounds.
		select {
		case r := <-s.done:
			s.onReleased(r.node, r.at)
			continue
		default:
		}
		var updates <-chan jetstream.KeyValueEntry
		if s.w != nil {
			updates = s.w.Updates()
		}
		select {
		case <-done:
			done = nil
			s.shutdown()
		case <-ticker.C:
			if err := s.tick(); err != nil {
				return err
			}
		case e, ok := <-updates:
			s.checkSafety(time.Now())
			s.onWatch(e, ok)
		case r := <-s.done:
			s.onReleased(r.node, r.at)
		case <-safety.C:
			armed = time.Time{}
			s.checkSafety(time.Now())
		}
		if due := s.dueAt(); !due.Equal(armed) {
			armed = due
			if due.IsZero() {
				safety.Stop()
			} else {
				safety.Reset(time.Until(due))
			}
		}
	}
	return nil
}

// finish stops the watch and waits for every goroutine Run started.
func (s *state) finish() {
	s.stopWatch()
	s.wg.Wait()
	s.m.setOwned(nil)
	s.m.met.replicas.Set(0)
}

// tick is one renew round: reconnect the watch if needed, renew, give up
// excess nodes, take free ones.
func (s *state) tick() error {
	s.round++
	s.checkSafety(time.Now())
	// While NATS is down a watch cannot start; and nats.go counts every
	// reconnect attempt, so the watch restarts once connected again.
	if (s.kv == nil || s.w == nil || s.reconnected()) && s.connected() {
		if err := s.connect(); errors.Is(err, ErrBucketConfig) {
			// Only possible before the bucket was ever bound, so no lease
			// is held.
			return err
		}
	}
	s.renew()
	s.checkSafety(time.Now())
	if !s.closing && s.synced {
		s.rebalance()
		s.acquire()
		s.checkStale()
	}
	return nil
}

// checkStale restarts the watch when the view has been wrong for longer
// than any lease can live. A node held by no live replica (its owner left,
// or a Create of ours failed on a key the view never showed) becomes free
// within a TTL, and the watch shows that as an expiry marker; if that
// entry never came (a watch consumer lost in a NATS server failure), the
// node would wait without a session for good. A fresh watch replays the
// bucket as it is.
func (s *state) checkStale() {
	if s.holding() >= s.share() || !s.hasOrphan() {
		s.stale = 0
		return
	}
	s.stale++
	// Renew rounds per TTL, plus one for the expiry marker to arrive.
	if s.stale <= int(s.m.cfg.ttl/s.m.cfg.renew)+1 {
		return
	}
	s.stale = 0
	s.m.met.resyncs.Inc()
	s.m.log.Warn("a node stayed held by no live replica for longer than the lease ttl; restarting the bucket watch")
	_ = s.connect()
}

// hasOrphan reports a node that, in the view, is neither free, nor ours,
// nor held by a live replica.
func (s *state) hasOrphan() bool {
	for _, n := range s.m.nodes {
		if _, ours := s.leases[n]; ours {
			continue
		}
		owner := s.view[n].owner
		if owner == "" {
			continue
		}
		if _, live := s.peers[owner]; !live {
			return true
		}
	}
	return false
}

// connect binds the bucket if needed and (re)starts the watch, which then
// delivers the bucket's current contents and every change after.
func (s *state) connect() error {
	ctx, cancel := s.callCtx()
	defer cancel()
	log := s.m.log
	if s.kv == nil {
		kv, err := s.m.bind(ctx)
		if errors.Is(err, ErrBucketConfig) {
			log.Error("lease bucket unusable", zap.Error(err))
			return err
		}
		if err != nil {
			s.m.met.kvErrors.WithLabelValues(opBind).Inc()
			s.connectLog.fail(log, 1, err, time.Now())
			return err
		}
		s.kv = kv
	}
	s.stopWatch()
	s.reconnects = s.reconnectCount()
	// nats.go ends the watch's subscription when the context passed to
	// WatchAll is done, and uses the same context to bound creating it: so
	// the context lives as long as the watch, and a timer cancels it if
	// creating takes longer than a call may.
	deadline, _ := ctx.Deadline()
	wctx, wcancel := context.WithCancel(s.base)
	timer := time.AfterFunc(time.Until(deadline), wcancel)
	w, err := s.kv.WatchAll(wctx)
	if !timer.Stop() && err == nil {
		_ = w.Stop()
		for range w.Updates() {
		}
		err = context.DeadlineExceeded
	}
	if err != nil {
		wcancel()
		s.m.met.kvErrors.WithLabelValues(opWatch).Inc()
		s.connectLog.fail(log, 1, err, time.Now())
		return err
	}
	s.connectLog.ok(log)
	s.w, s.wcancel = w, wcancel
	// The new watch replays the bucket's contents: start the view afresh.
	// Owned leases keep their own revisions.
	clear(s.view)
	clear(s.peers)
	s.m.met.replicas.Set(1)
	return nil
}

// stopWatch stops the watcher and drains its channel: the nats.go callback
// may be blocked sending to it, and only then can the subscription close.
// It cancels the watch's context rather than calling Stop: nats.go then
// unsubscribes on a goroutine of its own, and deleting the consumer, which
// waits for the server up to the JetStream timeout when NATS is down, does
// not hold up this loop. The channel closes as soon as the subscription is
// removed, before that delete.
func (s *state) stopWatch() {
	if s.w == nil {
		return
	}
	s.wcancel()
	for range s.w.Updates() {
	}
	s.w, s.wcancel = nil, nil
	s.synced = false
}

// reconnected reports whether the NATS connection reconnected since the
// watch started. The watch's consumer may not have survived, so the watch
// is restarted: checked once per round, not polled.
func (s *state) reconnected() bool { return s.reconnectCount() != s.reconnects }

func (s *state) reconnectCount() uint64 {
	if nc := s.m.js.Conn(); nc != nil {
		return nc.Stats().Reconnects
	}
	return 0
}

// connected is false while the NATS connection is down, when a KV call
// would only wait for its timeout.
func (s *state) connected() bool {
	nc := s.m.js.Conn()
	return nc == nil || nc.IsConnected()
}

// releaseBy is when a lease not renewed since must be given up.
func (s *state) releaseBy(l *lease) time.Time {
	return l.sent.Add(s.m.cfg.ttl - s.m.cfg.margin)
}

// dueAt returns the earliest release-by of the leases still trusted (zero if
// none), recomputed after lease changes.
func (s *state) dueAt() time.Time {
	if s.dueDirty {
		s.dueDirty = false
		s.due = time.Time{}
		for _, l := range s.leases {
			if l.lost || l.atRisk {
				continue
			}
			if rb := s.releaseBy(l); s.due.IsZero() || rb.Before(s.due) {
				s.due = rb
			}
		}
	}
	return s.due
}

// callCtx bounds a KV call made on Run's goroutine by the op timeout and by
// the earliest release-by, so that a hung call never delays giving up a
// lease.
func (s *state) callCtx() (context.Context, context.CancelFunc) {
	d := time.Now().Add(s.m.opTimeout())
	if due := s.dueAt(); !due.IsZero() && due.Before(d) {
		d = due
	}
	return context.WithDeadline(s.base, d)
}

// checkSafety gives up every trusted lease whose release-by has passed.
func (s *state) checkSafety(now time.Time) {
	if due := s.dueAt(); due.IsZero() || now.Before(due) {
		return
	}
	var nodes []string
	var oldest time.Duration
	for _, l := range s.sortedLeases() {
		if !l.lost && !l.atRisk && !now.Before(s.releaseBy(l)) {
			s.markAtRisk(l)
			nodes = append(nodes, l.node)
			oldest = max(oldest, now.Sub(l.sent))
		}
	}
	if len(nodes) == 0 {
		return
	}
	// One line for all: with NATS down every lease goes at once.
	s.m.log.Warn("leases not renewed in time; releasing their nodes before the leases can expire",
		zap.Strings("nodes", nodes), zap.Duration("since_renewal", oldest))
}

// holding counts the owned leases not being given up.
func (s *state) holding() int {
	n := 0
	for _, l := range s.leases {
		if !l.releasing {
			n++
		}
	}
	return n
}

func (s *state) share() int { return share(len(s.m.nodes), 1+len(s.peers)) }

// sortedLeases returns the leases in node order, for deterministic rounds
// and logs.
func (s *state) sortedLeases() []*lease {
	out := make([]*lease, 0, len(s.leases))
	for _, l := range s.leases {
		out = append(out, l)
	}
	slices.SortFunc(out, func(a, b *lease) int { return strings.Compare(a.node, b.node) })
	return out
}

// publishOwned refreshes the snapshot behind Owned and the gauge.
func (s *state) publishOwned() {
	owned := make([]string, 0, len(s.leases))
	for n := range s.leases {
		owned = append(owned, n)
	}
	slices.Sort(owned)
	s.m.setOwned(owned)
}

// shutdown starts the hand-over: presence first, so that the others' share
// grows before the leases are freed, then every node's Release.
func (s *state) shutdown() {
	s.closing = true
	s.m.log.Info("handing over nodes", zap.Int("nodes", len(s.leases)))
	if s.kv != nil && s.connected() {
		ctx, cancel := s.callCtx()
		if err := s.kv.Delete(ctx, presenceKey(s.m.instance)); err != nil {
			s.m.met.kvErrors.WithLabelValues(opPresence).Inc()
			s.m.log.Warn("deleting presence failed; it expires after the ttl", zap.Error(err))
		}
		cancel()
	}
	for _, l := range s.sortedLeases() {
		if !l.releasing {
			s.startRelease(l, reasonShutdown, time.Now().Add(s.m.cfg.drainTimeout))
		}
	}
}
