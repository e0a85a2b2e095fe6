package state

import (
	"sort"
	"strings"
	"time"

	"github.com/amibus/amibus/pkg/eventlog"
)

// Reason names why an event could not be applied as it stands. Every one
// is counted (per node in the status, globally in Projection.BadCounts);
// none stops the projection.
type Reason uint8

// Bad-input reasons.
const (
	ReasonUnknownChannel Reason = iota // Hangup (or leave) of a channel never seen
	ReasonUnknownBridge                // BridgeEnter/Leave/Destroy/Merge of a bridge never created
	ReasonUnknownQueue                 // a caller or member leaving a queue never seen
	ReasonDuplicateNewchannel
	ReasonMissingField // a field the event needs is absent or empty
	ReasonLateEvent    // an event for a channel already hung up (tombstoned)
	ReasonBadNode      // node name that is not a valid key token
	numReasons
)

var reasonNames = [numReasons]string{
	"unknown_channel", "unknown_bridge", "unknown_queue", "duplicate_newchannel",
	"missing_field", "late_event", "bad_node",
}

// String is the reason's metric label value.
func (r Reason) String() string {
	if r < numReasons {
		return reasonNames[r]
	}
	return "unknown"
}

// Reasons lists every reason, for metric initialisation.
func Reasons() []Reason {
	out := make([]Reason, numReasons)
	for i := range out {
		out[i] = Reason(i)
	}
	return out
}

// EntityKind is the kind of a key a node holds.
type EntityKind uint8

// Entity kinds.
const (
	EntityChannel EntityKind = iota
	EntityBridge
	EntityQueue
)

// tombstoneCap bounds the hung-up Uniqueids a node remembers so that a late
// event cannot bring a channel back. Late events arrive within the same
// burst (Asterisk sends a channel's last events together), so a few hundred
// covers many concurrent hang-ups; an eviction is not counted, because
// forgetting the oldest tombstone is the designed behaviour.
const tombstoneCap = 256

type dkey struct {
	kind EntityKind
	id   string
}

// Node is one PBX's projected state. It is not safe for concurrent use: one
// goroutine applies, and readers take its owner's lock.
type Node struct {
	status   Status
	channels map[string]*Channel
	bridges  map[string]*Bridge
	queues   map[string]*Queue

	tombs map[string]struct{}
	// tombRing holds the tombstones in the order made, grown up to
	// tombstoneCap and then reused as a ring (tombNext is the oldest): a
	// node that never hangs up so many channels holds no more.
	tombRing []string
	tombNext int

	// dirty holds the keys changed since the last Drain; the value says
	// whether a delete must be written if the key is gone by then (it was
	// stored before).
	dirty       map[dkey]bool
	statusDirty bool

	// strs holds the copies of the values in the state (strings.go): the
	// Projection's, shared by its nodes, or the node's own.
	strs *strTable

	// loadedTo is the highest stream sequence of a key loaded from the
	// bucket: a replica that took the node over (or restarted after a
	// crash between keys and checkpoint) may load keys written after the
	// checkpoint, and until the replay from the checkpoint passes loadedTo
	// the keys and the status do not describe one moment.
	loadedTo uint64

	bad [numReasons]uint64
	// onBad, when set, is told of each bad input (the Projection counts).
	onBad func(Reason)
}

// NewNode returns an empty state for node name.
func NewNode(name string) *Node {
	return &Node{
		status:   Status{Node: name},
		channels: make(map[string]*Channel),
		bridges:  make(map[string]*Bridge),
		queues:   make(map[string]*Queue),
		tombs:    make(map[string]struct{}),
		dirty:    make(map[dkey]bool),
		strs:     newStrTable(),
	}
}

// Name is the node's name.
func (n *Node) Name() string { return n.status.Node }

// Status answers the node's status with up-to-date counts.
func (n *Node) Status() Status {
	s := n.status
	s.Channels, s.Bridges, s.Queues = len(n.channels), len(n.bridges), len(n.queues)
	return s
}

// Channels is the number of live channels.
func (n *Node) Channels() int { return len(n.channels) }

// BadCount answers how many inputs of reason r this node counted.
func (n *Node) BadCount(r Reason) uint64 { return n.bad[r] }

func (n *Node) badInput(r Reason) {
	n.bad[r]++
	n.status.BadEvents++
	if n.onBad != nil {
		n.onBad(r)
	}
}

// present reports whether every value is set; a missing one counts as a
// missing_field bad input. Small enough to inline: Apply calls it per event.
func (n *Node) present(values ...string) bool {
	for _, v := range values {
		if v == "" {
			return n.missing()
		}
	}
	return true
}

// missing counts a missing_field bad input and reports false.
func (n *Node) missing() bool {
	n.badInput(ReasonMissingField)
	return false
}

func (n *Node) markDirty(k EntityKind, id string) {
	if _, ok := n.dirty[dkey{k, id}]; !ok {
		n.dirty[dkey{k, id}] = false
	}
}

func (n *Node) markDeleted(k EntityKind, id string, stored bool) {
	key := dkey{k, id}
	n.dirty[key] = n.dirty[key] || stored
}

// Dirty is the number of keys changed since the last Drain.
func (n *Node) Dirty() int { return len(n.dirty) }

// StatusDirty tells whether the status changed since the last Drain.
func (n *Node) StatusDirty() bool { return n.statusDirty || len(n.dirty) > 0 }

// Drain calls visit once for each key changed since the last Drain with
// its current value (*Channel, *Bridge or *Queue), or with nil if the key
// must be deleted, and forgets the changes. The value is valid only during
// the call. A key created and gone between two drains is not visited at
// all: there is nothing stored to delete.
func (n *Node) Drain(visit func(k EntityKind, id string, v any)) {
	drained := len(n.dirty)
	for key, mustDelete := range n.dirty {
		delete(n.dirty, key)
		switch key.kind {
		case EntityChannel:
			if c, ok := n.channels[key.id]; ok {
				c.stored = true
				visit(key.kind, key.id, c)
				continue
			}
		case EntityBridge:
			if b, ok := n.bridges[key.id]; ok {
				b.stored = true
				visit(key.kind, key.id, b)
				continue
			}
		case EntityQueue:
			if q, ok := n.queues[key.id]; ok {
				q.stored = true
				visit(key.kind, key.id, q)
				continue
			}
		}
		if mustDelete {
			visit(key.kind, key.id, nil)
		}
	}
	if drained > dirtyKeep {
		// A map never shrinks: after a burst (a catch-up, a snapshot) the
		// node would keep room for all its keys for good.
		n.dirty = make(map[dkey]bool)
	}
	n.statusDirty = false
}

// dirtyKeep is the most dirty keys whose room a node keeps after a Drain;
// a node with more changed keys per flush allocates its map anew each time.
const dirtyKeep = 64

// Undrain marks a key dirty again after its write failed, so that the next
// Drain retries it with the value current then.
func (n *Node) Undrain(k EntityKind, id string) {
	n.dirty[dkey{k, id}] = true
	n.statusDirty = true
}

// Load puts a value read back from the bucket into the state, as stored; a
// resumed service loads the node's keys and then applies the events after
// the checkpoint, skipping for each key those its value already includes.
func (n *Node) Load(v any) {
	switch x := v.(type) {
	case *Channel:
		x.stored = true
		n.channels[x.Uniqueid] = x
		n.loadedTo = max(n.loadedTo, x.Seq)
	case *Bridge:
		x.stored = true
		n.bridges[x.ID] = x
		n.loadedTo = max(n.loadedTo, x.Seq)
	case *Queue:
		x.stored = true
		n.queues[x.Name] = x
		n.loadedTo = max(n.loadedTo, x.Seq)
	case *Status:
		name := n.status.Node
		n.status = *x
		n.status.Node = name
	}
}

// CatchingUp tells whether keys loaded from the bucket are ahead of the
// applied stream sequence (see loadedTo), and up to which sequence.
func (n *Node) CatchingUp() (to uint64, ok bool) {
	return n.loadedTo, n.status.Seq < n.loadedTo
}

// Snapshot copies the whole state into one document, channels, bridges and
// queues sorted by key so that equal states give equal documents.
func (n *Node) Snapshot() Snapshot {
	s := Snapshot{Node: n.status.Node, Status: n.Status(),
		Channels: make([]Channel, 0, len(n.channels)),
		Bridges:  make([]Bridge, 0, len(n.bridges)),
		Queues:   make([]Queue, 0, len(n.queues))}
	for _, c := range n.channels {
		s.Channels = append(s.Channels, *c)
	}
	for _, b := range n.bridges {
		bc := *b
		bc.Members = append([]string{}, b.Members...)
		s.Bridges = append(s.Bridges, bc)
	}
	for _, q := range n.queues {
		qc := *q
		qc.Members = append([]QueueMember{}, q.Members...)
		qc.Callers = append([]QueueCaller{}, q.Callers...)
		s.Queues = append(s.Queues, qc)
	}
	sort.Slice(s.Channels, func(i, j int) bool { return s.Channels[i].Uniqueid < s.Channels[j].Uniqueid })
	sort.Slice(s.Bridges, func(i, j int) bool { return s.Bridges[i].ID < s.Bridges[j].ID })
	sort.Slice(s.Queues, func(i, j int) bool { return s.Queues[i].Name < s.Queues[j].Name })
	return s
}

// Channel answers a live channel (a pointer into the state; read only).
func (n *Node) Channel(uid string) (*Channel, bool) { c, ok := n.channels[uid]; return c, ok }

// Bridge answers a bridge (a pointer into the state; read only).
func (n *Node) Bridge(id string) (*Bridge, bool) { b, ok := n.bridges[id]; return b, ok }

// Queue answers a queue (a pointer into the state; read only).
func (n *Node) Queue(name string) (*Queue, bool) { q, ok := n.queues[name]; return q, ok }

// tombstone remembers uid, a copy of the state's own (it outlives the
// message that hung the channel up).
func (n *Node) tombstone(uid string) {
	if len(n.tombRing) < tombstoneCap {
		n.tombRing = append(n.tombRing, uid)
	} else {
		delete(n.tombs, n.tombRing[n.tombNext])
		n.tombRing[n.tombNext] = uid
		n.tombNext = (n.tombNext + 1) % tombstoneCap
	}
	n.tombs[uid] = struct{}{}
}

func (n *Node) isTombstoned(uid string) bool {
	_, ok := n.tombs[uid]
	return ok
}

// chanNames are the field names of one channel block (AMI prefixes the
// block's fields with Dest, LocalOne ...). Built once so that looking a
// prefixed field up never concatenates.
type chanNames struct {
	prefix string
	Channel, ChannelState, ChannelStateDesc, CallerIDNum, CallerIDName,
	ConnectedLineNum, ConnectedLineName, Language, AccountCode, Context,
	Exten, Priority, Uniqueid, Linkedid string
}

func newChanNames(p string) *chanNames {
	return &chanNames{p, p + "Channel", p + "ChannelState", p + "ChannelStateDesc", p + "CallerIDNum",
		p + "CallerIDName", p + "ConnectedLineNum", p + "ConnectedLineName", p + "Language",
		p + "AccountCode", p + "Context", p + "Exten", p + "Priority", p + "Uniqueid", p + "Linkedid"}
}

var (
	namesPlain    = newChanNames("")
	namesDest     = newChanNames("Dest")
	namesLocalOne = newChanNames("LocalOne")
	namesLocalTwo = newChanNames("LocalTwo")
)

func get(f Fields, name string) string {
	v, _ := f.Lookup(name)
	return v
}

// atoi parses a small decimal without allocating; bad input is 0.
func atoi(s string) int {
	neg := false
	if len(s) > 0 && s[0] == '-' {
		neg, s = true, s[1:]
	}
	n := 0
	for i := 0; i < len(s) && i < 18; i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + int(c-'0')
	}
	if neg {
		return -n
	}
	return n
}

// stateUp is AST_STATE_UP, the ChannelState of an answered channel.
const stateUp = 6

func (n *Node) fillChannel(c *Channel, f Fields, nm *chanNames, t time.Time) {
	if ef, ok := f.(*eventlog.Fields); ok {
		n.fillChannelPass(c, *ef, nm.prefix, t)
		return
	}
	if v, ok := f.Lookup(nm.Channel); ok {
		ownID(&c.Channel, v)
	}
	if v, ok := f.Lookup(nm.ChannelState); ok {
		c.State = atoi(v)
		if c.State == stateUp && c.Answered.IsZero() {
			c.Answered = t
		}
	}
	n.set(&c.StateDesc, f, nm.ChannelStateDesc)
	n.set(&c.CallerIDNum, f, nm.CallerIDNum)
	n.set(&c.CallerIDName, f, nm.CallerIDName)
	n.set(&c.ConnectedLineNum, f, nm.ConnectedLineNum)
	n.set(&c.ConnectedLineName, f, nm.ConnectedLineName)
	n.set(&c.Language, f, nm.Language)
	n.set(&c.AccountCode, f, nm.AccountCode)
	n.set(&c.Context, f, nm.Context)
	n.set(&c.Exten, f, nm.Exten)
	n.set(&c.Priority, f, nm.Priority)
	if v, ok := f.Lookup(nm.Linkedid); ok {
		n.setLinkedid(c, v)
	}
}

// setLinkedid sets c's Linkedid to v, sharing the Uniqueid of the channel
// it names when that one is live (the call's first channel: usually c
// itself or a channel of the same call), else as a copy of its own.
func (n *Node) setLinkedid(c *Channel, v string) {
	switch {
	case c.Linkedid == v:
	case v == c.Uniqueid:
		c.Linkedid = c.Uniqueid
	default:
		if o, ok := n.channels[v]; ok {
			c.Linkedid = o.Uniqueid
		} else {
			c.Linkedid = strings.Clone(v)
		}
	}
}

// fillChannelPass is fillChannel in one pass over the reader's fields (in
// wire order, each key once) instead of a lookup per field.
func (n *Node) fillChannelPass(c *Channel, fs eventlog.Fields, prefix string, t time.Time) {
	for i := range fs {
		k, v := fs[i].Key, fs[i].Value
		if prefix != "" {
			if !strings.HasPrefix(k, prefix) {
				continue
			}
			k = k[len(prefix):]
		}
		var dst *string
		switch k {
		case "Channel":
			ownID(&c.Channel, v)
			continue
		case "ChannelState":
			c.State = atoi(v)
			if c.State == stateUp && c.Answered.IsZero() {
				c.Answered = t
			}
			continue
		case "ChannelStateDesc":
			dst = &c.StateDesc
		case "CallerIDNum":
			dst = &c.CallerIDNum
		case "CallerIDName":
			dst = &c.CallerIDName
		case "ConnectedLineNum":
			dst = &c.ConnectedLineNum
		case "ConnectedLineName":
			dst = &c.ConnectedLineName
		case "Language":
			dst = &c.Language
		case "AccountCode":
			dst = &c.AccountCode
		case "Context":
			dst = &c.Context
		case "Exten":
			dst = &c.Exten
		case "Priority":
			dst = &c.Priority
		case "Linkedid":
			n.setLinkedid(c, v)
			continue
		default:
			continue
		}
		n.keep(dst, v)
	}
}

// upsert answers the channel of the block nm in m, creating it if unknown,
// or nil when the block has no Uniqueid, the channel is hung up
// (tombstoned) or its value already includes this message (resume).
func (n *Node) upsert(m *Message, nm *chanNames, create bool) *Channel {
	uid, _ := m.Fields.Lookup(nm.Uniqueid)
	if uid == "" {
		return nil
	}
	c, ok := n.channels[uid]
	if ok {
		if c.Seq >= m.StreamSeq && m.StreamSeq != 0 {
			return nil
		}
	} else {
		if n.isTombstoned(uid) {
			n.badInput(ReasonLateEvent)
			return nil
		}
		if !create {
			return nil
		}
		c = &Channel{Created: m.Time}
		// Uniqueid and channel name in one copy: one allocation, no
		// payload kept (fillChannel finds the name already there).
		if name, ok := m.Fields.Lookup(nm.Channel); ok && name != "" {
			both := uid + name
			c.Uniqueid, c.Channel = both[:len(uid)], both[len(uid):]
		} else {
			c.Uniqueid = strings.Clone(uid)
		}
		n.channels[c.Uniqueid] = c
	}
	c.Seq = m.StreamSeq
	n.fillChannel(c, m.Fields, nm, m.Time)
	n.markDirty(EntityChannel, c.Uniqueid)
	return c
}

// touch answers the existing channel uid for a change by m, or nil.
func (n *Node) touch(m *Message, uid string) *Channel {
	c, ok := n.channels[uid]
	if !ok || (c.Seq >= m.StreamSeq && m.StreamSeq != 0) {
		return nil
	}
	c.Seq = m.StreamSeq
	n.markDirty(EntityChannel, c.Uniqueid)
	return c
}

func (n *Node) removeChannel(uid string) {
	c, ok := n.channels[uid]
	if !ok {
		return
	}
	if c.Bridge != "" {
		n.removeMember(c.Bridge, uid)
	}
	for name, q := range n.queues {
		if i := callerIndex(q, uid); i >= 0 {
			n.removeCaller(q, i)
			n.markDirty(EntityQueue, name)
		}
	}
	delete(n.channels, uid)
	n.markDeleted(EntityChannel, c.Uniqueid, c.stored)
	n.tombstone(c.Uniqueid)
}

func memberIndex(b *Bridge, uid string) int {
	for i, m := range b.Members {
		if m == uid {
			return i
		}
	}
	return -1
}

func (n *Node) removeMember(bid, uid string) {
	b, ok := n.bridges[bid]
	if !ok {
		return
	}
	if i := memberIndex(b, uid); i >= 0 {
		b.Members = append(b.Members[:i], b.Members[i+1:]...)
		n.markDirty(EntityBridge, bid)
	}
}

func (n *Node) addMember(b *Bridge, uid string) {
	if memberIndex(b, uid) >= 0 {
		return
	}
	i := sort.SearchStrings(b.Members, uid)
	b.Members = append(b.Members, "")
	copy(b.Members[i+1:], b.Members[i:])
	b.Members[i] = uid
	n.markDirty(EntityBridge, b.ID)
}

// join puts channel c into bridge b, out of any other bridge.
func (n *Node) join(c *Channel, b *Bridge) {
	if c.Bridge != "" && c.Bridge != b.ID {
		n.removeMember(c.Bridge, c.Uniqueid)
	}
	c.Bridge = b.ID
	n.addMember(b, c.Uniqueid)
}

// leave takes channel uid out of its bridge, if the channel is known.
func (n *Node) leave(uid string) {
	c, ok := n.channels[uid]
	if !ok {
		return
	}
	if c.Bridge != "" {
		n.removeMember(c.Bridge, uid)
		c.Bridge = ""
		n.markDirty(EntityChannel, c.Uniqueid)
	}
}

func (n *Node) bridgeFrom(m *Message, prefix *bridgeNames, create bool) (*Bridge, bool) {
	id, _ := m.Fields.Lookup(prefix.ID)
	if id == "" {
		n.badInput(ReasonMissingField)
		return nil, false
	}
	b, ok := n.bridges[id]
	if !ok {
		if !create {
			return nil, false
		}
		b = &Bridge{ID: strings.Clone(id), Created: m.Time}
		n.bridges[b.ID] = b
	}
	n.set(&b.Type, m.Fields, prefix.Type)
	n.set(&b.Technology, m.Fields, prefix.Technology)
	n.set(&b.Creator, m.Fields, prefix.Creator)
	n.set(&b.Name, m.Fields, prefix.Name)
	if m.StreamSeq > b.Seq {
		b.Seq = m.StreamSeq
	}
	n.markDirty(EntityBridge, b.ID)
	return b, ok
}

type bridgeNames struct{ ID, Type, Technology, Creator, Name string }

func newBridgeNames(p string) *bridgeNames {
	return &bridgeNames{p + "BridgeUniqueid", p + "BridgeType", p + "BridgeTechnology", p + "BridgeCreator", p + "BridgeName"}
}

var (
	bridgePlain = newBridgeNames("")
	bridgeTo    = newBridgeNames("To")
	bridgeFromN = newBridgeNames("From")
)

func (n *Node) destroyBridge(id string) {
	b, ok := n.bridges[id]
	if !ok {
		return
	}
	for _, uid := range b.Members {
		if c, ok := n.channels[uid]; ok && c.Bridge == id {
			c.Bridge = ""
			n.markDirty(EntityChannel, c.Uniqueid)
		}
	}
	delete(n.bridges, id)
	n.markDeleted(EntityBridge, b.ID, b.stored)
}

func callerIndex(q *Queue, uid string) int {
	for i := range q.Callers {
		if q.Callers[i].Uniqueid == uid {
			return i
		}
	}
	return -1
}

// removeCaller takes caller i out, moving those behind it up one place as
// Asterisk does.
func (n *Node) removeCaller(q *Queue, i int) {
	pos := q.Callers[i].Position
	q.Callers = append(q.Callers[:i], q.Callers[i+1:]...)
	for j := range q.Callers {
		if q.Callers[j].Position > pos {
			q.Callers[j].Position--
		}
	}
}

func (n *Node) queueFor(m *Message, create bool) *Queue {
	name, _ := m.Fields.Lookup("Queue")
	if name == "" {
		n.badInput(ReasonMissingField)
		return nil
	}
	q, ok := n.queues[name]
	if !ok {
		if !create {
			n.badInput(ReasonUnknownQueue)
			return nil
		}
		q = &Queue{Name: n.strs.intern(name)}
		n.queues[q.Name] = q
	}
	if m.StreamSeq > q.Seq {
		q.Seq = m.StreamSeq
	}
	n.markDirty(EntityQueue, q.Name)
	return q
}

func memberIdx(q *Queue, iface string) int {
	for i := range q.Members {
		if q.Members[i].Interface == iface {
			return i
		}
	}
	return -1
}

// fillMember updates member fields from a QueueMember* event or a
// QueueMember status item; the event says Interface, the item Location.
func (n *Node) fillMember(qm *QueueMember, f Fields) {
	if v, ok := f.Lookup("MemberName"); ok {
		n.keep(&qm.Name, v)
	} else {
		n.set(&qm.Name, f, "Name")
	}
	n.set(&qm.StateInterface, f, "StateInterface")
	n.set(&qm.Membership, f, "Membership")
	n.set(&qm.Penalty, f, "Penalty")
	n.set(&qm.Status, f, "Status")
	n.set(&qm.CallsTaken, f, "CallsTaken")
	n.set(&qm.PausedReason, f, "PausedReason")
	if v, ok := f.Lookup("Paused"); ok {
		qm.Paused = v == "1"
	}
	if v, ok := f.Lookup("InCall"); ok {
		qm.InCall = v == "1"
	}
}

func (n *Node) upsertMember(q *Queue, iface string, f Fields) {
	i := memberIdx(q, iface)
	if i < 0 {
		j := sort.Search(len(q.Members), func(k int) bool { return q.Members[k].Interface >= iface })
		q.Members = append(q.Members, QueueMember{})
		copy(q.Members[j+1:], q.Members[j:])
		q.Members[j] = QueueMember{Interface: n.strs.intern(iface)}
		i = j
	}
	n.fillMember(&q.Members[i], f)
}

func memberIface(f Fields) string {
	if v, _ := f.Lookup("Interface"); v != "" {
		return v
	}
	v, _ := f.Lookup("Location")
	return v
}

func (n *Node) clearAll() {
	for uid, c := range n.channels {
		delete(n.channels, uid)
		n.markDeleted(EntityChannel, c.Uniqueid, c.stored)
	}
	for id, b := range n.bridges {
		delete(n.bridges, id)
		n.markDeleted(EntityBridge, b.ID, b.stored)
	}
	for name, q := range n.queues {
		delete(n.queues, name)
		n.markDeleted(EntityQueue, q.Name, q.stored)
	}
}

func (n *Node) setStale(reason string) {
	n.status.Stale = true
	n.status.StaleReason = reason
}

// eqFold compares ASCII case-insensitively without allocating.
func eqFold(a, b string) bool { return strings.EqualFold(a, b) }
