package eventq

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/pkg/amiwire"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 11, 23, 1, 41, 56, 154000000, time.UTC)

func event(name string, kv ...string) *amiwire.Message {
	m := &amiwire.Message{}
	m.Add("Event", name)
	for i := 0; i+1 < len(kv); i += 2 {
		m.Add(kv[i], kv[i+1])
	}
	return m
}

func newQ(t *testing.T, opts ...Option) *Queue {
	t.Helper()
	q, err := New("pbx1", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// drain pops everything that is there now and releases it, returning a
// compact description of each item.
func drain(t *testing.T, q *Queue) []string {
	t.Helper()
	var out []string
	buf := make([]Item, 0, 7) // smaller than the tests' item counts: several pops
	for {
		got, err := q.TryPop(buf[:0])
		if err != nil && !errors.Is(err, ErrClosed) {
			t.Fatal(err)
		}
		if len(got) == 0 {
			return out
		}
		for i := range got {
			out = append(out, describe(&got[i]))
			q.Release(&got[i])
		}
	}
}

func describe(it *Item) string {
	switch it.Kind {
	case KindEvent:
		return fmt.Sprintf("ev %s/%d", it.Session, it.Seq)
	case KindSessionStart:
		return fmt.Sprintf("start %s %s %s", it.Session, it.Version, it.Owner)
	case KindSessionEnd:
		return fmt.Sprintf("end %s %s %d", it.Session, it.Reason, it.LastSeq)
	case KindGap:
		return fmt.Sprintf("gap %s %d-%d/%d %s", it.Session, it.FirstSeq, it.LastSeq, it.Count, it.Reason)
	case KindSnapshot:
		return fmt.Sprintf("snap %s %s %d/%d after %d", it.Session, it.Action, len(it.Items), it.Total, it.Seq)
	}
	return "?"
}

func TestOrderAndCopy(t *testing.T) {
	q := newQ(t, WithOwner("inst1"))
	q.SessionStarted("s1", "9.0.0", t0)
	m := event("Newchannel", "Channel", "Local/200@demo-00000002;1", "AccountCode", "")
	q.Event("s1", 1, t0, m)
	// The queue must have copied m: the reader reuses its message.
	m.Reset()
	m.Add("Event", "Hangup")
	q.Event("s1", 2, t0, m)
	q.PushSnapshot("s1", "CoreShowChannels", []*amiwire.Message{event("CoreShowChannel", "Channel", "x")}, t0)
	q.Event("s1", 3, t0, event("VarSet"))
	q.SessionEnded("s1", t0, "eof", 3)

	buf := make([]Item, 0, 16)
	got, err := q.TryPop(buf)
	if err != nil {
		t.Fatal(err)
	}
	var desc []string
	for i := range got {
		desc = append(desc, describe(&got[i]))
	}
	want := []string{"start s1 9.0.0 inst1", "ev s1/1", "ev s1/2", "snap s1 CoreShowChannels 1/1 after 2", "ev s1/3", "end s1 eof 3"}
	if strings.Join(desc, "|") != strings.Join(want, "|") {
		t.Fatalf("items:\n got %q\nwant %q", desc, want)
	}
	if s := got[1].Msg.String(); s != "Event: Newchannel\r\nChannel: Local/200@demo-00000002;1\r\nAccountCode: \r\n\r\n" {
		t.Fatalf("first event not copied intact: %q", s)
	}
	if n := string(got[2].Msg.Name()); n != "Hangup" {
		t.Fatalf("second event name %q", n)
	}
	if !got[1].Time.Equal(t0) {
		t.Fatalf("time %v", got[1].Time)
	}
	for i := range got {
		q.Release(&got[i])
	}
	if s := q.Stats(); s.Bytes != 0 || s.Buffered != 0 || s.Published != 3 || s.Received != 3 {
		t.Fatalf("stats after release: %+v", s)
	}
}

// op is one producer or consumer step of a gap scenario.
type op struct {
	ev      uint64 // push event with this seq in session sess
	big     uint64 // EventOversized with this seq in session sess
	sess    string
	start   string // SessionStarted
	end     string // SessionEnded
	release bool   // pop and release everything queued so far
	snap    string // PushSnapshot in session sess
	close   bool
}

func TestGapPlacement(t *testing.T) {
	evs := func(sess string, seqs ...uint64) []op {
		var o []op
		for _, s := range seqs {
			o = append(o, op{ev: s, sess: sess})
		}
		return o
	}
	cat := func(parts ...[]op) []op {
		var o []op
		for _, p := range parts {
			o = append(o, p...)
		}
		return o
	}
	tests := []struct {
		name string
		max  int
		ops  []op
		want []string
	}{
		{
			name: "gap before next accepted event",
			max:  3,
			ops:  cat(evs("a", 1, 2, 3, 4, 5), []op{{release: true}}, evs("a", 6, 7)),
			want: []string{"ev a/1", "ev a/2", "ev a/3", "gap a 4-5/2 buffer_full", "ev a/6", "ev a/7"},
		},
		{
			name: "gap before snapshot marker",
			max:  1,
			ops:  cat([]op{{start: "a"}}, evs("a", 1, 2, 3), []op{{release: true}, {snap: "CoreShowChannels", sess: "a"}}, evs("a", 4)),
			want: []string{"start a", "ev a/1", "gap a 2-3/2 buffer_full", "snap a CoreShowChannels 0/0 after 3", "ev a/4"},
		},
		{
			name: "gap closed by session end, then new session",
			max:  2,
			ops:  cat(evs("a", 1, 2, 3, 4), []op{{end: "a"}, {release: true}, {start: "b"}}, evs("b", 1)),
			want: []string{"ev a/1", "ev a/2", "gap a 3-4/2 buffer_full", "end a eof 4", "start b", "ev b/1"},
		},
		{
			name: "gap closed by close, open session ended",
			max:  1,
			ops:  cat([]op{{start: "a"}}, evs("a", 1, 2, 3), []op{{close: true}}, evs("a", 4)),
			want: []string{"start a", "ev a/1", "gap a 2-3/2 buffer_full", "end a closed 3"},
		},
		{
			name: "a session change splits the gap",
			max:  1,
			ops:  cat(evs("a", 1, 2), evs("b", 1, 2), []op{{release: true}}, evs("b", 3)),
			want: []string{"ev a/1", "gap a 2-2/1 buffer_full", "gap b 1-2/2 buffer_full", "ev b/3"},
		},
		{
			name: "an oversized event is a gap of its own",
			max:  3,
			ops:  cat(evs("a", 1), []op{{big: 2, sess: "a"}, {big: 3, sess: "a"}}, evs("a", 4)),
			want: []string{"ev a/1", "gap a 2-3/2 oversized", "ev a/4"},
		},
		{
			name: "oversized and buffer_full gaps stay apart",
			max:  1,
			ops:  cat(evs("a", 1, 2), []op{{big: 3, sess: "a"}, {release: true}}, evs("a", 4)),
			want: []string{"ev a/1", "gap a 2-2/1 buffer_full", "gap a 3-3/1 oversized", "ev a/4"},
		},
		{
			name: "filtered seqs inside a gap: count is what was dropped",
			max:  1,
			ops:  cat(evs("a", 1, 2, 4, 5), []op{{release: true}}, evs("a", 7)),
			want: []string{"ev a/1", "gap a 2-5/3 buffer_full", "ev a/7"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			q := newQ(t, WithMaxEvents(tc.max))
			var got []string
			for _, o := range tc.ops {
				switch {
				case o.ev > 0:
					q.Event(o.sess, o.ev, t0, event("Newstate"))
				case o.big > 0:
					q.EventOversized(o.sess, o.big, t0, "Newstate", 2<<20)
				case o.start != "":
					q.SessionStarted(o.start, "", t0)
				case o.end != "":
					q.SessionEnded(o.end, t0, "eof", 4)
				case o.snap != "":
					q.PushSnapshot(o.sess, o.snap, nil, t0)
				case o.release:
					got = append(got, drain(t, q)...)
				case o.close:
					q.Close()
				}
			}
			got = append(got, drain(t, q)...)
			for i := range got {
				got[i] = strings.TrimSpace(got[i])
			}
			if strings.Join(got, "|") != strings.Join(tc.want, "|") {
				t.Fatalf("items:\n got %q\nwant %q", got, tc.want)
			}
			s := q.Stats()
			if s.Received != s.Published+s.Dropped()+s.Buffered {
				t.Fatalf("accounting broken: %+v", s)
			}
		})
	}
}

func TestBudgetSharedByTwoQueues(t *testing.T) {
	ev := event("Newchannel", "Channel", "SIP/100-00000001")
	b := NewBudget(2 * eventSize(ev))
	reg := metrics.New()
	q1 := newQ(t, WithBudget(b), WithMetrics(reg))
	q2, err := New("pbx2", WithBudget(b), WithMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	q1.Event("a", 1, t0, ev)
	q1.Event("a", 2, t0, ev)
	q2.Event("b", 1, t0, ev) // budget exhausted by q1
	if s := q2.Stats(); s.DroppedBufferFull != 1 || s.Buffered != 0 {
		t.Fatalf("q2 should have dropped: %+v", s)
	}
	if got := testutil.ToFloat64(reg.BufferBytes); got != float64(b.Max()) {
		t.Fatalf("BufferBytes = %v, want %v", got, b.Max())
	}
	// Popping alone does not give bytes back: they are held until Release.
	items, _ := q1.TryPop(make([]Item, 0, 1))
	q2.Event("b", 2, t0, ev)
	if s := q2.Stats(); s.DroppedBufferFull != 2 {
		t.Fatalf("budget freed before Release: %+v", s)
	}
	q1.Release(&items[0])
	q2.Event("b", 3, t0, ev)
	if got := drain(t, q2); strings.Join(got, "|") != "gap b 1-2/2 buffer_full|ev b/3" {
		t.Fatalf("q2 items %q", got)
	}
	drain(t, q1)
	if b.Used() != 0 || testutil.ToFloat64(reg.BufferBytes) != 0 {
		t.Fatalf("budget not returned: used %d gauge %v", b.Used(), testutil.ToFloat64(reg.BufferBytes))
	}
	if got := testutil.ToFloat64(reg.EventsDropped.WithLabelValues("pbx2", metrics.ReasonBufferFull)); got != 2 {
		t.Fatalf("dropped metric pbx2 = %v", got)
	}
	if got := testutil.ToFloat64(reg.EventsReceived.WithLabelValues("pbx1")); got != 2 {
		t.Fatalf("received metric pbx1 = %v", got)
	}
}

func TestSnapshotOverBudgetKeepsMarker(t *testing.T) {
	ev := event("Newchannel")
	b := NewBudget(eventSize(ev) * 2)
	q := newQ(t, WithBudget(b))
	list := []*amiwire.Message{event("CoreShowChannel"), event("CoreShowChannel"), event("CoreShowChannel")}
	q.PushSnapshot("s", "CoreShowChannels", list, t0)
	q.PushSnapshot("s", "QueueStatus", list[:1], t0)
	got := drain(t, q)
	want := "snap s CoreShowChannels 0/3 after 0|snap s QueueStatus 1/1 after 0"
	if strings.Join(got, "|") != want {
		t.Fatalf("got %q want %q", got, want)
	}
	if s := q.Stats(); s.SnapshotsDropped != 1 || s.Bytes != 0 {
		t.Fatalf("stats %+v", s)
	}
}

func TestPopBlocksUntilItem(t *testing.T) {
	q := newQ(t)
	type res struct {
		items []Item
		err   error
	}
	ch := make(chan res, 1)
	go func() {
		items, err := q.Pop(context.Background(), make([]Item, 0, 4))
		ch <- res{items, err}
	}()
	select {
	case r := <-ch:
		t.Fatalf("Pop returned on an empty queue: %+v", r)
	default:
	}
	q.Event("s", 1, t0, event("A"))
	r := <-ch
	if r.err != nil || len(r.items) != 1 || r.items[0].Seq != 1 {
		t.Fatalf("Pop = %+v", r)
	}
	q.Release(&r.items[0])
}

func TestPopWokenByCloseAndContext(t *testing.T) {
	q := newQ(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := q.Pop(ctx, make([]Item, 0, 4))
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Pop after cancel: %v", err)
	}

	q.Event("s", 1, t0, event("A"))
	go func() {
		buf := make([]Item, 0, 4)
		items, err := q.Pop(context.Background(), buf)
		if err != nil || len(items) != 1 {
			errc <- fmt.Errorf("first Pop: %d items, %v", len(items), err)
			return
		}
		q.Release(&items[0])
		_, err = q.Pop(context.Background(), buf) // blocks until Close
		errc <- err
	}()
	q.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Pop after Close: %v", err)
	}
	if _, err := q.Pop(context.Background(), make([]Item, 0)); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("Pop with no room: %v", err)
	}
}

func TestAfterCloseEventsCountAsShutdownDrops(t *testing.T) {
	reg := metrics.New()
	q := newQ(t, WithMetrics(reg))
	q.Close()
	q.Event("s", 1, t0, event("A"))
	q.SessionStarted("s2", "", t0)
	q.PushSnapshot("s2", "CoreShowChannels", nil, t0)
	s := q.Stats()
	if s.Received != 1 || s.DroppedShutdown != 1 || s.Waiting != 0 || s.SnapshotsDropped != 1 {
		t.Fatalf("stats %+v", s)
	}
	if got := testutil.ToFloat64(reg.EventsDropped.WithLabelValues("pbx1", metrics.ReasonShutdown)); got != 1 {
		t.Fatalf("shutdown drops metric = %v", got)
	}
}

func TestDropAccountsReason(t *testing.T) {
	reg := metrics.New()
	q := newQ(t, WithMetrics(reg))
	for i := uint64(1); i <= 3; i++ {
		q.Event("s", i, t0, event("A"))
	}
	items, _ := q.TryPop(make([]Item, 0, 3))
	q.Release(&items[0])
	q.Drop(&items[1], metrics.ReasonPublishFailed)
	q.Drop(&items[2], metrics.ReasonShutdown)
	q.Drop(&items[2], metrics.ReasonShutdown) // zeroed: no double count
	q.Release(&items[0])
	s := q.Stats()
	if s.Published != 1 || s.DroppedPublishFailed != 1 || s.DroppedShutdown != 1 || s.Buffered != 0 || s.Bytes != 0 {
		t.Fatalf("stats %+v", s)
	}
	if got := testutil.ToFloat64(reg.EventsDropped.WithLabelValues("pbx1", metrics.ReasonPublishFailed)); got != 1 {
		t.Fatalf("publish_failed metric %v", got)
	}
	if got := testutil.ToFloat64(reg.BufferEvents.WithLabelValues("pbx1")); got != 0 {
		t.Fatalf("buffer events gauge %v", got)
	}
}

func TestDropLogIsCoalesced(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	q := newQ(t, WithMaxEvents(1), WithLogger(zap.New(core)), WithLogInterval(time.Minute))
	q.Event("s", 1, t0, event("A"))
	for i := uint64(2); i <= 1001; i++ {
		q.Event("s", i, t0.Add(time.Duration(i)*time.Millisecond), event("A"))
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d log lines for 1000 drops in one interval, want 1", n)
	}
	// The next line comes once the interval has passed, with the count since.
	q.Event("s", 1002, t0.Add(2*time.Minute), event("A"))
	entries := logs.All()
	if len(entries) != 2 {
		t.Fatalf("%d lines, want 2", len(entries))
	}
	f := entries[1].ContextMap()
	if f["dropped_delta"] != uint64(1000) || f["dropped_total"] != uint64(1001) || f["node"] != "pbx1" {
		t.Fatalf("second line fields %v", f)
	}
	// A count still pending at Close is logged, not lost.
	q.Event("s", 1003, t0.Add(2*time.Minute+time.Second), event("A"))
	q.Close()
	entries = logs.All()
	if len(entries) != 3 || entries[2].ContextMap()["dropped_delta"] != uint64(1) {
		t.Fatalf("close line missing: %d lines", len(entries))
	}
}

func TestInvalidOptions(t *testing.T) {
	for name, o := range map[string]Option{
		"max events": WithMaxEvents(0),
		"budget":     WithBudget(nil),
		"interval":   WithLogInterval(0),
	} {
		if _, err := New("pbx1", o); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: err %v", name, err)
		}
	}
	if _, err := New(""); !errors.Is(err, ErrInvalidOption) {
		t.Errorf("empty node: %v", err)
	}
}

func TestSteadyStateDoesNotAllocate(t *testing.T) {
	reg := metrics.New()
	q := newQ(t, WithMetrics(reg))
	ev := event("Newchannel", "Privilege", "call,all", "Channel", "Local/200@demo-00000002;1",
		"ChannelState", "0", "ChannelStateDesc", "Down", "Uniqueid", "1795398116.4")
	buf := make([]Item, 0, 1)
	var seq uint64
	cycle := func() {
		seq++
		q.Event("s1", seq, t0, ev)
		got, _ := q.TryPop(buf[:0])
		q.Release(&got[0])
	}
	for range 10 { // warm the free list
		cycle()
	}
	if a := testing.AllocsPerRun(1000, cycle); a != 0 {
		t.Fatalf("%v allocations per event, want 0", a)
	}
}

// TestRaceOneProducerOneConsumer runs the reader side and a slow consumer
// concurrently and checks, from what the consumer saw, that order holds, every
// lost seq is covered by exactly one gap, and the accounting is exact.
func TestRaceOneProducerOneConsumer(t *testing.T) {
	const sessions, perSession = 4, 5000
	q := newQ(t, WithMaxEvents(64), WithBudget(NewBudget(64<<10)))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ev := event("VarSet", "Variable", "x", "Value", "y")
		for s := range sessions {
			id := fmt.Sprintf("s%d", s)
			q.SessionStarted(id, "9.0.0", t0)
			for i := uint64(1); i <= perSession; i++ {
				q.Event(id, i, t0, ev)
			}
			q.SessionEnded(id, t0, "eof", perSession)
		}
		q.Close()
	}()

	seen := map[string][]bool{}
	var cur string
	var last uint64
	var events, gapped uint64
	buf := make([]Item, 0, 32)
	for {
		items, err := q.Pop(context.Background(), buf[:0])
		if errors.Is(err, ErrClosed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for i := range items {
			it := &items[i]
			switch it.Kind {
			case KindSessionStart:
				cur, last = it.Session, 0
				seen[cur] = make([]bool, perSession+1)
			case KindEvent, KindGap:
				first, lst := it.Seq, it.Seq
				if it.Kind == KindGap {
					first, lst = it.FirstSeq, it.LastSeq
					gapped += it.Count
				} else {
					events++
				}
				if it.Session != cur || first != last+1 {
					t.Fatalf("out of order: %s after %s/%d", describe(it), cur, last)
				}
				for s := first; s <= lst; s++ {
					seen[cur][s] = true
				}
				last = lst
			case KindSessionEnd:
				if last != perSession {
					t.Fatalf("session %s ended at %d", cur, last)
				}
			}
			q.Release(it)
		}
	}
	wg.Wait()
	for id, s := range seen {
		for seq := 1; seq <= perSession; seq++ {
			if !s[seq] {
				t.Fatalf("%s/%d neither delivered nor in a gap", id, seq)
			}
		}
	}
	if len(seen) != sessions {
		t.Fatalf("saw %d sessions", len(seen))
	}
	st := q.Stats()
	if st.Received != sessions*perSession || st.Published != events || st.DroppedBufferFull != gapped ||
		st.Received != st.Published+st.Dropped()+st.Buffered || st.Buffered != 0 || st.Bytes != 0 {
		t.Fatalf("accounting: %+v (consumer saw %d events, %d in gaps)", st, events, gapped)
	}
	t.Logf("published %d, dropped %d", st.Published, st.DroppedBufferFull)
}

// TestTrailingGapGoesOutOnItsOwn: drops after the last event taken, with
// nothing after them (the PBX fell silent), still reach the consumer: the
// waiting consumer is woken when the gap opens, and the gap is handed out
// once it is gapDelay old, not held until the next event.
func TestTrailingGapGoesOutOnItsOwn(t *testing.T) {
	const delay = 50 * time.Millisecond
	q := newQ(t, WithMaxEvents(2), WithGapDelay(delay))
	now := time.Now()
	q.Event("a", 1, now, event("Newstate"))
	q.Event("a", 2, now, event("Newstate"))
	got, err := q.TryPop(make([]Item, 0, 8))
	if err != nil || len(got) != 2 {
		t.Fatalf("first pop: %d items, %v", len(got), err)
	}
	// The two events are in flight (popped, not released): the cap holds.
	if more, _ := q.TryPop(make([]Item, 0, 8)); len(more) != 0 {
		t.Fatalf("empty queue gave %d items", len(more))
	}
	select {
	case <-q.Notify():
		t.Fatal("Notify signalled before anything happened")
	default:
	}
	dropped := time.Now()
	for seq := uint64(3); seq <= 5; seq++ {
		q.Event("a", seq, dropped, event("Newstate"))
	}
	select {
	case <-q.Notify():
	default:
		t.Fatal("the waiting consumer was not told of the gap")
	}
	at, ok := q.GapPending()
	if !ok || !at.Equal(dropped.Add(delay)) {
		t.Fatalf("GapPending = %v, %v; want %v, true", at, ok, dropped.Add(delay))
	}
	if early, _ := q.TryPop(make([]Item, 0, 8)); len(early) != 0 && time.Since(dropped) < delay {
		t.Fatalf("gap handed out before its delay: %+v", early[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var gap []Item
	for len(gap) == 0 {
		if gap, err = q.Pop(ctx, make([]Item, 0, 8)); err != nil {
			t.Fatalf("Pop: %v", err)
		}
	}
	if g := gap[0]; g.Kind != KindGap || g.FirstSeq != 3 || g.LastSeq != 5 || g.Count != 3 || g.Reason != "buffer_full" {
		t.Fatalf("got %+v, want the gap of seqs 3-5", g)
	}
	if _, ok := q.GapPending(); ok {
		t.Fatal("gap still pending after it was handed out")
	}
	for i := range got {
		q.Release(&got[i])
	}
	s := q.Stats()
	if s.Received != 5 || s.Published != 2 || s.DroppedBufferFull != 3 || s.Buffered != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestWakeCallback: SetWake's callback comes with each Notify signal (an
// item after a TryPop found the queue empty, Close) and not otherwise, and
// an emptied queue gives its ring back and takes one again.
func TestWakeCallback(t *testing.T) {
	q := newQ(t)
	wakes := 0
	q.SetWake(func() { wakes++ }) // under q.mu: no lock of its own needed
	q.Event("s1", 1, t0, event("A"))
	if wakes != 0 {
		t.Fatalf("%d wakes before any TryPop found the queue empty", wakes)
	}
	buf := make([]Item, 0, 8)
	for round := 1; round <= 3; round++ {
		items, err := q.TryPop(buf[:0])
		if err != nil || len(items) == 0 {
			t.Fatalf("round %d: %d items, %v", round, len(items), err)
		}
		for i := range items {
			q.Release(&items[i])
		}
		if items, _ = q.TryPop(buf[:0]); len(items) != 0 {
			t.Fatalf("round %d: %d items left", round, len(items))
		}
		if q.ring != nil {
			t.Fatalf("round %d: an empty queue holds its ring", round)
		}
		q.Event("s1", uint64(2*round), t0, event("A"))
		q.Event("s1", uint64(2*round+1), t0, event("B"))
		if wakes != round {
			t.Fatalf("round %d: %d wakes, want %d (one per emptying)", round, wakes, round)
		}
	}
	q.Close()
	if wakes != 4 {
		t.Fatalf("%d wakes after Close, want 4", wakes)
	}
}
