package ingest

import (
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// checkStoredEvents asserts that every event record of node's session is the
// event the PBX sent with that number (sent[seq-1]), byte for byte.
func checkStoredEvents(t *testing.T, recs []record, node, session string, sent []amisim.SentEvent) {
	t.Helper()
	for _, r := range recs {
		if r.Node != node || r.Session != session || r.meta() {
			continue
		}
		if r.Seq < 1 || r.Seq > uint64(len(sent)) {
			t.Fatalf("%s: seq %d, the PBX sent %d events", node, r.Seq, len(sent))
		}
		want := expectedFields(sent[r.Seq-1].Headers)
		if !fieldsEqual(r.Fields, want) || r.MsgID != fmt.Sprintf("%s-%d", session, r.Seq) {
			t.Fatalf("%s seq %d (%s): not what the PBX sent\n got: %v\nwant: %v", node, r.Seq, r.MsgID, r.Fields, want)
		}
	}
}

// TestNATSOutage: NATS goes away in the middle of a flood and comes back on
// the same port and storage. The AMI side keeps reading (one session
// throughout), the small buffer overflows, and when NATS is back the buffer
// drains in order: every number of every node is either stored once, in
// order, or inside exactly one buffer_full gap marker, and received =
// published + dropped holds exactly per node in the metrics and in the
// stream.
func TestNATSOutage(t *testing.T) {
	leakCheck(t)
	ns := testenv.StartNATS(t)
	sims := testenv.StartFleet(t, 2, amisim.Config{})
	const bufferEvents = 300
	cfg := parseConfig(t, "nats: {url: "+ns.ClientURL()+"}\n"+testSession+nodesYAML(sims, nil)+
		fmt.Sprintf("ingest: {buffer_events: %d}\n", bufferEvents))
	nc := connect(t, ns.ClientURL())
	preCreateStream(t, nc, cfg)
	run := startService(t, cfg, nc, nil)
	{
		rd := newStreamReader(t, connect(t, ns.ClientURL()), "AMI_EVENTS")
		for _, s := range sims {
			upAndSnapshot(rd, s.Node(), 1)
		}
	}

	// The rate is one the race-enabled pipeline sustains with NATS up, so
	// that the drops come from the outage and the tail of the flood, read
	// after NATS is back, is stored (a gap marker is written when the
	// next event is accepted).
	const total, rate, beforeOutage, duringOutage = 4000, 600, 1000, 1200
	base := make([]int, len(sims))
	for i, s := range sims {
		base[i] = s.SentEventCount()
	}
	var wg sync.WaitGroup
	for _, s := range sims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.EmitEvents(total, rate)
		}()
	}
	for i, s := range sims {
		testenv.WaitSim(t, s, "the flood under way", func() bool { return s.SentEventCount() >= base[i]+beforeOutage })
	}
	ns.Stop()
	// The PBXs go on writing, and the ingest must go on reading: a PBX
	// drops a manager client that stops reading.
	for i, s := range sims {
		testenv.WaitSim(t, s, "events written during the outage", func() bool {
			return s.SentEventCount() >= base[i]+beforeOutage+duringOutage
		})
	}
	ns.Start()
	wg.Wait()
	reader := newStreamReader(t, connect(t, ns.ClientURL()), "AMI_EVENTS")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stream as read:\n%s", summarize(reader.recs))
			for _, s := range sims {
				n := s.Node()
				t.Logf("%s: received %d published %d dropped %d, buffered %v", n, received(run.m, n), published(run.m, n),
					dropped(run.m, n, metrics.ReasonBufferFull), nodeMetrics(run.m, n).buffered)
			}
		}
	})

	// On a loaded machine the end of the flood may be dropped too, and the
	// queue writes a gap marker only when it next accepts an event (see
	// the report on eventq). A trickle of marked events, slow enough to be
	// accepted once the backlog is stored, closes the history.
	trickle := make(chan struct{})
	var tw sync.WaitGroup
	tails := make([]int, len(sims)) // each written by its goroutine, read after tw.Wait
	for i, s := range sims {
		tw.Add(1)
		go func() {
			defer tw.Done()
			tick := time.NewTicker(20 * time.Millisecond) // load generation, not a wait
			defer tick.Stop()
			for {
				select {
				case <-trickle:
					return
				case <-tick.C:
					s.Emit("UserEvent", [2]string{"UserEvent", "tail"})
					tails[i]++
				}
			}
		}()
	}
	reader.until("a tail event stored for every node", everyNodeHas(sims, "UserEvent"))
	close(trickle)
	tw.Wait()

	sent := make([][]amisim.SentEvent, len(sims))
	for i, s := range sims {
		testenv.WaitSim(t, s, "every event written", func() bool { return s.SentEventCount() == base[i]+total+tails[i] })
		if s.Logins() != 1 {
			t.Fatalf("%s: %d logins: the AMI session did not survive the NATS outage", s.Node(), s.Logins())
		}
		sent[i] = sentTo(s, loginConns(s)[0])
	}
	recs := reader.until("every node's last event after the outage", allReached(sims, sent))

	if err := run.stop(); err != nil {
		t.Fatal(err)
	}
	recs = reader.all()
	var retried uint64
	for i, s := range sims {
		node := s.Node()
		sessions, events, gapped := checkHistory(t, recs, node)
		if len(sessions) != 1 {
			t.Fatalf("%s: sessions %v", node, sessions)
		}
		id := sessions[0]
		n := uint64(len(sent[i]))
		checkStoredEvents(t, recs, node, id, sent[i])
		var gaps int
		for _, r := range nodeRecords(recs, node) {
			if r.Type == "gap" {
				gaps++
				if r.Reason != metrics.ReasonBufferFull {
					t.Fatalf("%s: %v: reason %q, want buffer_full", node, r, r.Reason)
				}
			}
		}
		// The outage outlasted the buffer many times over.
		if gaps == 0 || gapped[id] < duringOutage-bufferEvents {
			t.Fatalf("%s: %d gap markers covering %d events; %d events came while NATS was down with room for %d",
				node, gaps, gapped[id], duringOutage, bufferEvents)
		}
		if events[id]+gapped[id] != n {
			t.Fatalf("%s: %d stored + %d in gaps != %d sent", node, events[id], gapped[id], n)
		}
		// The stream ends the session after everything it read.
		if end := nodeRecords(recs, node); end[len(end)-1].Type != "session_end" || end[len(end)-1].LastSeq != n {
			t.Fatalf("%s: history ends with %v", node, end[len(end)-1])
		}

		rcv, pub := received(run.m, node), published(run.m, node)
		full := dropped(run.m, node, metrics.ReasonBufferFull)
		failed := dropped(run.m, node, metrics.ReasonPublishFailed)
		shut := dropped(run.m, node, metrics.ReasonShutdown)
		if rcv != n || pub != events[id] || full != gapped[id] || failed != 0 || shut != 0 || rcv != pub+full {
			t.Fatalf("%s: metrics received %d published %d dropped buffer_full %d publish_failed %d shutdown %d; "+
				"stream: %d sent, %d stored, %d in gaps", node, rcv, pub, full, failed, shut, n, events[id], gapped[id])
		}
		retried += nodeMetrics(run.m, node).retries
		if b := nodeMetrics(run.m, node).buffered; b != 0 {
			t.Fatalf("%s: buffer gauge %v after the drain", node, b)
		}
	}
	// Publishes failed during the outage and were sent again with their
	// ids; the histories above hold each number once. Counted over the
	// nodes, not per node: a JetStream that answers "no responders" while it
	// shuts down makes the publisher hold every node's sends during its
	// stream check, and a send held before it ever failed is not a retry,
	// so a node can cross the outage with none (seen once in CI).
	if retried == 0 {
		t.Fatal("no publish was retried across the outage")
	}
}

// summarize shows a history as runs of consecutive events, for failures.
func summarize(recs []record) string {
	var b []byte
	var prev record
	runStart := -1
	for i, r := range recs {
		cont := i > 0 && !r.meta() && !prev.meta() && r.Node == prev.Node && r.Seq == prev.Seq+1
		if !cont {
			if runStart >= 0 && i-1 > runStart {
				b = fmt.Appendf(b, " .. %v\n", recs[i-1])
			} else if runStart >= 0 {
				b = append(b, '\n')
			}
			b = fmt.Appendf(b, "%s %v", r.Node, r)
			runStart = i
		}
		prev = r
	}
	return string(b)
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
	if v := nodeMetrics(run.m, "pbx1").gapSnapshots; v < 1 {
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
