package eventq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
	"unsafe"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/metrics"
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

// Queue is one node's bounded buffer. Its producer methods (SessionStarted,
// Event, SessionEnded, PushSnapshot) never block and never wait on the
// consumer; they have the method set of session.Handler. It has one consumer,
// which takes items with Pop or TryPop and hands each back with Release or
// Drop.
type Queue struct {
	node        string
	maxEvents   int
	budget      *Budget
	owner       string
	log         *zap.Logger
	logInterval time.Duration
	gapDelay    time.Duration // see DefaultGapDelay

	mReceived      prometheus.Counter
	mDropFull      prometheus.Counter
	mDropFailed    prometheus.Counter
	mDropShutdown  prometheus.Counter
	mDropOversized prometheus.Counter
	mDropVec       *prometheus.CounterVec
	mBufEvents     prometheus.Gauge
	mBufBytes      prometheus.Gauge

	// notify holds one wake-up for a consumer that found the queue empty.
	notify chan struct{}
	// done is closed by Close.
	done chan struct{}

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

	st Stats

	lastLog      time.Time
	logDelta     uint64
	logSnapDelta uint64
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
			return nil, err
		}
	}
	if c.budget == nil {
		c.budget = NewBudget(DefaultMaxBytes)
	}
	q := &Queue{
		node:        node,
		maxEvents:   c.maxEvents,
		budget:      c.budget,
		owner:       c.owner,
		log:         c.log.With(zap.String("node", node)),
		logInterval: c.logInterval,
		gapDelay:    c.gapDelay,
		notify:      make(chan struct{}, 1),
		done:        make(chan struct{}),
		ring:        make([]Item, minRing),
	}
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
	q.wakeLocked()
	q.mu.Unlock()
}

// Event copies m into a buffered item, or drops it if the node's event cap or
// the shared byte budget is reached. It implements session.Handler: it never
// blocks and does not retain m.
func (q *Queue) Event(id string, seq uint64, t time.Time, m *amiwire.Message) {
	size := eventSize(m)
	q.mu.Lock()
	q.st.Received++
	inc(q.mReceived)
	if id == q.sess {
		q.lastSeq = seq
	}
	if q.closed {
		q.st.DroppedShutdown++
		inc(q.mDropShutdown)
		q.mu.Unlock()
		return
	}
	if q.events >= q.maxEvents || !q.budget.tryAcquire(size) {
		q.st.DroppedBufferFull++
		inc(q.mDropFull)
		q.openGapLocked(id, seq, t, metrics.ReasonBufferFull)
		q.logDelta++
		q.logDropsLocked(t)
		return // unlocked by logDropsLocked
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
	if q.logDelta > 0 && t.Sub(q.lastLog) >= q.logInterval {
		q.logDropsLocked(t)
		return
	}
	q.mu.Unlock()
}

// EventOversized records an event that the reader skipped for crossing its
// byte or header cap: it counts as received and dropped (reason oversized),
// and its sequence number goes into a gap marker, so the consumer sees the
// hole. It implements session.OversizedHandler.
func (q *Queue) EventOversized(id string, seq uint64, t time.Time, name string, size int) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.st.Received++
	inc(q.mReceived)
	if id == q.sess {
		q.lastSeq = seq
	}
	if q.closed {
		q.st.DroppedShutdown++
		inc(q.mDropShutdown)
		return
	}
	q.st.DroppedOversized++
	inc(q.mDropOversized)
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
		q.logSnapDelta++
		q.pushLocked(it)
		q.wakeLocked()
		q.logDropsLocked(t)
		return // unlocked by logDropsLocked
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
	if q.logDelta > 0 || q.logSnapDelta > 0 {
		q.logDropsLocked(now.Add(q.logInterval)) // always due: the last count must not be lost
		return
	}
	q.mu.Unlock()
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

// Pop appends up to cap(dst)-len(dst) items to dst, oldest first, waiting
// until at least one is there. After Close it returns what is left, then
// ErrClosed; it returns ctx.Err() if ctx ends first.
func (q *Queue) Pop(ctx context.Context, dst []Item) ([]Item, error) {
	for {
		out, err := q.TryPop(dst)
		if err != nil || len(out) > len(dst) {
			return out, err
		}
		var gapDue <-chan time.Time
		var t *time.Timer
		if at, ok := q.GapPending(); ok {
			t = time.NewTimer(time.Until(at))
			gapDue = t.C
		}
		select {
		case <-q.notify:
		case <-q.done:
		case <-gapDue:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if t != nil {
			t.Stop()
		}
		if err != nil {
			return dst, err
		}
	}
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
// does not pin its peak, and steady bursts do not regrow it every time.
func (q *Queue) shrinkLocked() {
	if q.n == 0 && len(q.ring) > shrinkRing {
		if q.peak < len(q.ring)/4 {
			q.ring, q.head = make([]Item, minRing), 0
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
	}
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
	}
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

// logDropsLocked writes the coalesced drop line if one is due, and unlocks
// q.mu before writing: a log line is never written under the lock.
func (q *Queue) logDropsLocked(t time.Time) {
	if (q.logDelta == 0 && q.logSnapDelta == 0) || (!q.lastLog.IsZero() && t.Sub(q.lastLog) < q.logInterval) {
		q.mu.Unlock()
		return
	}
	delta, snaps := q.logDelta, q.logSnapDelta
	total, snapTotal := q.st.DroppedBufferFull, q.st.SnapshotsDropped
	q.lastLog, q.logDelta, q.logSnapDelta = t, 0, 0
	q.mu.Unlock()
	q.log.Warn("node buffer full: dropping",
		zap.Uint64("dropped_delta", delta),
		zap.Uint64("dropped_total", total),
		zap.Uint64("snapshots_dropped_delta", snaps),
		zap.Uint64("snapshots_dropped_total", snapTotal))
}

func eventSize(m *amiwire.Message) int64 {
	return int64(m.Size()) + int64(m.Len())*spanBytes + itemOverhead
}

func inc(c prometheus.Counter) {
	if c != nil {
		c.Inc()
	}
}
