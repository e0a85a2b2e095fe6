package ownership

import (
	"cmp"
	"context"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// renewResult is the outcome of one lease update in a renewal round.
type renewResult struct {
	rev  uint64
	sent time.Time
	lost bool // the key holds another writer's value or was deleted
	err  error
}

// renew rewrites every owned lease (compare-and-set on its revision), then
// this replica's presence. Leases go first: they matter more, and a hung
// presence write must not eat their time.
func (s *state) renew() {
	s.renewFailed = false
	if s.kv == nil {
		return
	}
	if !s.connected() {
		s.renewFailed = true
		// Every call would wait for its timeout and keep the loop from
		// Release completions; the leases' safety does not need them.
		if n := s.trusted(); n > 0 {
			s.m.met.kvErrors.WithLabelValues(opUpdate).Add(float64(n))
			s.renewLog.fail(s.m.log, n, errNotConnected, time.Now())
		}
		return
	}
	s.renewLeases()
	if !s.closing { // presence was deleted at shutdown
		s.renewPresence()
	}
}

// trusted counts the owned leases not lost to another writer.
func (s *state) trusted() int {
	n := 0
	for _, l := range s.leases {
		if !l.lost {
			n++
		}
	}
	return n
}

// renewLeases updates the leases on up to renewWorkers goroutines, all
// bounded by one deadline, and applies the results on the loop.
func (s *state) renewLeases() {
	type target struct {
		l    *lease
		node string
		rev  uint64
	}
	var targets []target
	for _, l := range s.sortedLeases() {
		// A lease at risk is being given up by its own deadline; renewing
		// it would only spend the round's time while NATS is unreachable.
		if !l.lost && !l.atRisk {
			targets = append(targets, target{l, l.node, l.rev})
		}
	}
	if len(targets) == 0 {
		return
	}
	ctx, cancel := s.callCtx()
	defer cancel()
	results := make([]renewResult, len(targets))
	var (
		next atomic.Int64
		wg   sync.WaitGroup
	)
	for range min(renewWorkers, len(targets)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= len(targets) {
					return
				}
				results[i] = s.renewOne(ctx, targets[i].node, targets[i].rev)
			}
		}()
	}
	wg.Wait()
	failed := 0
	var lastErr error
	for i, r := range results {
		l := targets[i].l
		switch {
		case r.err == nil:
			l.rev, l.sent = r.rev, r.sent
			s.view[l.node] = viewEntry{owner: s.m.instance, rev: r.rev}
			s.dueDirty = true
		case r.lost:
			s.lose(l, "renewal found the lease changed or deleted by another writer", r.err)
		default:
			failed++
			lastErr = r.err
		}
	}
	if failed > 0 {
		s.renewFailed = true
		s.m.met.kvErrors.WithLabelValues(opUpdate).Add(float64(failed))
		s.renewLog.fail(s.m.log, failed, lastErr, time.Now())
	} else {
		s.renewLog.ok(s.m.log)
	}
}

func (s *state) renewPresence() {
	ctx, cancel := s.callCtx()
	defer cancel()
	if _, err := s.kv.Put(ctx, presenceKey(s.m.instance), s.m.value); err != nil {
		s.renewFailed = true
		s.m.met.kvErrors.WithLabelValues(opPresence).Inc()
		s.presenceLog.fail(s.m.log, 1, err, time.Now())
		return
	}
	s.presenceLog.ok(s.m.log)
}

// renewOne updates one lease; it runs on a renewal worker and touches only
// the bucket.
func (s *state) renewOne(ctx context.Context, node string, rev uint64) renewResult {
	key := leaseKey(node)
	sent := time.Now()
	newRev, err := s.kv.Update(ctx, key, s.m.value, rev)
	if err == nil {
		return renewResult{rev: newRev, sent: sent}
	}
	if !isConflict(err) {
		return renewResult{err: err}
	}
	// The revision moved. If the latest value is still ours, an earlier
	// renewal was stored but its answer was lost (timeout): nobody else
	// wrote after it, so renew on top of it.
	e, gerr := s.kv.Get(ctx, key)
	switch {
	case gerr == nil && string(e.Value()) == s.m.instance:
		sent = time.Now()
		newRev, err = s.kv.Update(ctx, key, s.m.value, e.Revision())
		if err == nil {
			return renewResult{rev: newRev, sent: sent}
		}
		return renewResult{lost: isConflict(err), err: err}
	case gerr == nil, errors.Is(gerr, jetstream.ErrKeyNotFound), errors.Is(gerr, jetstream.ErrKeyDeleted):
		return renewResult{lost: true, err: err}
	default:
		return renewResult{err: gerr}
	}
}

// acquire creates leases on free nodes until this replica holds its share:
// first the nodes for which it is the preferred live replica, then by its
// own score, so that replicas seldom race for the same key.
func (s *state) acquire() {
	// After a round whose renewals failed, NATS is not answering: a Create
	// would only wait for its timeout, and a node taken now would be at
	// risk at once.
	if s.closing || !s.synced || s.kv == nil || s.renewFailed || !s.connected() {
		return
	}
	want := s.share() - s.holding()
	if want <= 0 {
		return
	}
	type candidate struct {
		node  string
		pref  bool
		score uint64
	}
	var cands []candidate
	for _, n := range s.m.nodes {
		if _, owned := s.leases[n]; owned || s.view[n].owner != "" {
			continue
		}
		cands = append(cands, candidate{n, preferred(n, s.m.instance, s.peers), score(n, s.m.instance)})
	}
	if len(cands) == 0 {
		return
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		if a.pref != b.pref {
			if a.pref {
				return -1
			}
			return 1
		}
		return cmp.Compare(b.score, a.score)
	})
	ctx, cancel := s.callCtx()
	defer cancel()
	took := 0
	for _, c := range cands {
		if took == want {
			break
		}
		sent := time.Now()
		rev, err := s.create(ctx, c.node)
		if err != nil {
			s.m.log.Debug("lease create failed", zap.String("node", c.node), zap.Bool("conflict", isConflict(err)), zap.Error(err))
			// Whatever the error says, the server may have stored this
			// Create (an answer lost or late, a retried request): if the
			// watch shows our value, the lease is ours (see apply).
			s.creating[c.node] = sent
		}
		if isConflict(err) {
			v := s.view[c.node]
			v.owner = unknownOwner
			s.view[c.node] = v
			continue
		}
		if err != nil {
			// The pass's time is up after progress: the next round goes on.
			if !(took > 0 && ctx.Err() != nil) {
				s.m.met.kvErrors.WithLabelValues(opCreate).Inc()
				s.acquireLog.fail(s.m.log, 1, err, time.Now())
			}
			return
		}
		s.acquireLog.ok(s.m.log)
		s.take(c.node, rev, sent)
		took++
	}
}

// create writes a new lease for node, which the view shows free. When the
// watch showed the key's delete or expiry marker, the lease replaces that
// marker by its revision. nats.go's Create does the same, but it learns the
// marker's revision with a read that a stream follower may answer before it
// applied the delete: it then sees the old lease, reports "key exists", and
// the node waits a whole TTL for the marker to expire. The watch's revision
// has no such lag.
func (s *state) create(ctx context.Context, node string) (uint64, error) {
	key := leaseKey(node)
	if rev := s.view[node].rev; rev > 0 {
		r, err := s.kv.Update(ctx, key, s.m.value, rev)
		if err == nil || !isConflict(err) {
			return r, err
		}
		// The marker is gone (it expired, or someone wrote after it).
	}
	return s.kv.Create(ctx, key, s.m.value)
}

// take records a lease just created and starts the node.
func (s *state) take(node string, rev uint64, sent time.Time) {
	s.leases[node] = &lease{node: node, rev: rev, sent: sent}
	s.view[node] = viewEntry{owner: s.m.instance, rev: rev}
	s.dueDirty = true
	s.publishOwned()
	s.m.met.acquired.WithLabelValues(node).Inc()
	s.m.log.Info("node acquired", zap.String("node", node), zap.Uint64("revision", rev))
	s.m.cfg.acquire(node)
}

// rebalance gives up nodes above the fair share, at most step per round and
// at most step in flight: first those for which another live replica is
// preferred, lowest own score first.
func (s *state) rebalance() {
	n := min(s.holding()-s.share(), s.m.cfg.step-s.rebalancing)
	if n <= 0 {
		return
	}
	type candidate struct {
		l     *lease
		pref  bool
		score uint64
	}
	var cands []candidate
	for _, l := range s.leases {
		if !l.releasing {
			cands = append(cands, candidate{l, preferred(l.node, s.m.instance, s.peers), score(l.node, s.m.instance)})
		}
	}
	slices.SortFunc(cands, func(a, b candidate) int {
		if a.pref != b.pref {
			if a.pref {
				return 1
			}
			return -1
		}
		return cmp.Compare(a.score, b.score)
	})
	given := make([]string, 0, n)
	for _, c := range cands[:n] {
		s.rebalancing++
		s.startRelease(c.l, reasonRebalance, time.Now().Add(s.m.cfg.drainTimeout))
		given = append(given, c.l.node)
	}
	s.m.log.Info("rebalancing", zap.Strings("nodes", given), zap.Int("share", s.share()), zap.Int("replicas", 1+len(s.peers)))
	if h := s.m.hookRebalance; h != nil {
		h(s.round, given)
	}
}

// startRelease calls Release on a goroutine of its own; the lease stays
// owned (and renewed, unless lost) until Release returns.
func (s *state) startRelease(l *lease, reason string, deadline time.Time) {
	l.releasing = true
	l.reason = reason
	ctx, cancel := context.WithDeadline(s.base, deadline)
	l.cancel = cancel
	s.dueDirty = true
	s.wg.Add(1)
	go func(node string) {
		defer s.wg.Done()
		s.m.cfg.release(ctx, node)
		s.done <- released{node: node, at: time.Now()}
	}(l.node)
}

// lose handles a lease another writer changed or deleted: the node is no
// longer ours, so its session must stop now.
func (s *state) lose(l *lease, why string, err error) {
	if l.lost {
		return
	}
	l.lost = true
	s.dueDirty = true
	if !l.atRisk {
		s.m.met.lost.WithLabelValues(l.node).Inc()
	}
	s.m.log.Warn("node lease lost; releasing at once", zap.String("node", l.node), zap.String("why", why), zap.Error(err))
	if l.releasing {
		l.cancel()
		return
	}
	s.startRelease(l, reasonLost, time.Now())
}

// markAtRisk gives up a lease that was not renewed in time, while it still
// exists in the store: Release's deadline leaves half the margin before the
// earliest time another replica could create it.
func (s *state) markAtRisk(l *lease) {
	l.atRisk = true
	s.dueDirty = true
	s.m.met.lost.WithLabelValues(l.node).Inc()
	if l.releasing {
		l.cancel()
		return
	}
	s.startRelease(l, reasonAtRisk, l.sent.Add(s.m.cfg.ttl-s.m.cfg.margin/2))
}

// onReleased ends a lease whose Release returned, and deletes it (unless it
// was lost) so that another replica can take the node at once.
func (s *state) onReleased(node string, at time.Time) {
	l := s.leases[node]
	if l == nil {
		return
	}
	l.cancel()
	if at.After(l.sent.Add(s.m.cfg.ttl)) {
		s.m.met.releaseLate.WithLabelValues(node).Inc()
		s.m.log.Warn("Release returned after the node's lease may have expired", zap.String("node", node),
			zap.Duration("since_renewal", at.Sub(l.sent)))
	}
	delete(s.leases, node)
	if l.reason == reasonRebalance {
		s.rebalancing--
	}
	s.dueDirty = true
	s.publishOwned()
	s.m.met.released.WithLabelValues(node, l.reason).Inc()
	s.m.log.Info("node released", zap.String("node", node), zap.String("reason", l.reason), zap.Bool("lost", l.lost))
	if l.lost {
		// The watch may already have shown the key freed while Release
		// ran; nothing else would make us look again before the next round.
		s.acquire()
		return
	}
	// Until the watch shows the delete, the node is not free for us either.
	if l.rev >= s.view[node].rev {
		s.view[node] = viewEntry{owner: s.m.instance, rev: l.rev}
	}
	s.deleteLease(node, l.rev)
}

// deleteLease deletes a lease of ours at revision rev, on a goroutine: the
// session is already closed, so only the hand-over's speed depends on it,
// and with NATS down the lease simply expires.
func (s *state) deleteLease(node string, rev uint64) {
	if s.kv == nil || !s.connected() {
		return
	}
	kv, timeout, log, met, instance := s.kv, s.m.opTimeout(), s.m.log, s.m.met, s.m.instance
	// While closing, this replica takes no node again, and its watch ends
	// with its last lease: it must clean up its own late writes itself.
	closing := s.closing
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.base, timeout)
		defer cancel()
		key := leaseKey(node)
		err := kv.Delete(ctx, key, jetstream.LastRevision(rev))
		if closing && isConflict(err) {
			// A renewal of ours stored after its answer timed out moved the
			// revision; if the latest value is still ours, delete that.
			if e, gerr := kv.Get(ctx, key); gerr == nil && string(e.Value()) == instance {
				rev = e.Revision()
				err = kv.Delete(ctx, key, jetstream.LastRevision(rev))
			}
		}
		log.Debug("lease delete", zap.String("node", node), zap.Uint64("revision", rev), zap.Error(err))
		switch {
		case err == nil:
		case isConflict(err):
			// Changed since: either taken after expiry, or one of our own
			// late writes, which the watch reports and cleans up.
		default:
			met.kvErrors.WithLabelValues(opDelete).Inc()
			log.Info("deleting released lease failed; it expires after the ttl", zap.String("node", node), zap.Error(err))
		}
	}()
}

// onWatch applies a watch entry and whatever else is already queued, then
// tries to take free nodes if any appeared.
func (s *state) onWatch(e jetstream.KeyValueEntry, ok bool) {
	if !ok {
		s.watchClosed()
		return
	}
	changed := s.apply(e)
	updates := s.w.Updates()
batch:
	for range watchBatch - 1 {
		select {
		case e, ok := <-updates:
			if !ok {
				s.watchClosed()
				return
			}
			changed = s.apply(e) || changed
		default:
			break batch
		}
	}
	if changed {
		s.acquire()
	}
}

func (s *state) watchClosed() {
	s.m.log.Warn("lease bucket watch ended; restarting it on the next round")
	s.m.met.kvErrors.WithLabelValues(opWatch).Inc()
	s.wcancel()
	s.w, s.wcancel = nil, nil
	s.synced = false
}

// apply records one watch entry. It reports whether a node may have become
// free for this replica (a lease freed, a replica left, the initial
// contents complete).
func (s *state) apply(e jetstream.KeyValueEntry) bool {
	if e == nil { // end of the initial contents
		s.synced = true
		return true
	}
	key := e.Key()
	if len(key) > len(presencePrefix) && key[:len(presencePrefix)] == presencePrefix {
		return s.applyPresence(key[len(presencePrefix):], e.Operation() == jetstream.KeyValuePut)
	}
	if len(key) <= len(leasePrefix) || key[:len(leasePrefix)] != leasePrefix {
		return false
	}
	node := key[len(leasePrefix):]
	if _, ok := s.m.isNode[node]; !ok {
		return false // another configuration's node
	}
	rev := e.Revision()
	// Every renewal of every replica passes here: build the fields only
	// when debug logging is on.
	if ce := s.m.log.Check(zap.DebugLevel, "lease entry"); ce != nil {
		ce.Write(zap.String("node", node), zap.Uint64("revision", rev), zap.String("op", e.Operation().String()),
			zap.ByteString("value", e.Value()), zap.Uint64("view_revision", s.view[node].rev), zap.String("view_owner", s.view[node].owner))
	}
	if rev <= s.view[node].rev {
		return false // our own write, already recorded
	}
	owner := ""
	if e.Operation() == jetstream.KeyValuePut {
		owner = string(e.Value())
	}
	s.view[node] = viewEntry{owner: owner, rev: rev}
	if l := s.leases[node]; l != nil {
		if rev <= l.rev || l.lost {
			return false
		}
		if owner == s.m.instance {
			// A renewal of ours whose answer was lost: it was sent after
			// l.sent, so l.sent still bounds the lease's expiry.
			l.rev = rev
			return false
		}
		why := "lease deleted or expired in the store"
		if owner != "" {
			why = "lease taken by " + owner
		}
		s.lose(l, why, nil)
		return false
	}
	sent, creating := s.creating[node]
	delete(s.creating, node)
	if owner == s.m.instance {
		s.m.log.Debug("watch shows a lease of ours we do not hold", zap.String("node", node), zap.Uint64("revision", rev),
			zap.Bool("creating", creating), zap.Int("holding", s.holding()), zap.Int("share", s.share()))
		// A Create whose answer was lost: the node is ours if we still want
		// it and the lease is young enough to be held safely. Otherwise (or
		// a renewal replayed after we gave the node up) free it at once
		// rather than leave the node without a session for a TTL.
		if creating && !s.closing && s.holding() < s.share() && time.Now().Before(sent.Add(s.m.cfg.ttl-s.m.cfg.margin)) {
			s.take(node, rev, sent)
			return false
		}
		s.deleteLease(node, rev)
		return false
	}
	return owner == ""
}

func (s *state) applyPresence(instance string, put bool) bool {
	if instance == s.m.instance {
		return false
	}
	_, known := s.peers[instance]
	switch {
	case put && !known:
		if len(s.peers) >= maxPeers {
			s.m.met.presenceIgnored.Inc()
			return false
		}
		s.peers[instance] = struct{}{}
		s.m.log.Info("replica joined", zap.String("peer", instance), zap.Int("replicas", 1+len(s.peers)))
	case !put && known:
		delete(s.peers, instance)
		s.m.log.Info("replica left", zap.String("peer", instance), zap.Int("replicas", 1+len(s.peers)))
	default:
		return false
	}
	s.m.met.replicas.Set(float64(1 + len(s.peers)))
	return !put // a replica leaving raises our share
}
