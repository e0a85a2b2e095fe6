package eventlog_test

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/eventlog"
)

// open opens a reader that the test closes.
func (e *env) open(opts ...eventlog.Option) *eventlog.Reader {
	e.t.Helper()
	r, err := eventlog.Open(ctxT(e.t), e.js, opts...)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { r.Close(context.Background()) })
	return r
}

// next returns the reader's next n entries, cloned.
func next(t testing.TB, r *eventlog.Reader, n int) []*eventlog.Entry {
	t.Helper()
	out := make([]*eventlog.Entry, 0, n)
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		e, err := r.Next(ctx)
		cancel()
		if err != nil {
			t.Fatalf("after %d entries: %v", len(out), err)
		}
		out = append(out, e.Clone())
	}
	return out
}

// noMore checks that nothing more is delivered within a short wait.
func noMore(t testing.TB, r *eventlog.Reader) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if e, err := r.Next(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want nothing more, got %+v, %v", e, err)
	}
}

func TestSessionStartAndEnd(t *testing.T) {
	e := startEnv(t)
	e.start("pbx1", "s1")
	e.event("pbx1", "s1", 1, "Newchannel", "Uniqueid", "1.1")
	e.end("pbx1", "s1", "eof", 1)
	e.start("pbx1", "s2")
	e.event("pbx1", "s2", 1, "FullyBooted")
	e.start("pbx1", "s3") // s2 was cut with no session_end
	got := next(t, e.open(), 6)
	kinds := []eventlog.Kind{eventlog.KindSessionStart, eventlog.KindEvent, eventlog.KindSessionEnd,
		eventlog.KindSessionStart, eventlog.KindEvent, eventlog.KindSessionStart}
	for i, en := range got {
		if en.Kind != kinds[i] || en.Inferred || en.StreamSeq != uint64(i+1) || en.Node != "pbx1" || en.Time.IsZero() {
			t.Fatalf("entry %d: %+v", i, en)
		}
	}
	if s := got[0].Start; got[0].Session != "s1" || s.Version != "5.0.2" || s.Owner != "ingest-1" || s.Previous != "" {
		t.Fatalf("first start %+v", got[0])
	}
	if got[2].End != (eventlog.SessionEnd{Reason: "eof", LastSeq: 1}) || got[2].Seq != 1 || got[2].Session != "s1" {
		t.Fatalf("end %+v", got[2])
	}
	if s := got[3].Start; got[3].Session != "s2" || s.Previous != "s1" || !s.PreviousEnded || got[3].Seq != 0 {
		t.Fatalf("second start %+v", got[3])
	}
	if s := got[5].Start; got[5].Session != "s3" || s.Previous != "s2" || s.PreviousEnded {
		t.Fatalf("third start (previous cut) %+v", got[5])
	}
}

func TestSessionWithoutStartMarkerIsReported(t *testing.T) {
	e := startEnv(t)
	e.start("pbx1", "s1")
	e.event("pbx1", "s1", 1, "Newchannel")
	e.event("pbx1", "s2", 3, "Newchannel") // s2's session_start and seqs 1-2 are missing
	got := next(t, e.open(), 5)
	st, gap, ev := got[2], got[3], got[4]
	if st.Kind != eventlog.KindSessionStart || !st.Inferred || st.Session != "s2" || st.Start.Previous != "s1" ||
		st.StreamSeq != 3 || st.Position() != 2 {
		t.Fatalf("inferred start %+v", st)
	}
	if gap.Kind != eventlog.KindGap || !gap.Inferred || gap.Gap != (eventlog.Gap{FirstSeq: 1, LastSeq: 2, Count: 2, Reason: eventlog.ReasonUnmarked}) {
		t.Fatalf("inferred gap %+v", gap)
	}
	if ev.Kind != eventlog.KindEvent || ev.Inferred || ev.Seq != 3 || ev.StreamSeq != 3 || ev.Position() != 3 {
		t.Fatalf("event %+v", ev)
	}
}

func TestSnapshot(t *testing.T) {
	e := startEnv(t)
	e.start("pbx1", "s1")
	e.event("pbx1", "s1", 1, "Newchannel", "Uniqueid", "1.1")
	e.snapshot("pbx1", "s1", "CoreShowChannels",
		eventlog.AMIMessage("Event", "CoreShowChannel", "Channel", "PJSIP/100-1", "Uniqueid", "1.1"),
		eventlog.AMIMessage("Event", "CoreShowChannel", "Channel", "PJSIP/200-2", "Uniqueid", "1.2", "ChanVariable", "a=1", "ChanVariable", "b=2"))
	e.event("pbx1", "s1", 2, "Hangup", "Uniqueid", "1.1")
	got := next(t, e.open(), 4)
	sn := got[2]
	if sn.Kind != eventlog.KindSnapshot || sn.Inferred || sn.StreamSeq != 3 || sn.Session != "s1" || sn.Seq != 1 {
		t.Fatalf("snapshot entry %+v", sn)
	}
	s := sn.Snapshot
	if s.Action != "CoreShowChannels" || s.Truncated || s.Total != 2 || len(s.Items) != 2 ||
		s.Items[1].Get("Channel") != "PJSIP/200-2" || !reflect.DeepEqual(s.Items[1].Values("ChanVariable"), []string{"a=1", "b=2"}) {
		t.Fatalf("snapshot %+v", s)
	}
	if got[3].Kind != eventlog.KindEvent || got[3].Seq != 2 || got[3].Inferred {
		t.Fatalf("event after snapshot %+v", got[3])
	}
}

func TestMarkedGap(t *testing.T) {
	e := startEnv(t)
	e.start("pbx1", "s1")
	e.event("pbx1", "s1", 1, "Newchannel")
	e.gap("pbx1", "s1", 2, 4, eventlog.ReasonBufferFull)
	e.event("pbx1", "s1", 5, "Newstate")
	r := e.open()
	got := next(t, r, 4)
	g := got[2]
	if g.Kind != eventlog.KindGap || g.Inferred || g.StreamSeq != 3 || g.Seq != 4 ||
		g.Gap != (eventlog.Gap{FirstSeq: 2, LastSeq: 4, Count: 3, Reason: eventlog.ReasonBufferFull}) {
		t.Fatalf("gap %+v", g)
	}
	if got[3].Kind != eventlog.KindEvent || got[3].Seq != 5 || got[3].Inferred {
		t.Fatalf("event after gap %+v", got[3])
	}
	noMore(t, r)
	if st := r.Stats(); st.InferredGaps != 0 || st.Messages != 4 || st.Markers != 2 || st.Events != 2 {
		t.Fatalf("stats %+v", st)
	}
}

func TestUnmarkedJumpIsReported(t *testing.T) {
	e := startEnv(t)
	e.start("pbx1", "s1")
	e.event("pbx1", "s1", 1, "Newchannel")
	e.event("pbx1", "s1", 4, "Newstate")   // 2-3 missing, no marker
	e.gap("pbx1", "s1", 6, 6, "oversized") // 5 missing before a marked gap
	e.end("pbx1", "s1", "eof", 9)          // 7-9 missing before the end
	r := e.open()
	got := next(t, r, 8)
	want := []struct {
		kind        eventlog.Kind
		inferred    bool
		sseq, seq   uint64
		first, last uint64
	}{
		{eventlog.KindSessionStart, false, 1, 0, 0, 0},
		{eventlog.KindEvent, false, 2, 1, 0, 0},
		{eventlog.KindGap, true, 3, 3, 2, 3},
		{eventlog.KindEvent, false, 3, 4, 0, 0},
		{eventlog.KindGap, true, 4, 5, 5, 5},
		{eventlog.KindGap, false, 4, 6, 6, 6},
		{eventlog.KindGap, true, 5, 9, 7, 9},
		{eventlog.KindSessionEnd, false, 5, 9, 0, 0},
	}
	for i, w := range want {
		g := got[i]
		if g.Kind != w.kind || g.Inferred != w.inferred || g.StreamSeq != w.sseq || g.Seq != w.seq ||
			g.Gap.FirstSeq != w.first || g.Gap.LastSeq != w.last {
			t.Fatalf("entry %d: got %v inferred=%v sseq=%d seq=%d gap=%+v, want %+v", i, g.Kind, g.Inferred, g.StreamSeq, g.Seq, g.Gap, w)
		}
		if w.inferred && (g.Gap.Reason != eventlog.ReasonUnmarked || g.Position() != w.sseq-1) {
			t.Fatalf("entry %d: inferred gap %+v position %d", i, g.Gap, g.Position())
		}
	}
	if st := r.Stats(); st.InferredGaps != 3 || st.Messages != 5 {
		t.Fatalf("stats %+v", st)
	}
}

func TestLateEvent(t *testing.T) {
	e := startEnv(t)
	e.start("pbx1", "s1")
	e.event("pbx1", "s1", 1, "Newchannel")
	e.event("pbx1", "s1", 3, "Newstate")
	e.event("pbx1", "s1", 2, "Newexten") // retried, stored after 3
	e.event("pbx1", "s1", 4, "Hangup")
	got := next(t, e.open(), 6)
	if got[2].Kind != eventlog.KindGap || !got[2].Inferred || got[2].Gap.FirstSeq != 2 || got[2].Gap.LastSeq != 2 {
		t.Fatalf("hole before the late event %+v", got[2])
	}
	if late := got[4]; late.Kind != eventlog.KindEvent || !late.Late || late.Seq != 2 || late.Event.Name != "Newexten" {
		t.Fatalf("late event %+v", late)
	}
	if ev := got[5]; ev.Late || ev.Inferred || ev.Seq != 4 {
		t.Fatalf("event after the late one %+v", ev)
	}
}

func TestInvalidMessagesAreDeliveredNotSkipped(t *testing.T) {
	e := startEnv(t)
	e.start("pbx1", "s1")
	bad1 := e.store(eventlog.Stored{Subject: "ami.events.pbx1.Newchannel", Data: []byte(`{"node":"pbx1","event":`)})
	bad2 := e.store(eventlog.Stored{Subject: "ami.events.pbx1", Data: []byte(`{}`)})
	bad3 := e.store(eventlog.Stored{Subject: "ami.events.pbx1._meta", Data: []byte(`{"node":"pbx1","type":"reboot","time":"2026-11-23T01:41:56Z","session":"s1"}`)})
	e.event("pbx1", "s1", 1, "Newchannel")
	r := e.open()
	got := next(t, r, 5)
	for i, sseq := range []uint64{bad1, bad2, bad3} {
		g := got[i+1]
		if g.Kind != eventlog.KindInvalid || g.StreamSeq != sseq || !errors.Is(g.Invalid.Err, eventlog.ErrInvalidMessage) || g.Invalid.Subject == "" {
			t.Fatalf("invalid %d: %+v", i, g)
		}
	}
	if got[1].Node != "pbx1" || string(got[1].Invalid.Data) != `{"node":"pbx1","event":` {
		t.Fatalf("invalid entry keeps node and data: %+v", got[1])
	}
	if got[4].Kind != eventlog.KindEvent || got[4].Seq != 1 || got[4].Inferred {
		t.Fatalf("event after invalid ones %+v", got[4])
	}
	if st := r.Stats(); st.Invalid != 3 || st.Messages != 5 {
		t.Fatalf("stats %+v", st)
	}
}

// storeNodes stores n events for each node, interleaved, and returns the
// number of messages stored.
func storeNodes(e *env, nodes []string, n int) int {
	for _, node := range nodes {
		e.start(node, node+"-s1")
	}
	for i := 1; i <= n; i++ {
		for j, node := range nodes {
			if (i+j)%3 == 0 { // not in lockstep
				e.event(node, node+"-s1", uint64(i), "Newstate", "N", fmt.Sprint(i))
			}
		}
		for j, node := range nodes {
			if (i+j)%3 != 0 {
				e.event(node, node+"-s1", uint64(i), "Newstate", "N", fmt.Sprint(i))
			}
		}
	}
	return len(nodes) * (n + 1)
}

func TestAllNodesKeepEachNodesOrder(t *testing.T) {
	e := startEnv(t)
	nodes := []string{"pbx1", "pbx2", "pbx3"}
	total := storeNodes(e, nodes, 50)
	r := e.open()
	got := next(t, r, total)
	noMore(t, r)
	last := map[string]uint64{}
	var sseq uint64
	for _, g := range got {
		if g.StreamSeq <= sseq || g.Inferred {
			t.Fatalf("out of stream order: %+v after %d", g, sseq)
		}
		sseq = g.StreamSeq
		if g.Kind == eventlog.KindEvent {
			if g.Seq != last[g.Node]+1 || g.Event.Fields.Get("N") != fmt.Sprint(g.Seq) {
				t.Fatalf("node %s: seq %d after %d", g.Node, g.Seq, last[g.Node])
			}
			last[g.Node] = g.Seq
		}
	}
	for _, n := range nodes {
		if last[n] != 50 {
			t.Fatalf("node %s: last seq %d", n, last[n])
		}
	}

	// One node's history only.
	r2 := e.open(eventlog.Nodes("pbx2"))
	got = next(t, r2, 51)
	noMore(t, r2)
	for i, g := range got {
		if g.Node != "pbx2" || g.Inferred || (i > 0 && g.Seq != uint64(i)) {
			t.Fatalf("pbx2 reader entry %d: %+v", i, g)
		}
	}
}

func TestResumeFromStoredPosition(t *testing.T) {
	e := startEnv(t)
	e.start("pbx1", "s1")
	for i := uint64(1); i <= 5; i++ {
		e.event("pbx1", "s1", i, "Newstate")
	}
	e.event("pbx1", "s1", 8, "Newstate") // inferred gap 6-7 comes before it
	e.event("pbx1", "s1", 9, "Newstate")
	all := next(t, e.open(), 9)

	// Stop after every entry in turn, store Position, resume with After:
	// the entries read equal the ones read in one go, none repeated or
	// skipped, the inferred gap included.
	for stop := 1; stop < len(all); stop++ {
		r := e.open(eventlog.Buffer(16))
		first := next(t, r, stop)
		pos := r.Position()
		if pos != first[stop-1].Position() {
			t.Fatalf("Position %d, entry's %d", pos, first[stop-1].Position())
		}
		r.Close(ctxT(t))
		last := first[stop-1]
		r2 := e.open(eventlog.After(pos), eventlog.NodePosition("pbx1", "s1", last.Seq))
		rest := next(t, r2, len(all)-stop)
		noMore(t, r2)
		if got := append(first, rest...); !reflect.DeepEqual(strip(got), strip(all)) {
			t.Fatalf("stop after %d (position %d):\n got %v\nwant %v", stop, pos, strip(got), strip(all))
		}
	}
}

// strip keeps what identifies an entry.
func strip(es []*eventlog.Entry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = fmt.Sprintf("%v/%d/%v/%d", e.Kind, e.StreamSeq, e.Inferred, e.Seq)
	}
	return out
}

func TestStartPositions(t *testing.T) {
	e := startEnv(t)
	e.start("pbx1", "s1")
	e.event("pbx1", "s1", 1, "A")
	e.event("pbx1", "s1", 2, "B")
	mid := time.Now()
	e.event("pbx1", "s1", 3, "C")

	if g := next(t, e.open(eventlog.FromStreamSeq(3)), 1)[0]; g.StreamSeq != 3 || g.Event.Name != "B" {
		t.Fatalf("FromStreamSeq(3): %+v", g)
	}
	if g := next(t, e.open(eventlog.After(3)), 1)[0]; g.StreamSeq != 4 || g.Event.Name != "C" {
		t.Fatalf("After(3): %+v", g)
	}
	if g := next(t, e.open(eventlog.FromTime(mid)), 1)[0]; g.StreamSeq != 4 {
		t.Fatalf("FromTime: %+v", g)
	}
	if g := next(t, e.open(eventlog.FromStart()), 1)[0]; g.StreamSeq != 1 {
		t.Fatalf("FromStart: %+v", g)
	}
	r := e.open(eventlog.OnlyNew())
	noMore(t, r)
	e.event("pbx1", "s1", 4, "D")
	if g := next(t, r, 1)[0]; g.StreamSeq != 5 || g.Event.Name != "D" {
		t.Fatalf("OnlyNew: %+v", g)
	}
}

func TestPositionExpired(t *testing.T) {
	e := startEnv(t)
	ctx := ctxT(t)
	if _, err := e.js.CreateStream(ctx, jetstream.StreamConfig{Name: "SMALL", Subjects: []string{"small.events.>"},
		MaxMsgs: 3, Discard: jetstream.DiscardOld, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	e.prefix = "small"
	e.start("pbx1", "s1")
	for i := uint64(1); i <= 5; i++ {
		e.event("pbx1", "s1", i, "A")
	} // messages 1-3 discarded, 4-6 kept
	_, err := eventlog.Open(ctx, e.js, eventlog.Stream("SMALL"), eventlog.Prefix("small"), eventlog.After(2))
	if !errors.Is(err, eventlog.ErrPositionExpired) {
		t.Fatalf("After(2): %v", err)
	}
	r := e.open(eventlog.Stream("SMALL"), eventlog.Prefix("small"), eventlog.After(3))
	if g := next(t, r, 1)[0]; g.StreamSeq != 4 || g.Seq != 3 {
		t.Fatalf("After(3): %+v", g)
	}
	// From the start, the oldest messages are gone: what is there is read.
	if g := next(t, e.open(eventlog.Stream("SMALL"), eventlog.Prefix("small")), 1)[0]; g.StreamSeq != 4 {
		t.Fatalf("FromStart: %+v", g)
	}
}

func TestDurableResumes(t *testing.T) {
	e := startEnv(t)
	total := storeNodes(e, []string{"pbx1", "pbx2"}, 40)
	ctx := ctxT(t)
	var got []*eventlog.Entry
	// Four readers in turn on one durable, each closed after some entries:
	// together they read everything once, in order.
	for _, n := range []int{1, 17, 30} {
		r, err := eventlog.Open(ctx, e.js, eventlog.Durable("svc"), eventlog.Buffer(16))
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, next(t, r, n)...)
		if err := r.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	r := e.open(eventlog.Durable("svc"), eventlog.Buffer(16))
	got = append(got, next(t, r, total-len(got))...)
	noMore(t, r)
	for i, g := range got {
		if g.StreamSeq != uint64(i+1) || g.Inferred {
			t.Fatalf("entry %d: stream seq %d inferred=%v (repeated or skipped)", i, g.StreamSeq, g.Inferred)
		}
	}
	if st := r.Stats(); st.Redelivered != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestDurableResumesAfterCrash(t *testing.T) {
	e := startEnv(t)
	total := storeNodes(e, []string{"pbx1"}, 30)
	crashed, err := eventlog.Open(ctxT(t), e.js, eventlog.Durable("svc"), eventlog.Buffer(16))
	if err != nil {
		t.Fatal(err)
	}
	a := next(t, crashed, 7)
	// No Close: the connection goes, with messages pulled and not all
	// acknowledged.
	e.js.Conn().Close()
	// Close after the crash only stops nats.go's goroutines; its
	// acknowledgement cannot reach the server any more.
	defer crashed.Close(context.Background())
	e.connect()
	r := e.open(eventlog.Durable("svc"), eventlog.Buffer(16))
	b := next(t, r, 1)[0]
	// Resumed from the ack floor: at most what was handled and not yet
	// acknowledged (below Buffer/2) comes again, nothing is skipped.
	if last := a[len(a)-1].StreamSeq; b.StreamSeq > last+1 || b.StreamSeq+8 < last+1 {
		t.Fatalf("crashed after stream seq %d, resumed at %d", last, b.StreamSeq)
	}
	rest := next(t, r, total-int(b.StreamSeq))
	noMore(t, r)
	for i, g := range rest {
		if g.StreamSeq != b.StreamSeq+uint64(i)+1 {
			t.Fatalf("after resume, entry %d at stream seq %d", i, g.StreamSeq)
		}
	}
}

func TestDurableMismatch(t *testing.T) {
	e := startEnv(t)
	r := e.open(eventlog.Durable("svc"), eventlog.Nodes("pbx1"))
	r.Close(ctxT(t))
	_, err := eventlog.Open(ctxT(t), e.js, eventlog.Durable("svc"), eventlog.Nodes("pbx2"))
	if !errors.Is(err, eventlog.ErrDurableMismatch) {
		t.Fatalf("got %v", err)
	}
}

func TestOptionsAreValidated(t *testing.T) {
	e := startEnv(t)
	for name, opts := range map[string][]eventlog.Option{
		"stream":      {eventlog.Stream("a.b")},
		"prefix":      {eventlog.Prefix("a..b")},
		"empty nodes": {eventlog.Nodes()},
		"node":        {eventlog.Nodes("pbx*")},
		"seq 0":       {eventlog.FromStreamSeq(0)},
		"two starts":  {eventlog.After(3), eventlog.OnlyNew()},
		"zero time":   {eventlog.FromTime(time.Time{})},
		"durable":     {eventlog.Durable("a b")},
		"buffer":      {eventlog.Buffer(eventlog.MinBuffer - 1)},
		"buffer big":  {eventlog.Buffer(eventlog.MaxBuffer + 1)},
		"max nodes":   {eventlog.MaxNodes(0)},
		"ack wait":    {eventlog.AckWait(time.Millisecond)},
		"node pos":    {eventlog.NodePosition("pbx1", "", 1)},
		"nil":         {nil},
	} {
		if _, err := eventlog.Open(ctxT(t), e.js, opts...); !errors.Is(err, eventlog.ErrInvalidOption) {
			t.Errorf("%s: got %v", name, err)
		}
	}
	if _, err := eventlog.Open(ctxT(t), e.js, eventlog.Stream("NOPE")); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Errorf("missing stream: %v", err)
	}
}

func TestTooManyNodes(t *testing.T) {
	e := startEnv(t)
	e.start("pbx1", "s1")
	e.start("pbx2", "s2")
	r := e.open(eventlog.MaxNodes(1))
	next(t, r, 1)
	for range 2 { // final: the message of pbx2 is never passed over
		if _, err := r.Next(ctxT(t)); !errors.Is(err, eventlog.ErrTooManyNodes) {
			t.Fatalf("got %v", err)
		}
	}
	if r.Position() != 1 {
		t.Fatalf("position %d", r.Position())
	}
}

func TestDurableAcknowledgesWhileIdle(t *testing.T) {
	e := startEnv(t)
	storeNodes(e, []string{"pbx1"}, 4) // 5 messages
	r := e.open(eventlog.Durable("svc"))
	next(t, r, 5)
	// Nothing more is stored: Next waits, and the five handled entries
	// (the last counts once Next is called again) are acknowledged
	// meanwhile, not only at Close.
	noMore(t, r)
	cons, err := e.js.Consumer(ctxT(t), eventlog.DefaultStream, "svc")
	if err != nil {
		t.Fatal(err)
	}
	// The server offers no signal for its ack floor: ask it, for a while
	// (a loaded machine may delay the reader's 100 ms timer).
	var info *jetstream.ConsumerInfo
	testenv.Poll(t, "the ack floor at 5 with nothing pending", func() bool {
		if info, err = cons.Info(ctxT(t)); err != nil {
			t.Fatal(err)
		}
		return info.AckFloor.Stream == 5 && info.NumAckPending == 0
	})
}

func TestNextWaitsForContextAndClose(t *testing.T) {
	e := startEnv(t)
	r := e.open()
	noMore(t, r) // Next returned the context's error
	e.start("pbx1", "s1")
	if g := next(t, r, 1)[0]; g.Kind != eventlog.KindSessionStart {
		t.Fatalf("after a timeout: %+v", g)
	}
	if err := r.Close(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Next(ctxT(t)); !errors.Is(err, eventlog.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if err := r.Close(ctxT(t)); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

// inOrder checks that got are the stream's messages from 1 on, each once.
func inOrder(t *testing.T, got []*eventlog.Entry) {
	t.Helper()
	for i, g := range got {
		if g.StreamSeq != uint64(i+1) || g.Inferred {
			t.Fatalf("entry %d: stream seq %d inferred=%v (repeated or skipped)", i, g.StreamSeq, g.Inferred)
		}
	}
}

// TestSlowCaller reads with the smallest Buffer, so that nats.go's delivery
// waits on the reader's full hand-off queue most of the time, and pauses
// longer than two heartbeat intervals between two Next calls: nothing is
// repeated or skipped, and the pause is no stall (nats.go does not watch
// the heartbeat while the reader holds a message back).
func TestSlowCaller(t *testing.T) {
	if testing.Short() {
		t.Skip("pauses 6 s")
	}
	e := startEnv(t)
	total := storeNodes(e, []string{"pbx1", "pbx2"}, 60)
	readers := map[string]*eventlog.Reader{
		"ordered": e.open(eventlog.Buffer(eventlog.MinBuffer)),
		"durable": e.open(eventlog.Buffer(eventlog.MinBuffer), eventlog.Durable("svc")),
	}
	got := map[string][]*eventlog.Entry{}
	before := map[string]uint64{}
	for name, r := range readers {
		got[name] = next(t, r, 10)
		before[name] = r.Stats().Stalls
	}
	time.Sleep(6 * time.Second) // the scenario: 2 × the 2.5 s heartbeat and more
	// A heartbeat watched during the pause would have fired 5 s into it.
	// Only the pause is checked: a stall while the reader waits for
	// messages (seen once on a heavily loaded machine) is not this one.
	for name, r := range readers {
		if n := r.Stats().Stalls - before[name]; n != 0 {
			t.Fatalf("%s: %d stalls while the caller paused", name, n)
		}
	}
	for name, r := range readers {
		got[name] = append(got[name], next(t, r, total-10)...)
		noMore(t, r)
		inOrder(t, got[name])
		st := r.Stats()
		if st.Redelivered != 0 || st.Messages != uint64(total) {
			t.Fatalf("%s: stats %+v", name, st)
		}
		if st.Stalls != 0 {
			t.Logf("%s: %d stalls outside the pause (a loaded machine)", name, st.Stalls)
		}
	}
}

// TestConsumerFailureIsFinal: a durable consumer deleted under the reader,
// and a closed connection under either reader, end Next with the jetstream
// error, again on every call, once what was delivered before is read.
func TestConsumerFailureIsFinal(t *testing.T) {
	e := startEnv(t)
	total := storeNodes(e, []string{"pbx1"}, 20)
	durable := e.open(eventlog.Durable("svc"))
	inOrder(t, next(t, durable, total))
	if err := e.js.DeleteConsumer(ctxT(t), eventlog.DefaultStream, "svc"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := durable.Next(ctxT(t)); !errors.Is(err, jetstream.ErrConsumerDeleted) {
			t.Fatalf("durable after its consumer was deleted: %v", err)
		}
	}

	ordered := e.open()
	inOrder(t, next(t, ordered, total))
	e.js.Conn().Close()
	for range 2 {
		if _, err := ordered.Next(ctxT(t)); !errors.Is(err, jetstream.ErrConnectionClosed) {
			t.Fatalf("ordered after the connection closed: %v", err)
		}
	}
}
