package ownership

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
)

// leavingSuffix marks the liveness value of a replica handing its nodes
// over: it still fences them, but no longer counts in the fair share.
const leavingSuffix = " leaving"

// newIncarnation returns a fresh random incarnation id.
func newIncarnation() string {
	var b [8]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

// parseOwner splits a node entry value "<instance>/<incarnation>". ok is
// false for any other value (a lease of the per-node protocol, a foreign
// writer): such an entry is never taken over, only once deleted or expired.
func parseOwner(v string) (instance, inc string, ok bool) {
	instance, inc, ok = strings.Cut(v, "/")
	return instance, inc, ok && instance != "" && inc != ""
}

// parsePresence splits a liveness value "<incarnation>[ leaving]".
func parsePresence(v string) (inc string, leaving bool) {
	inc, leaving = strings.CutSuffix(v, leavingSuffix)
	return inc, leaving
}

// presenceValue is this replica's liveness value.
func (s *state) presenceValue() []byte {
	if s.closing {
		return []byte(s.inc + leavingSuffix)
	}
	return []byte(s.inc)
}

// renew rewrites this replica's liveness key: one write per round, however
// many nodes it owns.
func (s *state) renew() {
	s.renewFailed = false
	if s.kv == nil {
		return
	}
	if !s.connected() {
		s.renewFailed = true
		// The call would only wait for its timeout; the nodes' safety does
		// not need it.
		s.m.met.kvErrors.WithLabelValues(opPresence).Inc()
		s.presenceLog.fail(1, errNotConnected)
		return
	}
	s.renewLiveness()
}

// renewLiveness writes the liveness key by compare-and-set on its last
// revision, or starts a new incarnation when there is none.
func (s *state) renewLiveness() {
	ctx, cancel := s.callCtx()
	defer cancel()
	key := presenceKey(s.m.instance)
	if !s.live.ok {
		if s.closing {
			return // nothing to fence, nothing to announce
		}
		s.startIncarnation(ctx, key)
		return
	}
	sent := time.Now()
	rev, err := s.kv.Update(ctx, key, s.presenceValue(), s.live.rev)
	if err != nil && isConflict(err) {
		// The revision moved. If the latest value is still this
		// incarnation's, an earlier renewal was stored but its answer was
		// lost: nobody else wrote after it, so renew on top of it.
		e, gerr := s.kv.Get(ctx, key)
		switch {
		case gerr == nil && e.Operation() == jetstream.KeyValuePut && s.isOwnPresence(string(e.Value())):
			sent = time.Now()
			rev, err = s.kv.Update(ctx, key, s.presenceValue(), e.Revision())
		case gerr == nil, errors.Is(gerr, jetstream.ErrKeyNotFound), errors.Is(gerr, jetstream.ErrKeyDeleted):
			s.livenessLost("the liveness key expired or was overwritten", err)
			return
		default:
			err = gerr
		}
	}
	if err != nil {
		if isConflict(err) {
			s.livenessLost("the liveness key changed during renewal", err)
			return
		}
		s.renewFailed = true
		s.m.met.kvErrors.WithLabelValues(opPresence).Inc()
		s.presenceLog.fail(1, err)
		return
	}
	s.live.rev, s.live.sent = rev, sent
	s.dueDirty = true
	s.presenceLog.ok()
}

// isOwnPresence reports a liveness value of this incarnation.
func (s *state) isOwnPresence(v string) bool {
	inc, _ := parsePresence(v)
	return inc == s.inc
}

// startIncarnation announces this replica under a new incarnation id. Node
// entries of an earlier incarnation (this process before its liveness
// expired, or a predecessor with the same instance id) are not its own:
// it takes them only by compare-and-set, like any other replica.
func (s *state) startIncarnation(ctx context.Context, key string) {
	if s.inc == "" {
		// Kept across failed attempts: a Put replayed late from nats.go's
		// reconnect buffer then carries the value this incarnation writes
		// anyway, and cannot end it.
		s.inc = newIncarnation()
		s.value = s.m.instance + "/" + s.inc
	}
	// Unconditional: the instance id is unique, so whatever the key holds
	// (a predecessor that died within the TTL, this process's ended
	// incarnation) is over. Renewals are compare-and-set from here on.
	sent := time.Now()
	rev, err := s.kv.Put(ctx, key, s.presenceValue())
	if err != nil {
		s.renewFailed = true
		s.m.met.kvErrors.WithLabelValues(opPresence).Inc()
		s.presenceLog.fail(1, err)
		return
	}
	s.live = liveness{ok: true, rev: rev, sent: sent}
	s.dueDirty = true
	s.presenceLog.ok()
	s.m.log.Info("liveness announced", zap.String("incarnation", s.inc), zap.Uint64("revision", rev))
}

// livenessLost ends this incarnation: its liveness key expired (the safety
// rule has normally released every node already) or someone overwrote it.
// Every node still held is lost; the next round starts a new incarnation.
func (s *state) livenessLost(why string, err error) {
	s.m.log.Warn("liveness lost; releasing every node and starting a new incarnation",
		zap.String("incarnation", s.inc), zap.String("why", why), zap.Error(err))
	s.live = liveness{}
	s.inc, s.value = "", ""
	s.dueDirty = true
	for _, l := range s.sortedLeases() {
		s.lose(l, why, err)
	}
}

// acquire writes node entries on free nodes, and on nodes whose owner's
// incarnation is over, until this replica holds its share: first the nodes
// for which it is the preferred live replica, then by its own score, so
// that replicas seldom race for the same key.
func (s *state) acquire() {
	// After a round whose renewal failed, NATS is not answering: a write
	// would only wait for its timeout, and a node taken now would be at
	// risk at once.
	if s.closing || !s.synced || s.kv == nil || s.renewFailed || !s.connected() || !s.trustedLive(time.Now()) {
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
		if _, owned := s.leases[n]; owned || s.held(s.view[n].owner) {
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
		if took == acquireBatch {
			s.askMore()
			break
		}
		rev, err := s.create(ctx, c.node)
		if err != nil {
			s.m.log.Debug("node entry write failed", zap.String("node", c.node), zap.Bool("conflict", isConflict(err)), zap.Error(err))
			// Whatever the error says, the server may have stored this
			// write (an answer lost or late): if the watch shows our
			// value, the node is ours (see apply).
			s.creating[c.node] = struct{}{}
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
				s.acquireLog.fail(1, err)
			}
			return
		}
		s.acquireLog.ok()
		s.take(c.node, rev)
		took++
	}
}

// askMore asks the loop for another acquire pass once it has handled what
// is queued.
func (s *state) askMore() {
	select {
	case s.more <- struct{}{}:
	default:
	}
}

// create writes this incarnation's entry for node, by compare-and-set on
// the revision the watch showed: the entry of a dead incarnation (take-over:
// two survivors cannot both win), a delete or expiry marker, or nothing
// (revision 0: the key must have no entry). Using the watch's revision
// rather than nats.go's Create also avoids its read of the marker, which a
// stream follower may answer before it applied the delete.
func (s *state) create(ctx context.Context, node string) (uint64, error) {
	v := s.view[node]
	rev, err := s.writeEntry(ctx, node, v.rev)
	if err != nil && isConflict(err) && v.owner == "" && v.rev > 0 {
		// The marker is gone (it expired): the key may have no entry now.
		return s.writeEntry(ctx, node, 0)
	}
	return rev, err
}

// writeEntry publishes node's entry with this incarnation's value, if the
// key's last revision is rev. The entry carries Nats-TTL "never": the
// bucket's TTL applies to liveness keys only, so an entry stays until its
// owner deletes it or another replica replaces it.
func (s *state) writeEntry(ctx context.Context, node string, rev uint64) (uint64, error) {
	msg := nats.NewMsg("$KV." + s.kv.Bucket() + "." + leaseKey(node))
	msg.Data = []byte(s.value)
	msg.Header.Set(jetstream.MsgTTLHeader, "never")
	ack, err := s.m.js.PublishMsg(ctx, msg, jetstream.WithExpectLastSequencePerSubject(rev))
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// take records a node entry just written and starts the node.
func (s *state) take(node string, rev uint64) {
	s.leases[node] = &lease{node: node, rev: rev, value: s.value}
	s.view[node] = viewEntry{owner: s.value, rev: rev}
	s.dueDirty = true
	s.m.setOwned(node, true)
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
	s.m.log.Info("rebalancing", zap.Strings("nodes", given), zap.Int("share", s.share()), zap.Int("replicas", s.replicas()))
	if h := s.m.hookRebalance; h != nil {
		h(s.round, given)
	}
}

// startRelease calls Release on a goroutine of its own; the node stays
// owned (its entry in place, the liveness renewed) until Release returns.
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

// lose handles a node entry another writer changed or deleted, or an
// incarnation that ended: the node is no longer ours, so its session must
// stop now.
func (s *state) lose(l *lease, why string, err error) {
	if l.lost {
		return
	}
	l.lost = true
	s.dueDirty = true
	if !l.atRisk {
		s.m.met.lost.WithLabelValues(l.node).Inc()
	}
	s.m.log.Warn("node lost; releasing at once", zap.String("node", l.node), zap.String("why", why), zap.Error(err))
	if l.releasing {
		l.cancel()
		return
	}
	s.startRelease(l, reasonLost, time.Now())
}

// markAtRisk gives up a node whose owner's liveness was not renewed in
// time, while the liveness key still exists in the store: Release's
// deadline leaves half the margin before the earliest time another replica
// could take the node.
func (s *state) markAtRisk(l *lease) {
	l.atRisk = true
	l.expiry = s.live.sent.Add(s.m.cfg.ttl)
	s.dueDirty = true
	s.m.met.lost.WithLabelValues(l.node).Inc()
	if l.releasing {
		l.cancel()
		return
	}
	s.startRelease(l, reasonAtRisk, s.live.sent.Add(s.m.cfg.ttl-s.m.cfg.margin/2))
}

// onReleased ends a node whose Release returned, and deletes its entry
// (unless it was lost) so that another replica can take the node at once.
func (s *state) onReleased(node string, at time.Time) {
	l := s.leases[node]
	if l == nil {
		return
	}
	l.cancel()
	if !l.expiry.IsZero() && at.After(l.expiry) {
		s.m.met.releaseLate.WithLabelValues(node).Inc()
		s.m.log.Warn("Release returned after the liveness key may have expired", zap.String("node", node),
			zap.Duration("after_expiry", at.Sub(l.expiry)))
	}
	delete(s.leases, node)
	if l.reason == reasonRebalance {
		s.rebalancing--
	}
	s.dueDirty = true
	s.m.setOwned(node, false)
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
		s.view[node] = viewEntry{owner: l.value, rev: l.rev}
	}
	s.deleteEntry(node, l.rev)
}

// deleteEntry deletes a node entry of ours at revision rev, on a goroutine:
// the session is already closed, so only the hand-over's speed depends on
// it; with NATS down the entry stays until the liveness key expires and
// another replica takes it over.
func (s *state) deleteEntry(node string, rev uint64) {
	if s.kv == nil || !s.connected() {
		return
	}
	kv, timeout, log, met := s.kv, s.m.opTimeout(), s.m.log, s.m.met
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		ctx, cancel := context.WithTimeout(s.base, timeout)
		defer cancel()
		err := kv.Delete(ctx, leaseKey(node), jetstream.LastRevision(rev))
		log.Debug("node entry delete", zap.String("node", node), zap.Uint64("revision", rev), zap.Error(err))
		switch {
		case err == nil:
		case isConflict(err):
			// Changed since: taken over by another replica, or a late write
			// of ours, which the watch reports and cleans up.
		default:
			met.kvErrors.WithLabelValues(opDelete).Inc()
			log.Info("deleting a released node's entry failed; it is taken over once this replica's liveness expires",
				zap.String("node", node), zap.Error(err))
		}
	}()
}

// onWatch applies a watch entry and whatever else is already queued, then
// tries to take nodes if any became free.
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
// free for this replica (an entry deleted, an incarnation ended, a replica
// leaving, the initial contents complete).
func (s *state) apply(e jetstream.KeyValueEntry) bool {
	if e == nil { // end of the initial contents
		s.synced = true
		return true
	}
	key := e.Key()
	put := e.Operation() == jetstream.KeyValuePut
	if len(key) > len(presencePrefix) && key[:len(presencePrefix)] == presencePrefix {
		return s.applyPresence(key[len(presencePrefix):], string(e.Value()), put, e.Revision())
	}
	if len(key) <= len(leasePrefix) || key[:len(leasePrefix)] != leasePrefix {
		return false
	}
	node := key[len(leasePrefix):]
	if _, ok := s.m.isNode[node]; !ok {
		return false // another configuration's node
	}
	rev := e.Revision()
	if ce := s.m.log.Check(zap.DebugLevel, "node entry"); ce != nil {
		ce.Write(zap.String("node", node), zap.Uint64("revision", rev), zap.String("op", e.Operation().String()),
			zap.ByteString("value", e.Value()), zap.Uint64("view_revision", s.view[node].rev), zap.String("view_owner", s.view[node].owner))
	}
	if rev <= s.view[node].rev {
		return false // our own write, already recorded
	}
	owner := ""
	if put {
		owner = string(e.Value())
	}
	s.view[node] = viewEntry{owner: owner, rev: rev}
	if l := s.leases[node]; l != nil {
		if rev <= l.rev || l.lost {
			return false
		}
		why := "node entry deleted"
		if owner != "" {
			why = "node entry taken by " + owner
		}
		s.lose(l, why, nil)
		return false
	}
	_, creating := s.creating[node]
	delete(s.creating, node)
	if s.value != "" && owner == s.value {
		s.m.log.Debug("watch shows an entry of ours we do not hold", zap.String("node", node), zap.Uint64("revision", rev),
			zap.Bool("creating", creating), zap.Int("holding", s.holding()), zap.Int("share", s.share()))
		// A write whose answer was lost: the node is ours if we still want
		// it and our liveness is trusted (it fences the node as any other).
		// Otherwise free it at once rather than leave the node without a
		// session until this incarnation ends.
		if creating && !s.closing && s.holding() < s.share() && s.trustedLive(time.Now()) {
			s.take(node, rev)
			return false
		}
		s.deleteEntry(node, rev)
		return false
	}
	return !s.held(owner)
}

// held reports whether a node entry's value belongs to a live
// incarnation, so that the node is not free for this replica. Entries of
// an incarnation the watch saw end (its liveness key expired, deleted or
// rewritten with another incarnation) are not held: the bucket's single
// stream orders the liveness key's changes and the entries, so an entry
// never arrives before its incarnation's liveness.
func (s *state) held(owner string) bool {
	if owner == "" {
		return false
	}
	inst, inc, ok := parseOwner(owner)
	switch {
	case !ok:
		return true // not this protocol's value: wait for delete or expiry
	case inst == s.m.instance:
		return s.live.ok && inc == s.inc
	case s.overflow:
		return true // an ignored replica may hold it
	}
	p, live := s.peers[inst]
	return live && p.inc == inc
}

// applyPresence records a liveness key change. It reports whether a node
// may have become free for this replica.
func (s *state) applyPresence(instance, value string, put bool, rev uint64) bool {
	if instance == s.m.instance {
		if !s.live.ok || rev <= s.live.rev {
			return false // before this incarnation, or already recorded
		}
		if put && s.isOwnPresence(value) {
			// A renewal of ours whose answer was lost: it was sent after
			// live.sent, so live.sent still bounds the key's expiry.
			s.live.rev = rev
			return false
		}
		s.livenessLost("the watch shows the liveness key expired, deleted or overwritten", nil)
		return false
	}
	p, known := s.peers[instance]
	if !put {
		if !known {
			return false
		}
		delete(s.peers, instance)
		s.m.log.Info("replica left", zap.String("peer", instance), zap.String("incarnation", p.inc), zap.Int("replicas", s.replicas()))
		s.m.met.replicas.Set(float64(s.replicas()))
		return true // its nodes are free to take over, and our share grew
	}
	inc, leaving := parsePresence(value)
	if !known && len(s.peers) >= maxPeers {
		s.overflow = true
		s.m.met.presenceIgnored.Inc()
		return false
	}
	s.peers[instance] = peer{inc: inc, leaving: leaving, seen: time.Now()}
	switch {
	case !known:
		s.m.log.Info("replica joined", zap.String("peer", instance), zap.String("incarnation", inc), zap.Int("replicas", s.replicas()))
	case p.inc != inc:
		s.m.log.Info("replica restarted", zap.String("peer", instance), zap.String("incarnation", inc), zap.String("previous", p.inc))
	case p.leaving != leaving:
		s.m.log.Info("replica leaving", zap.String("peer", instance), zap.Int("replicas", s.replicas()))
	default:
		return false
	}
	s.m.met.replicas.Set(float64(s.replicas()))
	return known || leaving
}
