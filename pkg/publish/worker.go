package publish

import (
	"context"
	"errors"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/internal/logging"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/pkg/amiwire"
)

const (
	// popBatch is how many items a busy node takes from its queue at a
	// time. A node starts at minPopBatch and doubles its batch each time a
	// pop fills it: quiet nodes (most of a large fleet) hold no batch while
	// idle (batchPool) instead of 31 KB.
	popBatch    = 128
	minPopBatch = 8
	// fillBudget bounds the publishes of one round before the node looks
	// at its acks again, so acknowledged items are released promptly.
	fillBudget = 256
	// maxSubjectCache caps the event-name-to-subject cache of a node; names
	// beyond it (a PBX inventing event names) are built on each use.
	maxSubjectCache = 1024
	// maxPooledData: an entry whose payload buffer grew past this (a big
	// snapshot) is not reused.
	maxPooledData = 64 << 10
	// headerRoom is kept free of the max payload for the headers when a
	// snapshot is sized.
	headerRoom = 512
	// defaultParkAfter: a worker idle this long parks (no goroutine until
	// its queue has an item). Longer than the gaps of a node with steady
	// traffic, short next to a node that is idle for minutes.
	defaultParkAfter = time.Second
)

type entryState uint8

const (
	stIdle entryState = iota
	stInflight
	stAcked
	stFailed
)

// entry is one message being published: its nats.Msg (whose pointer keys
// Publisher.inflight), the queue item it carries, and its outcome.
type entry struct {
	msg  nats.Msg
	id   []string // the Nats-Msg-Id header value, reused
	item eventq.Item
	w    *worker

	// Guarded by Publisher.amu while registered.
	state     entryState
	err       error
	retryable bool

	// stalled: the last attempt met back-pressure, not a failure.
	stalled bool
}

func (e *entry) setOutcome(err error) {
	if err == nil {
		e.state, e.err = stAcked, nil
		return
	}
	e.state, e.err, e.retryable = stFailed, err, retryable(err)
}

// batchPool holds empty pop batches of minPopBatch items: a worker gives
// its batch back whenever a pop finds its queue empty and takes one at the
// next pop, so an idle node holds none (about 1.2 KiB each, 12 MiB at
// 10,000 nodes), and a node with traffic pays a pool Get and Put per
// wake-up, not an allocation.
var batchPool = sync.Pool{New: func() any { return new([minPopBatch]eventq.Item) }}

var entryPool = sync.Pool{New: func() any {
	e := &entry{id: make([]string, 1)}
	e.msg.Header = nats.Header{jetstream.MsgIDHeader: e.id}
	return e
}}

// worker publishes one node's queue. All its fields but those noted are
// owned by its goroutine.
type worker struct {
	p        *Publisher
	node     string
	q        *eventq.Queue
	metaSubj string
	subjects map[string]string

	cancel context.CancelFunc
	ctx    context.Context
	done   chan struct{} // nil until started; closed when the worker ends (not when it parks)

	// pmu guards parked (the goroutine ended to wait for a kick) and
	// kicked (a kick came while it ran); see kick and park.
	pmu    sync.Mutex
	parked bool
	kicked bool
	onPark func() // tests: called (under pmu) when the worker parks
	// parkAfter is how long an idle worker waits for work before it
	// parks (defaultParkAfter; tests shorten it).
	parkAfter time.Duration

	// timer waits for a retry or a gap marker's time; made at its first
	// use, owned by the goroutine.
	timer *time.Timer
	// wake is signalled by resolve when one of the node's publishes has an
	// outcome.
	wake chan struct{}

	// inflightN counts the node's registered publishes, and failSeen says
	// one of them failed (retryably) since collect last looked, so that
	// nothing more is sent before its resend; guarded by p.amu.
	inflightN int
	failSeen  bool

	batch    []eventq.Item
	pos      int
	win      ring
	resolved []*entry
	failGaps []eventq.Item
	qclosed  bool

	resync   bool
	gateWait <-chan struct{} // set by send when the stream check holds publishes back
	retryAt  time.Time
	backoff  time.Duration
	failing  bool
	failedAt time.Time
	failN    uint64

	// refusedLog reports messages JetStream refused for good, one line per
	// log interval at most; stopped by finish.
	refusedLog *logging.Coalescer

	redactFn  func([]byte) bool
	redactHit bool
	idBuf     []byte

	mPublished prometheus.Counter
	mRetries   prometheus.Counter
	mRedacted  prometheus.Counter
	mMeta      [eventq.KindSnapshot + 1]prometheus.Counter

	metaPublished, metaDropped, retries, redacted atomic.Uint64
}

func newWorker(p *Publisher, node string, q *eventq.Queue) *worker {
	w := &worker{
		p:        p,
		node:     node,
		q:        q,
		metaSubj: MetaSubject(p.o.prefix, node),
		subjects: make(map[string]string),
		wake:     make(chan struct{}, 1),
		// batch: nil while the node is idle (fill).
		backoff:   p.o.retryMin,
		parkAfter: defaultParkAfter,
	}
	w.refusedLog = logging.NewCoalescerWith(p.o.log, "JetStream refused messages for good; dropped (publish_failed)",
		p.o.logInterval, logging.CoalescerOptions{Level: zapcore.WarnLevel, CountField: "dropped_delta", TotalField: "dropped_total"},
		zap.String("node", node))
	if p.redact != nil {
		w.redactFn = w.redactField
	}
	if m := p.o.metrics; m != nil {
		w.mPublished = m.EventsPublished.WithLabelValues(node)
		w.mRetries = m.PublishRetries.WithLabelValues(node)
		w.mRedacted = m.EventsRedacted.WithLabelValues(node)
		for _, k := range []eventq.Kind{eventq.KindSessionStart, eventq.KindSessionEnd, eventq.KindGap, eventq.KindSnapshot} {
			w.mMeta[k] = m.MetaPublished.WithLabelValues(node, k.String())
		}
	}
	return w
}

func (w *worker) start(parent context.Context) {
	ctx, cancel := context.WithCancel(parent)
	w.cancel = cancel
	w.ctx = ctx
	w.done = make(chan struct{})
	// A parked worker learns of new items, of Close and of the end of ctx
	// through kick, with no goroutine waiting.
	w.q.SetWake(w.kick)
	context.AfterFunc(ctx, w.kick)
	go w.run()
}

// kick starts the worker's goroutine again if it is parked, else makes
// its next park fail. It runs under the queue's lock (eventq.SetWake) or
// on ctx's AfterFunc goroutine: it must not block.
func (w *worker) kick() {
	w.pmu.Lock()
	defer w.pmu.Unlock()
	if w.parked {
		w.parked = false
		go w.run()
		return
	}
	w.kicked = true
}

// park ends the goroutine of a worker with nothing to do until its queue
// signals (kick): an idle node then has no goroutine, and no stack (several
// KiB each, 10,000 at 10,000 nodes). It reports false if a kick came since
// the last park, and the worker must look again.
func (w *worker) park() bool {
	w.pmu.Lock()
	defer w.pmu.Unlock()
	if w.kicked {
		w.kicked = false
		return false
	}
	w.parked = true
	if w.onPark != nil {
		w.onPark()
	}
	return true
}

// run is the worker's goroutine, from start or a kick to its park or its
// end; only the end closes done.
func (w *worker) run() {
	if w.loop(w.ctx) {
		return // parked
	}
	if w.timer != nil {
		w.timer.Stop()
	}
	w.finish()
	close(w.done)
}

// loop publishes until the worker can park (true) or ends (false).
func (w *worker) loop(ctx context.Context) bool {
	lingered := false // idle for parkAfter: park at the next idle look
	for {
		if ctx.Err() != nil {
			return false
		}
		pending := w.collect()
		if w.resync {
			if pending > 0 {
				// Wait for every outcome before resending, so nothing
				// resent can overtake a message still in flight.
				select {
				case <-w.wake:
				case <-ctx.Done():
				}
				continue
			}
			if w.gateWait != nil {
				// The stream is being checked or recreated: resend only
				// after, so nothing resent precedes its earlier failures.
				select {
				case <-w.gateWait:
				case <-ctx.Done():
				}
				w.gateWait = nil
				continue
			}
			if d := time.Until(w.retryAt); d > 0 {
				timer := w.timerAfter(d)
				select {
				case <-timer.C:
				case <-ctx.Done():
				}
				continue
			}
			w.republish(ctx)
			continue
		}
		if !w.fill(ctx) || w.resync {
			continue
		}
		if w.qclosed && w.win.len() == 0 && len(w.failGaps) == 0 {
			return false // the queue is closed and all it held is stored
		}
		var notify <-chan struct{}
		var gapDue <-chan time.Time
		if !w.qclosed {
			notify = w.q.Notify()
			// Drops after the last event taken: come back for their gap
			// marker when the queue will hand it out on its own.
			if at, ok := w.q.GapPending(); ok {
				gapDue = w.timerAfter(time.Until(at)).C
			}
		}
		if notify != nil && gapDue == nil && w.win.len() == 0 && len(w.failGaps) == 0 {
			// Nothing in flight, nothing due: only the queue can give
			// work. Wait parkAfter for it first, so that a node with
			// steady traffic (10 events/s) keeps its goroutine instead
			// of ending and starting one per event; then park, and the
			// queue kicks (the TryPop that found it empty armed it).
			if !lingered {
				// A kick until now came with a Notify token, which this
				// select takes: forget it, or the next park would fail.
				w.pmu.Lock()
				w.kicked = false
				w.pmu.Unlock()
				select {
				case <-notify:
				case <-w.timerAfter(w.parkAfter).C:
					lingered = true
				case <-ctx.Done():
				}
				continue
			}
			if w.park() {
				return true
			}
			lingered = false
			continue
		}
		lingered = false
		select {
		case <-w.wake:
		case <-notify:
		case <-gapDue:
		case <-ctx.Done():
		}
	}
}

// timerAfter returns w.timer set to fire after d, its channel drained.
func (w *worker) timerAfter(d time.Duration) *time.Timer {
	if w.timer == nil {
		w.timer = time.NewTimer(d)
	} else {
		w.timer.Reset(d) // Go >= 1.23: no stale value after Reset
	}
	return w.timer
}

// collect releases the outcomes at the head of the window, in order, and
// enters resync when a retryable failure is known. It returns the number of
// the node's publishes still unacknowledged.
func (w *worker) collect() int {
	p := w.p
	w.resolved = w.resolved[:0]
	p.amu.Lock()
	for w.win.len() > 0 {
		e := w.win.front()
		if e.state == stInflight {
			break
		}
		if e.state == stFailed && e.retryable {
			break
		}
		w.win.popFront()
		w.resolved = append(w.resolved, e)
	}
	var failure error
	if !w.resync && w.failSeen {
		// Possibly a failure behind a publish still in flight: stop sending
		// now, so that as little as possible is sent after what must be
		// resent.
		w.failSeen = false
		for i := 0; i < w.win.len(); i++ {
			if e := w.win.at(i); e.state == stFailed && e.retryable {
				failure = e.err
				break
			}
		}
	}
	pending := w.inflightN
	p.amu.Unlock()
	if failure != nil {
		w.failed(failure)
	}
	for _, e := range w.resolved {
		if e.state == stAcked {
			w.complete(e)
		} else {
			w.dropFailed(e)
		}
	}
	return pending
}

// failed enters resync after a retryable failure and schedules the resend.
func (w *worker) failed(err error) {
	w.resync = true
	w.retryAt = time.Now().Add(w.backoff)
	w.backoff = min(2*w.backoff, w.p.o.retryMax)
	if !w.failing {
		w.failing, w.failedAt, w.failN = true, time.Now(), 0
		w.p.o.log.Warn("publishing to JetStream failing; events stay buffered and are retried in order",
			zap.String("node", w.node), zap.Error(err))
	}
}

// republish sends again, in order, every publish of the window that failed;
// it runs when none of the node's publishes is in flight.
func (w *worker) republish(ctx context.Context) {
	// Outcomes that are final are consumed first, whatever their place: an
	// ack behind a failure is stored already.
	w.p.amu.Lock()
	// Every outcome is known and the window holds every failure: what
	// failSeen said is handled here.
	w.failSeen = false
	n := w.win.len()
	w.resolved = w.resolved[:0]
	for i := 0; i < n; i++ {
		e := w.win.popFront()
		if e.state == stFailed && e.retryable {
			w.win.push(e)
			continue
		}
		w.resolved = append(w.resolved, e)
	}
	w.p.amu.Unlock()
	for _, e := range w.resolved {
		if e.state == stAcked {
			w.complete(e)
		} else {
			w.dropFailed(e)
		}
	}
	w.resync = false
	for i := 0; i < w.win.len(); i++ {
		e := w.win.at(i)
		if !e.stalled {
			w.retries.Add(1)
			w.failN++
			if w.mRetries != nil {
				w.mRetries.Inc()
			}
		}
		if !w.send(ctx, e) {
			return
		}
	}
}

// fill publishes new items: first the gap markers of events refused for
// good, then what the queue holds. It returns true when it ran out of items
// (the queue's Notify is armed), false when it stopped for another reason.
func (w *worker) fill(ctx context.Context) bool {
	maxPayload := int(w.p.nc.MaxPayload())
	for range fillBudget {
		if w.pos == len(w.batch) && !w.qclosed {
			switch {
			case w.batch == nil:
				w.batch = batchPool.Get().(*[minPopBatch]eventq.Item)[:0]
			case len(w.batch) == cap(w.batch) && cap(w.batch) < popBatch:
				// The last pop filled the batch: the node is busy.
				w.batch = make([]eventq.Item, 0, min(2*cap(w.batch), popBatch))
			}
			b, err := w.q.TryPop(w.batch[:0])
			w.batch, w.pos = b, 0
			if errors.Is(err, eventq.ErrClosed) {
				w.qclosed = true
			}
			if len(b) == 0 && cap(b) == minPopBatch {
				// Nothing to take: an idle node holds no batch. Every
				// slot is zero (each item is cleared once taken).
				batchPool.Put((*[minPopBatch]eventq.Item)(b[:minPopBatch]))
				w.batch = nil
			}
		}
		var e *entry
		if w.pos < len(w.batch) {
			e = w.newEntry(&w.batch[w.pos])
			w.batch[w.pos] = eventq.Item{}
			w.pos++
			if maxPayload > 0 && msgSize(e) > maxPayload {
				// Refused for good before anything after it is sent:
				// consecutive ones join one gap marker, in exact order.
				e.setOutcome(nats.ErrMaxPayload)
				w.dropFailed(e)
				continue
			}
		}
		if !w.flushFailGaps(ctx) {
			if e != nil {
				// Never sent: it waits behind the gap for the resend,
				// which does not count it as a retry.
				w.win.push(e)
				e.state, e.err, e.retryable, e.stalled = stFailed, ctx.Err(), true, true
			}
			return false
		}
		if e == nil {
			return true // nothing to send: the queue is empty (Notify armed) or closed
		}
		w.win.push(e)
		if !w.send(ctx, e) {
			return false
		}
	}
	return false
}

// flushFailGaps publishes the pending publish_failed gap markers.
func (w *worker) flushFailGaps(ctx context.Context) bool {
	for len(w.failGaps) > 0 {
		it := w.failGaps[0]
		w.failGaps = append(w.failGaps[:0], w.failGaps[1:]...)
		e := w.newEntry(&it)
		w.win.push(e)
		if !w.send(ctx, e) {
			return false
		}
	}
	return true
}

// msgSize is what nats.go checks against the server's max payload: the
// payload and the header block ("NATS/1.0\r\n", the Nats-Msg-Id line,
// "\r\n"), the only header an entry has.
func msgSize(e *entry) int {
	return len(e.msg.Data) + len("NATS/1.0\r\n\r\n") + len(jetstream.MsgIDHeader) + len(": \r\n") + len(e.id[0])
}

// send publishes e, which is in the window. It returns false if the node
// must stop sending: a retryable failure (resync), back-pressure, or ctx.
func (w *worker) send(ctx context.Context, e *entry) bool {
	p := w.p
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		e.state, e.err, e.retryable = stFailed, ctx.Err(), true
		return false
	}
	p.amu.Lock()
	if p.gate != nil {
		// Held back, not failed: no retry is counted.
		w.gateWait = p.gate
		e.state, e.err, e.retryable, e.stalled = stFailed, errStreamCheck, true, true
		w.resync, w.retryAt = true, time.Time{}
		p.amu.Unlock()
		<-p.sem
		return false
	}
	if w.failSeen {
		// A publish of this node failed since its outcomes were last
		// looked at (its answer came while this node went on sending):
		// what goes out now would be stored before that one's resend, as
		// when another node recreated the stream meanwhile. Held back, not
		// failed: no retry is counted.
		e.state, e.err, e.retryable, e.stalled = stFailed, errBehindFailure, true, true
		p.amu.Unlock()
		<-p.sem
		return false
	}
	e.state, e.err, e.stalled = stInflight, nil, false
	p.inflight[&e.msg] = e
	w.inflightN++
	p.amu.Unlock()

	_, err := p.js.PublishMsgAsync(&e.msg, p.pubOpts...)
	if err == nil {
		return true
	}
	p.amu.Lock()
	if p.inflight[&e.msg] == e {
		delete(p.inflight, &e.msg)
		e.setOutcome(err)
		w.inflightN--
		p.noteIdleLocked()
		p.amu.Unlock()
		<-p.sem
	} else {
		// An ack timeout fired inside PublishMsgAsync and resolved it.
		p.amu.Unlock()
	}
	switch {
	case errors.Is(err, jetstream.ErrTooManyStalledMsgs):
		// Back-pressure from another user of the cap: waiting for acks is
		// the whole remedy, so retry at once (nats.go waits on its stall
		// channel) and do not count a retry.
		e.stalled = true
		w.resync, w.retryAt = true, time.Time{}
		return false
	case !e.retryable:
		// Refused before sending (over max payload ...): nothing after it
		// was sent, so if it is the newest entry its gap marker goes in
		// exact order.
		if w.win.back() == e {
			w.win.popBack()
			w.dropFailed(e)
		}
		return true
	default:
		w.failed(err)
		return false
	}
}

func (w *worker) newEntry(it *eventq.Item) *entry {
	e := entryPool.Get().(*entry)
	e.w = w
	e.item = *it
	e.state, e.err, e.retryable, e.stalled = stIdle, nil, false, false
	data := e.msg.Data[:0]
	if it.Kind == eventq.KindEvent {
		w.redactHit = false
		data = AppendEvent(data, w.node, &e.item, w.redactFn)
		if w.redactHit {
			w.countRedacted()
		}
		var name []byte
		if e.item.Msg != nil {
			name = e.item.Msg.Name()
		}
		e.msg.Subject = w.subject(name)
		w.idBuf = append(w.idBuf[:0], e.item.Session...)
		w.idBuf = append(w.idBuf, '-')
		w.idBuf = strconv.AppendUint(w.idBuf, e.item.Seq, 10)
	} else {
		w.redactHit = false
		// The max payload is the server's, learnt again on reconnect.
		lim := SnapshotLimits{MaxItems: w.p.o.snapMax, MaxBytes: max(int(w.p.nc.MaxPayload())-headerRoom, 1024)}
		data = AppendMeta(data, w.node, &e.item, w.redactFn, lim)
		if w.redactHit {
			w.countRedacted()
		}
		e.msg.Subject = w.metaSubj
		w.idBuf = appendMetaID(w.idBuf[:0], &e.item)
	}
	e.msg.Data = data
	e.id[0] = string(w.idBuf)
	return e
}

// appendMetaID appends the deterministic Nats-Msg-Id of a marker.
func appendMetaID(dst []byte, it *eventq.Item) []byte {
	dst = append(dst, it.Session...)
	switch it.Kind {
	case eventq.KindSessionStart:
		dst = append(dst, "-start"...)
	case eventq.KindSessionEnd:
		dst = append(dst, "-end"...)
	case eventq.KindGap:
		dst = append(dst, "-gap-"...)
		dst = strconv.AppendUint(dst, it.FirstSeq, 10)
	case eventq.KindSnapshot:
		dst = append(dst, "-snap-"...)
		for i := 0; i < len(it.Action); i++ {
			c := it.Action[i]
			if !amiwire.NameByte(c) {
				c = '_'
			}
			dst = append(dst, c)
		}
		dst = append(dst, '-')
		dst = strconv.AppendUint(dst, it.Seq, 10)
		if it.Count > 0 {
			// A later snapshot of the action at the same place (a retry
			// with no event read since) must not be deduplicated away.
			dst = append(dst, '-')
			dst = strconv.AppendUint(dst, it.Count+1, 10)
		}
	}
	return dst
}

func (w *worker) subject(name []byte) string {
	if s, ok := w.subjects[string(name)]; ok {
		return s
	}
	s := EventSubject(w.p.o.prefix, w.node, name)
	if len(w.subjects) < maxSubjectCache {
		w.subjects[string(name)] = s
	}
	return s
}

func (w *worker) redactField(key []byte) bool {
	if w.p.redact(key) {
		w.redactHit = true
		return true
	}
	return false
}

func (w *worker) countRedacted() {
	w.redacted.Add(1)
	if w.mRedacted != nil {
		w.mRedacted.Inc()
	}
}

// complete accounts for a stored message and recycles its entry.
func (w *worker) complete(e *entry) {
	if e.item.Kind == eventq.KindEvent {
		if w.mPublished != nil {
			w.mPublished.Inc()
		}
	} else {
		w.metaPublished.Add(1)
		if c := w.mMeta[e.item.Kind]; c != nil {
			c.Inc()
		}
	}
	w.q.Release(&e.item)
	w.backoff = w.p.o.retryMin
	if w.failing {
		w.failing = false
		w.p.o.log.Info("publishing to JetStream recovered",
			zap.String("node", w.node), zap.Uint64("retries", w.failN), zap.Duration("after", time.Since(w.failedAt)))
	}
	w.recycle(e)
}

// dropFailed accounts for a message JetStream refused for good: an event is
// dropped (publish_failed) and joins the gap marker published next.
func (w *worker) dropFailed(e *entry) {
	it := &e.item
	if it.Kind == eventq.KindEvent {
		n := len(w.failGaps)
		if n > 0 && w.failGaps[n-1].Session == it.Session && w.failGaps[n-1].LastSeq+1 == it.Seq {
			w.failGaps[n-1].LastSeq = it.Seq
			w.failGaps[n-1].Count++
		} else {
			w.failGaps = append(w.failGaps, eventq.Item{
				Kind: eventq.KindGap, Session: it.Session, Time: it.Time, Reason: metrics.ReasonPublishFailed,
				FirstSeq: it.Seq, LastSeq: it.Seq, Count: 1,
			})
		}
	} else {
		w.metaDropped.Add(1)
	}
	w.refusedLog.AddWith(1, zap.Error(e.err))
	w.q.Drop(it, metrics.ReasonPublishFailed)
	w.recycle(e)
}

func (w *worker) recycle(e *entry) {
	e.w, e.err = nil, nil
	e.item = eventq.Item{}
	e.state = stIdle
	if cap(e.msg.Data) > maxPooledData {
		e.msg.Data = nil
	}
	entryPool.Put(e)
}

// finish runs when the goroutine ends: publishes still unacknowledged are
// abandoned (their late outcome is ignored) and, with everything taken from
// the queue but not stored, counted as dropped (shutdown). Abandoned entries
// are not recycled: nats.go may still hold their message.
func (w *worker) finish() {
	p := w.p
	var abandoned int
	p.amu.Lock()
	for i := 0; i < w.win.len(); i++ {
		e := w.win.at(i)
		if p.inflight[&e.msg] == e {
			delete(p.inflight, &e.msg)
			w.inflightN--
			abandoned++
			e.state, e.err, e.retryable = stFailed, context.Canceled, true
		}
	}
	p.noteIdleLocked()
	p.amu.Unlock()
	for range abandoned {
		<-p.sem
	}
	for w.win.len() > 0 {
		e := w.win.popFront()
		switch {
		case e.state == stAcked:
			w.complete(e)
		case e.item.Kind != eventq.KindEvent:
			w.metaDropped.Add(1)
			w.q.Drop(&e.item, metrics.ReasonShutdown)
		default:
			w.q.Drop(&e.item, metrics.ReasonShutdown)
		}
	}
	for ; w.pos < len(w.batch); w.pos++ {
		if w.batch[w.pos].Kind != eventq.KindEvent {
			w.metaDropped.Add(1)
		}
		w.q.Drop(&w.batch[w.pos], metrics.ReasonShutdown)
	}
	w.metaDropped.Add(uint64(len(w.failGaps)))
	w.failGaps = nil
	w.refusedLog.Stop()
}

// sweep, after the goroutine ended (or never ran), drops what the closed
// queue still holds and logs the node's summary. It returns the events
// dropped at shutdown since the stop began (base).
func (w *worker) sweep(before uint64) uint64 {
	if w.done == nil {
		w.finish()
	}
	buf := w.batch[:0]
	if cap(buf) == 0 {
		buf = make([]eventq.Item, 0, minPopBatch)
	}
	for {
		items, err := w.q.TryPop(buf[:0])
		for i := range items {
			if items[i].Kind != eventq.KindEvent {
				w.metaDropped.Add(1)
			}
			w.q.Drop(&items[i], metrics.ReasonShutdown)
		}
		if err != nil || len(items) == 0 {
			break
		}
	}
	s := w.stats()
	dropped := s.DroppedShutdown - before
	log := w.p.o.log.Info
	if dropped > 0 || s.MetaDropped > 0 {
		log = w.p.o.log.Warn
	}
	log("node publishing stopped",
		zap.String("node", w.node),
		zap.Uint64("received", s.Received),
		zap.Uint64("published", s.Published),
		zap.Uint64("dropped_buffer_full", s.DroppedBufferFull),
		zap.Uint64("dropped_publish_failed", s.DroppedPublishFailed),
		zap.Uint64("dropped_shutdown", s.DroppedShutdown),
		zap.Uint64("dropped_at_this_stop", dropped),
		zap.Uint64("meta_published", s.MetaPublished),
		zap.Uint64("meta_dropped", s.MetaDropped),
		zap.Uint64("retries", s.Retries))
	return dropped
}

func (w *worker) stats() NodeStats {
	return NodeStats{
		Stats:         w.q.Stats(),
		MetaPublished: w.metaPublished.Load(),
		MetaDropped:   w.metaDropped.Load(),
		Retries:       w.retries.Load(),
		Redacted:      w.redacted.Load(),
	}
}

// ring is the window of a node's entries in publish order.
type ring struct {
	buf  []*entry
	head int
	n    int
}

func (r *ring) len() int        { return r.n }
func (r *ring) at(i int) *entry { return r.buf[(r.head+i)&(len(r.buf)-1)] }
func (r *ring) front() *entry   { return r.at(0) }
func (r *ring) back() *entry    { return r.at(r.n - 1) }
func (r *ring) push(e *entry)   { r.grow(); r.buf[(r.head+r.n)&(len(r.buf)-1)] = e; r.n++ }
func (r *ring) popBack() *entry {
	e := r.back()
	r.buf[(r.head+r.n-1)&(len(r.buf)-1)] = nil
	r.n--
	return e
}
func (r *ring) popFront() *entry {
	e := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) & (len(r.buf) - 1)
	r.n--
	return e
}

func (r *ring) grow() {
	if r.n < len(r.buf) {
		return
	}
	nb := make([]*entry, max(16, 2*len(r.buf)))
	for i := 0; i < r.n; i++ {
		nb[i] = r.at(i)
	}
	r.buf, r.head = nb, 0
}
