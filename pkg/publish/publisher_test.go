package publish

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zapcore"

	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amiwire"
)

const sess = "a1b2c3-pbx1-1795398116"

func TestPublishLosslessInOrder(t *testing.T) {
	_, nc, js := startStream(t, StreamConfig{})
	pl := newPipeline(t, nc, []string{"pbx1"}, nil)
	q := pl.qs["pbx1"]

	tricky := msg("Event", "UserEvent", "Variable", "A=1", "Value", "has: colons", "Empty", "",
		"Variable", "B=2", "Unicode", "Zoë 中文 🎉", "Control", "\x01tab\there\x1f", "", "raw line")
	events := append(loadEvents(t, "07-originate-events.server.raw"), tricky)
	snapshot := []*amiwire.Message{events[3].Clone(), events[4].Clone()}

	q.SessionStarted(sess, "9.0.0", t0)
	for i, m := range events {
		q.Event(sess, uint64(i+1), t0.Add(time.Duration(i)*time.Microsecond), m)
		if i == 2 {
			q.PushSnapshot(sess, "CoreShowChannels", snapshot, t0)
		}
	}
	q.SessionEnded(sess, t0, "eof", uint64(len(events)))
	if err := pl.pub.Drain(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}

	got := readStream(t, js, DefaultStreamName)
	if len(got) != len(events)+3 {
		t.Fatalf("%d messages stored, want %d", len(got), len(events)+3)
	}
	if got[0].metaType() != MetaSessionStart || got[0].meta["owner"] != "inst1" || got[0].meta["version"] != "9.0.0" || got[0].msgID != sess+"-start" {
		t.Fatalf("first message %s id %s", got[0].data, got[0].msgID)
	}
	if got[4].metaType() != MetaSnapshot || got[4].msgID != sess+"-snap-CoreShowChannels-3" {
		t.Fatalf("snapshot not after event 3: %s", got[4].data)
	}
	wantItems := []any{refFields(events[3], nil), refFields(events[4], nil)}
	if items := got[4].meta["items"]; !reflect.DeepEqual(items, wantItems) {
		t.Fatalf("snapshot items %v", items)
	}
	last := got[len(got)-1]
	if last.metaType() != MetaSessionEnd || last.num("last_seq") != uint64(len(events)) || last.msgID != sess+"-end" {
		t.Fatalf("last message %s", last.data)
	}
	var seq uint64
	for _, s := range got {
		if s.isMeta() {
			continue
		}
		seq++
		m := events[seq-1]
		if s.event.Seq != seq {
			t.Fatalf("seq %d where %d expected", s.event.Seq, seq)
		}
		if want := "ami.events.pbx1." + string(m.Name()); s.subject != want {
			t.Fatalf("subject %s, want %s", s.subject, want)
		}
		if s.msgID != fmt.Sprintf("%s-%d", sess, seq) {
			t.Fatalf("Nats-Msg-Id %s", s.msgID)
		}
		// Byte for byte: every value is the original's (the events used
		// here are valid UTF-8, so nothing is replaced).
		if want := refFields(m, nil); !reflect.DeepEqual(s.event.Fields, want) {
			t.Fatalf("event %d fields\n got %v\nwant %v", seq, s.event.Fields, want)
		}
		if s.event.Event != string(m.Name()) || s.event.Node != "pbx1" || s.event.Session != sess {
			t.Fatalf("envelope %s", s.data)
		}
	}
	st := checkAccounting(t, pl, "pbx1")
	if st.Published != uint64(len(events)) || st.Dropped() != 0 {
		t.Fatalf("stats %+v", st)
	}
	for typ, want := range map[string]uint64{MetaSessionStart: 1, MetaSnapshot: 1, MetaSessionEnd: 1, MetaGap: 0} {
		if got := counter(pl.reg.MetaPublished.WithLabelValues("pbx1", typ)); got != want {
			t.Errorf("meta %s published %d, want %d", typ, got, want)
		}
	}
}

func TestPublishDeduplicatesSameItem(t *testing.T) {
	_, nc, js := startStream(t, StreamConfig{})
	pl := newPipeline(t, nc, []string{"pbx1"}, nil)
	q := pl.qs["pbx1"]
	ev := msg("Event", "Newchannel", "Channel", "SIP/100-1")
	q.SessionStarted(sess, "9.0.0", t0)
	q.SessionStarted(sess, "9.0.0", t0) // a marker sent twice is stored once too
	q.Event(sess, 1, t0, ev)
	q.Event(sess, 1, t0, ev) // the same item again, e.g. a retry
	q.Event(sess, 2, t0, ev)
	if err := pl.pub.Drain(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	got := readStream(t, js, DefaultStreamName)
	var ids []string
	for _, s := range got {
		ids = append(ids, s.msgID)
	}
	if want := []string{sess + "-start", sess + "-1", sess + "-2", sess + "-end"}; !reflect.DeepEqual(ids, want) {
		t.Fatalf("stored ids %v, want %v", ids, want)
	}
	// JetStream acknowledged the duplicate as stored: every received event
	// is accounted for.
	if st := checkAccounting(t, pl, "pbx1"); st.Received != 3 || st.Published != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// TestNATSOutage stops the server while events flow, keeps the reader side
// pushing during the outage, restarts the server on the same port and store,
// and checks the stored history: every seq once, in order, either as an
// event or inside a buffer_full gap, and received = published + dropped.
func TestNATSOutage(t *testing.T) {
	env, nc, js := startStream(t, StreamConfig{})
	pl := newPipeline(t, nc, []string{"pbx1"}, []eventq.Option{eventq.WithMaxEvents(500)},
		WithAckTimeout(time.Second), WithRetryBackoff(10*time.Millisecond, 100*time.Millisecond), WithMaxInflight(64))
	q := pl.qs["pbx1"]
	// A core subscription sees what JetStream stores: the signal that the
	// backlog has gone through after the outage.
	sub, err := nc.SubscribeSync("ami.events.pbx1." + MetaToken)
	if err != nil {
		t.Fatal(err)
	}
	events := loadEvents(t, "07-originate-events.server.raw")
	sessions := []string{sess, sess + "b"}
	lastSeq := map[string]uint64{}
	push := func(s string, n int) {
		for range n {
			lastSeq[s]++
			q.Event(s, lastSeq[s], t0, events[lastSeq[s]%uint64(len(events))])
		}
	}
	q.SessionStarted(sessions[0], "9.0.0", t0)
	push(sessions[0], 400)
	env.Stop()              // publishes in flight, others queued
	push(sessions[0], 2000) // the queue fills and drops
	reconnected := make(chan struct{}, 1)
	nc.SetReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} })
	env.Start()
	select {
	case <-reconnected:
	case <-ctxT(t, 10*time.Second).Done():
		t.Fatal("client did not reconnect")
	}
	q.SessionEnded(sessions[0], t0, "eof", lastSeq[sessions[0]])
	q.SessionStarted(sessions[1], "9.0.0", t0)
	for {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("second session_start not stored: %v", err)
		}
		if strings.Contains(string(m.Data), `"session_start"`) && strings.Contains(string(m.Data), sessions[1]) {
			break
		}
	}
	push(sessions[1], 300)
	q.SessionEnded(sessions[1], t0, "eof", lastSeq[sessions[1]])
	if err := pl.pub.Drain(ctxT(t, 30*time.Second)); err != nil {
		t.Fatal(err)
	}

	got := readStream(t, js, DefaultStreamName)
	covered := map[string][]int{}
	next := map[string]uint64{}
	for _, s := range sessions {
		covered[s], next[s] = make([]int, lastSeq[s]+1), 1
	}
	var published, gapped uint64
	var order []string
	for _, s := range got {
		switch {
		case !s.isMeta():
			id := s.event.Session
			if s.event.Seq != next[id] {
				t.Fatalf("%s: event seq %d where %d expected (order or duplicate)", id, s.event.Seq, next[id])
			}
			covered[id][next[id]]++
			next[id]++
			published++
		case s.metaType() == MetaGap:
			id := s.meta["session"].(string)
			first, last := s.num("first_seq"), s.num("last_seq")
			if first != next[id] || s.meta["reason"] != metrics.ReasonBufferFull || s.num("count") != last-first+1 {
				t.Fatalf("gap %s where seq %d expected", s.data, next[id])
			}
			for i := first; i <= last; i++ {
				covered[id][i]++
			}
			gapped += s.num("count")
			next[id] = last + 1
		default:
			order = append(order, s.metaType()+" "+s.meta["session"].(string))
		}
	}
	for _, id := range sessions {
		for i := uint64(1); i <= lastSeq[id]; i++ {
			if covered[id][i] != 1 {
				t.Fatalf("%s seq %d covered %d times", id, i, covered[id][i])
			}
		}
	}
	wantOrder := []string{"session_start " + sessions[0], "session_end " + sessions[0], "session_start " + sessions[1], "session_end " + sessions[1]}
	if !reflect.DeepEqual(order, wantOrder) {
		t.Fatalf("lifecycle %v", order)
	}
	st := checkAccounting(t, pl, "pbx1")
	if st.Published != published || st.DroppedBufferFull != gapped || st.Received != lastSeq[sessions[0]]+lastSeq[sessions[1]] {
		t.Fatalf("stats %+v; stream has %d events and %d in gaps", st, published, gapped)
	}
	ns, _ := pl.pub.Stats("pbx1")
	// At least the 500 events the queue held for the first session are
	// stored (the second session's may meet a queue not yet released).
	if gapped == 0 || ns.Retries == 0 || published < 500 {
		t.Fatalf("the outage did not bite as planned: %d published, %d dropped, %d retries", published, gapped, ns.Retries)
	}
	if got := counter(pl.reg.PublishRetries.WithLabelValues("pbx1")); got != ns.Retries {
		t.Fatalf("retries metric %d, stats %d", got, ns.Retries)
	}
	t.Logf("published %d, dropped %d, retries %d", published, gapped, ns.Retries)
}

func TestOverMaxPayloadIsAPublishFailedGap(t *testing.T) {
	env := testenv.StartNATS(t, testenv.MaxPayload(16<<10))
	nc := connect(t, env)
	js := ensureStream(t, nc, StreamConfig{})
	pl := newPipeline(t, nc, []string{"pbx1"}, nil)
	q := pl.qs["pbx1"]
	small := msg("Event", "Newstate", "Channel", "SIP/1")
	huge := msg("Event", "Newstate", "Channel", strings.Repeat("x", 20<<10))
	q.SessionStarted(sess, "9.0.0", t0)
	q.Event(sess, 1, t0, small)
	q.Event(sess, 2, t0, huge)
	q.Event(sess, 3, t0, huge)
	q.Event(sess, 4, t0, small)
	q.Event(sess, 5, t0, huge)
	if err := pl.pub.Drain(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	got := readStream(t, js, DefaultStreamName)
	var desc []string
	var prevGap *stored
	for i, s := range got {
		if s.metaType() == MetaGap {
			if s.msgID != fmt.Sprintf("%s-gap-%d", sess, s.num("first_seq")) || s.meta["reason"] != metrics.ReasonPublishFailed {
				t.Fatalf("gap %s id %s", s.data, s.msgID)
			}
			// Events 2 and 3 make one gap if the publisher saw both
			// before it went idle, or two adjacent ones: the same history.
			if prevGap != nil && prevGap.num("last_seq")+1 == s.num("first_seq") {
				desc[len(desc)-1] = fmt.Sprintf("gap %d-%d", prevGap.num("first_seq"), s.num("last_seq"))
				continue
			}
			prevGap = &got[i]
			desc = append(desc, fmt.Sprintf("gap %d-%d", s.num("first_seq"), s.num("last_seq")))
			continue
		}
		prevGap = nil
		if s.isMeta() {
			desc = append(desc, fmt.Sprintf("%s %v %s", s.metaType(), s.meta["reason"], s.msgID))
		} else {
			desc = append(desc, fmt.Sprintf("ev %d", s.event.Seq))
		}
	}
	want := []string{
		"session_start <nil> " + sess + "-start",
		"ev 1",
		"gap 2-3",
		"ev 4",
		"gap 5-5",
		"session_end closed " + sess + "-end",
	}
	if !reflect.DeepEqual(desc, want) {
		t.Fatalf("stream:\n got %q\nwant %q", desc, want)
	}
	st := checkAccounting(t, pl, "pbx1")
	if st.DroppedPublishFailed != 3 || st.Published != 2 {
		t.Fatalf("stats %+v", st)
	}
	if got := counter(pl.reg.EventsDropped.WithLabelValues("pbx1", metrics.ReasonPublishFailed)); got != 3 {
		t.Fatalf("publish_failed metric %d", got)
	}
}

// TestServerRejectionIsAPublishFailedGap: JetStream itself refuses a message
// (over the stream's max message size), after it was sent.
func TestServerRejectionIsAPublishFailedGap(t *testing.T) {
	env := testenv.StartNATS(t)
	nc := connect(t, env)
	js := testenv.JetStream(t, nc)
	if _, err := js.CreateStream(ctxT(t, 5*time.Second), jetstream.StreamConfig{
		Name: DefaultStreamName, Subjects: []string{"ami.events.>"}, MaxMsgSize: 4096,
	}); err != nil {
		t.Fatal(err)
	}
	pl := newPipeline(t, nc, []string{"pbx1"}, nil)
	q := pl.qs["pbx1"]
	q.Event(sess, 1, t0, msg("Event", "A"))
	q.Event(sess, 2, t0, msg("Event", "A", "Big", strings.Repeat("y", 8000)))
	q.Event(sess, 3, t0, msg("Event", "A"))
	if err := pl.pub.Drain(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	got := readStream(t, js, DefaultStreamName)
	var events []uint64
	var gap *stored
	for i := range got {
		if got[i].isMeta() {
			gap = &got[i]
		} else {
			events = append(events, got[i].event.Seq)
		}
	}
	if !reflect.DeepEqual(events, []uint64{1, 3}) || gap == nil || gap.num("first_seq") != 2 || gap.num("count") != 1 || gap.meta["reason"] != metrics.ReasonPublishFailed {
		t.Fatalf("events %v gap %v", events, gap)
	}
	if st := checkAccounting(t, pl, "pbx1"); st.DroppedPublishFailed != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestPublishedEventsAreRedacted(t *testing.T) {
	_, nc, js := startStream(t, StreamConfig{})
	pl := newPipeline(t, nc, []string{"pbx1"}, nil)
	events := loadEvents(t, "02e-security-events-seen-by-other-session.server.raw")
	for i, m := range events {
		pl.qs["pbx1"].Event(sess, uint64(i+1), t0, m)
	}
	if err := pl.pub.Drain(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	var redacted int
	for _, s := range readStream(t, js, DefaultStreamName) {
		if strings.Contains(string(s.data), "1aac7e609081b51eb8b9af05ea7cbcef") {
			t.Fatalf("ExpectedResponse published: %s", s.data)
		}
		if s.event.Event == "ChallengeResponseFailed" {
			if s.event.Fields["ExpectedResponse"] != RedactedValue {
				t.Fatalf("not redacted: %s", s.data)
			}
			redacted++
		}
	}
	if redacted != 1 || counter(pl.reg.EventsRedacted.WithLabelValues("pbx1")) != 1 {
		t.Fatalf("redacted %d, metric %d", redacted, counter(pl.reg.EventsRedacted.WithLabelValues("pbx1")))
	}
}

func TestBadEventNameIsPublishedOnASanitisedSubject(t *testing.T) {
	_, nc, js := startStream(t, StreamConfig{Prefix: "pbx.ami"})
	pl := newPipeline(t, nc, []string{"pbx1"}, nil, WithPrefix("pbx.ami"))
	pl.qs["pbx1"].Event(sess, 1, t0, msg("Event", "Bad.Name *>"))
	pl.qs["pbx1"].Event(sess, 2, t0, msg("Event", ""))
	if err := pl.pub.Drain(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	got := readStream(t, js, DefaultStreamName)
	if len(got) != 2 || got[0].subject != "pbx.ami.events.pbx1._bad_Bad_Name___" || got[0].event.Event != "Bad.Name *>" ||
		got[1].subject != "pbx.ami.events.pbx1._bad_" {
		t.Fatalf("stored %+v", got)
	}
}

// TestInflightCapIsBackPressure: with one publish allowed in flight for the
// process, two nodes still get everything stored, in order, nothing dropped.
func TestInflightCapIsBackPressure(t *testing.T) {
	_, nc, js := startStream(t, StreamConfig{})
	pl := newPipeline(t, nc, []string{"pbx1", "pbx2"}, nil, WithMaxInflight(1))
	for i := uint64(1); i <= 300; i++ {
		pl.qs["pbx1"].Event("s1", i, t0, msg("Event", "A"))
		pl.qs["pbx2"].Event("s2", i, t0, msg("Event", "B"))
	}
	if err := pl.pub.Drain(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	next := map[string]uint64{"s1": 1, "s2": 1}
	for _, s := range readStream(t, js, DefaultStreamName) {
		if s.isMeta() {
			continue
		}
		if s.event.Seq != next[s.event.Session] {
			t.Fatalf("%s: seq %d, want %d", s.event.Session, s.event.Seq, next[s.event.Session])
		}
		next[s.event.Session]++
	}
	for _, n := range []string{"pbx1", "pbx2"} {
		if st := checkAccounting(t, pl, n); st.Published != 300 {
			t.Fatalf("%s: %+v", n, st)
		}
	}
}

// TestDrainDeadlineWithNATSDown: nothing can be stored; Drain gives up at
// its deadline and every event is accounted for as dropped (shutdown).
func TestDrainDeadlineWithNATSDown(t *testing.T) {
	env, nc, _ := startStream(t, StreamConfig{})
	pl := newPipeline(t, nc, []string{"pbx1"}, nil, WithRetryBackoff(5*time.Millisecond, 20*time.Millisecond))
	env.Stop()
	q := pl.qs["pbx1"]
	q.SessionStarted(sess, "9.0.0", t0)
	for i := uint64(1); i <= 100; i++ {
		q.Event(sess, i, t0, msg("Event", "A"))
	}
	start := time.Now()
	err := pl.pub.Drain(ctxT(t, 300*time.Millisecond))
	if !errors.Is(err, ErrDrainIncomplete) {
		t.Fatalf("Drain: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Drain took %v past its deadline", d)
	}
	st := checkAccounting(t, pl, "pbx1")
	if st.DroppedShutdown != 100 || st.Published != 0 {
		t.Fatalf("stats %+v", st)
	}
	if got := counter(pl.reg.EventsDropped.WithLabelValues("pbx1", metrics.ReasonShutdown)); got != 100 {
		t.Fatalf("shutdown metric %d", got)
	}
	if err := pl.pub.Drain(ctxT(t, time.Second)); !errors.Is(err, ErrClosed) {
		t.Fatalf("second Drain: %v", err)
	}
}

// TestRemoveHandsOverOneNode drains one node while the other keeps going.
func TestRemoveHandsOverOneNode(t *testing.T) {
	_, nc, js := startStream(t, StreamConfig{})
	pl := newPipeline(t, nc, []string{"pbx1", "pbx2"}, nil)
	for i := uint64(1); i <= 50; i++ {
		pl.qs["pbx1"].Event("s1", i, t0, msg("Event", "A"))
	}
	if err := pl.pub.Remove(ctxT(t, 10*time.Second), "pbx1"); err != nil {
		t.Fatal(err)
	}
	if st := pl.qs["pbx1"].Stats(); st.Published != 50 || st.Buffered != 0 {
		t.Fatalf("pbx1 after Remove: %+v", st)
	}
	if _, err := pl.pub.Stats("pbx1"); !errors.Is(err, ErrUnknownNode) {
		t.Fatalf("Stats of removed node: %v", err)
	}
	pl.qs["pbx1"].Event("s1", 51, t0, msg("Event", "A")) // closed: counted, not published
	for i := uint64(1); i <= 50; i++ {
		pl.qs["pbx2"].Event("s2", i, t0, msg("Event", "B"))
	}
	q3, _ := eventq.New("pbx3")
	if err := pl.pub.Add("pbx3", q3); err != nil { // added while running
		t.Fatal(err)
	}
	q3.Event("s3", 1, t0, msg("Event", "C"))
	if err := pl.pub.Drain(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	count := map[string]int{}
	for _, s := range readStream(t, js, DefaultStreamName) {
		count[s.event.Node]++
	}
	if count["pbx1"] != 50 || count["pbx2"] != 50 || count["pbx3"] != 1 {
		t.Fatalf("stored per node %v", count)
	}
	if st := pl.qs["pbx1"].Stats(); st.DroppedShutdown != 1 || st.Received != 51 {
		t.Fatalf("pbx1 late event: %+v", st)
	}
	if err := pl.pub.Add("pbx4", q3); !errors.Is(err, ErrClosed) {
		t.Fatalf("Add after Drain: %v", err)
	}
}

func TestNewPublisherValidates(t *testing.T) {
	env := testenv.StartNATS(t)
	buffered, err := nats.Connect(env.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer buffered.Close()
	if _, err := NewPublisher(buffered); !errors.Is(err, ErrReconnectBuffer) {
		t.Fatalf("reconnect buffer not refused: %v", err)
	}
	nc := connect(t, env)
	for name, o := range map[string]Option{
		"prefix":    WithPrefix("a..b"),
		"wildcard":  WithPrefix("a.*"),
		"inflight":  WithMaxInflight(0),
		"ack":       WithAckTimeout(0),
		"snapshot":  WithSnapshotMaxItems(0),
		"backoff":   WithRetryBackoff(time.Second, time.Millisecond),
		"nobackoff": WithRetryBackoff(0, time.Second),
	} {
		if _, err := NewPublisher(nc, o); !errors.Is(err, ErrInvalidOption) {
			t.Errorf("%s: %v", name, err)
		}
	}
	p, err := NewPublisher(nc)
	if err != nil {
		t.Fatal(err)
	}
	q, _ := eventq.New("pbx1")
	if err := p.Add("pbx.1", q); !errors.Is(err, ErrInvalidSubject) {
		t.Errorf("bad node name: %v", err)
	}
	if err := p.Add("pbx1", q); err != nil {
		t.Fatal(err)
	}
	if err := p.Add("pbx1", q); !errors.Is(err, ErrDuplicateNode) {
		t.Errorf("duplicate node: %v", err)
	}
	// Never started: Drain still accounts for what the queue holds.
	q.Event("s", 1, t0, msg("Event", "A"))
	if err := p.Drain(ctxT(t, time.Second)); !errors.Is(err, ErrDrainIncomplete) {
		t.Errorf("Drain of unstarted publisher: %v", err)
	}
	if st := q.Stats(); st.DroppedShutdown != 1 || st.Buffered != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestEnsureStream(t *testing.T) {
	env := testenv.StartNATS(t)
	nc := connect(t, env)
	js := testenv.JetStream(t, nc)
	ctx := ctxT(t, 10*time.Second)
	s, err := EnsureStream(ctx, js, StreamConfig{})
	if err != nil {
		t.Fatal(err)
	}
	c := s.CachedInfo().Config
	if c.Name != "AMI_EVENTS" || !reflect.DeepEqual(c.Subjects, []string{"ami.events.>"}) || c.Storage != jetstream.FileStorage ||
		c.Replicas != 1 || c.Duplicates != 2*time.Minute || c.MaxBytes != -1 || c.MaxAge != 0 || c.Discard != jetstream.DiscardOld {
		t.Fatalf("defaults: %+v", c)
	}
	s, err = EnsureStream(ctx, js, StreamConfig{MaxAge: 72 * time.Hour, MaxBytes: 1 << 30, DuplicateWindow: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	if c := s.CachedInfo().Config; c.MaxAge != 72*time.Hour || c.MaxBytes != 1<<30 || c.Duplicates != time.Minute {
		t.Fatalf("update: %+v", c)
	}
	for name, cfg := range map[string]StreamConfig{
		"name":     {Name: "a.b"},
		"prefix":   {Prefix: "a.>"},
		"age":      {MaxAge: -time.Second},
		"bytes":    {MaxBytes: -2},
		"replicas": {Replicas: 7},
		"storage":  {Storage: jetstream.StorageType(9)},
		"dup>age":  {MaxAge: time.Minute, DuplicateWindow: time.Hour},
	} {
		if _, err := EnsureStream(ctx, js, cfg); !errors.Is(err, ErrInvalidStreamConfig) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// TestRefusedLogIsCoalesced: a flood of events JetStream cannot take makes
// one gap marker and a couple of log lines with counts, not one per event.
func TestRefusedLogIsCoalesced(t *testing.T) {
	env := testenv.StartNATS(t, testenv.MaxPayload(16<<10))
	nc := connect(t, env)
	js := ensureStream(t, nc, StreamConfig{})
	logger, logs := observed(zapcore.InfoLevel)
	pl := newPipeline(t, nc, []string{"pbx1"}, nil, logger, WithLogInterval(time.Hour))
	huge := msg("Event", "Newstate", "Channel", strings.Repeat("x", 20<<10))
	for i := uint64(1); i <= 500; i++ {
		pl.qs["pbx1"].Event(sess, i, t0, huge)
	}
	if err := pl.pub.Drain(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	refused := logs.FilterMessageSnippet("refused").All()
	if len(refused) != 2 {
		t.Fatalf("%d refused lines, want 2 (first, and the rest at stop)", len(refused))
	}
	if f := refused[1].ContextMap(); f["dropped_delta"] != uint64(499) || f["dropped_total"] != uint64(500) {
		t.Fatalf("last line %v", f)
	}
	// One gap, or a few adjacent ones if the publisher went idle while the
	// events were being pushed: never one per event.
	var next uint64 = 1
	got := readStream(t, js, DefaultStreamName)
	for _, s := range got {
		if s.metaType() != MetaGap || s.num("first_seq") != next || s.num("count") != s.num("last_seq")-next+1 {
			t.Fatalf("unexpected %s", s.data)
		}
		next = s.num("last_seq") + 1
	}
	if next != 501 || len(got) > 10 {
		t.Fatalf("%d gap messages covering up to %d", len(got), next-1)
	}
	if logs.FilterMessageSnippet("node publishing stopped").Len() != 1 {
		t.Fatal("no summary line")
	}
}

// TestFenceWhenDeadlinePassesInFlight: a node given up at its deadline with
// publishes still unstored fences the connection (so none can be stored
// after the next owner's); a node drained in time does not.
func TestFenceWhenDeadlinePassesInFlight(t *testing.T) {
	env, nc, _ := startStream(t, StreamConfig{})
	var fences atomic.Int32
	pl := newPipeline(t, nc, []string{"pbx1", "pbx2"}, nil,
		WithRetryBackoff(5*time.Millisecond, 20*time.Millisecond), WithFence(func() { fences.Add(1) }))

	for i := uint64(1); i <= 20; i++ {
		pl.qs["pbx1"].Event("s1", i, t0, msg("Event", "A"))
	}
	if err := pl.pub.Remove(ctxT(t, 10*time.Second), "pbx1"); err != nil {
		t.Fatal(err)
	}
	if n := fences.Load(); n != 0 {
		t.Fatalf("fenced %d times after a complete drain", n)
	}

	env.Stop()
	for i := uint64(1); i <= 20; i++ {
		pl.qs["pbx2"].Event("s2", i, t0, msg("Event", "B"))
	}
	if err := pl.pub.Remove(ctxT(t, 200*time.Millisecond), "pbx2"); !errors.Is(err, ErrDrainIncomplete) {
		t.Fatalf("Remove with NATS down: %v", err)
	}
	if n := fences.Load(); n != 1 {
		t.Fatalf("fenced %d times after a drain that ran out of time, want 1", n)
	}
	if got := counter(pl.reg.PublishFences); got != 1 {
		t.Fatalf("ami_publish_fences_total %d, want 1", got)
	}
	if err := pl.pub.Drain(ctxT(t, time.Second)); err != nil {
		t.Fatalf("Drain with no node left: %v", err)
	}
}

// TestTrailingGapPublishedWithoutNextEvent: events dropped with nothing
// after them (the PBX fell silent) still get their gap marker stored, once
// the queue's gap delay has passed, not only when the next event comes.
func TestTrailingGapPublishedWithoutNextEvent(t *testing.T) {
	_, nc, _ := startStream(t, StreamConfig{})
	metas := make(chan *nats.Msg, 16)
	sub, err := nc.ChanSubscribe(MetaSubject(DefaultPrefix, "pbx1"), metas)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	// A budget of one byte refuses every event: all are buffer_full drops.
	pl := newPipeline(t, nc, []string{"pbx1"},
		[]eventq.Option{eventq.WithBudget(eventq.NewBudget(1)), eventq.WithGapDelay(100 * time.Millisecond)})
	now := time.Now()
	for seq := uint64(1); seq <= 3; seq++ {
		pl.qs["pbx1"].Event(sess, seq, now, msg("Event", "Newstate"))
	}
	select {
	case m := <-metas:
		var g map[string]any
		if err := json.Unmarshal(m.Data, &g); err != nil {
			t.Fatal(err)
		}
		if g["type"] != "gap" || g["first_seq"] != 1.0 || g["last_seq"] != 3.0 || g["count"] != 3.0 || g["reason"] != "buffer_full" {
			t.Fatalf("marker %s, want the gap of seqs 1-3", m.Data)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no gap marker published while the PBX was silent")
	}
	if err := pl.pub.Drain(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
}

// TestStreamRecreatedInOrder: the stream is deleted while three nodes
// publish; WithStream recreates it, and each node's events not stored
// before are stored after, in order, each once, with nothing dropped.
func TestStreamRecreatedInOrder(t *testing.T) {
	_, nc, js := startStream(t, StreamConfig{})
	nodes := []string{"pbx1", "pbx2", "pbx3"}
	pl := newPipeline(t, nc, nodes, nil, WithStream(StreamConfig{}), WithMaxInflight(64),
		WithRetryBackoff(5*time.Millisecond, 50*time.Millisecond))
	ev := msg("Event", "Newstate", "Channel", "SIP/100-1")
	const before, after = 400, 400
	for i := uint64(1); i <= before; i++ {
		for _, n := range nodes {
			pl.qs[n].Event(sess+n, i, t0, ev)
		}
	}
	if err := js.DeleteStream(ctxT(t, 10*time.Second), DefaultStreamName); err != nil {
		t.Fatal(err)
	}
	for i := uint64(before + 1); i <= before+after; i++ {
		for _, n := range nodes {
			pl.qs[n].Event(sess+n, i, t0, ev)
		}
	}
	if err := pl.pub.Drain(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	next := map[string]uint64{}
	for _, s := range readStream(t, js, DefaultStreamName) {
		id := s.event.Session
		if s.isMeta() {
			t.Fatalf("marker %s", s.data)
		}
		if next[id] == 0 {
			next[id] = s.event.Seq
		}
		if s.event.Seq != next[id] {
			t.Fatalf("%s: seq %d where %d expected", id, s.event.Seq, next[id])
		}
		next[id]++
	}
	for _, n := range nodes {
		if next[sess+n] != before+after+1 {
			t.Fatalf("%s: stream ends before seq %d", n, next[sess+n])
		}
		if st := checkAccounting(t, pl, n); st.Published != before+after || st.Dropped() != 0 {
			t.Fatalf("%s: %+v", n, st)
		}
	}
	if got := counter(pl.reg.StreamRecreations); got != 1 {
		t.Fatalf("ami_stream_recreations_total %d, want 1", got)
	}
}

// TestIdleWorkerParks: a node with nothing to publish holds no goroutine
// (its worker parks once everything is acknowledged), a new item starts it
// again, and Drain ends parked workers too.
func TestIdleWorkerParks(t *testing.T) {
	_, nc, js := startStream(t, StreamConfig{})
	reg := metrics.New()
	pub, err := NewPublisher(nc, WithMetrics(reg))
	if err != nil {
		t.Fatal(err)
	}
	parked := make(chan string, 16)
	qs := map[string]*eventq.Queue{}
	for _, n := range []string{"pbx1", "pbx2"} {
		q, err := eventq.New(n, eventq.WithMetrics(reg))
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Add(n, q); err != nil {
			t.Fatal(err)
		}
		pub.workers[n].onPark = func() { parked <- n }
		pub.workers[n].parkAfter = 10 * time.Millisecond
		qs[n] = q
	}
	if err := pub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitPark := func(want string) {
		t.Helper()
		select {
		case n := <-parked:
			if n != want {
				t.Fatalf("%s parked, want %s", n, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s did not park", want)
		}
	}
	// Both start with empty queues.
	for range 2 {
		select {
		case <-parked:
		case <-time.After(10 * time.Second):
			t.Fatal("a worker with an empty queue did not park")
		}
	}
	qs["pbx1"].SessionStarted(sess, "9.0.0", t0)
	waitPark("pbx1")
	for round := uint64(1); round <= 3; round++ {
		for i := range round {
			seq := round*(round-1)/2 + i + 1
			qs["pbx1"].Event(sess, seq, t0, msg("Event", "Newstate"))
		}
		// It parks only with every publish acknowledged.
		waitPark("pbx1")
		if st, _ := pub.Stats("pbx1"); st.Published != round*(round+1)/2 || st.MetaPublished != 1 {
			t.Fatalf("round %d: parked with %+v", round, st)
		}
	}
	if err := pub.Drain(ctxT(t, 10*time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case n := <-parked:
		t.Fatalf("%s parked again during Drain", n)
	default:
	}
	// 1 session_start, 6 events, 1 session_end (Close) for pbx1.
	if got := readStream(t, js, DefaultStreamName); len(got) != 8 {
		t.Fatalf("%d messages stored, want 8", len(got))
	}
}
