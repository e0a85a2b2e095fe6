package state

import (
	"strings"
	"time"
)

// Apply applies one message of this node's stream. Messages must come in
// stream order. A message whose StreamSeq is not above the node's last one
// (a redelivery) changes nothing; StreamSeq 0 (not from a stream) is always
// applied. Bad input is counted (Reason) and otherwise skipped.
func (n *Node) Apply(m *Message) {
	if m.StreamSeq != 0 && m.StreamSeq <= n.status.Seq {
		return
	}
	if m.StreamSeq != 0 && !m.Inferred {
		n.status.Seq = m.StreamSeq
	}
	n.status.Time = m.Time
	if m.Session != "" {
		ownID(&n.status.Session, m.Session)
		n.status.SessionSeq = m.Seq
	}
	n.statusDirty = true
	switch m.Kind {
	case KindEvent:
		if m.Fields != nil {
			n.applyEvent(m)
		}
	case KindSessionStart:
		ownID(&n.status.Session, m.Session)
		n.setStale("session_start")
	case KindSessionEnd:
		n.setStale("session_end")
	case KindGap:
		n.setStale("gap")
	case KindSnapshot:
		n.applySnapshot(m)
	}
}

func (n *Node) applyEvent(m *Message) {
	f := m.Fields
	switch m.Event {
	case "Newchannel":
		uid := get(f, "Uniqueid")
		if !n.present(uid) {
			return
		}
		if c, ok := n.channels[uid]; ok && (m.StreamSeq == 0 || c.Seq < m.StreamSeq) {
			n.badInput(ReasonDuplicateNewchannel)
		}
		n.upsert(m, namesPlain, true)
	case "Newstate", "NewCallerid", "NewConnectedLine", "NewAccountCode", "Newexten",
		"Hold", "Unhold", "DialBegin", "DialState", "DialEnd",
		"QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon":
		n.applyChannelEvent(m)
	case "Hangup":
		uid := get(f, "Uniqueid")
		switch {
		case uid == "":
			n.badInput(ReasonMissingField)
		case n.channels[uid] != nil:
			n.removeChannel(uid)
		case n.isTombstoned(uid):
			// A second Hangup: already gone.
		default:
			n.badInput(ReasonUnknownChannel)
			n.tombstone(strings.Clone(uid))
		}
	case "Rename":
		uid, name := get(f, "Uniqueid"), get(f, "Newname")
		if !n.present(uid, name) {
			return
		}
		if c := n.touchOrCreate(m, uid); c != nil {
			ownID(&c.Channel, name)
		}
	case "LocalBridge":
		one := n.upsert(m, namesLocalOne, true)
		two := n.upsert(m, namesLocalTwo, true)
		if one == nil && two == nil && get(f, "LocalOneUniqueid") == "" {
			n.badInput(ReasonMissingField)
		}
	case "BridgeCreate":
		n.bridgeFrom(m, bridgePlain, true)
	case "BridgeEnter":
		n.applyBridgeEnter(m)
	case "BridgeLeave":
		uid := get(f, "Uniqueid")
		id := get(f, "BridgeUniqueid")
		if !n.present(uid, id) {
			return
		}
		if _, ok := n.bridges[id]; !ok {
			n.badInput(ReasonUnknownBridge)
		} else {
			n.bridgeFrom(m, bridgePlain, false)
		}
		c := n.upsert(m, namesPlain, true)
		n.removeMember(id, uid)
		if c != nil && c.Bridge == id {
			c.Bridge = ""
		}
	case "BridgeDestroy":
		id := get(f, "BridgeUniqueid")
		if !n.present(id) {
			return
		}
		if _, ok := n.bridges[id]; !ok {
			n.badInput(ReasonUnknownBridge)
			return
		}
		n.destroyBridge(id)
	case "BridgeMerge":
		to := get(f, "ToBridgeUniqueid")
		from := get(f, "FromBridgeUniqueid")
		if !n.present(to, from) {
			return
		}
		fb, ok := n.bridges[from]
		if !ok {
			n.badInput(ReasonUnknownBridge)
		}
		tb, _ := n.bridgeFrom(m, bridgeTo, true)
		if fb != nil && tb != nil && fb != tb {
			members := append([]string(nil), fb.Members...)
			for _, uid := range members {
				if c, ok := n.channels[uid]; ok {
					n.join(c, tb)
					n.markDirty(EntityChannel, c.Uniqueid)
				}
			}
		}
	case "QueueMemberAdded", "QueueMemberStatus", "QueueMemberPause", "QueueMemberPaused", "QueueMemberPenalty", "QueueMemberRinginuse":
		iface := memberIface(f)
		if !n.present(iface) {
			return
		}
		if q := n.queueFor(m, true); q != nil {
			n.upsertMember(q, iface, f)
		}
	case "QueueMemberRemoved":
		iface := memberIface(f)
		if !n.present(iface) {
			return
		}
		if q := n.queueFor(m, false); q != nil {
			if i := memberIdx(q, iface); i >= 0 {
				q.Members = append(q.Members[:i], q.Members[i+1:]...)
			}
		}
	case "AgentConnect", "AgentComplete":
		iface := memberIface(f)
		if !n.present(iface) {
			return
		}
		q, ok := n.queues[get(f, "Queue")]
		if !ok {
			return
		}
		if i := memberIdx(q, iface); i >= 0 {
			in := m.Event == "AgentConnect"
			if q.Members[i].InCall != in {
				q.Members[i].InCall = in
				n.markDirty(EntityQueue, q.Name)
			}
		}
	case "FullyBooted":
		v, ok := f.Lookup("Uptime")
		if !ok {
			return
		}
		up := int64(atoi(v))
		if up < n.status.Uptime {
			// The PBX restarted: nothing it had survives, unless this
			// session's snapshot (taken after the restart) already said
			// what there is.
			n.status.Restarts++
			if n.status.SnapshotSession != n.status.Session {
				n.clearAll()
				n.setStale("restart")
			}
		}
		n.status.Uptime = up
	case "LocalOptimizationBegin", "LocalOptimizationEnd", "BlindTransfer", "AttendedTransfer",
		"AgentCalled", "AgentRingNoAnswer", "AgentDump":
		// What these change arrives in their own Bridge*, Hangup and
		// QueueMember* events; the projection keeps no more.
	}
}

// touchOrCreate answers channel uid for a change by m, creating a bare one
// if unknown (upsert), or nil if tombstoned or already applied.
func (n *Node) touchOrCreate(m *Message, uid string) *Channel {
	if c := n.touch(m, uid); c != nil {
		return c
	}
	if _, ok := n.channels[uid]; ok {
		return nil
	}
	if n.isTombstoned(uid) {
		n.badInput(ReasonLateEvent)
		return nil
	}
	c := &Channel{Uniqueid: strings.Clone(uid), Created: m.Time, Seq: m.StreamSeq}
	n.channels[c.Uniqueid] = c
	n.markDirty(EntityChannel, c.Uniqueid)
	return c
}

func (n *Node) applyChannelEvent(m *Message) {
	f := m.Fields
	switch m.Event {
	case "DialBegin", "DialState", "DialEnd":
		status := get(f, "DialStatus")
		dest := n.upsert(m, namesDest, true)
		caller := n.upsert(m, namesPlain, true)
		if dest == nil && caller == nil && get(f, "DestUniqueid") == "" {
			n.badInput(ReasonMissingField)
			return
		}
		if dest != nil {
			n.keep(&dest.DialStatus, status)
		}
		if caller != nil {
			n.keep(&caller.DialStatus, status)
		}
		return
	}
	if !n.present(get(f, "Uniqueid")) {
		return
	}
	c := n.upsert(m, namesPlain, true)
	switch m.Event {
	case "Newexten":
		if c != nil {
			n.set(&c.Application, f, "Application")
			n.set(&c.ApplicationData, f, "AppData")
		}
	case "Hold":
		if c != nil {
			c.OnHold = true
		}
	case "Unhold":
		if c != nil {
			c.OnHold = false
		}
	case "QueueCallerJoin":
		q := n.queueFor(m, true)
		if q == nil {
			return
		}
		uid := get(f, "Uniqueid")
		lc, live := n.channels[uid]
		if !live {
			return // hung up already: a caller must be a live channel
		}
		if i := callerIndex(q, uid); i >= 0 {
			n.removeCaller(q, i)
		}
		qc := QueueCaller{Uniqueid: lc.Uniqueid, Position: atoi(get(f, "Position")), Since: m.Time}
		if v, ok := f.Lookup("Channel"); ok {
			n.ownChannelName(&qc.Channel, lc, v)
		}
		n.set(&qc.CallerIDNum, f, "CallerIDNum")
		n.set(&qc.CallerIDName, f, "CallerIDName")
		n.insertCaller(q, qc)
	case "QueueCallerLeave", "QueueCallerAbandon":
		q := n.queueFor(m, false)
		if q == nil {
			return
		}
		if i := callerIndex(q, get(f, "Uniqueid")); i >= 0 {
			n.removeCaller(q, i)
		}
	}
}

// insertCaller puts qc in its position, moving those at or behind it back
// one place, as Asterisk does for a caller entering at a priority position.
func (n *Node) insertCaller(q *Queue, qc QueueCaller) {
	if qc.Position <= 0 {
		qc.Position = len(q.Callers) + 1
	}
	for j := range q.Callers {
		if q.Callers[j].Position >= qc.Position {
			q.Callers[j].Position++
		}
	}
	i := 0
	for i < len(q.Callers) && q.Callers[i].Position < qc.Position {
		i++
	}
	q.Callers = append(q.Callers, QueueCaller{})
	copy(q.Callers[i+1:], q.Callers[i:])
	q.Callers[i] = qc
}

func (n *Node) applyBridgeEnter(m *Message) {
	f := m.Fields
	uid := get(f, "Uniqueid")
	if !n.present(uid, get(f, "BridgeUniqueid")) {
		return
	}
	b, existed := n.bridgeFrom(m, bridgePlain, true)
	if !existed {
		n.badInput(ReasonUnknownBridge)
	}
	if swap := get(f, "SwapUniqueid"); swap != "" && swap != uid {
		// Local channel optimization: the entering channel takes the
		// swapped one's place.
		if sc, ok := n.channels[swap]; ok && sc.Bridge == b.ID {
			n.leave(swap)
		} else {
			n.removeMember(b.ID, swap)
		}
	}
	c := n.upsert(m, namesPlain, true)
	if c == nil {
		if cur, ok := n.channels[uid]; ok && cur.Bridge == b.ID {
			n.addMember(b, cur.Uniqueid) // resumed: the channel already holds this
		}
		return
	}
	n.join(c, b)
}

// snapshot actions, compared without regard to case.
const (
	actCoreShowChannels = "CoreShowChannels"
	actBridgeList       = "BridgeList"
	actQueueStatus      = "QueueStatus"
)

func (n *Node) applySnapshot(m *Message) {
	switch {
	case eqFold(m.Action, actCoreShowChannels):
		n.snapChannels(m)
	case eqFold(m.Action, actBridgeList):
		n.snapBridges(m)
	case eqFold(m.Action, actQueueStatus):
		n.snapQueues(m)
	}
}

// snapChannels applies a CoreShowChannels answer: the channels it lists are
// the node's channels (mark and sweep), and their BridgeId fields the
// bridges' members. A truncated answer only adds: what it lacks may exist.
func (n *Node) snapChannels(m *Message) {
	seen := make(map[string]struct{})
	bridgeOf := make(map[string]string)
	for i := 0; m.Items != nil && i < m.Items.Len(); i++ {
		it := m.Items.Item(i)
		if ev := get(it, "Event"); ev != "" && ev != "CoreShowChannel" {
			continue
		}
		uid := get(it, "Uniqueid")
		if !n.present(uid) {
			continue
		}
		seen[uid] = struct{}{}
		// The item alone makes the channel's value, as it would in a state
		// rebuilt from this snapshot: live state and replay agree.
		created := m.Time
		if d := parseHMS(get(it, "Duration")); d > 0 {
			created = m.Time.Add(-d)
		}
		c := &Channel{Created: created, Seq: m.StreamSeq}
		if old, ok := n.channels[uid]; ok {
			c.Uniqueid, c.stored, c.Bridge = old.Uniqueid, old.stored, old.Bridge
		} else {
			c.Uniqueid = strings.Clone(uid)
		}
		n.channels[c.Uniqueid] = c
		delete(n.tombs, uid) // the PBX says it is live
		n.fillChannel(c, it, namesPlain, m.Time)
		n.set(&c.Application, it, "Application")
		n.set(&c.ApplicationData, it, "ApplicationData")
		n.markDirty(EntityChannel, c.Uniqueid)
		bridgeOf[c.Uniqueid] = get(it, "BridgeId")
	}
	if m.Truncated {
		return
	}
	inBridge := make(map[string][]string)
	for uid, bid := range bridgeOf {
		if bid != "" {
			inBridge[bid] = append(inBridge[bid], uid)
		}
	}
	for uid := range n.channels {
		if _, ok := seen[uid]; !ok {
			n.removeChannel(uid)
		}
	}
	// Forget every tombstone: the snapshot says what is live, as a state
	// rebuilt from it would know no more.
	clear(n.tombs)
	clear(n.tombRing)
	n.tombRing = n.tombRing[:0]
	n.tombNext = 0
	// Bridges: members exactly as the channels say.
	for id, b := range n.bridges {
		if _, ok := inBridge[id]; !ok {
			delete(n.bridges, id)
			n.markDeleted(EntityBridge, id, b.stored)
		}
	}
	for _, c := range n.channels {
		c.Bridge = ""
	}
	for id, members := range inBridge {
		b := &Bridge{Created: m.Time, Seq: m.StreamSeq}
		if old, ok := n.bridges[id]; ok {
			b.ID, b.stored = old.ID, old.stored
		} else {
			b.ID = strings.Clone(id)
		}
		n.bridges[b.ID] = b
		for _, uid := range members {
			n.channels[uid].Bridge = b.ID
			n.addMember(b, uid)
		}
		n.markDirty(EntityBridge, b.ID)
	}
	n.status.Stale = false
	n.status.StaleReason = ""
	n.status.SnapshotSession = n.status.Session
}

// snapBridges applies a BridgeList answer: its bridges are the node's
// bridges (details from the items, members from the channels).
func (n *Node) snapBridges(m *Message) {
	seen := make(map[string]struct{})
	for i := 0; m.Items != nil && i < m.Items.Len(); i++ {
		it := m.Items.Item(i)
		id := get(it, "BridgeUniqueid")
		if !n.present(id) {
			continue
		}
		seen[id] = struct{}{}
		b, ok := n.bridges[id]
		if !ok {
			b = &Bridge{ID: strings.Clone(id), Created: m.Time}
			n.bridges[b.ID] = b
		}
		b.Type, b.Technology, b.Creator, b.Name = "", "", "", ""
		n.set(&b.Type, it, "BridgeType")
		n.set(&b.Technology, it, "BridgeTechnology")
		n.set(&b.Creator, it, "BridgeCreator")
		n.set(&b.Name, it, "BridgeName")
		b.Seq = m.StreamSeq
		n.markDirty(EntityBridge, b.ID)
	}
	if m.Truncated {
		return
	}
	for id := range n.bridges {
		if _, ok := seen[id]; !ok {
			n.destroyBridge(id)
		}
	}
}

// snapQueues applies a QueueStatus answer: its queues, members and callers
// are the node's (a caller keeps the time it joined if already known).
func (n *Node) snapQueues(m *Message) {
	fresh := make(map[string]*Queue)
	q := func(name string) *Queue {
		x, ok := fresh[name]
		if !ok {
			x = &Queue{Name: n.strs.intern(name), Seq: m.StreamSeq}
			if old, ok := n.queues[name]; ok {
				x.stored = old.stored
			}
			fresh[name] = x
		}
		return x
	}
	for i := 0; m.Items != nil && i < m.Items.Len(); i++ {
		it := m.Items.Item(i)
		name := get(it, "Queue")
		if !n.present(name) {
			continue
		}
		switch get(it, "Event") {
		case "QueueParams":
			x := q(name)
			x.Strategy = ""
			n.set(&x.Strategy, it, "Strategy")
		case "QueueMember":
			if iface := memberIface(it); iface != "" {
				n.upsertMember(q(name), iface, it)
			}
		case "QueueEntry":
			x := q(name)
			lc, live := n.channels[get(it, "Uniqueid")]
			if !live {
				// Not in the channel snapshot before it: a caller must
				// be a live channel; its own events will add it.
				continue
			}
			qc := QueueCaller{Uniqueid: lc.Uniqueid, Position: atoi(get(it, "Position")),
				Since: m.Time.Add(-time.Duration(atoi(get(it, "Wait"))) * time.Second)}
			n.ownChannelName(&qc.Channel, lc, get(it, "Channel"))
			n.set(&qc.CallerIDNum, it, "CallerIDNum")
			n.set(&qc.CallerIDName, it, "CallerIDName")
			x.Callers = append(x.Callers, qc)
		}
	}
	if m.Truncated {
		for _, x := range fresh {
			n.queues[x.Name] = x
			n.markDirty(EntityQueue, x.Name)
		}
		return
	}
	for name, old := range n.queues {
		if _, ok := fresh[name]; !ok {
			delete(n.queues, name)
			n.markDeleted(EntityQueue, old.Name, old.stored)
		}
	}
	for _, x := range fresh {
		sortCallers(x.Callers)
		n.queues[x.Name] = x
		n.markDirty(EntityQueue, x.Name)
	}
}

func sortCallers(cs []QueueCaller) {
	for i := 1; i < len(cs); i++ {
		for j := i; j > 0 && cs[j].Position < cs[j-1].Position; j-- {
			cs[j], cs[j-1] = cs[j-1], cs[j]
		}
	}
}

// parseHMS parses CoreShowChannel's Duration, HH:MM:SS.
func parseHMS(s string) time.Duration {
	if len(s) < 8 || s[len(s)-3] != ':' || s[len(s)-6] != ':' {
		return 0
	}
	h := atoi(s[:len(s)-6])
	mi := atoi(s[len(s)-5 : len(s)-3])
	se := atoi(s[len(s)-2:])
	return time.Duration(h)*time.Hour + time.Duration(mi)*time.Minute + time.Duration(se)*time.Second
}

// ownChannelName sets *dst to channel name v, sharing live channel c's
// copy when it is the same name, else as a copy of its own.
func (n *Node) ownChannelName(dst *string, c *Channel, v string) {
	if v == c.Channel {
		*dst = c.Channel
		return
	}
	ownID(dst, v)
}
