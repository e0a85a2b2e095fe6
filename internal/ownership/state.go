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
	// watchBatch caps the queued watch entries handled in one loop turn
	// before acting on them (the nats.go watcher queues up to 256).
	watchBatch = 256
	// acquireBatch caps the node entries written in one acquire pass; the
	// loop then handles what the watch queued (a replica joining lowers the
	// share; another's take-over writes show which nodes are gone) before
	// the next pass. Without it a replica starting first takes nodes for
	// a whole call timeout on a share that is already stale.
	acquireBatch = 128
	// unknownOwner marks a node whose entry write failed on a revision
	// mismatch: someone wrote it and the watch will say who.
	unknownOwner = "?"
)

// lease is a node this replica owns, from the write of its entry until its
// Release returned. The entry is not renewed: the replica's liveness key
// fences every node it owns.
type lease struct {
	node      string
	rev       uint64 // revision of our entry
	value     string // the entry's value: instance/incarnation when written
	releasing bool
	reason    string
	cancel    context.CancelFunc // of the context passed to Release
	lost      bool               // another writer changed or deleted it, or the incarnation ended: never delete it
	atRisk    bool               // liveness not renewed in time: Release's context is cancelled
	expiry    time.Time          // when at risk: earliest expiry of the liveness key in the store
}

// liveness is this replica's current incarnation's liveness key.
type liveness struct {
	ok  bool // written under the current incarnation and not known lost
	rev uint64
	// sent is when the latest stored write was sent (monotonic clock): the
	// key lives in the store at least until sent+TTL.
	sent time.Time
}

// peer is another replica's liveness as the watch last showed it.
type peer struct {
	inc     string
	leaving bool      // handing over: fences its nodes, not counted in the share
	seen    time.Time // when the watch last showed a write of its key
}

// released reports that a node's Release returned, and when.
type released struct {
	node string
	at   time.Time
}

// viewEntry is the latest state of a node's entry seen on the watch (or
// written by this replica).
type viewEntry struct {
	owner string // the entry's value (instance/incarnation); "" when free
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

	// inc is this replica's current incarnation ("" before the first) and
	// value its node entries' value, instance/inc.
	inc, value string
	live       liveness

	view   map[string]viewEntry // cap: one entry per configured node
	peers  map[string]peer      // other live replicas; cap maxPeers
	leases map[string]*lease    // cap: one per configured node
	// overflow: a liveness key was ignored (maxPeers): no entry is taken
	// over, since its owner may be that replica. Reset by a new watch.
	overflow bool
	// creating holds the nodes whose entry write returned an error (it may
	// still have been stored): if the watch shows it stored, the node is
	// ours. Cap: one per configured node.
	creating map[string]struct{}
	// done carries Release completions. Cap len(nodes) at Run's start:
	// there is at most one Release per node in flight, so a send does not
	// block unless SetNodes added nodes since, and then only until this
	// loop, which runs until every lease is released, takes it.
	done chan released
	// more asks the loop for another acquire pass (cap 1: one pending
	// request is enough).
	more chan struct{}
	wg   sync.WaitGroup // Release and lease-delete goroutines

	round       uint64
	closing     bool
	rebalancing int // rebalance Releases in flight, at most step

	due      time.Time // the liveness's release-by while a trusted node depends on it; zero: none
	dueDirty bool

	// renewFailed: the latest liveness renewal failed.
	renewFailed bool
	// stale counts the rounds in a row in which this replica was below its
	// share while some node's owner was unknown in its view.
	stale int

	acquireLog, presenceLog, connectLog *failureLog
}

func newState(m *Manager, ctx context.Context) *state {
	return &state{
		m:           m,
		base:        context.WithoutCancel(ctx),
		view:        make(map[string]viewEntry, len(m.nodes)),
		peers:       make(map[string]peer),
		leases:      make(map[string]*lease, len(m.nodes)),
		creating:    make(map[string]struct{}),
		done:        make(chan released, len(m.nodes)),
		more:        make(chan struct{}, 1),
		acquireLog:  newFailureLog(m.log, "node entry write"),
		presenceLog: newFailureLog(m.log, "liveness renewal"),
		connectLog:  newFailureLog(m.log, "lease bucket watch"),
	}
}

func (s *state) run(ctx context.Context) error {
	defer s.finish()
	ticker := time.NewTicker(s.m.cfg.renew)
	defer ticker.Stop()
	// safety fires at the liveness's release-by, so that nodes whose
	// owner's renewals stall are given up in time even between ticks.
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
		case <-s.more:
			s.acquire()
		case <-s.m.nodesSet:
			if nodes := s.m.takeNodes(); nodes != nil && !s.closing {
				s.setNodes(nodes)
			}
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
	// Every node is released; the entry deletes end before the liveness
	// goes, so that the others take the nodes on the deletes, not on the
	// end of this incarnation.
	s.wg.Wait()
	s.deletePresence()
	return nil
}

// deletePresence ends this incarnation at the end of a graceful shutdown.
func (s *state) deletePresence() {
	if s.kv == nil || !s.live.ok || !s.connected() {
		return
	}
	ctx, cancel := s.callCtx()
	defer cancel()
	key := presenceKey(s.m.instance)
	err := s.kv.Delete(ctx, key, jetstream.LastRevision(s.live.rev))
	if isConflict(err) {
		// A renewal stored after its answer was lost moved the revision.
		if e, gerr := s.kv.Get(ctx, key); gerr == nil && s.isOwnPresence(string(e.Value())) {
			err = s.kv.Delete(ctx, key, jetstream.LastRevision(e.Revision()))
		}
	}
	if err != nil && !isConflict(err) {
		s.m.met.kvErrors.WithLabelValues(opPresence).Inc()
		s.m.log.Warn("deleting the liveness key failed; it expires after the ttl", zap.Error(err))
	}
	s.live = liveness{}
}

// setNodes applies a new node list (SetNodes).
func (s *state) setNodes(nodes []string) {
	sorted := slices.Clone(nodes)
	slices.Sort(sorted)
	isNode, _ := nodeSet(sorted) // checked by SetNodes
	var added, removed []string
	for _, n := range sorted {
		if _, ok := s.m.isNode[n]; !ok {
			added = append(added, n)
			s.m.met.acquired.WithLabelValues(n)
			s.m.met.lost.WithLabelValues(n)
		}
	}
	for _, n := range s.m.nodes {
		if _, ok := isNode[n]; !ok {
			removed = append(removed, n)
		}
	}
	s.m.nodes, s.m.isNode = sorted, isNode
	s.m.log.Info("node list changed", zap.Strings("added", added), zap.Strings("removed", removed))
	for _, n := range removed {
		delete(s.view, n)
		delete(s.creating, n)
		if l := s.leases[n]; l != nil && !l.releasing {
			s.startRelease(l, reasonRemoved, time.Now().Add(s.m.cfg.drainTimeout))
		}
	}
	if len(added) > 0 && s.connected() {
		// The watch ignored the added nodes' keys until now: replay the
		// bucket so that the view shows who holds them before any Create.
		_ = s.connect()
	}
}

// finish stops the watch and waits for every goroutine Run started.
func (s *state) finish() {
	s.stopWatch()
	s.wg.Wait()
	s.m.clearOwned()
	s.m.met.replicas.Set(0)
	for _, l := range []*failureLog{s.acquireLog, s.presenceLog, s.connectLog} {
		l.stop()
	}
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
// than any liveness key can live. A peer whose key was not rewritten for a
// TTL has expired, and the watch shows that as an expiry marker; if that
// entry never came (a watch consumer lost in a NATS server failure), its
// nodes would wait without a session for good. Likewise a node whose entry
// write failed on a key the view never showed. A fresh watch replays the
// bucket as it is.
func (s *state) checkStale() {
	now := time.Now()
	for _, p := range s.peers {
		if now.Sub(p.seen) > s.m.cfg.ttl+s.m.cfg.renew {
			s.resync("a replica's liveness key was not rewritten for longer than the ttl and its expiry never came")
			return
		}
	}
	if s.holding() >= s.share() || !s.hasUnknown() {
		s.stale = 0
		return
	}
	s.stale++
	// Renew rounds per TTL, plus one for the expiry marker to arrive.
	if s.stale <= int(s.m.cfg.ttl/s.m.cfg.renew)+1 {
		return
	}
	s.resync("a node's owner stayed unknown for longer than the ttl")
}

func (s *state) resync(why string) {
	s.stale = 0
	s.m.met.resyncs.Inc()
	s.m.log.Warn("restarting the bucket watch", zap.String("why", why))
	_ = s.connect()
}

// hasUnknown reports a node whose owner the view does not know, or whose
// entry is not this protocol's.
func (s *state) hasUnknown() bool {
	for _, n := range s.m.nodes {
		if _, ours := s.leases[n]; ours {
			continue
		}
		owner := s.view[n].owner
		if _, _, ok := parseOwner(owner); owner != "" && !ok {
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
			s.connectLog.fail(1, err)
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
		s.connectLog.fail(1, err)
		return err
	}
	s.connectLog.ok()
	s.w, s.wcancel = w, wcancel
	// The new watch replays the bucket's contents: start the view afresh.
	// Owned leases keep their own revisions.
	clear(s.view)
	clear(s.peers)
	s.overflow = false
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

// releaseBy is when the nodes must be given up if the liveness key is not
// renewed before.
func (s *state) releaseBy() time.Time {
	return s.live.sent.Add(s.m.cfg.ttl - s.m.cfg.margin)
}

// trustedLive reports whether this incarnation's liveness fences its nodes
// at now.
func (s *state) trustedLive(now time.Time) bool {
	return s.live.ok && now.Before(s.releaseBy())
}

// dueAt returns the release-by of the liveness if a trusted node depends
// on it (zero if none), recomputed after changes.
func (s *state) dueAt() time.Time {
	if s.dueDirty {
		s.dueDirty = false
		s.due = time.Time{}
		if s.live.ok && s.countLeases(func(l *lease) bool { return !l.lost && !l.atRisk }) > 0 {
			s.due = s.releaseBy()
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

// checkSafety gives up every trusted node once the liveness's release-by
// has passed: they all go together, fenced by the one key.
func (s *state) checkSafety(now time.Time) {
	if due := s.dueAt(); due.IsZero() || now.Before(due) {
		return
	}
	var nodes []string
	for _, l := range s.sortedLeases() {
		if !l.lost && !l.atRisk {
			s.markAtRisk(l)
			nodes = append(nodes, l.node)
		}
	}
	if len(nodes) == 0 {
		return
	}
	// One line for all, with a count: at 10,000 nodes the list is long.
	s.m.log.Warn("liveness not renewed in time; releasing every node before the liveness key can expire",
		zap.Int("nodes", len(nodes)), zap.Duration("since_renewal", now.Sub(s.live.sent)))
}

// holding counts the owned leases not being given up.
func (s *state) holding() int { return s.countLeases(func(l *lease) bool { return !l.releasing }) }

func (s *state) share() int { return share(len(s.m.nodes), s.replicas()) }

// replicas counts the live replicas that share the nodes: this one and the
// peers not leaving.
func (s *state) replicas() int {
	n := 1
	for _, p := range s.peers {
		if !p.leaving {
			n++
		}
	}
	return n
}

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

// shutdown starts the hand-over: the liveness is rewritten as leaving
// first, so that the others' share grows before the entries are deleted
// (it keeps fencing the nodes not yet released), then every node's Release.
func (s *state) shutdown() {
	s.closing = true
	s.m.log.Info("handing over nodes", zap.Int("nodes", len(s.leases)))
	if s.kv != nil && s.connected() && s.live.ok {
		s.renewLiveness()
	}
	for _, l := range s.sortedLeases() {
		if !l.releasing {
			s.startRelease(l, reasonShutdown, time.Now().Add(s.m.cfg.drainTimeout))
		}
	}
}

// countLeases counts the owned nodes for which keep is true.
func (s *state) countLeases(keep func(*lease) bool) int {
	n := 0
	for _, l := range s.leases {
		if keep(l) {
			n++
		}
	}
	return n
}
