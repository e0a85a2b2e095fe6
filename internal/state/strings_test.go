package state

import (
	"encoding/json"
	"slices"
	"testing"
	"time"
	"unsafe"

	"github.com/amibus/amibus/pkg/eventlog"
)

// payloads builds reader entries whose strings all share byte buffers of
// the test's, as pkg/eventlog's share the message payload, so that the
// test can scribble over every payload once applied.
type payloads struct {
	bufs [][]byte
	seq  uint64
}

// str answers s as a string over a buffer of its own, kept for scribble.
func (p *payloads) str(s string) string {
	if s == "" {
		return ""
	}
	b := []byte(s)
	p.bufs = append(p.bufs, b)
	return unsafe.String(unsafe.SliceData(b), len(b))
}

func (p *payloads) fields(kv ...string) eventlog.Fields {
	fs := make(eventlog.Fields, 0, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		v := p.str(kv[i+1])
		fs = append(fs, eventlog.Field{Key: p.str(kv[i]), Value: v, Values: []string{v}})
	}
	return fs
}

func (p *payloads) entry(kind eventlog.Kind) *eventlog.Entry {
	p.seq++
	return &eventlog.Entry{Kind: kind, StreamSeq: p.seq, Node: p.str("pbx1"), Session: p.str("sess-1"), Seq: p.seq,
		Time: t0.Add(time.Duration(p.seq) * time.Second)}
}

func (p *payloads) event(name string, kv ...string) *eventlog.Entry {
	e := p.entry(eventlog.KindEvent)
	e.Event = eventlog.Event{Name: p.str(name), Fields: p.fields(append([]string{"Event", name}, kv...)...)}
	return e
}

func (p *payloads) snapshot(action string, items ...[]string) *eventlog.Entry {
	e := p.entry(eventlog.KindSnapshot)
	e.Snapshot = eventlog.Snapshot{Action: p.str(action)}
	for _, it := range items {
		e.Snapshot.Items = append(e.Snapshot.Items, p.fields(it...))
	}
	return e
}

func (p *payloads) scribble() {
	for _, b := range p.bufs {
		for i := range b {
			b[i] = '#'
		}
	}
}

// TestStateKeepsNoPayload applies entries of every kind of value the state
// keeps (channels, bridges, queues, status, tombstones) and then
// overwrites every payload: the state must not change, since holding a
// substring of a payload pins the whole message (strings.go).
func TestStateKeepsNoPayload(t *testing.T) {
	var p payloads
	proj := NewProjection()
	apply := func(e *eventlog.Entry) {
		var m Message
		if !FromEntry(e, &m) {
			t.Fatal("entry refused")
		}
		if err := proj.Apply(&m); err != nil {
			t.Fatal(err)
		}
	}
	apply(p.entry(eventlog.KindSessionStart))
	apply(p.snapshot("CoreShowChannels",
		append(chanBlock("1.1", "PJSIP/a-1", 6), "Event", "CoreShowChannel", "BridgeId", "br-1", "Application", "Dial", "ApplicationData", "PJSIP/b", "Duration", "00:00:10"),
		append(chanBlock("1.2", "PJSIP/b-2", 6), "Event", "CoreShowChannel", "BridgeId", "br-1", "Linkedid", "1.1")))
	apply(p.snapshot("BridgeList", []string{"BridgeUniqueid", "br-1", "BridgeType", "basic", "BridgeTechnology", "simple_bridge", "BridgeCreator", "<unknown>", "BridgeName", "<unknown>"}))
	apply(p.snapshot("QueueStatus",
		[]string{"Event", "QueueParams", "Queue", "sales", "Strategy", "ringall"},
		[]string{"Event", "QueueMember", "Queue", "sales", "Location", "PJSIP/agent1", "Name", "Agent One", "Status", "1", "Paused", "0"},
		[]string{"Event", "QueueEntry", "Queue", "sales", "Uniqueid", "1.2", "Channel", "PJSIP/b-2", "Position", "1", "CallerIDNum", "300", "Wait", "5"}))
	apply(p.event("Newchannel", chanBlock("1.3", "PJSIP/c-3", 0)...))
	apply(p.event("Newchannel", append(chanBlock("1.4", "PJSIP/d-4", 0), "Linkedid", "1.3")...))
	apply(p.event("Newstate", chanBlock("1.3", "PJSIP/c-3", 5)...))
	apply(p.event("NewCallerid", "Uniqueid", "1.3", "CallerIDNum", "555", "CallerIDName", "Dave"))
	apply(p.event("Newexten", "Uniqueid", "1.3", "Context", "from-trunk", "Exten", "s", "Priority", "2", "Application", "Queue", "AppData", "sales"))
	apply(p.event("DialEnd", append(chanBlock("1.3", "PJSIP/c-3", 6), "DestUniqueid", "1.4", "DestChannel", "PJSIP/d-4", "DialStatus", "ANSWER")...))
	apply(p.event("Rename", "Uniqueid", "1.4", "Newname", "PJSIP/d-4<MASQ>"))
	apply(p.event("QueueCallerJoin", "Uniqueid", "1.3", "Channel", "PJSIP/c-3", "Queue", "sales", "Position", "2", "CallerIDNum", "555"))
	apply(p.event("QueueMemberAdded", "Queue", "sales", "Interface", "PJSIP/agent2", "MemberName", "Agent Two", "Status", "1", "Paused", "1", "PausedReason", "lunch"))
	apply(p.event("BridgeCreate", "BridgeUniqueid", "br-2", "BridgeType", "basic", "BridgeTechnology", "simple_bridge"))
	apply(p.event("BridgeEnter", append(chanBlock("1.4", "PJSIP/d-4<MASQ>", 6), "BridgeUniqueid", "br-2")...))
	apply(p.event("Hangup", chanBlock("1.1", "PJSIP/a-1", 6)...))
	apply(p.event("Hangup", "Uniqueid", "9.9")) // unknown: tombstoned
	apply(p.event("Hold", chanBlock("1.2", "PJSIP/b-2", 6)...))

	n, ok := proj.Lookup("pbx1")
	if !ok {
		t.Fatal("no node pbx1")
	}
	state := func() string {
		b, err := json.Marshal(n.Snapshot())
		if err != nil {
			t.Fatal(err)
		}
		var tombs []string
		for uid := range n.tombs {
			tombs = append(tombs, uid)
		}
		slices.Sort(tombs)
		var nodes []string
		proj.Nodes(func(n *Node) { nodes = append(nodes, n.Name()) })
		tb, _ := json.Marshal(struct {
			Tombs, Ring, Nodes []string
		}{tombs, n.tombRing, nodes})
		return string(b) + string(tb)
	}
	before := state()
	if err := invariants(n); err != nil {
		t.Fatal(err)
	}
	if n.Channels() != 3 || len(n.tombs) != 2 {
		t.Fatalf("setup: %d channels, %d tombstones; state %s", n.Channels(), len(n.tombs), before)
	}
	p.scribble()
	if after := state(); after != before {
		t.Fatalf("state changed with the payloads:\nbefore %s\nafter  %s", before, after)
	}
	// The maps are keyed by copies too: every key is found again.
	for _, uid := range []string{"1.2", "1.3", "1.4"} {
		if _, ok := n.Channel(uid); !ok {
			t.Errorf("channel %s not found after the payloads changed", uid)
		}
	}
	if _, ok := n.Bridge("br-2"); !ok {
		t.Error("bridge br-2 not found after the payloads changed")
	}
	if _, ok := n.Queue("sales"); !ok {
		t.Error("queue sales not found after the payloads changed")
	}
	if _, ok := proj.Lookup("pbx1"); !ok {
		t.Error("node pbx1 not found after the payloads changed")
	}
	if !n.isTombstoned("9.9") || !n.isTombstoned("1.1") {
		t.Error("tombstones lost after the payloads changed")
	}
	if err := invariants(n); err != nil {
		t.Fatal(err)
	}
}

// TestInternCap: the table of shared copies never holds more than
// internCap values; reaching it empties the table, counted, and values
// handed out before stay intact.
func TestInternCap(t *testing.T) {
	tab := newStrTable()
	first := tab.intern("Up")
	if first != "Up" || unsafe.StringData(tab.intern("Up")) != unsafe.StringData(first) {
		t.Fatal("a known value is not answered from the table")
	}
	long := string(make([]byte, internMaxLen+1))
	tab.intern(long)
	if _, ok := tab.m[long]; ok {
		t.Fatal("a value over internMaxLen entered the table")
	}
	for i := 0; len(tab.m) < internCap; i++ {
		tab.intern(string(rune('a'+i%26)) + string(rune(0x100+i)))
	}
	if tab.resets.Load() != 0 {
		t.Fatalf("reset before the cap: %d", tab.resets.Load())
	}
	tab.intern("one more")
	if len(tab.m) != 1 || tab.resets.Load() != 1 {
		t.Fatalf("at the cap: %d values, %d resets; want 1, 1", len(tab.m), tab.resets.Load())
	}
	if first != "Up" {
		t.Fatalf("a value handed out changed: %q", first)
	}
}
