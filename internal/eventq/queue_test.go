package eventq

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/pkg/amiwire"
)

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
