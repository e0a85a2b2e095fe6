package ingest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// fakeAction is one action the scripted PBX read, and when.
type fakeAction struct {
	Name, ID string
	At       time.Time
}

// fakePBX is a scripted AMI server over real TCP, for the tests that need
// to place events exactly around a list answer. It serves one connection
// at a time: banner, any Login succeeds, Ping and Logoff are answered, and
// every other action gets what answer returns (written whole, in one
// write, as Asterisk writes a list while it holds its events back).
type fakePBX struct {
	t      *testing.T
	srv    *testenv.TCPServer
	answer func(a fakeAction) []byte

	// serving is held while a connection is served: a second client
	// waits for the first to end, as it would in the listener's backlog.
	serving sync.Mutex

	wmu  sync.Mutex // every message goes out whole
	conn net.Conn

	mu      sync.Mutex
	actions []fakeAction
	changed chan struct{} // capacity 1: an action was recorded
}

func startFakePBX(t *testing.T, answer func(a fakeAction) []byte) *fakePBX {
	t.Helper()
	f := &fakePBX{t: t, answer: answer, changed: make(chan struct{}, 1)}
	f.srv = testenv.ServeTCP(t, f.serve)
	return f
}

func (f *fakePBX) addr() string { return f.srv.Addr() }

// serve makes c the connection writes go to and runs it; the server
// closes c when serve returns.
func (f *fakePBX) serve(c net.Conn) {
	f.serving.Lock()
	defer f.serving.Unlock()
	f.wmu.Lock()
	f.conn = c
	f.wmu.Unlock()
	f.handle(c)
}

// handle runs one connection until it ends; it must not call t.Fatal.
func (f *fakePBX) handle(c net.Conn) {
	f.write([]byte("Asterisk Call Manager/9.0.0\r\n"))
	r := bufio.NewReader(c)
	for {
		h := map[string]string{}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			if line == "" {
				break
			}
			k, v, _ := strings.Cut(line, ": ")
			h[strings.ToLower(k)] = v
		}
		if len(h) == 0 {
			continue
		}
		a := fakeAction{Name: h["action"], ID: h["actionid"], At: time.Now()}
		var out []byte
		switch strings.ToLower(a.Name) {
		case "login":
			out = amiMsg("Response", "Success", "ActionID", a.ID, "Message", "Authentication accepted")
		case "ping":
			out = amiMsg("Response", "Success", "ActionID", a.ID, "Ping", "Pong", "Timestamp", "1795397676.079634")
		case "logoff":
			out = amiMsg("Response", "Goodbye", "ActionID", a.ID, "Message", "Thanks for all the fish.")
		default:
			out = f.answer(a)
		}
		f.write(out)
		// Recorded once answered: whoever waits for it finds the answer
		// written.
		f.mu.Lock()
		f.actions = append(f.actions, a)
		f.mu.Unlock()
		select {
		case f.changed <- struct{}{}:
		default:
		}
		if strings.EqualFold(a.Name, "logoff") {
			return
		}
	}
}

// write sends b whole; a write error ends the test's connection anyway.
func (f *fakePBX) write(b []byte) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if f.conn != nil {
		_, _ = f.conn.Write(b)
	}
}

// received returns the actions named name answered so far.
func (f *fakePBX) received(name string) []fakeAction {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeAction
	for _, a := range f.actions {
		if strings.EqualFold(a.Name, name) {
			out = append(out, a)
		}
	}
	return out
}

// waitActions waits until n actions named name were answered.
func (f *fakePBX) waitActions(name string, n int) []fakeAction {
	f.t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		if got := f.received(name); len(got) >= n {
			return got
		}
		select {
		case <-f.changed:
		case <-deadline.C:
			f.t.Fatalf("fake PBX: %d %s actions, waited for %d", len(f.received(name)), name, n)
		}
	}
}

// amiMsg renders one AMI message from key, value pairs.
func amiMsg(kv ...string) []byte {
	var b []byte
	for i := 0; i+1 < len(kv); i += 2 {
		b = append(b, kv[i]...)
		b = append(b, ": "...)
		b = append(b, kv[i+1]...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

// markEvent is an event the test can find in the stream by its Mark.
func markEvent(mark string) []byte {
	return amiMsg("Event", "UserEvent", "Privilege", "user,all", "UserEvent", "pos", "Mark", mark)
}

// label names a node's record for the order checks: an event by its
// Mark, a marker by its type (and a snapshot's action).
func label(r record) string {
	if !r.meta() {
		return fieldValue(r.Fields, "Mark")
	}
	if r.Type == "snapshot" {
		return "snapshot " + r.Action
	}
	return r.Type
}

// listAnswer is the scripted answer to CoreShowChannels and BridgeList in
// round k (1 = after login): pre events, the list (two items), post events,
// in one write. It returns the bytes and appends to want the labels the
// node's stream must show for it.
func listAnswer(a fakeAction, k, pre, post int, want *[]string) []byte {
	var b []byte
	for i := range pre {
		m := fmt.Sprintf("%s-%d-pre-%d", a.Name, k, i)
		b = append(b, markEvent(m)...)
		*want = append(*want, m)
	}
	switch a.Name {
	case "CoreShowChannels":
		b = append(b, amiMsg("Response", "Success", "ActionID", a.ID, "EventList", "start", "Message", "Channels will follow")...)
		for i := range 2 {
			b = append(b, amiMsg("Event", "CoreShowChannel", "ActionID", a.ID,
				"Channel", fmt.Sprintf("PJSIP/10%d-0000000%d", i, k), "ChannelState", "6", "ChannelStateDesc", "Up",
				"Uniqueid", fmt.Sprintf("1795398116.%d", 10*k+i), "BridgeId", "b-1", "Round", fmt.Sprint(k))...)
		}
		b = append(b, amiMsg("Event", "CoreShowChannelsComplete", "ActionID", a.ID, "EventList", "Complete", "ListItems", "2")...)
	case "BridgeList":
		b = append(b, amiMsg("Response", "Success", "ActionID", a.ID, "EventList", "start", "Message", "Bridge listing will follow")...)
		b = append(b, amiMsg("Event", "BridgeListItem", "ActionID", a.ID, "BridgeUniqueid", "b-1", "BridgeType", "basic",
			"BridgeTechnology", "simple_bridge", "BridgeCreator", "<unknown>", "BridgeName", "<unknown>",
			"BridgeNumChannels", "2", "Round", fmt.Sprint(k))...)
		b = append(b, amiMsg("Event", "BridgeListComplete", "ActionID", a.ID, "EventList", "Complete", "ListItems", "1")...)
	default:
		return amiMsg("Response", "Error", "ActionID", a.ID, "Message", "Invalid/unknown command: "+a.Name)
	}
	*want = append(*want, "snapshot "+a.Name)
	for i := range post {
		m := fmt.Sprintf("%s-%d-post-%d", a.Name, k, i)
		b = append(b, markEvent(m)...)
		*want = append(*want, m)
	}
	return b
}

// TestSnapshotPlaceIsExact: the PBX writes events right before a list
// answer and many right after it (in the same write, as Asterisk flushes
// the events it held back). Every snapshot marker, after login and after a
// gap, stands in the node's stream exactly where its list completed: after
// every event read before the completion and before every event read after
// it. The gap is an event over the reader's cap; the snapshot after it
// follows the gap marker.
func TestSnapshotPlaceIsExact(t *testing.T) {
	leakCheck(t)
	ns := testenv.StartNATS(t)

	var (
		mu     sync.Mutex
		want   = []string{"session_start"}
		rounds = map[string]int{}
	)
	const pre, post = 5, 300
	pbx := startFakePBX(t, func(a fakeAction) []byte {
		mu.Lock()
		defer mu.Unlock()
		rounds[a.Name]++
		return listAnswer(a, rounds[a.Name], pre, post, &want)
	})
	cfg := parseConfig(t, "nats: {url: "+ns.ClientURL()+"}\n"+testSession+`  max_message_bytes: 4096
nodes:
  - {name: pbx1, address: "`+pbx.addr()+`", username: ami, secret: amisecret}
ingest: {snapshot_actions: [CoreShowChannels, BridgeList]}
`)
	nc := connect(t, ns.ClientURL())
	preCreateStream(t, nc, cfg)
	reader := newStreamReader(t, nc, "AMI_EVENTS")
	run := startService(t, cfg, nc, nil, func(s *Service) { s.snapInterval = 10 * time.Millisecond })

	// The login round: both lists answered.
	pbx.waitActions("BridgeList", 1)
	// A gap: one event over max_message_bytes, then one the buffer takes,
	// which writes the gap marker and so calls for a snapshot.
	mu.Lock()
	want = append(want, "gap", "after-gap")
	mu.Unlock()
	pbx.write(amiMsg("Event", "UserEvent", "Privilege", "user,all", "Mark", "oversized", "Big", strings.Repeat("x", 8192)))
	pbx.write(markEvent("after-gap"))
	pbx.waitActions("BridgeList", 2)

	mu.Lock()
	expect := slices.Clone(want)
	mu.Unlock()
	recs := reader.until("every scripted message", func(recs []record) bool {
		return len(nodeRecords(recs, "pbx1")) >= len(expect)
	})
	got := nodeRecords(recs, "pbx1")
	for i := range expect {
		if label(got[i]) != expect[i] {
			lo, hi := max(0, i-3), min(len(got), i+4)
			var ctx []string
			for _, r := range got[lo:hi] {
				ctx = append(ctx, label(r))
			}
			t.Fatalf("record %d of pbx1 is %q, want %q; around it: %v", i, label(got[i]), expect[i], ctx)
		}
	}
	if len(got) != len(expect) {
		t.Fatalf("pbx1: %d records, want %d (a snapshot taken more often than asked?)", len(got), len(expect))
	}
	checkHistory(t, recs, "pbx1")

	// Each snapshot holds its own round's list, whole.
	var round [2]int
	for _, r := range got {
		if r.Type != "snapshot" {
			continue
		}
		i := 0
		if r.Action == "BridgeList" {
			i = 1
		}
		round[i]++
		n := map[int]int{0: 2, 1: 1}[i]
		if len(r.Items) != n || r.Truncated {
			t.Fatalf("%s snapshot %d: %d items (truncated %v), want %d", r.Action, round[i], len(r.Items), r.Truncated, n)
		}
		for _, raw := range r.Items {
			var item map[string]string
			if err := json.Unmarshal(raw, &item); err != nil {
				t.Fatal(err)
			}
			if item["Round"] != fmt.Sprint(round[i]) || item["EventList"] != "" {
				t.Fatalf("%s snapshot %d holds item %s", r.Action, round[i], raw)
			}
		}
	}
	if v := testutil.ToFloat64(run.m.Snapshots.WithLabelValues("pbx1", metrics.SnapshotLogin)); v != 2 {
		t.Fatalf("login snapshots counted %v, want 2", v)
	}
	if v := testutil.ToFloat64(run.m.Snapshots.WithLabelValues("pbx1", metrics.SnapshotGap)); v != 2 {
		t.Fatalf("gap snapshots counted %v, want 2", v)
	}
}

// TestGapSnapshotsAtMostOncePerInterval: a PBX whose every other event is
// over the reader's cap makes a gap marker per event pair, for seconds.
// The ingest takes a snapshot round after them at most once per
// ingest.snapshot_interval (counted from the start of the previous round,
// login included), counts the gaps it held back, and once the drops stop,
// the last gap is still followed by a snapshot.
func TestGapSnapshotsAtMostOncePerInterval(t *testing.T) {
	leakCheck(t)
	ns := testenv.StartNATS(t)
	var (
		mu     sync.Mutex
		rounds = map[string]int{}
		sink   []string
	)
	pbx := startFakePBX(t, func(a fakeAction) []byte {
		mu.Lock()
		defer mu.Unlock()
		rounds[a.Name]++
		return listAnswer(a, rounds[a.Name], 0, 0, &sink)
	})
	const interval = time.Second
	cfg := parseConfig(t, "nats: {url: "+ns.ClientURL()+"}\n"+testSession+`  max_message_bytes: 4096
nodes:
  - {name: pbx1, address: "`+pbx.addr()+`", username: ami, secret: amisecret}
ingest: {snapshot_actions: [CoreShowChannels], snapshot_interval: 1s}
`)
	nc := connect(t, ns.ClientURL())
	preCreateStream(t, nc, cfg)
	reader := newStreamReader(t, nc, "AMI_EVENTS")
	run := startService(t, cfg, nc, nil)
	pbx.waitActions("CoreShowChannels", 1)

	// 3.5 intervals of drops: an oversized event then one the buffer takes,
	// every 5 ms (load generation, not a wait).
	big := amiMsg("Event", "UserEvent", "Privilege", "user,all", "Big", strings.Repeat("x", 8192))
	const pairs = 700
	tick := time.NewTicker(5 * time.Millisecond)
	for i := range pairs {
		<-tick.C
		pbx.write(big)
		pbx.write(markEvent(fmt.Sprintf("e%d", i)))
	}
	tick.Stop()
	pbx.write(markEvent("end"))

	// The rounds after the drops: the one the interval held back runs when
	// the interval has passed, after the last gap.
	recs := reader.until("the last event, and a snapshot after the last gap", func(recs []record) bool {
		lastGap, snapAfter, end := -1, false, false
		for i, r := range nodeRecords(recs, "pbx1") {
			switch {
			case r.Type == "gap":
				lastGap, snapAfter = i, false
			case r.Type == "snapshot":
				snapAfter = lastGap >= 0
			case label(r) == "end":
				end = true
			}
		}
		return end && snapAfter
	})
	csc := pbx.received("CoreShowChannels")
	for i := 1; i < len(csc); i++ {
		// The ingest starts a round at least an interval after the last;
		// the PBX reads them with the jitter of a loaded machine (a round
		// started at a tenth of the interval is still far outside it).
		if d := csc[i].At.Sub(csc[i-1].At); d < interval-250*time.Millisecond {
			t.Fatalf("snapshot rounds %d and %d read %v apart; interval %v", i, i+1, d, interval)
		}
	}
	span := csc[len(csc)-1].At.Sub(csc[0].At)
	if len(csc) < 3 {
		t.Fatalf("%d snapshot rounds over %v of drops, interval %v", len(csc), span, interval)
	}
	gaps := 0
	for _, r := range nodeRecords(recs, "pbx1") {
		if r.Type == "gap" {
			gaps++
		}
	}
	skipped := testutil.ToFloat64(run.m.SnapshotsSkipped.WithLabelValues("pbx1"))
	gapSnaps := testutil.ToFloat64(run.m.Snapshots.WithLabelValues("pbx1", metrics.SnapshotGap))
	if gaps < pairs/2 || skipped == 0 || int(gapSnaps) != len(csc)-1 {
		t.Fatalf("%d gap markers, %v gaps held back, %v gap snapshots counted, %d rounds", gaps, skipped, gapSnaps, len(csc))
	}
	t.Logf("%d gap markers, %d snapshot rounds over %v, %v gaps held back by the interval", gaps, len(csc), span, skipped)
}

// TestSnapshotAfterGapMatchesPBX: NATS stops while the PBX sets up calls and
// floods events, so the tiny buffer drops the calls' events. When NATS is
// back, the node's stream shows, in order: the gap marker, then a
// CoreShowChannels snapshot whose items are the PBX's channels at that
// moment: the calls the lost events set up, each item what the PBX's own
// CoreShowChannels answers for it.
func TestSnapshotAfterGapMatchesPBX(t *testing.T) {
	leakCheck(t)
	// Calls that last a minute: once set up, the channel table stays put,
	// so "the PBX's channels at that moment" is known before and after.
	// A call sends its set-up at once and then nothing until 0.504/3.007 of
	// CallDuration (a Newexten), so with 10 minutes the PBX stays still for
	// 100 s after the traffic stops: room for the outages and the read on a
	// loaded machine (with 1 minute, the first calls' Newexten came 10 s
	// in and sometimes fell inside the read).
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx1", CallDuration: 10 * time.Minute})
	ns, cfg, nc := startNATSFor(t, []*amisim.Server{sim}, "ingest: {buffer_events: 20, snapshot_interval: 1s}\n")
	run := startService(t, cfg, nc, nil)
	{
		rd := newStreamReader(t, connect(t, ns.ClientURL()), "AMI_EVENTS")
		id := upAndSnapshot(rd, "pbx1", 1)
		if ch := snapshotChannels(t, snapshotOf(t, rd.recs, "pbx1", id)); len(ch) != 0 {
			t.Fatalf("login snapshot lists %v before any call", ch)
		}
	}

	ns.Stop()
	threeCalls(t, sim)
	base := sim.SentEventCount()
	sim.EmitEvents(200, 2000)
	testenv.WaitSim(t, sim, "the flood written", func() bool { return sim.SentEventCount() >= base+200 })
	live := sim.LiveChannels()
	slices.Sort(live)
	ns.Start()

	reader := newStreamReader(t, connect(t, ns.ClientURL()), "AMI_EVENTS")
	var gap, snap record
	reader.until("a gap marker, then a snapshot", func(recs []record) bool {
		gap, snap = record{}, record{}
		for _, r := range nodeRecords(recs, "pbx1") {
			switch {
			case r.Type == "gap" && gap.Type == "":
				gap = r
			case r.Type == "snapshot" && gap.Type != "" && r.Session == gap.Session:
				snap = r
				return true
			}
		}
		return false
	})
	// Taken as the snapshot was: the channel table did not move.
	now := sim.LiveChannels()
	slices.Sort(now)
	if !slices.Equal(now, live) {
		t.Fatalf("the PBX's channels changed during the test: %v, then %v", live, now)
	}
	if gap.Reason != metrics.ReasonBufferFull || gap.StreamSeq > snap.StreamSeq {
		t.Fatalf("gap %v, snapshot %v", gap, snap)
	}
	if got := snapshotChannels(t, snap); !slices.Equal(got, live) {
		t.Fatalf("snapshot after the gap lists %v; the PBX has %v", got, live)
	}

	// Item by item, the snapshot is the PBX's own CoreShowChannels answer
	// (Duration aside: it counts seconds).
	answer := coreShowChannels(t, sim.Addr())
	if len(answer) != len(snap.Items) {
		t.Fatalf("snapshot has %d items, the PBX answers %d", len(snap.Items), len(answer))
	}
	for i, raw := range snap.Items {
		var item map[string]string
		if err := json.Unmarshal(raw, &item); err != nil {
			t.Fatal(err)
		}
		delete(item, "Duration")
		delete(item, "ActionID")
		if !mapsEqual(item, answer[i]) {
			t.Fatalf("snapshot item %d:\n got %v\nwant %v", i, item, answer[i])
		}
	}
	if v := testutil.ToFloat64(run.m.Snapshots.WithLabelValues("pbx1", metrics.SnapshotGap)); v < 1 {
		t.Fatalf("gap snapshots counted %v", v)
	}
	// And the PBX's bridges, from the BridgeList snapshot of the same round.
	truth := sim.Truth()
	var bl record
	for _, r := range nodeRecords(reader.recs, "pbx1") {
		if r.Type == "snapshot" && r.Action == "BridgeList" && r.StreamSeq > gap.StreamSeq {
			bl = r
			break
		}
	}
	if bl.Type == "" {
		reader.until("the BridgeList snapshot after the gap", func(recs []record) bool {
			for _, r := range nodeRecords(recs, "pbx1") {
				if r.Type == "snapshot" && r.Action == "BridgeList" && r.StreamSeq > gap.StreamSeq {
					bl = r
					return true
				}
			}
			return false
		})
	}
	st := newPBXState()
	st.snapshot(t, bl)
	st.snapshot(t, snap)
	if got, want := st.bridgesString(), truthBridges(truth); got != want {
		t.Fatalf("BridgeList snapshot after the gap:\n got %s\nwant %s", got, want)
	}
	if got, want := st.channelsString(), truthChannels(truth); got != want {
		t.Fatalf("CoreShowChannels snapshot after the gap:\n got %s\nwant %s", got, want)
	}
}

// TestConsumerRebuildsPBXState: calls come and go through NATS outages and
// drops; a consumer that follows the node's stream (start from a snapshot,
// apply the events after it, start again from the next snapshots after each
// gap) ends with exactly the PBX's channels and bridges, as amisim's truth
// gives them, once the traffic stops.
func TestConsumerRebuildsPBXState(t *testing.T) {
	leakCheck(t)
	// A call sends its set-up at once and then nothing until 0.504/3.007 of
	// CallDuration (a Newexten), so with 10 minutes the PBX stays still for
	// 100 s after the traffic stops: room for the outages and the read on a
	// loaded machine (with 1 minute, the first calls' Newexten came 10 s
	// in and sometimes fell inside the read).
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx1", CallDuration: 10 * time.Minute})
	ns, cfg, nc := startNATSFor(t, []*amisim.Server{sim}, "ingest: {buffer_events: 20, snapshot_interval: 1s}\n")
	startService(t, cfg, nc, nil)
	{
		rd := newStreamReader(t, connect(t, ns.ClientURL()), "AMI_EVENTS")
		upAndSnapshot(rd, "pbx1", 1)
	}
	sim.StartTraffic(20)
	for range 2 {
		base := sim.SentEventCount()
		ns.Stop()
		testenv.WaitSim(t, sim, "calls set up while NATS is down", func() bool { return sim.SentEventCount() >= base+100 })
		ns.Start()
		base = sim.SentEventCount()
		testenv.WaitSim(t, sim, "calls set up with NATS up", func() bool { return sim.SentEventCount() >= base+100 })
	}
	sim.StopTraffic()
	// Every call set up: nothing changes for 100 s after the first began.
	waitCallsSettled(t, sim)
	truth := sim.Truth()
	sent := sim.SentEventCount()

	reader := newStreamReader(t, connect(t, ns.ClientURL()), "AMI_EVENTS")
	var st *pbxState
	recs := reader.until("every event, and both snapshots after the last gap", func(recs []record) bool {
		st = newPBXState()
		for _, r := range nodeRecords(recs, "pbx1") {
			st.apply(t, r)
		}
		return st.seq >= uint64(sent) && st.valid()
	})
	if sim.SentEventCount() != sent || !reflect.DeepEqual(sim.Truth(), truth) {
		t.Fatal("the PBX changed after the traffic stopped; the comparison would be meaningless")
	}
	if st.gaps == 0 || st.snapshots < 4 {
		t.Fatalf("%d gaps and %d snapshots: the test did not exercise snapshots after gaps", st.gaps, st.snapshots)
	}
	if got, want := st.channelsString(), truthChannels(truth); got != want {
		t.Fatalf("rebuilt channels:\n got %s\nwant %s\n%s", got, want, summarize(recs))
	}
	if got, want := st.bridgesString(), truthBridges(truth); got != want {
		t.Fatalf("rebuilt bridges:\n got %s\nwant %s", got, want)
	}
	t.Logf("%d channels and %d bridges rebuilt across %d gaps and %d snapshots", len(truth.Channels), len(truth.Bridges), st.gaps, st.snapshots)
}

// pbxState is what a consumer rebuilds of one PBX from its stream: channels
// from CoreShowChannels snapshots, bridges from BridgeList snapshots, each
// changed by the events after its snapshot; a gap makes both unknown until
// their next snapshot.
type pbxState struct {
	chans      map[string]*stChan   // by Uniqueid; nil while unknown
	bridges    map[string]*stBridge // by BridgeUniqueid; nil while unknown
	seq        uint64               // last event seq applied
	gaps       int
	snapshots  int
	chOK, brOK bool
}

type stChan struct{ name, bridge string }

type stBridge struct{ typ, tech, creator, name string }

func newPBXState() *pbxState { return &pbxState{} }

func (st *pbxState) valid() bool { return st.chOK && st.brOK }

func (st *pbxState) apply(t *testing.T, r record) {
	t.Helper()
	if r.meta() {
		switch r.Type {
		case "session_start", "session_end", "gap":
			st.chOK, st.brOK = false, false
			st.chans, st.bridges = nil, nil
			if r.Type == "gap" {
				st.gaps++
				st.seq = r.LastSeq
			}
		case "snapshot":
			st.snapshots++
			st.snapshot(t, r)
		}
		return
	}
	st.seq = r.Seq
	f := func(k string) string { return fieldValue(r.Fields, k) }
	if st.chOK {
		switch r.Event {
		case "Newchannel":
			st.chans[f("Uniqueid")] = &stChan{name: f("Channel")}
		case "Hangup":
			delete(st.chans, f("Uniqueid"))
		case "Rename":
			if c := st.chans[f("Uniqueid")]; c != nil {
				c.name = f("Newname")
			}
		case "BridgeEnter":
			if c := st.chans[f("Uniqueid")]; c != nil {
				c.bridge = f("BridgeUniqueid")
			}
		case "BridgeLeave":
			if c := st.chans[f("Uniqueid")]; c != nil {
				c.bridge = ""
			}
		}
	}
	if st.brOK {
		switch r.Event {
		case "BridgeCreate":
			st.bridges[f("BridgeUniqueid")] = &stBridge{typ: f("BridgeType"), tech: f("BridgeTechnology"),
				creator: f("BridgeCreator"), name: f("BridgeName")}
		case "BridgeDestroy":
			delete(st.bridges, f("BridgeUniqueid"))
		}
	}
}

// snapshot replaces the state its action describes.
func (st *pbxState) snapshot(t *testing.T, r record) {
	t.Helper()
	if r.Truncated {
		t.Fatalf("snapshot %s truncated (total %d)", r.Action, r.Total)
	}
	items := make([]map[string]string, len(r.Items))
	for i, raw := range r.Items {
		if err := json.Unmarshal(raw, &items[i]); err != nil {
			t.Fatal(err)
		}
	}
	switch r.Action {
	case "CoreShowChannels":
		st.chans, st.chOK = map[string]*stChan{}, true
		for _, it := range items {
			st.chans[it["Uniqueid"]] = &stChan{name: it["Channel"], bridge: it["BridgeId"]}
		}
	case "BridgeList":
		st.bridges, st.brOK = map[string]*stBridge{}, true
		for _, it := range items {
			st.bridges[it["BridgeUniqueid"]] = &stBridge{typ: it["BridgeType"], tech: it["BridgeTechnology"],
				creator: it["BridgeCreator"], name: it["BridgeName"]}
		}
	}
}

func (st *pbxState) channelsString() string {
	var out []string
	for uid, c := range st.chans {
		out = append(out, uid+"="+c.name+"@"+c.bridge)
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func (st *pbxState) bridgesString() string {
	var out []string
	for id, b := range st.bridges {
		var members []string
		for uid, c := range st.chans {
			if c.bridge == id {
				members = append(members, uid)
			}
		}
		slices.Sort(members)
		out = append(out, fmt.Sprintf("%s=%s/%s/%s/%s%v", id, b.typ, b.tech, b.creator, b.name, members))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func truthChannels(tr amisim.Truth) string {
	var out []string
	for _, c := range tr.Channels {
		out = append(out, c.Uniqueid+"="+c.Channel+"@"+c.Bridge)
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func truthBridges(tr amisim.Truth) string {
	var out []string
	for _, b := range tr.Bridges {
		members := slices.Clone(b.Members)
		slices.Sort(members)
		if members == nil {
			members = []string{}
		}
		out = append(out, fmt.Sprintf("%s=%s/%s/%s/%s%v", b.ID, b.Type, b.Technology, b.Creator, b.Name, members))
	}
	slices.Sort(out)
	return strings.Join(out, " ")
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// coreShowChannels logs in to the PBX at addr with events off and returns
// its CoreShowChannel items, without ActionID and Duration.
func coreShowChannels(t *testing.T, addr string) []map[string]string {
	t.Helper()
	a := dialAMI(t, addr)
	if r := a.do(t, "Action: Login", "ActionID: l", "Username: ami", "Secret: amisecret", "Events: off"); r["Response"] != "Success" {
		t.Fatalf("login: %v", r)
	}
	if _, err := a.c.Write([]byte("Action: CoreShowChannels\r\nActionID: csc\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	var out []map[string]string
	cur := map[string]string{}
	for {
		l := a.line(t)
		if l != "" {
			k, v, _ := strings.Cut(l, ": ")
			cur[k] = v
			continue
		}
		switch cur["Event"] {
		case "CoreShowChannel":
			delete(cur, "ActionID")
			delete(cur, "Duration")
			out = append(out, cur)
		case "CoreShowChannelsComplete":
			return out
		}
		cur = map[string]string{}
	}
}
