package amisim

import (
	"math/rand/v2"
	"reflect"
	"sort"
	"strconv"
	"testing"
	"time"
)

// projection is the state a consumer rebuilds from the event stream alone:
// the reference the simulator's truth and lists must agree with.
type projection struct {
	chans   map[string]*TruthChannel // by Uniqueid
	order   map[string]int           // creation order, for Truth's order
	seq     int
	bridges map[string]*TruthBridge
	border  map[string]int
	queues  []TruthQueue
}

func newProjection() *projection {
	p := &projection{chans: map[string]*TruthChannel{}, order: map[string]int{},
		bridges: map[string]*TruthBridge{}, border: map[string]int{}}
	for _, q := range newQueueStates() {
		tq := TruthQueue{Name: q.name, Members: []TruthQueueMember{}, Callers: []TruthQueueCaller{}}
		for _, m := range q.members {
			tq.Members = append(tq.Members, TruthQueueMember{Interface: m.iface, Name: m.name, Status: m.status})
		}
		p.queues = append(p.queues, tq)
	}
	return p
}

func (p *projection) queue(name string) *TruthQueue {
	for i := range p.queues {
		if p.queues[i].Name == name {
			return &p.queues[i]
		}
	}
	return nil
}

// apply follows one event; it returns a complaint for an event that does
// not fit the state so far ("" when it fits).
func (p *projection) apply(m tmsg) string {
	ev := m.get("Event")
	uid := m.get("Uniqueid")
	switch ev {
	case "Newchannel":
		if p.chans[uid] != nil {
			return "Newchannel of a live channel " + uid
		}
		p.seq++
		p.chans[uid] = &TruthChannel{Uniqueid: uid}
		p.order[uid] = p.seq
	case "Hangup":
		ch := p.chans[uid]
		if ch == nil {
			return "Hangup of an unknown channel " + uid
		}
		if ch.Bridge != "" {
			return "Hangup of " + uid + " still in bridge " + ch.Bridge
		}
		delete(p.chans, uid)
		return ""
	case "Rename":
		ch := p.chans[uid]
		if ch == nil || ch.Channel != m.get("Channel") {
			return "Rename of an unknown channel " + uid
		}
		ch.Channel = m.get("Newname")
		return ""
	case "BridgeCreate":
		id := m.get("BridgeUniqueid")
		if p.bridges[id] != nil {
			return "BridgeCreate of a live bridge"
		}
		p.seq++
		p.border[id] = p.seq
		p.bridges[id] = &TruthBridge{ID: id, Type: m.get("BridgeType"), Technology: m.get("BridgeTechnology"),
			Creator: m.get("BridgeCreator"), Name: m.get("BridgeName"), Members: []string{}}
		return ""
	case "BridgeDestroy":
		b := p.bridges[m.get("BridgeUniqueid")]
		if b == nil || len(b.Members) != 0 {
			return "BridgeDestroy of an unknown or non-empty bridge"
		}
		delete(p.bridges, b.ID)
		return ""
	case "QueueMemberStatus", "QueueMemberPause":
		q := p.queue(m.get("Queue"))
		if q == nil {
			return "member event of an unknown queue"
		}
		for i := range q.Members {
			mb := &q.Members[i]
			if mb.Interface == m.get("Interface") {
				mb.Status, _ = strconv.Atoi(m.get("Status"))
				mb.Paused = m.get("Paused") == "1"
				mb.PausedReason = m.get("PausedReason")
				mb.InCall = m.get("InCall") == "1"
			}
		}
		return ""
	}
	ch := p.chans[uid]
	if m.get("ChannelStateDesc") == "" || m.get("Channel") == "" {
		return ""
	}
	if ch == nil {
		return ev + " of an unknown channel " + uid
	}
	if ch.Channel != "" && ch.Channel != m.get("Channel") {
		return ev + ": channel " + uid + " named " + m.get("Channel") + ", known as " + ch.Channel
	}
	ch.Channel = m.get("Channel")
	ch.State, _ = strconv.Atoi(m.get("ChannelState"))
	ch.StateDesc = m.get("ChannelStateDesc")
	ch.CallerIDNum, ch.CallerIDName = m.get("CallerIDNum"), m.get("CallerIDName")
	ch.ConnectedLineNum, ch.ConnectedLineName = m.get("ConnectedLineNum"), m.get("ConnectedLineName")
	ch.Language, ch.AccountCode = m.get("Language"), m.get("AccountCode")
	ch.Context, ch.Exten = m.get("Context"), m.get("Exten")
	ch.Priority, _ = strconv.Atoi(m.get("Priority"))
	ch.Linkedid = m.get("Linkedid")
	switch ev {
	case "Newexten":
		ch.Application, ch.ApplicationData = m.get("Application"), m.get("AppData")
	case "Hold":
		ch.OnHold = true
	case "Unhold":
		ch.OnHold = false
	case "BridgeEnter":
		b := p.bridges[m.get("BridgeUniqueid")]
		if b == nil || ch.Bridge != "" {
			return "BridgeEnter into an unknown bridge, or from another bridge"
		}
		b.Members = append(b.Members, uid)
		sort.Strings(b.Members)
		ch.Bridge = b.ID
		if n, _ := strconv.Atoi(m.get("BridgeNumChannels")); n != len(b.Members) {
			return "BridgeEnter: BridgeNumChannels " + m.get("BridgeNumChannels")
		}
	case "BridgeLeave":
		b := p.bridges[m.get("BridgeUniqueid")]
		if b == nil || ch.Bridge != b.ID {
			return "BridgeLeave of a bridge the channel is not in"
		}
		for i, u := range b.Members {
			if u == uid {
				b.Members = append(b.Members[:i], b.Members[i+1:]...)
				break
			}
		}
		ch.Bridge = ""
	case "QueueCallerJoin":
		q := p.queue(m.get("Queue"))
		if q == nil {
			return "QueueCallerJoin of an unknown queue"
		}
		q.Callers = append(q.Callers, TruthQueueCaller{Uniqueid: uid, Channel: ch.Channel})
		if pos, _ := strconv.Atoi(m.get("Position")); pos != len(q.Callers) {
			return "QueueCallerJoin: Position " + m.get("Position")
		}
	case "QueueCallerLeave":
		q := p.queue(m.get("Queue"))
		found := false
		for i, c := range q.Callers {
			if c.Uniqueid == uid {
				if pos, _ := strconv.Atoi(m.get("Position")); pos != i+1 {
					return "QueueCallerLeave: Position " + m.get("Position")
				}
				q.Callers = append(q.Callers[:i], q.Callers[i+1:]...)
				found = true
				break
			}
		}
		if !found {
			return "QueueCallerLeave of a caller not waiting"
		}
	}
	return ""
}

// truth returns the projection in Truth's form and order (no Since).
func (p *projection) truth() Truth {
	t := Truth{Channels: []TruthChannel{}, Bridges: []TruthBridge{}, Queues: []TruthQueue{}}
	for _, ch := range p.chans {
		t.Channels = append(t.Channels, *ch)
	}
	sort.Slice(t.Channels, func(i, j int) bool { return p.order[t.Channels[i].Uniqueid] < p.order[t.Channels[j].Uniqueid] })
	for _, b := range p.bridges {
		t.Bridges = append(t.Bridges, TruthBridge{ID: b.ID, Type: b.Type, Technology: b.Technology,
			Creator: b.Creator, Name: b.Name, Members: append([]string{}, b.Members...)})
	}
	sort.Slice(t.Bridges, func(i, j int) bool { return p.border[t.Bridges[i].ID] < p.border[t.Bridges[j].ID] })
	for _, q := range p.queues {
		cq := TruthQueue{Name: q.Name, Members: append([]TruthQueueMember{}, q.Members...), Callers: []TruthQueueCaller{}}
		for i, c := range q.Callers {
			cq.Callers = append(cq.Callers, TruthQueueCaller{Uniqueid: c.Uniqueid, Channel: c.Channel, Position: i + 1})
		}
		t.Queues = append(t.Queues, cq)
	}
	return t
}

// withoutSince drops what no event carries: when a caller joined.
func withoutSince(t Truth) Truth {
	t.Node = ""
	qs := make([]TruthQueue, len(t.Queues))
	for i, q := range t.Queues {
		cs := make([]TruthQueueCaller, len(q.Callers))
		for j, c := range q.Callers {
			cs[j] = TruthQueueCaller{Uniqueid: c.Uniqueid, Channel: c.Channel, Position: c.Position}
		}
		q.Callers = cs
		qs[i] = q
	}
	t.Queues = qs
	return t
}

// TestTruthProperty: under seeded random traffic of every scenario, at
// random moments (after a random number of events) a client over TCP asks
// for CoreShowChannels, BridgeList or QueueStatus. Each answer equals the
// simulator's truth at the moment it was rendered, and equals what the
// client rebuilt from the events before it in its stream; every event fits
// the state the events before it built; and when the traffic has stopped
// and the calls ended, the truth equals the rebuilt state and is empty.
func TestTruthProperty(t *testing.T) {
	for _, seed := range []uint64{1, 2, 3, 20261203} {
		t.Run(strconv.FormatUint(seed, 10), func(t *testing.T) {
			truthProperty(t, seed)
		})
	}
}

func truthProperty(t *testing.T, seed uint64) {
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("seed %d: "+format, append([]any{seed}, args...)...)
	}
	s, err := Start(Config{CallDuration: 400 * time.Millisecond, Node: "pbx1", RecordLimit: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	type observed struct {
		action, id string
		truth      Truth
	}
	listed := make(chan observed, 1)
	s.ObserveLists(func(action, id string, tr Truth) {
		select {
		case listed <- observed{action, id, tr}:
		default:
		}
	})
	c := dial(t, s)
	c.login("ami", "amisecret", "on")
	p := newProjection()
	rng := rand.New(rand.NewPCG(seed, 7))
	// readEvent applies the next message, which must be an event.
	apply := func(m tmsg) {
		if m.get("ActionID") != "" || m.first() == "Response: Success" {
			fail("unexpected %v", m)
		}
		if complaint := p.apply(m); complaint != "" {
			fail("event does not fit the state: %s\n%v", complaint, m)
		}
	}
	if err := s.StartMixedTraffic(Traffic{CallsPerSecond: 60, Seed: seed}); err != nil {
		fail("%v", err)
	}
	lists := []string{"CoreShowChannels", "BridgeList", "QueueStatus", "BridgeInfo"}
	checks := 0
	for i := 0; i < 45; i++ {
		for n := rng.IntN(150); n > 0; n-- {
			apply(c.mustRead())
		}
		action := lists[rng.IntN(len(lists))]
		id := "p" + strconv.Itoa(i)
		var bridgeID string
		gone := false
		if action == "BridgeInfo" {
			bs := p.truth().Bridges
			if len(bs) == 0 {
				action = "BridgeList"
			} else {
				bridgeID = bs[rng.IntN(len(bs))].ID
			}
		}
		c.send("Action: "+action, "ActionID: "+id, "BridgeUniqueid: "+bridgeID)
		var items []tmsg
		for {
			m := c.mustRead()
			if m.get("ActionID") != id {
				apply(m)
				continue
			}
			if m.first() == "Response: Success" {
				continue
			}
			if m.get("EventList") == "Complete" {
				break
			}
			if m.first() == "Response: Error" {
				if action != "BridgeInfo" || m.get("Message") != "Bridge not found" {
					fail("%s: %v", action, m)
				}
				gone = true // destroyed after the client chose it
				break
			}
			items = append(items, m)
		}
		var tr Truth
		select {
		case o := <-listed:
			if o.action != action || o.id != id {
				fail("observed %s %s for %s %s", o.action, o.id, action, id)
			}
			tr = o.truth
		default:
			fail("%s: no truth recorded for the answer", action)
		}
		want := withoutSince(tr)
		proj := p.truth()
		switch action {
		case "CoreShowChannels":
			got := channelsFromList(items)
			wantCh := comparableTruth(tr).Channels
			if d := diffTruth(Truth{Channels: got}, Truth{Channels: wantCh}); d != "" {
				fail("CoreShowChannels vs truth: %s", d)
			}
			if d := diffTruth(Truth{Channels: proj.Channels}, Truth{Channels: want.Channels}); d != "" {
				fail("events vs truth at a CoreShowChannels: %s", d)
			}
		case "BridgeList":
			got := bridgesFromList(items, want.Channels)
			if d := diffTruth(Truth{Bridges: got}, Truth{Bridges: want.Bridges}); d != "" {
				fail("BridgeList vs truth: %s", d)
			}
			if d := diffTruth(Truth{Bridges: proj.Bridges}, Truth{Bridges: want.Bridges}); d != "" {
				fail("events vs truth at a BridgeList: %s", d)
			}
		case "BridgeInfo":
			members := []string{}
			for _, m := range items {
				members = append(members, m.get("Uniqueid"))
			}
			sort.Strings(members)
			var want []string
			for _, b := range tr.Bridges {
				if b.ID == bridgeID {
					want = b.Members
				}
			}
			if gone && want != nil {
				fail("BridgeInfo %s: not found, but the truth has it", bridgeID)
			}
			if !gone && !reflect.DeepEqual(members, want) {
				fail("BridgeInfo %s: members %v, truth %v", bridgeID, members, want)
			}
		case "QueueStatus":
			got := queuesFromList(items)
			if d := diffTruth(Truth{Queues: got}, Truth{Queues: want.Queues}); d != "" {
				fail("QueueStatus vs truth: %s", d)
			}
			if d := diffTruth(Truth{Queues: proj.Queues}, Truth{Queues: want.Queues}); d != "" {
				fail("events vs truth at a QueueStatus: %s", d)
			}
		}
		checks++
	}
	s.StopTraffic()
	// Drain the stream up to a Ping answered after the last call ended.
	waitFor(t, s, "the calls to end", func() bool { return s.LiveCalls() == 0 })
	c.send("Action: Ping", "ActionID: end")
	for {
		m := c.mustRead()
		if m.get("ActionID") == "end" {
			break
		}
		apply(m)
	}
	end := s.Truth()
	if d := diffTruth(p.truth(), withoutSince(end)); d != "" {
		fail("events vs truth at the end: %s", d)
	}
	if len(end.Channels) != 0 || len(end.Bridges) != 0 {
		fail("left at the end: %+v", end)
	}
	for _, q := range end.Queues {
		for _, m := range q.Members {
			if m.Status != devNotInUse || m.InCall || m.Paused {
				fail("member left busy at the end: %+v", m)
			}
		}
		if len(q.Callers) != 0 {
			fail("callers left at the end: %+v", q)
		}
	}
	if checks == 0 {
		fail("no list checked")
	}
}
