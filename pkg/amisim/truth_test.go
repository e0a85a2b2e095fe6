package amisim

import (
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"sync"
	"testing"
	"time"
)

// readList sends an event-list action and returns its items (without the
// start answer and the Complete event), failing on an error answer.
func (c *client) readList(action string, headers ...string) []tmsg {
	c.t.Helper()
	c.send(append([]string{"Action: " + action, "ActionID: l"}, headers...)...)
	resp := c.mustRead()
	for resp.first() != "Response: Success" && resp.first() != "Response: Error" {
		resp = c.mustRead() // an event before the answer
	}
	if resp.get("Response") != "Success" || resp.get("EventList") != "start" {
		c.t.Fatalf("%s: %v", action, resp)
	}
	var items []tmsg
	for {
		m := c.mustRead()
		if m.get("ActionID") != "l" {
			continue // an event after the answer started: not part of the list
		}
		if m.get("EventList") == "Complete" {
			if n, _ := strconv.Atoi(m.get("ListItems")); n != len(items) {
				c.t.Fatalf("%s: ListItems %d, %d items", action, n, len(items))
			}
			return items
		}
		items = append(items, m)
	}
}

// channelsFromList converts CoreShowChannel items (on hold is not in them:
// taken as false).
func channelsFromList(items []tmsg) []TruthChannel {
	out := []TruthChannel{}
	for _, m := range items {
		state, _ := strconv.Atoi(m.get("ChannelState"))
		prio, _ := strconv.Atoi(m.get("Priority"))
		out = append(out, TruthChannel{Uniqueid: m.get("Uniqueid"), Channel: m.get("Channel"), State: state,
			StateDesc: m.get("ChannelStateDesc"), CallerIDNum: m.get("CallerIDNum"),
			CallerIDName: m.get("CallerIDName"), ConnectedLineNum: m.get("ConnectedLineNum"),
			ConnectedLineName: m.get("ConnectedLineName"), AccountCode: m.get("AccountCode"),
			Language: m.get("Language"), Context: m.get("Context"), Exten: m.get("Exten"), Priority: prio,
			Application: m.get("Application"), ApplicationData: m.get("ApplicationData"),
			Linkedid: m.get("Linkedid"), Bridge: m.get("BridgeId")})
	}
	return out
}

// bridgesFromList converts BridgeListItem items; members come from the
// channels' BridgeId (chans from a CoreShowChannels at the same moment).
func bridgesFromList(items []tmsg, chans []TruthChannel) []TruthBridge {
	out := []TruthBridge{}
	for _, m := range items {
		b := TruthBridge{ID: m.get("BridgeUniqueid"), Type: m.get("BridgeType"), Technology: m.get("BridgeTechnology"),
			Creator: m.get("BridgeCreator"), Name: m.get("BridgeName"), Members: []string{}}
		for _, ch := range chans {
			if ch.Bridge == b.ID {
				b.Members = append(b.Members, ch.Uniqueid)
			}
		}
		sort.Strings(b.Members)
		out = append(out, b)
	}
	return out
}

// queuesFromList converts QueueStatus items (Since is not in them: zero).
func queuesFromList(items []tmsg) []TruthQueue {
	out := []TruthQueue{}
	for _, m := range items {
		switch m.get("Event") {
		case "QueueParams":
			out = append(out, TruthQueue{Name: m.get("Queue"), Members: []TruthQueueMember{}, Callers: []TruthQueueCaller{}})
		case "QueueMember":
			q := &out[len(out)-1]
			st, _ := strconv.Atoi(m.get("Status"))
			q.Members = append(q.Members, TruthQueueMember{Interface: m.get("Location"), Name: m.get("Name"),
				Status: st, Paused: m.get("Paused") == "1", PausedReason: m.get("PausedReason"),
				InCall: m.get("InCall") == "1"})
		case "QueueEntry":
			q := &out[len(out)-1]
			pos, _ := strconv.Atoi(m.get("Position"))
			q.Callers = append(q.Callers, TruthQueueCaller{Uniqueid: m.get("Uniqueid"), Channel: m.get("Channel"), Position: pos})
		}
	}
	return out
}

// comparable strips what the lists cannot show: on hold and waiting since.
func comparableTruth(t Truth) Truth {
	t = withoutSince(t)
	chans := make([]TruthChannel, len(t.Channels))
	for i, ch := range t.Channels {
		ch.OnHold = false
		chans[i] = ch
	}
	t.Channels = chans
	return t
}

// diffTruth describes the first difference between two truths, "" if none.
func diffTruth(got, want Truth) string {
	if reflect.DeepEqual(got, want) {
		return ""
	}
	if !reflect.DeepEqual(got.Channels, want.Channels) {
		return fmt.Sprintf("channels\n got %+v\nwant %+v", got.Channels, want.Channels)
	}
	if !reflect.DeepEqual(got.Bridges, want.Bridges) {
		return fmt.Sprintf("bridges\n got %+v\nwant %+v", got.Bridges, want.Bridges)
	}
	return fmt.Sprintf("queues\n got %+v\nwant %+v", got.Queues, want.Queues)
}

// TestTruthOfTemplateCall: during transcript 07's call the truth holds its
// four Local channels, the bridge with its two members and Agent100 in use,
// and CoreShowChannels, BridgeList, BridgeInfo and QueueStatus show the same.
func TestTruthOfTemplateCall(t *testing.T) {
	s, c := callServer(t, Config{Node: "pbx7"})
	truth := s.Truth()
	if truth.Node != "pbx7" || len(truth.Channels) != 4 || len(truth.Bridges) != 1 || len(truth.Bridges[0].Members) != 2 {
		t.Fatalf("truth: %+v", truth)
	}
	if q := truth.Queues[0]; q.Name != "support" || q.Members[0].Name != "Agent100" || q.Members[0].Status != devInUse {
		t.Fatalf("support queue: %+v", q)
	}
	chans := channelsFromList(c.readList("CoreShowChannels"))
	got := Truth{Channels: chans, Bridges: bridgesFromList(c.readList("BridgeList"), chans),
		Queues: queuesFromList(c.readList("QueueStatus"))}
	if d := diffTruth(got, comparableTruth(truth)); d != "" {
		t.Fatal(d)
	}
	b := truth.Bridges[0]
	info := c.readList("BridgeInfo", "BridgeUniqueid: "+b.ID)
	var members []string
	for _, m := range info {
		if m.get("Event") != "BridgeInfoChannel" {
			t.Fatalf("BridgeInfo item %v", m)
		}
		members = append(members, m.get("Uniqueid"))
	}
	sort.Strings(members)
	if !reflect.DeepEqual(members, b.Members) {
		t.Fatalf("BridgeInfo members %v, truth %v", members, b.Members)
	}
	if r := c.do("Action: BridgeInfo", "BridgeUniqueid: nope"); r.get("Message") != "Bridge not found" {
		t.Fatalf("BridgeInfo of an unknown bridge: %v", r)
	}
	if r := c.do("Action: BridgeInfo"); r.get("Message") != "BridgeUniqueid must be provided" {
		t.Fatalf("BridgeInfo without a bridge: %v", r)
	}
	c.do("Action: Hangup", "Channel: "+truth.Channels[0].Channel)
	waitFor(t, s, "the call to end", func() bool { return s.LiveCalls() == 0 })
	end := s.Truth()
	if len(end.Channels) != 0 || len(end.Bridges) != 0 || end.Queues[0].Members[0].Status != devNotInUse {
		t.Fatalf("truth after the call: %+v", end)
	}
}

// TestListAnswerPlace: a list action that arrives while the scheduler has
// applied a call's first events but not yet sent them is answered after
// those events, never before: the answer stands in the stream where the
// state it shows holds.
func TestListAnswerPlace(t *testing.T) {
	s := start(t, Config{CallDuration: time.Minute})
	applied := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	s.mu.Lock()
	s.sendHook = func() {
		once.Do(func() {
			close(applied)
			<-release
		})
	}
	s.mu.Unlock()
	c := dial(t, s)
	c.login("ami", "amisecret", "on")
	if err := s.StartScenario(ScenarioBasic, 1); err != nil {
		t.Fatal(err)
	}
	<-applied
	c.send("Action: CoreShowChannels", "ActionID: place")
	waitFor(t, s, "the action received", func() bool {
		for _, a := range s.Received() {
			if a.ActionID == "place" {
				return true
			}
		}
		return false
	})
	close(release)
	seen := map[string]bool{}
	for {
		m := c.mustRead()
		if m.get("Event") == "Newchannel" {
			seen[m.get("Uniqueid")] = true
		}
		if m.get("Event") == "CoreShowChannel" && !seen[m.get("Uniqueid")] {
			t.Fatalf("the list shows %s before its Newchannel", m.get("Channel"))
		}
		if m.get("Event") == "CoreShowChannelsComplete" {
			if m.get("ListItems") == "0" {
				t.Fatal("the list shows none of the applied channels")
			}
			return
		}
	}
}

// TestFleetTruth: mixed traffic on every node of a fleet, each node's truth
// under its name, all empty once the traffic stopped and the calls ended.
func TestFleetTruth(t *testing.T) {
	f, err := StartFleet(2, Config{CallDuration: 200 * time.Millisecond, RecordLimit: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.StartMixedTraffic(Traffic{CallsPerSecond: 50, Seed: 3, Mix: map[Scenario]int{ScenarioBasic: 1}}); err != nil {
		t.Fatal(err)
	}
	for _, s := range f.Servers() {
		waitFor(t, s, "a call", func() bool { return len(s.LiveChannels()) > 0 })
	}
	f.StopTraffic()
	for _, s := range f.Servers() {
		waitFor(t, s, "the calls to end", func() bool { return s.LiveCalls() == 0 })
	}
	all := f.Truth()
	for _, name := range []string{"pbx1", "pbx2"} {
		tr, ok := all[name]
		if !ok || tr.Node != name || len(tr.Channels) != 0 || len(tr.Bridges) != 0 || len(tr.Queues) != 2 {
			t.Fatalf("%s: %+v", name, tr)
		}
	}
	if err := f.StartMixedTraffic(Traffic{CallsPerSecond: -1}); err == nil {
		t.Fatal("a negative rate accepted")
	}
}

// TestTruthAfterRestart: a restart ends every call without events, as a
// real one does: the truth is empty and the queues idle afterwards.
func TestTruthAfterRestart(t *testing.T) {
	s := start(t, Config{CallDuration: time.Minute, BootDelay: time.Millisecond})
	for _, sc := range []Scenario{ScenarioQueue, ScenarioLocal, ScenarioPause, ScenarioTemplate} {
		if err := s.StartScenario(sc, 2); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, s, "the calls' channels", func() bool { return len(s.LiveChannels()) >= 3 })
	s.Restart(time.Millisecond)
	tr := s.Truth()
	if len(tr.Channels) != 0 || len(tr.Bridges) != 0 || s.LiveCalls() != 0 {
		t.Fatalf("after a restart: %+v", tr)
	}
	for _, q := range tr.Queues {
		for _, m := range q.Members {
			if m.Status != devNotInUse || m.Paused || m.InCall {
				t.Fatalf("member after a restart: %+v", m)
			}
		}
		if len(q.Callers) != 0 {
			t.Fatalf("callers after a restart: %+v", q)
		}
	}
}
