package eventq

import (
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/amibus/amibus/internal/logging"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/pkg/amiwire"
)

// Sentinel errors; check them with errors.Is.
var (
	// ErrClosed: the queue was closed and every item has been popped.
	ErrClosed = errors.New("eventq: closed")
	// ErrNoRoom: Pop or TryPop was given a dst with no spare capacity.
	ErrNoRoom = errors.New("eventq: dst has no spare capacity")
)

// ReasonClosed is the session_end reason the queue records for a session that
// was still open when the queue was closed.
const ReasonClosed = "closed"

const (
	// itemOverhead is charged to the budget for every event on top of its
	// wire size: the ring slot and the message's own struct and spans, so
	// that the budget bounds what an event really costs in memory.
	itemOverhead = int64(unsafe.Sizeof(Item{}) + unsafe.Sizeof(amiwire.Message{}))
	spanBytes    = 16

	// freeListCap bounds the released messages a queue keeps for reuse;
	// beyond it they go to a process-wide sync.Pool, which the GC may empty.
	freeListCap = 128
	// maxPooledSize: a message that held more than this is not reused, so a
	// rare huge event does not pin a huge buffer forever.
	maxPooledSize = 64 << 10

	// minRing is a new queue's ring (items, a power of two). Small: most
	// nodes of a large fleet are quiet, and at 1000 nodes every item slot
	// (about 250 bytes) costs 250 KB; a busy node's ring doubles as needed.
	minRing = 8
	// shrinkRing: an empty ring larger than this may be given back to the
	// GC (see shrinkLocked).
	shrinkRing = 4096
)

var msgPool = sync.Pool{New: func() any { return new(amiwire.Message) }}

// ringPool holds empty rings of minRing items. A queue gives its ring back
// whenever the consumer empties it and takes one at the next push, so an
// idle node holds no ring (about 1.2 KiB each: 12 MiB at 10,000 nodes),
// while a node with traffic pays a pool Get and Put per wake-up, not an
// allocation.
var ringPool = sync.Pool{New: func() any { return new([minRing]Item) }}

// Queue is one node's bounded buffer. Its producer methods (SessionStarted,
// Event, SessionEnded, PushSnapshot) never block and never wait on the
// consumer; they have the method set of session.Handler. It has one consumer,
// which takes items with Pop or TryPop and hands each back with Release or
// Drop.
type Queue struct {
	node      string
	maxEvents int
	budget    *Budget
	owner     string
	log       *zap.Logger
	gapDelay  time.Duration // see DefaultGapDelay

	mReceived      prometheus.Counter
	mDropFull      prometheus.Counter
	mDropFailed    prometheus.Counter
	mDropShutdown  prometheus.Counter
	mDropOversized prometheus.Counter
	mDropVec       *metrics.CounterVec
	mBufEvents     prometheus.Gauge
	mBufBytes      prometheus.Gauge

	// notify holds one wake-up for a consumer that found the queue empty.
	notify chan struct{}
	// done is closed by Close.
	done chan struct{}
	// snapWanted holds one signal for the snapshot taker: see SnapshotWanted.
	snapWanted chan struct{}
	// wake is the consumer's callback beside notify (SetWake); guarded by mu.
	wake func()

	mu sync.Mutex
	// ring holds the items not yet popped, oldest at head. Its length is a
	// power of two; it grows on demand and is bounded because events are
	// capped by maxEvents and every marker follows an accepted event or a
	// session change.
	ring    []Item
	head, n int
	peak    int // most items held since the queue was last seen empty
	free    []*amiwire.Message
	events  int   // events accepted and not yet released or dropped
	bytes   int64 // bytes this queue holds against the budget
	waiting bool  // the consumer found the queue empty: signal it
	closed  bool

	gapOpen bool
	gap     Item

	sess     string // current session, for Close and snapshot Seq
	sessOpen bool
	lastSeq  uint64

	// Snapshot coverage of the current session (see SnapshotNeeded).
	// lostSeq is the highest sequence number lost (dropped or skipped);
	// covered holds, per action, where its last stored snapshot stands.
	// covered has one entry per snapshot action of the session, which the
	// configuration fixes (ingest.snapshot_actions).
	lostSeq uint64
	covered map[string]snapCover
	// wantSnap: something was lost since the last signal on snapWanted,
	// which is sent once the buffer has room.
	wantSnap bool

	st Stats

	// Drops of events and of snapshots at the caps, one line per
	// logInterval at most, on the events' own timeline (clock); stopped
	// by Close.
	clock       *eventClock
	dropLog     *logging.Coalescer
	snapDropLog *logging.Coalescer
}

// Stats is a consistent snapshot of a queue's accounting. For events,
// Received == Published + DroppedBufferFull + DroppedPublishFailed +
// DroppedShutdown + DroppedOversized + DroppedOther + Buffered holds exactly
// at every instant.
type Stats struct {
	// Received counts every Event and EventOversized call.
	Received uint64
	// Published counts events the consumer released (stored downstream).
	Published uint64
	// DroppedBufferFull counts events refused by the event cap or the budget.
	DroppedBufferFull uint64
	// DroppedPublishFailed and DroppedShutdown count events the consumer
	// dropped with those reasons (or, for DroppedShutdown, that arrived
	// after Close); DroppedOther any other reason.
	DroppedPublishFailed uint64
	DroppedShutdown      uint64
	// DroppedOversized counts events the reader skipped for crossing its
	// byte or header cap (EventOversized).
	DroppedOversized uint64
	DroppedOther     uint64
	// Buffered counts events accepted and not yet released or dropped,
	// whether still queued or being published.
	Buffered uint64
	// Bytes is what the queue holds against the budget.
	Bytes int64
	// Waiting is the number of items (events and markers) not yet popped.
	Waiting int
	// SnapshotsDropped counts snapshots whose list did not fit the budget
	// (their item was kept, without its list events) or came after Close.
	SnapshotsDropped uint64
}

// Dropped returns the events dropped for any reason.
func (s Stats) Dropped() uint64 {
	return s.DroppedBufferFull + s.DroppedPublishFailed + s.DroppedShutdown + s.DroppedOversized + s.DroppedOther
}

// New returns the queue of node.
func New(node string, opts ...Option) (*Queue, error) {
	if node == "" {
		return nil, fmt.Errorf("%w: empty node name", ErrInvalidOption)
	}
	c := config{maxEvents: DefaultMaxEvents, logInterval: DefaultLogInterval, gapDelay: DefaultGapDelay, log: zap.NewNop()}
	for _, o := range opts {
		if err := o(&c); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
		}
	}
	if c.budget == nil {
		c.budget = NewBudget(DefaultMaxBytes)
	}
	q := &Queue{
		node:      node,
		maxEvents: c.maxEvents,
		budget:    c.budget,
		owner:     c.owner,
		// Lazy: a node that never drops never pays for an encoded copy of
		// its fields (1 KiB each, see session.New).
		log:        c.log.WithLazy(zap.String("node", node)),
		gapDelay:   c.gapDelay,
		notify:     make(chan struct{}, 1),
		done:       make(chan struct{}),
		snapWanted: make(chan struct{}, 1),
		covered:    make(map[string]snapCover),
		// ring: nil until the first push (pushLocked), nil again whenever
		// empty at minRing (shrinkLocked).
	}
	q.clock = newEventClock()
	warn := func(count, total string) logging.CoalescerOptions {
		return logging.CoalescerOptions{Level: zapcore.WarnLevel, CountField: count, TotalField: total, Clock: q.clock}
	}
	q.dropLog = logging.NewCoalescerWith(q.log, "node buffer full: dropping", c.logInterval,
		warn("dropped_delta", "dropped_total"))
	q.snapDropLog = logging.NewCoalescerWith(q.log, "node buffer full: dropping snapshots", c.logInterval,
		warn("snapshots_dropped_delta", "snapshots_dropped_total"))
	if m := c.metrics; m != nil {
		// Resolved once: a label lookup per event would cost a hash and a lock.
		q.mReceived = m.EventsReceived.WithLabelValues(node)
		q.mDropFull = m.EventsDropped.WithLabelValues(node, metrics.ReasonBufferFull)
		q.mDropFailed = m.EventsDropped.WithLabelValues(node, metrics.ReasonPublishFailed)
		q.mDropShutdown = m.EventsDropped.WithLabelValues(node, metrics.ReasonShutdown)
		q.mDropOversized = m.EventsDropped.WithLabelValues(node, metrics.ReasonOversized)
		q.mDropVec = m.EventsDropped
		q.mBufEvents = m.BufferEvents.WithLabelValues(node)
		q.mBufBytes = m.BufferBytes
		q.mBufEvents.Set(0)
	}
	return q, nil
}

// Node returns the node name the queue was created for.
func (q *Queue) Node() string { return q.node }

// SessionStarted records a new session. It implements session.Handler.
func (q *Queue) SessionStarted(id, version string, t time.Time) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.flushGapLocked()
	q.pushLocked(Item{Kind: KindSessionStart, Session: id, Time: t, Version: version, Owner: q.owner})
	q.sess, q.sessOpen, q.lastSeq = id, true, 0
	q.lostSeq, q.wantSnap = 0, false
	clear(q.covered)
	q.wakeLocked()
	q.mu.Unlock()
}

// Event copies m into a buffered item, or drops it if the node's event cap or
// the shared byte budget is reached. It implements session.Handler: it never
// blocks and does not retain m.
func (q *Queue) Event(id string, seq uint64, t time.Time, m *amiwire.Message) {
	size := eventSize(m)
	q.mu.Lock()
	if !q.receivedLocked(id, seq) {
		q.mu.Unlock()
		return
	}
	if q.events >= q.maxEvents || !q.budget.tryAcquire(size) {
		q.st.DroppedBufferFull++
		inc(q.mDropFull)
		q.lostLocked(id, seq)
		q.openGapLocked(id, seq, t, metrics.ReasonBufferFull)
		q.mu.Unlock() // a log line is never written under the lock
		q.clock.observe(t)
		q.dropLog.Add(1)
		return
	}
	q.flushGapLocked()
	msg := q.getMsgLocked()
	m.CopyTo(msg)
	q.pushLocked(Item{Kind: KindEvent, Session: id, Time: t, Seq: seq, Msg: msg, Size: int(size)})
	q.events++
	q.st.Buffered++
	q.addBytesLocked(size)
	if q.mBufEvents != nil {
		q.mBufEvents.Set(float64(q.events))
	}
	q.wakeLocked()
	q.mu.Unlock()
}

// receivedLocked counts event seq of session id as received and reports
// whether it may be kept: once the queue is closed it is dropped (counted).
func (q *Queue) receivedLocked(id string, seq uint64) bool {
	q.st.Received++
	inc(q.mReceived)
	if id == q.sess {
		q.lastSeq = seq
	}
	if q.closed {
		q.st.DroppedShutdown++
		inc(q.mDropShutdown)
		return false
	}
	return true
}

// EventOversized records an event that the reader skipped for crossing its
// byte or header cap: it counts as received and dropped (reason oversized),
// and its sequence number goes into a gap marker, so the consumer sees the
// hole. It implements session.OversizedHandler.
func (q *Queue) EventOversized(id string, seq uint64, t time.Time, name string, size int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.receivedLocked(id, seq) {
		return
	}
	q.st.DroppedOversized++
	inc(q.mDropOversized)
	q.lostLocked(id, seq)
	q.openGapLocked(id, seq, t, metrics.ReasonOversized)
}

// SessionEnded records the end of a session, after the gap of its last
// dropped events if any. It implements session.Handler.
func (q *Queue) SessionEnded(id string, t time.Time, reason string, lastSeq uint64) {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.flushGapLocked()
	q.pushLocked(Item{Kind: KindSessionEnd, Session: id, Time: t, Reason: reason, LastSeq: lastSeq})
	if id == q.sess {
		q.sessOpen = false
	}
	q.wakeLocked()
	q.mu.Unlock()
}

// PushSnapshot queues the list events of an event-list action run after the
// login of session. The queue takes ownership of items and of their
// messages: the caller must not use them afterwards. If the list does not fit
// the byte budget, its events are dropped whole (counted and logged) and the
// item is queued without them, with Total set, so the consumer can still say
// that a snapshot was taken and lost.
func (q *Queue) PushSnapshot(session, action string, items []*amiwire.Message, t time.Time) {
	var size int64
	for _, m := range items {
		size += eventSize(m)
	}
	it := Item{Kind: KindSnapshot, Session: session, Time: t, Action: action, Total: len(items)}
	q.mu.Lock()
	if session == q.sess {
		it.Seq = q.lastSeq
	}
	if q.closed {
		q.st.SnapshotsDropped++
		q.mu.Unlock()
		return
	}
	q.flushGapLocked()
	if !q.budget.tryAcquire(size) {
		q.st.SnapshotsDropped++
		q.pushLocked(it)
		if session == q.sess {
			// Lost like an event: the taker tries again.
			q.coverLocked(&it, false)
			q.wantSnap = true
			q.signalSnapLocked()
		}
		q.wakeLocked()
		q.mu.Unlock()
		q.clock.observe(t)
		q.snapDropLog.Add(1)
		return
	}
	if session == q.sess {
		q.coverLocked(&it, true)
	}
	it.Items, it.Size = items, int(size)
	q.addBytesLocked(size)
	q.pushLocked(it)
	q.wakeLocked()
	q.mu.Unlock()
}

// Close stops taking items: it queues the open gap, and a session_end
// (reason "closed", last sequence number received) for a session still open,
// then wakes the consumer, which gets the remaining items and then ErrClosed.
// Events that arrive later are counted as received and dropped (shutdown).
// Close is idempotent.
func (q *Queue) Close() {
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	now := time.Now()
	q.flushGapLocked()
	if q.sessOpen {
		q.pushLocked(Item{Kind: KindSessionEnd, Session: q.sess, Time: now, Reason: ReasonClosed, LastSeq: q.lastSeq})
		q.sessOpen = false
	}
	q.closed = true
	close(q.done)
	select {
	case q.notify <- struct{}{}:
	default:
	}
	if q.wake != nil {
		q.wake()
	}
	q.mu.Unlock()
	// The last counts are logged, not lost.
	q.dropLog.Stop()
	q.snapDropLog.Stop()
}

// Done returns a channel closed by Close.
func (q *Queue) Done() <-chan struct{} { return q.done }

// Notify returns the channel on which the queue signals its consumer: a
// value is sent after an item is added to a queue that TryPop last found
// empty, and on Close. A consumer that also waits on other channels selects
// on it after a TryPop that returned nothing.
func (q *Queue) Notify() <-chan struct{} { return q.notify }

// TryPop appends up to cap(dst)-len(dst) items to dst, oldest first, without
// waiting. With nothing to take it returns dst unchanged and arms Notify, or
// ErrClosed once the queue is closed and empty.
func (q *Queue) TryPop(dst []Item) ([]Item, error) {
	room := cap(dst) - len(dst)
	if room <= 0 {
		return dst, ErrNoRoom
	}
	q.mu.Lock()
	if q.n == 0 && q.gapOpen && !q.closed && time.Since(q.gap.Time) >= q.gapDelay {
		// Everything before the drops was taken and nothing came after
		// them for gapDelay: the gap goes out on its own.
		q.flushGapLocked()
	}
	if q.n == 0 {
		if q.closed {
			q.mu.Unlock()
			return dst, ErrClosed
		}
		q.waiting = true
		q.shrinkLocked()
		q.mu.Unlock()
		return dst, nil
	}
	k := min(room, q.n)
	mask := len(q.ring) - 1
	for i := 0; i < k; i++ {
		dst = append(dst, q.ring[q.head])
		q.ring[q.head] = Item{}
		q.head = (q.head + 1) & mask
	}
	q.n -= k
	q.mu.Unlock()
	return dst, nil
}

// GapPending reports a run of drops not queued yet, and when TryPop will
// queue it on its own if nothing else comes first. A consumer that found the
// queue empty waits until then (as well as on Notify).
func (q *Queue) GapPending() (time.Time, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if !q.gapOpen || q.closed {
		return time.Time{}, false
	}
	return q.gap.Time.Add(q.gapDelay), true
}

// Release hands back an item the consumer has delivered: an event counts as
// published. Its message returns to the pool and its bytes to the budget, and
// *it is zeroed, so a second Release of the same *Item does nothing.
func (q *Queue) Release(it *Item) { q.finish(it, "") }

// Drop hands back an item the consumer could not deliver; an event counts as
// dropped with reason (metrics.ReasonPublishFailed or metrics.ReasonShutdown).
func (q *Queue) Drop(it *Item, reason string) {
	if reason == "" {
		reason = "unknown"
	}
	q.finish(it, reason)
}

func (q *Queue) finish(it *Item, dropReason string) {
	if it.Kind == 0 {
		return
	}
	q.mu.Lock()
	if it.Kind == KindEvent {
		q.events--
		q.st.Buffered--
		switch dropReason {
		case "":
			q.st.Published++
		case metrics.ReasonPublishFailed:
			q.st.DroppedPublishFailed++
			inc(q.mDropFailed)
			q.lostLocked(it.Session, it.Seq)
		case metrics.ReasonShutdown:
			q.st.DroppedShutdown++
			inc(q.mDropShutdown)
		default:
			q.st.DroppedOther++
			if q.mDropVec != nil {
				q.mDropVec.WithLabelValues(q.node, dropReason).Inc()
			}
		}
		if q.mBufEvents != nil {
			q.mBufEvents.Set(float64(q.events))
		}
	}
	if it.Size > 0 {
		q.budget.release(int64(it.Size))
		q.addBytesLocked(-int64(it.Size))
	}
	if it.Msg != nil {
		q.putMsgLocked(it.Msg)
	}
	for _, m := range it.Items {
		q.putMsgLocked(m)
	}
	q.signalSnapLocked()
	q.mu.Unlock()
	*it = Item{}
}

// Stats returns the queue's counters, all read at one instant.
func (q *Queue) Stats() Stats {
	q.mu.Lock()
	s := q.st
	s.Bytes = q.bytes
	s.Waiting = q.n
	q.mu.Unlock()
	return s
}

func (q *Queue) pushLocked(it Item) {
	if q.ring == nil {
		q.ring, q.head = ringPool.Get().(*[minRing]Item)[:], 0
	}
	if q.n == len(q.ring) {
		r := make([]Item, 2*len(q.ring))
		mask := len(q.ring) - 1
		for i := 0; i < q.n; i++ {
			r[i] = q.ring[(q.head+i)&mask]
		}
		q.ring, q.head = r, 0
	}
	q.ring[(q.head+q.n)&(len(q.ring)-1)] = it
	q.n++
	q.peak = max(q.peak, q.n)
}

// shrinkLocked gives a large ring back to the GC when the queue is empty and
// its use since it was last empty stayed under a quarter of it: a past flood
// does not pin its peak, and steady bursts do not regrow it every time. An
// empty ring of minRing items goes back to ringPool (every slot is zero:
// TryPop clears what it takes).
func (q *Queue) shrinkLocked() {
	if q.n != 0 {
		return
	}
	if len(q.ring) == minRing {
		ringPool.Put((*[minRing]Item)(q.ring))
		q.ring, q.head = nil, 0
		return
	}
	if len(q.ring) > shrinkRing {
		if q.peak < len(q.ring)/4 {
			q.ring, q.head = nil, 0
		}
		q.peak = 0
	}
}

func (q *Queue) wakeLocked() {
	if q.waiting {
		q.waiting = false
		select {
		case q.notify <- struct{}{}:
		default:
		}
		if q.wake != nil {
			q.wake()
		}
	}
}

// SetWake sets f, called whenever the queue signals Notify (an item added
// after a TryPop found the queue empty, a gap opened, Close), so that a
// consumer can wait without a goroutine. f runs under the queue's lock: it
// must not block nor call the queue. Set it before the first TryPop.
func (q *Queue) SetWake(f func()) {
	q.mu.Lock()
	q.wake = f
	q.mu.Unlock()
}

func (q *Queue) openGapLocked(id string, seq uint64, t time.Time, reason string) {
	if q.gapOpen && (q.gap.Session != id || q.gap.Reason != reason) {
		q.flushGapLocked()
	}
	if !q.gapOpen {
		q.gapOpen = true
		q.gap = Item{Kind: KindGap, Session: id, Time: t, Reason: reason, FirstSeq: seq}
		// A consumer waiting on an empty queue learns of the gap, so that
		// it can come back for it after GapPending's time.
		q.wakeLocked()
	}
	q.gap.LastSeq = seq
	q.gap.Count++
}

// flushGapLocked queues the open gap: it is called before any item is
// accepted, so the gap sits exactly where its events were lost.
func (q *Queue) flushGapLocked() {
	if q.gapOpen {
		q.gapOpen = false
		q.pushLocked(q.gap)
		q.gap = Item{}
		q.signalSnapLocked()
	}
}

// snapCover is where an action's last snapshot of the session stands.
type snapCover struct {
	stored  bool   // it was stored: it describes the PBX after seq
	dropped bool   // it did not fit the budget
	seq     uint64 // the last event number read before its list completed
	repeat  uint64 // its Item.Count
}

// coverLocked records snapshot it of the current session as its action's
// last, and numbers it (Count) after the earlier ones at the same Seq.
func (q *Queue) coverLocked(it *Item, stored bool) {
	prev, ok := q.covered[it.Action]
	if ok && prev.seq == it.Seq {
		it.Count = prev.repeat + 1
	}
	q.covered[it.Action] = snapCover{stored: stored, dropped: !stored, seq: it.Seq, repeat: it.Count}
}

// lostLocked records that event seq of session was lost, so the state a
// snapshot taken before it describes is no longer what the events after
// it lead to.
func (q *Queue) lostLocked(session string, seq uint64) {
	if session != q.sess || q.closed {
		return
	}
	q.lostSeq = max(q.lostSeq, seq)
	q.wantSnap = true
}

// signalSnapLocked signals the snapshot taker when something was lost and
// the buffer has room again: it would take an event now. While the buffer
// is full the drops go on, the gap stays open, and a snapshot would only
// be lost too; the signal waits for the first release that makes room.
func (q *Queue) signalSnapLocked() {
	if !q.wantSnap || q.gapOpen || q.closed || q.events >= q.maxEvents || q.budget.Used() >= q.budget.Max() {
		return
	}
	q.wantSnap = false
	select {
	case q.snapWanted <- struct{}{}:
	default:
	}
}

// SnapshotWanted returns the channel on which the queue asks for a new
// snapshot: a value is sent (one at a time, coalesced) once events of the
// current session were lost (a gap was written, or events or a snapshot
// were dropped by the publisher or the budget) and the buffer has room
// again. The taker checks SnapshotNeeded before it acts: a snapshot whose
// list completed after the loss already covers it.
func (q *Queue) SnapshotWanted() <-chan struct{} { return q.snapWanted }

// SnapshotNeeded reports whether session is the queue's current session
// and, for one of actions, no stored snapshot stands after every event of
// the session lost so far: its last snapshot was dropped, or was taken
// before the last loss, or none was stored and something was lost.
func (q *Queue) SnapshotNeeded(session string, actions []string) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	if session != q.sess || !q.sessOpen || q.closed {
		return false
	}
	for _, a := range actions {
		c := q.covered[a]
		switch {
		case c.dropped:
			return true
		case c.stored && q.lostSeq > c.seq:
			return true
		case !c.stored && q.lostSeq > 0:
			return true
		}
	}
	return false
}

func (q *Queue) addBytesLocked(n int64) {
	q.bytes += n
	if q.mBufBytes != nil {
		q.mBufBytes.Add(float64(n))
	}
}

func (q *Queue) getMsgLocked() *amiwire.Message {
	if k := len(q.free); k > 0 {
		m := q.free[k-1]
		q.free = q.free[:k-1]
		return m
	}
	return msgPool.Get().(*amiwire.Message)
}

func (q *Queue) putMsgLocked(m *amiwire.Message) {
	if m.Size() > maxPooledSize {
		return
	}
	m.Reset()
	if len(q.free) < freeListCap {
		q.free = append(q.free, m)
		return
	}
	msgPool.Put(m)
}

func eventSize(m *amiwire.Message) int64 {
	return int64(m.Size()) + int64(m.Len())*spanBytes + itemOverhead
}

func inc(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}

// eventClock is the drop logs' clock: the latest drop's event time, moved on
// by the wall clock since it was seen. The log's intervals so follow the
// events' own timeline (recorded times in tests and replays) and still
// pass while the node is silent.
type eventClock struct {
	origin time.Time // for monotonic readings
	mu     sync.Mutex
	at     int64 // event time of the latest drop, Unix ns
	seen   int64 // monotonic reading when it was seen
}

func newEventClock() *eventClock { return &eventClock{origin: time.Now()} }

// observe moves the clock to t, the time of an event being dropped.
func (c *eventClock) observe(t time.Time) {
	now := int64(time.Since(c.origin))
	c.mu.Lock()
	c.at, c.seen = t.UnixNano(), now
	c.mu.Unlock()
}

// Now implements logging.Clock.
func (c *eventClock) Now() time.Duration {
	now := int64(time.Since(c.origin))
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Duration(c.at + now - c.seen)
}

// AfterFunc implements logging.Clock.
func (c *eventClock) AfterFunc(d time.Duration, f func()) logging.Timer { return time.AfterFunc(d, f) }
