package amisim

import (
	"math/rand/v2"
	"strings"
	"testing"
	"time"
)

// eventsOf runs one scripted call on a fresh Server and returns every event
// a client with events on received, up to the call's end; each event is
// checked against the state the events before it built.
func eventsOf(t *testing.T, build func(b *scriptBuilder)) []tmsg {
	t.Helper()
	s := start(t, Config{CallDuration: 200 * time.Millisecond, Node: "pbx1"})
	c := dial(t, s)
	c.login("ami", "amisecret", "on")
	s.mu.Lock()
	s.startScriptLocked(rand.New(rand.NewPCG(1, 1)), time.Now(), build)
	s.mu.Unlock()
	waitFor(t, s, "the call to end", func() bool { return s.LiveCalls() == 0 })
	c.send("Action: Ping", "ActionID: end")
	p := newProjection()
	var out []tmsg
	for {
		m := c.mustRead()
		if m.get("ActionID") == "end" {
			break
		}
		if m.get("Event") == "FullyBooted" || m.get("Event") == "SuccessfulAuth" {
			continue
		}
		if complaint := p.apply(m); complaint != "" {
			t.Fatalf("event does not fit the state: %s\n%v", complaint, m)
		}
		out = append(out, m)
	}
	if tr := s.Truth(); len(tr.Channels) != 0 || len(tr.Bridges) != 0 {
		t.Fatalf("left after the call: %+v", tr)
	}
	return out
}

// captureEvents returns a transcript's events (server side, connection 1)
// without VarSet, Cdr and DeviceStateChange, which the engine does not
// emit, and without list items.
func captureEvents(t *testing.T, name string) []tmsg {
	var out []tmsg
	for _, m := range serverMessages(t, name, 1) {
		ev := m.get("Event")
		if ev == "" || ev == "VarSet" || ev == "Cdr" || ev == "DeviceStateChange" || m.get("ActionID") != "" {
			continue
		}
		out = append(out, m)
	}
	return out
}

// involving keeps the events that name one of the channels (in any
// header) or are a QueueMemberStatus of iface.
func involving(ms []tmsg, iface string, chans ...string) []tmsg {
	var out []tmsg
	for _, m := range ms {
		keep := m.get("Event") == "QueueMemberStatus" && m.get("Interface") == iface
		for _, h := range m {
			for _, ch := range chans {
				keep = keep || h[1] == ch
			}
		}
		if keep {
			out = append(out, m)
		}
	}
	return out
}

// from drops the events before the first one named ev.
func from(ms []tmsg, ev string) []tmsg {
	for i, m := range ms {
		if m.get("Event") == ev {
			return ms[i:]
		}
	}
	return nil
}

// sameShape compares event names and header keys, in order.
func sameShape(t *testing.T, got, want []tmsg) {
	t.Helper()
	for i := 0; i < len(got) || i < len(want); i++ {
		switch {
		case i >= len(got):
			t.Fatalf("event %d missing: want %s", i, keys(want[i]))
		case i >= len(want):
			t.Fatalf("extra event %d: %s", i, keys(got[i]))
		case keys(got[i]) != keys(want[i]):
			t.Fatalf("event %d:\n got %s\nwant %s", i, keys(got[i]), keys(want[i]))
		}
	}
}

// chanOf returns the Channel header values of events named ev.
func chanOf(ms []tmsg, ev string) []string {
	var out []string
	for _, m := range ms {
		if m.get("Event") == ev {
			out = append(out, m.get("Channel"))
		}
	}
	return out
}

// TestQueueNoAnswerMatches08b: a caller in queue sales whose member
// (Local/199@demo) rings without answer until the caller gives up sends
// 08b's events for the caller and the member's Local pair, from
// QueueCallerJoin to the caller's Hangup: the same events, in the same
// order, with the same headers.
func TestQueueNoAnswerMatches08b(t *testing.T) {
	capture := captureEvents(t, "08b-lists-live-call-events-on")
	want := from(involving(capture, "Local/199@demo", "Local/301@demo-0000000f;2", "Local/199@demo-00000010;1",
		"Local/199@demo-00000010;2"), "QueueCallerJoin")
	got := eventsOf(t, func(b *scriptBuilder) { b.queueCall(1, "1042", false) })
	caller := chanOf(got, "QueueCallerJoin")
	locals := chanOf(got, "Newchannel")
	if len(caller) != 1 || len(locals) != 3 {
		t.Fatalf("caller %v, channels %v", caller, locals)
	}
	sameShape(t, from(involving(got, "Local/199@demo", caller[0], locals[1], locals[2]), "QueueCallerJoin"), want)
}

// TestLocalPairMatches07: a Dial to a Local channel creates the pair as 07
// shows, from the first Newchannel to LocalBridge.
func TestLocalPairMatches07(t *testing.T) {
	capture := captureEvents(t, "07-originate-events")
	want := involving(capture, "", "Local/100@demo-00000003;1", "Local/100@demo-00000003;2")
	want = want[:6]
	got := eventsOf(t, func(b *scriptBuilder) { b.local() })
	news := chanOf(got, "Newchannel")
	if len(news) < 3 || !strings.HasSuffix(news[1], ";1") {
		t.Fatalf("channels %v", news)
	}
	sameShape(t, involving(got, "", news[1], news[2])[:6], want)
	if want[5].get("Event") != "LocalBridge" {
		t.Fatalf("capture slice ends with %s", want[5].get("Event"))
	}
}

// snapKeys returns a channel snapshot's header keys with prefix.
func snapKeysWith(prefix string) []string {
	out := make([]string, 0, 14)
	for _, k := range snapKeys[:kLinkedid+1] {
		out = append(out, prefix+k)
	}
	return out
}

// bridgeKeys returns a bridge snapshot's header keys with prefix.
func bridgeKeys(prefix string) []string {
	var out []string
	for _, k := range []string{"BridgeUniqueid", "BridgeType", "BridgeTechnology", "BridgeCreator", "BridgeName",
		"BridgeNumChannels", "BridgeVideoSourceMode"} {
		out = append(out, prefix+k)
	}
	return out
}

func join(parts ...[]string) string {
	var all []string
	for _, p := range parts {
		all = append(all, p...)
	}
	return strings.Join(all, ",")
}

func list(s ...string) []string { return s }

// TestHardCallSequences: each scenario's events come in the designed order
// (a subsequence check on event names), every event fits the state before
// it (eventsOf), nothing is left at the end, every event a capture (07,
// 08b) holds has one of the captured header layouts, and the events no
// capture holds have the headers Asterisk 20's manager documentation gives
// them.
func TestHardCallSequences(t *testing.T) {
	ev := list("Event", "Privilege")
	docKeys := map[string]string{
		"Hold":   join(ev, snapKeysWith(""), list("MusicClass")),
		"Unhold": join(ev, snapKeysWith("")),
		"Rename": join(ev, list("Channel", "Newname", "Uniqueid")),
		"BlindTransfer": join(ev, list("Result"), snapKeysWith("Transferer"), snapKeysWith("Transferee"),
			bridgeKeys(""), list("IsExternal", "Context", "Extension")),
		"AttendedTransfer": join(ev, list("Result"), snapKeysWith("OrigTransferer"), bridgeKeys("Orig"),
			snapKeysWith("SecondTransferer"), bridgeKeys("Second"), list("DestType", "DestBridgeUniqueid"),
			snapKeysWith("Transferee"), snapKeysWith("TransferTarget"), list("IsExternal")),
		"BridgeMerge": join(ev, bridgeKeys("To"), bridgeKeys("From")),
		"LocalOptimizationBegin": join(ev, snapKeysWith("LocalOne"), snapKeysWith("LocalTwo"),
			snapKeysWith("Source"), list("DestUniqueId", "Id")),
		"LocalOptimizationEnd": join(ev, snapKeysWith("LocalOne"), snapKeysWith("LocalTwo"), list("Success", "Id")),
		"AgentConnect": join(ev, snapKeysWith(""), snapKeysWith("Dest"),
			list("Queue", "MemberName", "Interface", "HoldTime", "RingTime")),
		"AgentComplete": join(ev, snapKeysWith(""), snapKeysWith("Dest"),
			list("Queue", "MemberName", "Interface", "HoldTime", "TalkTime", "Reason")),
		"QueueMemberPause": join(ev, list("Queue", "MemberName", "Interface", "StateInterface", "Membership",
			"Penalty", "CallsTaken", "LastCall", "LastPause", "LoginTime", "InCall", "Status", "Paused",
			"PausedReason", "Ringinuse", "Wrapuptime")),
	}
	tests := []struct {
		name  string
		build func(b *scriptBuilder)
		want  []string
	}{
		{"basic", (*scriptBuilder).basic, list("Newchannel", "Newexten", "Newchannel", "DialBegin", "Newstate",
			"DialState", "Newstate", "DialEnd", "BridgeCreate", "BridgeEnter", "BridgeEnter", "BridgeLeave",
			"BridgeLeave", "Hangup", "Hangup", "BridgeDestroy")},
		{"failed", (*scriptBuilder).failed, list("Newchannel", "Newchannel", "DialBegin", "DialState", "DialEnd",
			"HangupRequest", "Hangup", "Hangup")},
		{"hold", (*scriptBuilder).hold, list("BridgeEnter", "BridgeEnter", "Hold", "Unhold", "BridgeLeave")},
		{"blind", (*scriptBuilder).blind, list("BridgeEnter", "BridgeEnter", "BridgeLeave", "BlindTransfer",
			"BridgeLeave", "Hangup", "BridgeDestroy", "Newexten", "Newchannel", "DialBegin", "DialEnd",
			"BridgeCreate", "BridgeEnter", "BridgeEnter")},
		{"attended", (*scriptBuilder).attended, list("BridgeEnter", "BridgeEnter", "Hold", "Newchannel",
			"Newchannel", "DialBegin", "BridgeCreate", "BridgeEnter", "BridgeEnter", "BridgeMerge", "BridgeLeave",
			"BridgeLeave", "BridgeEnter", "BridgeLeave", "AttendedTransfer", "Hangup", "Hangup", "BridgeDestroy")},
		{"local", (*scriptBuilder).local, list("Newchannel", "Newchannel", "Newchannel", "LocalBridge",
			"DialBegin", "Newchannel", "DialBegin", "BridgeCreate", "BridgeCreate", "LocalOptimizationBegin",
			"BridgeLeave", "BridgeEnter", "BridgeLeave", "LocalOptimizationEnd", "BridgeLeave", "Hangup", "Hangup",
			"BridgeDestroy")},
		{"masquerade", (*scriptBuilder).masquerade, list("Newchannel", "Newchannel", "DialState", "Newchannel",
			"Newexten", "Rename", "Rename", "Rename", "Hangup", "NewCallerid", "DialEnd", "BridgeCreate",
			"BridgeEnter", "BridgeEnter")},
		{"queue answered", func(b *scriptBuilder) { b.queueCall(0, "1042", true) }, list("QueueCallerJoin",
			"MusicOnHoldStart", "LocalBridge", "AgentCalled", "DialBegin", "DialState", "QueueMemberStatus",
			"DialEnd", "MusicOnHoldStop", "QueueCallerLeave", "BridgeCreate", "BridgeEnter", "BridgeEnter",
			"AgentConnect", "QueueMemberStatus", "AgentComplete", "QueueMemberStatus", "BridgeLeave", "Hangup",
			"QueueMemberStatus")},
		{"pause", (*scriptBuilder).pause, list("QueueMemberPause", "QueueMemberPause")},
	}
	// The header layouts the captures hold, per event name (some events
	// come in two layouts, e.g. DialBegin with and without a caller).
	captured := map[string]map[string]bool{}
	for _, name := range []string{"07-originate-events", "08b-lists-live-call-events-on"} {
		for _, m := range captureEvents(t, name) {
			ev := m.get("Event")
			if captured[ev] == nil {
				captured[ev] = map[string]bool{}
			}
			captured[ev][keys(m)] = true
		}
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := eventsOf(t, tc.build)
			i := 0
			for _, m := range got {
				name := m.get("Event")
				// SwapUniqueid is documented, not captured: the rest is.
				k := strings.TrimSuffix(keys(m), ",SwapUniqueid")
				if layouts, ok := captured[name]; ok && !layouts[k] {
					t.Errorf("%s headers %s: no capture has them", name, keys(m))
				}
				if i < len(tc.want) && name == tc.want[i] {
					i++
				}
				if k, ok := docKeys[name]; ok && keys(m) != k {
					t.Errorf("%s headers\n got %s\nwant %s", name, keys(m), k)
				}
			}
			if i < len(tc.want) {
				var names []string
				for _, m := range got {
					names = append(names, m.get("Event"))
				}
				t.Fatalf("want %v in order; missing from %q on\ngot %v", tc.want, tc.want[i], names)
			}
		})
	}
}

// TestHangupActionEndsScriptedCall: Hangup of a scripted call's channel
// while it rings makes the call jump to its teardown: the dial is
// cancelled (DialEnd CANCEL), both channels hang up, nothing is left.
func TestHangupActionEndsScriptedCall(t *testing.T) {
	s := start(t, Config{CallDuration: time.Minute})
	c := dial(t, s)
	c.login("ami", "amisecret", "on")
	if err := s.StartScenario(ScenarioHold, 5); err != nil {
		t.Fatal(err)
	}
	if err := s.StartScenario("nope", 5); err == nil {
		t.Fatal("an unknown scenario started")
	}
	waitFor(t, s, "the call's channels", func() bool { return len(s.LiveChannels()) == 2 })
	c.send("Action: Hangup", "Channel: "+s.LiveChannels()[0], "ActionID: h")
	var names []string
	hangups := 0
	for hangups < 2 {
		m := c.mustRead()
		if m.get("ActionID") == "h" {
			if m.get("Message") != "Channel Hungup" {
				t.Fatalf("hangup: %v", m)
			}
			continue
		}
		name := m.get("Event")
		if name == "DialEnd" {
			name += " " + m.get("DialStatus")
		}
		names = append(names, name)
		if m.get("Event") == "Hangup" {
			hangups++
		}
	}
	if got := strings.Join(names[len(names)-3:], ","); got != "DialEnd CANCEL,Hangup,Hangup" {
		t.Fatalf("teardown events %v", names)
	}
	waitFor(t, s, "the call to end", func() bool { return s.LiveCalls() == 0 })
	if tr := s.Truth(); len(tr.Channels) != 0 || len(tr.Bridges) != 0 {
		t.Fatalf("left: %+v", tr)
	}
}

// TestParseMix: mixes parse, and bad ones fail naming the entry.
func TestParseMix(t *testing.T) {
	m, err := ParseMix("basic=2, queue=1,template=0")
	if err != nil || m[ScenarioBasic] != 2 || m[ScenarioQueue] != 1 || len(m) != 3 {
		t.Fatalf("%v %v", m, err)
	}
	if m, err := ParseMix(""); err != nil || len(m) != len(Scenarios()) {
		t.Fatalf("default mix %v %v", m, err)
	}
	for _, bad := range []string{"basic", "basic=-1", "nope=1", "basic=0", "basic=x"} {
		if _, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) accepted", bad)
		}
	}
	s := start(t, Config{})
	if err := s.StartMixedTraffic(Traffic{CallsPerSecond: 0}); err == nil {
		t.Error("a zero rate accepted")
	}
}
