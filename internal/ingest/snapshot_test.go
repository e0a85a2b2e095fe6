package ingest

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/amibus/amibus/internal/testenv"
)

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

// listPBX is a fake PBX that answers the list actions with listAnswer,
// round by round, and keeps the labels of what it wrote in the order the
// node's stream must show them.
type listPBX struct {
	*fakePBX
	rounds map[string]int // guarded by fakePBX.locked, as answer runs
	want   []string
}

// startListPBX starts a listPBX writing pre events before each list and
// post after it; want are the labels the stream shows first.
func startListPBX(t *testing.T, pre, post int, want ...string) *listPBX {
	p := &listPBX{rounds: map[string]int{}, want: want}
	p.fakePBX = startFakePBX(t, func(a fakeAction) []byte {
		p.rounds[a.Name]++
		return listAnswer(a, p.rounds[a.Name], pre, post, &p.want)
	})
	return p
}

// expect adds the labels of what the test writes itself.
func (p *listPBX) expect(labels ...string) {
	p.locked(func() { p.want = append(p.want, labels...) })
}

// expected returns the labels so far.
func (p *listPBX) expected() (want []string) {
	p.locked(func() { want = append(want, p.want...) })
	return want
}

// startFakeNode runs the ingest on a new NATS server with pbx as its one
// node, pbx1, messages over 4096 bytes dropped, and ingest as the ingest
// settings; the reader reads the stream from its start.
func startFakeNode(t *testing.T, pbx *listPBX, ingest string, tune ...func(*Service)) (*running, *streamReader) {
	t.Helper()
	ns := testenv.StartNATS(t)
	cfg := parseConfig(t, natsHead(ns)+`  max_message_bytes: 4096
nodes:
  - {name: pbx1, address: "`+pbx.addr()+`", username: ami, secret: amisecret}
ingest: `+ingest+"\n")
	nc := connect(t, ns.ClientURL())
	preCreateStream(t, nc, cfg)
	reader := newStreamReader(t, nc, "AMI_EVENTS")
	return startService(t, cfg, nc, nil, tune...), reader
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
	pbx := startListPBX(t, 5, 300, "session_start")
	run, reader := startFakeNode(t, pbx, "{snapshot_actions: [CoreShowChannels, BridgeList]}",
		func(s *Service) { s.snapInterval = 10 * time.Millisecond })

	// The login round: both lists answered.
	pbx.waitActions("BridgeList", 1)
	// A gap: one event over max_message_bytes, then one the buffer takes,
	// which writes the gap marker and so calls for a snapshot.
	pbx.expect("gap", "after-gap")
	pbx.write(amiMsg("Event", "UserEvent", "Privilege", "user,all", "Mark", "oversized", "Big", strings.Repeat("x", 8192)))
	pbx.write(markEvent("after-gap"))
	pbx.waitActions("BridgeList", 2)

	expect := pbx.expected()
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
	if v := nodeMetrics(run.m, "pbx1").loginSnapshots; v != 2 {
		t.Fatalf("login snapshots counted %v, want 2", v)
	}
	if v := nodeMetrics(run.m, "pbx1").gapSnapshots; v != 2 {
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
	pbx := startListPBX(t, 0, 0)
	const interval = time.Second
	run, reader := startFakeNode(t, pbx, "{snapshot_actions: [CoreShowChannels], snapshot_interval: 1s}")
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
	skipped := nodeMetrics(run.m, "pbx1").skippedSnapshots
	gapSnaps := nodeMetrics(run.m, "pbx1").gapSnapshots
	if gaps < pairs/2 || skipped == 0 || int(gapSnaps) != len(csc)-1 {
		t.Fatalf("%d gap markers, %v gaps held back, %v gap snapshots counted, %d rounds", gaps, skipped, gapSnaps, len(csc))
	}
	t.Logf("%d gap markers, %d snapshot rounds over %v, %v gaps held back by the interval", gaps, len(csc), span, skipped)
}
