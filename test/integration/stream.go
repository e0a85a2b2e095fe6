package integration

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Tail reads a stream from its first message, in order, for as long as it
// runs, and keeps every record. Tests wait on it for a condition over what
// was stored: every batch of messages wakes the waiters. Only its watchdog
// looks at the stream on a timer, to replace a consumer that stalled.
type Tail struct {
	prefix string
	js     jetstream.JetStream
	stream string
	stop   context.CancelFunc // ends the watchdog
	wdone  chan struct{}      // closed when the watchdog returned

	mu      sync.Mutex
	cc      jetstream.ConsumeContext
	lastSeq uint64    // stream sequence of the last message handled
	lastAt  time.Time // when it was handled
	resets  int       // consumers re-created by the watchdog
	recs    []Record
	byNode  map[string][]int // indexes into recs
	// open is each node's session that started and has not ended, by
	// its session_start; covered is, per session, the highest seq stored
	// or marked missing by a gap.
	open    map[string]Record
	covered map[string]uint64
	errs    []error // undecodable messages (at most maxTailErrors)
	changed chan struct{}
}

// maxTailErrors caps the decode errors kept; one is enough to fail a test.
const maxTailErrors = 100

// StartTail starts an ordered consumer on stream from its first message.
// An ordered consumer re-creates itself after a NATS server failure and
// resumes after the last message it delivered, so the tail neither skips
// nor repeats a message.
func StartTail(ctx context.Context, js jetstream.JetStream, stream, prefix string) (*Tail, error) {
	t := &Tail{prefix: prefix, js: js, stream: stream, byNode: map[string][]int{}, open: map[string]Record{},
		covered: map[string]uint64{}, changed: make(chan struct{}), wdone: make(chan struct{}), lastAt: time.Now()}
	cc, err := t.consume(ctx, 1)
	if err != nil {
		return nil, err
	}
	// The handler may already run: cc is shared with it under mu.
	t.mu.Lock()
	t.cc = cc
	t.mu.Unlock()
	wctx, stop := context.WithCancel(context.Background())
	t.stop = stop
	go t.watchdog(wctx)
	return t, nil
}

// consume starts an ordered consumer at stream sequence from.
func (t *Tail) consume(ctx context.Context, from uint64) (jetstream.ConsumeContext, error) {
	cfg := jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy}
	if from > 1 {
		cfg = jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from}
	}
	cons, err := t.js.OrderedConsumer(ctx, t.stream, cfg)
	if err != nil {
		return nil, fmt.Errorf("ordered consumer on %s: %w", t.stream, err)
	}
	cc, err := cons.Consume(t.handle)
	if err != nil {
		return nil, fmt.Errorf("consume %s: %w", t.stream, err)
	}
	return cc, nil
}

// Tail's watchdog: how long the tail may see nothing while the stream
// grows before its consumer is re-created.
const (
	tailStall = 10 * time.Second
	tailCheck = 2 * time.Second
)

// watchdog re-creates the consumer after the last message handled when it
// has delivered nothing for tailStall while the stream holds more. nats.go's
// ordered consumer re-creates itself after a server failure, but a re-create
// that fails during a stream leader election can leave it delivering nothing
// for good (seen once in the NATS-server-killed scenario); the test must
// measure amibus, not that. It checks every tailCheck: there is no event
// to wait for when a consumer silently stops.
func (t *Tail) watchdog(ctx context.Context) {
	defer close(t.wdone)
	tick := time.NewTicker(tailCheck)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t.mu.Lock()
		last, at := t.lastSeq, t.lastAt
		t.mu.Unlock()
		if time.Since(at) < tailStall {
			continue
		}
		ictx, cancel := context.WithTimeout(ctx, tailCheck)
		s, err := t.js.Stream(ictx, t.stream)
		if err != nil || s.CachedInfo().State.LastSeq <= last {
			cancel()
			continue
		}
		cc, err := t.consume(ictx, last+1)
		cancel()
		if err != nil {
			continue
		}
		t.mu.Lock()
		old := t.cc
		t.cc, t.lastAt = cc, time.Now()
		t.resets++
		t.mu.Unlock()
		old.Stop()
	}
}

// Resets reports how many times the watchdog re-created the consumer.
func (t *Tail) Resets() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.resets
}

// Stop stops the watchdog and the consumer, and waits until no handler
// runs.
func (t *Tail) Stop() {
	t.stop()
	<-t.wdone
	t.mu.Lock()
	cc := t.cc
	t.mu.Unlock()
	cc.Stop()
	<-cc.Closed()
}

func (t *Tail) handle(m jetstream.Msg) {
	now := time.Now()
	md, err := m.Metadata()
	var rec Record
	if err == nil {
		rec, err = parseRecord(md.Sequence.Stream, m.Subject(), m.Headers().Get(jetstream.MsgIDHeader), m.Data(), now)
	}
	t.mu.Lock()
	if err == nil {
		if rec.StreamSeq <= t.lastSeq {
			// A re-created consumer can overlap the old one's last
			// deliveries: each stream message is kept once.
			t.mu.Unlock()
			return
		}
		t.lastSeq, t.lastAt = rec.StreamSeq, now
	}
	if err != nil {
		if len(t.errs) < maxTailErrors {
			t.errs = append(t.errs, err)
		}
	} else {
		t.recs = append(t.recs, rec)
		n := subjectNode(t.prefix, rec.Subject)
		t.byNode[n] = append(t.byNode[n], len(t.recs)-1)
		switch {
		case !rec.IsMeta():
			t.covered[rec.Session] = max(t.covered[rec.Session], rec.Seq)
		case rec.Type == metaGap:
			t.covered[rec.Session] = max(t.covered[rec.Session], rec.LastSeq)
		case rec.Type == metaStart:
			t.open[n] = rec
		case rec.Type == metaEnd:
			if o, ok := t.open[n]; ok && o.Session == rec.Session {
				delete(t.open, n)
			}
		}
	}
	close(t.changed)
	t.changed = make(chan struct{})
	t.mu.Unlock()
}

// View is a consistent read of what the tail holds; only valid inside the
// function given to Wait or Read.
type View struct{ t *Tail }

// Len is the number of records read.
func (v View) Len() int { return len(v.t.recs) }

// Node returns the records of node, in stream order (shared: read only).
func (v View) Node(node string) []Record {
	idx := v.t.byNode[node]
	out := make([]Record, len(idx))
	for i, j := range idx {
		out[i] = v.t.recs[j]
	}
	return out
}

// NodeCount is the number of records of node.
func (v View) NodeCount(node string) int { return len(v.t.byNode[node]) }

// Last is the last record of node, if any.
func (v View) Last(node string) (Record, bool) {
	idx := v.t.byNode[node]
	if len(idx) == 0 {
		return Record{}, false
	}
	return v.t.recs[idx[len(idx)-1]], true
}

// Open returns the session_start of node's open session: the last session
// that started and has not ended.
func (v View) Open(node string) (Record, bool) {
	r, ok := v.t.open[node]
	return r, ok
}

// Covered is the highest seq of session stored or marked missing.
func (v View) Covered(session string) uint64 { return v.t.covered[session] }

// All returns a copy of every record.
func (v View) All() []Record { return append([]Record(nil), v.t.recs...) }

// Errors returns the decode errors.
func (v View) Errors() []error { return append([]error(nil), v.t.errs...) }

// Read runs f on the current records.
func (t *Tail) Read(f func(View)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	f(View{t})
}

// Records returns a copy of every record read so far.
func (t *Tail) Records() []Record {
	var out []Record
	t.Read(func(v View) { out = v.All() })
	return out
}

// ErrWaitTimeout is returned by Wait when the condition never held.
var ErrWaitTimeout = errors.New("condition not met in time")

// Wait returns nil once cond holds, checking it now and after every new
// message, or ErrWaitTimeout (joined with ctx's error) when ctx ends.
// cond runs with the tail locked, so it must be quick.
func (t *Tail) Wait(ctx context.Context, cond func(View) bool) error {
	for {
		t.mu.Lock()
		ok := cond(View{t})
		ch := t.changed
		t.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return errors.Join(ErrWaitTimeout, ctx.Err())
		}
	}
}
