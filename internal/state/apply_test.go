package state

import (
	"reflect"
	"testing"
)

func TestApplyEvents(t *testing.T) {
	type tc struct {
		name  string
		run   func(f *feeder)
		check func(t *testing.T, n *Node)
	}
	mustChan := func(t *testing.T, n *Node, uid string) *Channel {
		t.Helper()
		c, ok := n.Channel(uid)
		if !ok {
			t.Fatalf("channel %s missing", uid)
		}
		return c
	}
	noChan := func(t *testing.T, n *Node, uid string) {
		t.Helper()
		if _, ok := n.Channel(uid); ok {
			t.Fatalf("channel %s still there", uid)
		}
	}
	cases := []tc{
		{"Newchannel creates with every field", func(f *feeder) { f.newchannel("1.1") }, func(t *testing.T, n *Node) {
			c := mustChan(t, n, "1.1")
			want := Channel{Uniqueid: "1.1", Channel: "PJSIP/1.1-0001", State: 0, StateDesc: "Down", CallerIDNum: "100",
				CallerIDName: "Alice", ConnectedLineNum: "<unknown>", ConnectedLineName: "<unknown>", Language: "en",
				Context: "demo", Exten: "100", Priority: "1", Linkedid: "1.1", Created: t0.Add(1e9), Seq: 1}
			if !reflect.DeepEqual(*c, want) {
				t.Fatalf("got %+v\nwant %+v", *c, want)
			}
		}},
		{"Newstate Up sets answered once", func(f *feeder) {
			f.newchannel("1.1")
			f.ev("Newstate", chanBlock("1.1", "PJSIP/1.1-0001", 6)...)
			f.ev("Newstate", chanBlock("1.1", "PJSIP/1.1-0001", 6)...)
		}, func(t *testing.T, n *Node) {
			c := mustChan(t, n, "1.1")
			if c.State != 6 || c.StateDesc != "Up" || !c.Answered.Equal(t0.Add(2e9)) || c.Seq != 3 {
				t.Fatalf("%+v", *c)
			}
		}},
		{"NewCallerid, NewConnectedLine, NewAccountCode update fields", func(f *feeder) {
			f.newchannel("1.1")
			f.ev("NewCallerid", "Uniqueid", "1.1", "CallerIDNum", "200", "CallerIDName", "Bob")
			f.ev("NewConnectedLine", "Uniqueid", "1.1", "ConnectedLineNum", "300", "ConnectedLineName", "Carol")
			f.ev("NewAccountCode", "Uniqueid", "1.1", "AccountCode", "acme")
		}, func(t *testing.T, n *Node) {
			c := mustChan(t, n, "1.1")
			if c.CallerIDNum != "200" || c.CallerIDName != "Bob" || c.ConnectedLineNum != "300" || c.ConnectedLineName != "Carol" || c.AccountCode != "acme" || c.Language != "en" {
				t.Fatalf("%+v", *c)
			}
		}},
		{"Newexten sets dialplan position and application", func(f *feeder) {
			f.newchannel("1.1")
			f.ev("Newexten", "Uniqueid", "1.1", "Context", "demo", "Exten", "200", "Priority", "2", "Application", "Dial", "AppData", "PJSIP/200")
		}, func(t *testing.T, n *Node) {
			c := mustChan(t, n, "1.1")
			if c.Exten != "200" || c.Priority != "2" || c.Application != "Dial" || c.ApplicationData != "PJSIP/200" {
				t.Fatalf("%+v", *c)
			}
		}},
		{"Rename changes the name, not the key", func(f *feeder) {
			f.newchannel("1.1")
			f.ev("Rename", "Channel", "PJSIP/1.1-0001", "Newname", "PJSIP/1.1-0001<MASQ>", "Uniqueid", "1.1")
		}, func(t *testing.T, n *Node) {
			if c := mustChan(t, n, "1.1"); c.Channel != "PJSIP/1.1-0001<MASQ>" {
				t.Fatalf("%+v", *c)
			}
		}},
		{"Hold and Unhold", func(f *feeder) {
			f.newchannel("1.1")
			f.ev("Hold", "Uniqueid", "1.1")
		}, func(t *testing.T, n *Node) {
			if !mustChan(t, n, "1.1").OnHold {
				t.Fatal("not on hold")
			}
		}},
		{"Unhold clears hold", func(f *feeder) {
			f.newchannel("1.1")
			f.ev("Hold", "Uniqueid", "1.1")
			f.ev("Unhold", "Uniqueid", "1.1")
		}, func(t *testing.T, n *Node) {
			if mustChan(t, n, "1.1").OnHold {
				t.Fatal("still on hold")
			}
		}},
		{"Dial events set dial status on both ends, upserting the destination", func(f *feeder) {
			f.newchannel("1.1")
			kv := append(chanBlock("1.1", "PJSIP/a", 6), "DestUniqueid", "1.2", "DestChannel", "PJSIP/b", "DestChannelState", "0", "DialString", "b")
			f.ev("DialBegin", kv...)
			f.ev("DialState", append(kv, "DialStatus", "RINGING")...)
			f.ev("DialEnd", append(kv, "DialStatus", "ANSWER")...)
		}, func(t *testing.T, n *Node) {
			a, b := mustChan(t, n, "1.1"), mustChan(t, n, "1.2")
			if a.DialStatus != "ANSWER" || b.DialStatus != "ANSWER" || b.Channel != "PJSIP/b" {
				t.Fatalf("%+v %+v", *a, *b)
			}
		}},
		{"Hangup deletes and tombstones: a late event does not bring it back", func(f *feeder) {
			f.newchannel("1.1")
			f.ev("Hangup", append(chanBlock("1.1", "PJSIP/a", 6), "Cause", "16")...)
			f.ev("Newstate", chanBlock("1.1", "PJSIP/a", 6)...)
			f.ev("Hangup", "Uniqueid", "1.1")
		}, func(t *testing.T, n *Node) {
			noChan(t, n, "1.1")
			if n.BadCount(ReasonLateEvent) != 1 || n.BadCount(ReasonUnknownChannel) != 0 {
				t.Fatalf("late %d unknown %d", n.BadCount(ReasonLateEvent), n.BadCount(ReasonUnknownChannel))
			}
		}},
		{"Hangup of an unknown channel is counted", func(f *feeder) {
			f.ev("Hangup", "Uniqueid", "9.9")
		}, func(t *testing.T, n *Node) {
			if n.BadCount(ReasonUnknownChannel) != 1 || n.Channels() != 0 {
				t.Fatal(n.BadCount(ReasonUnknownChannel))
			}
		}},
		{"duplicate Newchannel is counted and updates", func(f *feeder) {
			f.newchannel("1.1")
			f.ev("Newchannel", chanBlock("1.1", "PJSIP/other", 0)...)
		}, func(t *testing.T, n *Node) {
			if n.BadCount(ReasonDuplicateNewchannel) != 1 || mustChan(t, n, "1.1").Channel != "PJSIP/other" {
				t.Fatal("duplicate not counted")
			}
		}},
		{"events missing fields are counted", func(f *feeder) {
			f.ev("Newchannel", "Channel", "x")
			f.ev("Newstate", "Channel", "x")
			f.ev("Hangup")
			f.ev("BridgeEnter", "Uniqueid", "1.1")
			f.ev("BridgeDestroy")
			f.ev("QueueCallerJoin", "Queue", "q")
			f.ev("Rename", "Uniqueid", "1.1")
		}, func(t *testing.T, n *Node) {
			if got := n.BadCount(ReasonMissingField); got != 7 {
				t.Fatalf("missing_field %d", got)
			}
			if n.Channels() != 0 || len(n.bridges) != 0 || len(n.queues) != 0 {
				t.Fatal("bad input left state")
			}
		}},
		{"upsert: an event for an unknown channel creates it", func(f *feeder) {
			f.ev("Newstate", chanBlock("1.5", "PJSIP/x", 5)...)
		}, func(t *testing.T, n *Node) {
			if c := mustChan(t, n, "1.5"); c.StateDesc != "Ringing" {
				t.Fatalf("%+v", *c)
			}
		}},
		{"bridge life: create, enter, leave, destroy", func(f *feeder) {
			f.newchannel("1.1")
			f.newchannel("1.2")
			f.bridgeCreate("b1")
			f.enter("b1", "1.2")
			f.enter("b1", "1.1")
			f.ev("BridgeLeave", append([]string{"BridgeUniqueid", "b1"}, chanBlock("1.1", "PJSIP/1.1-0001", 6)...)...)
		}, func(t *testing.T, n *Node) {
			b, ok := n.Bridge("b1")
			if !ok || !reflect.DeepEqual(b.Members, []string{"1.2"}) || b.Type != "basic" || b.Technology != "simple_bridge" {
				t.Fatalf("%+v", b)
			}
			if mustChan(t, n, "1.1").Bridge != "" || mustChan(t, n, "1.2").Bridge != "b1" {
				t.Fatal("channel bridge fields")
			}
		}},
		{"BridgeDestroy clears members' bridge", func(f *feeder) {
			f.newchannel("1.1")
			f.bridgeCreate("b1")
			f.enter("b1", "1.1")
			f.ev("BridgeDestroy", "BridgeUniqueid", "b1")
		}, func(t *testing.T, n *Node) {
			if _, ok := n.Bridge("b1"); ok || mustChan(t, n, "1.1").Bridge != "" {
				t.Fatal("bridge survives")
			}
		}},
		{"BridgeEnter into an unknown bridge counts and creates it", func(f *feeder) {
			f.enter("b9", "1.1")
		}, func(t *testing.T, n *Node) {
			if b, ok := n.Bridge("b9"); !ok || n.BadCount(ReasonUnknownBridge) != 1 || len(b.Members) != 1 {
				t.Fatal("unknown bridge")
			}
		}},
		{"BridgeEnter into a second bridge moves the channel", func(f *feeder) {
			f.bridgeCreate("b1")
			f.bridgeCreate("b2")
			f.enter("b1", "1.1")
			f.enter("b2", "1.1")
		}, func(t *testing.T, n *Node) {
			b1, _ := n.Bridge("b1")
			b2, _ := n.Bridge("b2")
			if len(b1.Members) != 0 || len(b2.Members) != 1 || mustChan(t, n, "1.1").Bridge != "b2" {
				t.Fatalf("%v %v", b1.Members, b2.Members)
			}
		}},
		{"SwapUniqueid: the entering channel takes the swapped one's place", func(f *feeder) {
			f.bridgeCreate("b1")
			f.enter("b1", "1.1")
			f.enter("b1", "1.3") // Local;1
			f.newchannel("1.9")
			f.enter("b1", "1.9", "SwapUniqueid", "1.3")
		}, func(t *testing.T, n *Node) {
			b, _ := n.Bridge("b1")
			if !reflect.DeepEqual(b.Members, []string{"1.1", "1.9"}) || mustChan(t, n, "1.3").Bridge != "" {
				t.Fatalf("%v", b.Members)
			}
		}},
		{"BridgeMerge moves the members", func(f *feeder) {
			f.bridgeCreate("b1")
			f.bridgeCreate("b2")
			f.enter("b1", "1.1")
			f.enter("b2", "1.2")
			f.ev("BridgeMerge", "ToBridgeUniqueid", "b1", "ToBridgeType", "basic", "FromBridgeUniqueid", "b2")
		}, func(t *testing.T, n *Node) {
			b1, _ := n.Bridge("b1")
			if !reflect.DeepEqual(b1.Members, []string{"1.1", "1.2"}) || mustChan(t, n, "1.2").Bridge != "b1" {
				t.Fatalf("%v", b1.Members)
			}
		}},
		{"LocalBridge upserts both halves", func(f *feeder) {
			var kv []string
			for i, c := range chanBlock("1.4", "Local/200@demo-0002;1", 0) {
				if i%2 == 0 {
					c = "LocalOne" + c
				}
				kv = append(kv, c)
			}
			for i, c := range chanBlock("1.5", "Local/200@demo-0002;2", 4) {
				if i%2 == 0 {
					c = "LocalTwo" + c
				}
				kv = append(kv, c)
			}
			f.ev("LocalBridge", append(kv, "LocalOptimization", "Yes")...)
		}, func(t *testing.T, n *Node) {
			if mustChan(t, n, "1.4").Channel != "Local/200@demo-0002;1" || mustChan(t, n, "1.5").StateDesc != "Ring" {
				t.Fatal("local halves")
			}
		}},
		{"Hangup takes the channel out of its bridge and queue", func(f *feeder) {
			f.bridgeCreate("b1")
			f.enter("b1", "1.1")
			f.ev("QueueCallerJoin", append(chanBlock("1.1", "PJSIP/1.1-0001", 6), "Queue", "support", "Position", "1", "Count", "1")...)
			f.ev("Hangup", "Uniqueid", "1.1")
		}, func(t *testing.T, n *Node) {
			b, _ := n.Bridge("b1")
			q, _ := n.Queue("support")
			if len(b.Members) != 0 || len(q.Callers) != 0 {
				t.Fatalf("%v %v", b.Members, q.Callers)
			}
		}},
		{"queue callers keep Asterisk's positions", func(f *feeder) {
			for _, u := range []string{"1.1", "1.2", "1.3"} {
				f.ev("QueueCallerJoin", append(chanBlock(u, "PJSIP/"+u, 6), "Queue", "support", "Position", "0")...)
			}
			f.ev("QueueCallerAbandon", "Queue", "support", "Uniqueid", "1.1", "Position", "1")
			f.ev("QueueCallerLeave", append(chanBlock("1.3", "PJSIP/1.3", 6), "Queue", "support", "Position", "2")...)
		}, func(t *testing.T, n *Node) {
			q, _ := n.Queue("support")
			if len(q.Callers) != 1 || q.Callers[0].Uniqueid != "1.2" || q.Callers[0].Position != 1 || !q.Callers[0].Since.Equal(t0.Add(2e9)) {
				t.Fatalf("%+v", q.Callers)
			}
		}},
		{"queue members: added, status, pause, agent connect, removed", func(f *feeder) {
			f.ev("QueueMemberAdded", "Queue", "support", "MemberName", "Agent100", "Interface", "Local/100@demo", "StateInterface", "Local/100@demo", "Membership", "dynamic", "Penalty", "0", "Status", "1", "Paused", "0", "InCall", "0")
			f.ev("QueueMemberAdded", "Queue", "support", "MemberName", "Agent199", "Interface", "Local/199@demo", "Status", "1", "Paused", "0")
			f.ev("QueueMemberPause", "Queue", "support", "Interface", "Local/100@demo", "Paused", "1", "PausedReason", "lunch")
			f.ev("QueueMemberStatus", "Queue", "support", "Interface", "Local/100@demo", "Status", "2")
			f.ev("AgentConnect", "Queue", "support", "Interface", "Local/100@demo")
			f.ev("QueueMemberRemoved", "Queue", "support", "Interface", "Local/199@demo")
		}, func(t *testing.T, n *Node) {
			q, _ := n.Queue("support")
			want := []QueueMember{{Interface: "Local/100@demo", Name: "Agent100", StateInterface: "Local/100@demo", Membership: "dynamic",
				Penalty: "0", Status: "2", Paused: true, PausedReason: "lunch", InCall: true}}
			if !reflect.DeepEqual(q.Members, want) {
				t.Fatalf("%+v", q.Members)
			}
		}},
		{"FullyBooted with a smaller Uptime: the PBX restarted, nothing survives", func(f *feeder) {
			f.ev("FullyBooted", "Uptime", "100")
			f.newchannel("1.1")
			f.bridgeCreate("b1")
			f.ev("QueueMemberAdded", "Queue", "q", "Interface", "x")
			f.ev("FullyBooted", "Uptime", "200")
			f.ev("FullyBooted", "Uptime", "3")
		}, func(t *testing.T, n *Node) {
			s := n.Status()
			if s.Channels+s.Bridges+s.Queues != 0 || !s.Stale || s.StaleReason != "restart" || s.Restarts != 1 {
				t.Fatalf("%+v", s)
			}
		}},
		{"a restart reported after this session's snapshot changes nothing", func(f *feeder) {
			f.ev("FullyBooted", "Uptime", "500")
			f.marker(KindSessionStart)
			f.snap("CoreShowChannels", false, MapFields{"Event": "CoreShowChannel", "Uniqueid": "2.1", "Channel": "PJSIP/x"})
			f.ev("FullyBooted", "Uptime", "1")
		}, func(t *testing.T, n *Node) {
			s := n.Status()
			if s.Channels != 1 || s.Stale || s.Restarts != 1 {
				t.Fatalf("%+v", s)
			}
		}},
		{"markers make the node stale; a CoreShowChannels snapshot makes it fresh", func(f *feeder) {
			f.marker(KindSessionStart)
			f.snap("CoreShowChannels", false)
			f.marker(KindGap)
		}, func(t *testing.T, n *Node) {
			if s := n.Status(); !s.Stale || s.StaleReason != "gap" || s.Session != "s1" || s.Seq != 3 {
				t.Fatalf("%+v", s)
			}
		}},
		{"snapshot: mark and sweep", func(f *feeder) {
			f.newchannel("1.1")
			f.newchannel("1.2")
			f.bridgeCreate("b1")
			f.enter("b1", "1.1")
			f.marker(KindGap)
			f.snap("CoreShowChannels", false,
				MapFields{"Event": "CoreShowChannel", "Uniqueid": "1.2", "Channel": "PJSIP/b", "ChannelState": "6", "ChannelStateDesc": "Up", "BridgeId": "b2", "Duration": "00:01:05", "Application": "Dial", "ApplicationData": "x"},
				MapFields{"Event": "CoreShowChannel", "Uniqueid": "1.3", "Channel": "PJSIP/c", "ChannelState": "6", "BridgeId": "b2", "Duration": "00:00:10"})
		}, func(t *testing.T, n *Node) {
			noChan(t, n, "1.1")
			c := mustChan(t, n, "1.3")
			if !c.Created.Equal(t0.Add(6e9 - 10e9)) {
				t.Fatalf("created %v", c.Created)
			}
			if _, ok := n.Bridge("b1"); ok {
				t.Fatal("b1 not swept")
			}
			b2, ok := n.Bridge("b2")
			if !ok || !reflect.DeepEqual(b2.Members, []string{"1.2", "1.3"}) || mustChan(t, n, "1.2").Application != "Dial" {
				t.Fatal("b2 from BridgeId")
			}
			if n.Status().Stale {
				t.Fatal("still stale")
			}
		}},
		{"truncated snapshot only adds and stays stale", func(f *feeder) {
			f.newchannel("1.1")
			f.marker(KindGap)
			f.snap("CoreShowChannels", true, MapFields{"Event": "CoreShowChannel", "Uniqueid": "1.2", "Channel": "PJSIP/b"})
		}, func(t *testing.T, n *Node) {
			mustChan(t, n, "1.1")
			mustChan(t, n, "1.2")
			if !n.Status().Stale {
				t.Fatal("fresh after truncated snapshot")
			}
		}},
		{"BridgeList snapshot gives details and sweeps bridges", func(f *feeder) {
			f.bridgeCreate("old")
			f.snap("CoreShowChannels", false, MapFields{"Event": "CoreShowChannel", "Uniqueid": "1.2", "Channel": "PJSIP/b", "BridgeId": "b2"})
			f.snap("BridgeList", false, MapFields{"Event": "BridgeListItem", "BridgeUniqueid": "b2", "BridgeType": "basic", "BridgeTechnology": "simple_bridge"},
				MapFields{"Event": "BridgeListItem", "BridgeUniqueid": "hold", "BridgeType": "holding"})
		}, func(t *testing.T, n *Node) {
			b2, _ := n.Bridge("b2")
			h, ok := n.Bridge("hold")
			if b2.Technology != "simple_bridge" || !reflect.DeepEqual(b2.Members, []string{"1.2"}) || !ok || len(h.Members) != 0 {
				t.Fatalf("%+v %+v", b2, h)
			}
			if _, ok := n.Bridge("old"); ok {
				t.Fatal("old bridge kept")
			}
		}},
		{"QueueStatus snapshot replaces queues", func(f *feeder) {
			f.ev("QueueMemberAdded", "Queue", "gone", "Interface", "x")
			f.newchannel("1.7")
			f.snap("QueueStatus", false,
				MapFields{"Event": "QueueParams", "Queue": "support", "Strategy": "ringall"},
				MapFields{"Event": "QueueMember", "Queue": "support", "Name": "Agent100", "Location": "Local/100@demo", "Status": "1", "Paused": "1", "PausedReason": "x", "InCall": "0"},
				MapFields{"Event": "QueueEntry", "Queue": "support", "Position": "1", "Channel": "PJSIP/g", "Uniqueid": "1.7", "Wait": "4"})
		}, func(t *testing.T, n *Node) {
			if _, ok := n.Queue("gone"); ok {
				t.Fatal("queue not swept")
			}
			q, _ := n.Queue("support")
			if q.Strategy != "ringall" || len(q.Members) != 1 || !q.Members[0].Paused || q.Members[0].Name != "Agent100" ||
				len(q.Callers) != 1 || !q.Callers[0].Since.Equal(t0.Add(3e9-4e9)) {
				t.Fatalf("%+v", q)
			}
		}},
		{"informational events change nothing", func(f *feeder) {
			f.newchannel("1.1")
			for _, e := range []string{"LocalOptimizationBegin", "LocalOptimizationEnd", "BlindTransfer", "AttendedTransfer", "AgentCalled", "VarSet", "Cdr"} {
				f.ev(e, "Uniqueid", "1.1", "Queue", "none")
			}
		}, func(t *testing.T, n *Node) {
			if n.Channels() != 1 || len(n.bridges)+len(n.queues) != 0 || n.status.BadEvents != 0 {
				t.Fatalf("%+v", n.Status())
			}
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			f := newFeeder()
			c.run(f)
			c.check(t, f.n)
			checkInvariants(t, f.n)
		})
	}
}

func TestRedeliveryIgnored(t *testing.T) {
	f := newFeeder()
	f.newchannel("1.1")
	f.n.Apply(&Message{StreamSeq: 1, Kind: KindEvent, Event: "Hangup", Fields: MapFields{"Uniqueid": "1.1"}})
	if f.n.Channels() != 1 {
		t.Fatal("message at or below the applied sequence was applied")
	}
}

func TestBadNodeRefusedOthersUnharmed(t *testing.T) {
	p := NewProjection()
	var told []string
	p.OnBad = func(node string, r Reason) { told = append(told, node+":"+r.String()) }
	ok := &Message{Node: "pbx1", Kind: KindEvent, Event: "Newchannel", Fields: MapFields{"Uniqueid": "1.1"}}
	if err := p.Apply(ok); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "pbx.1", "pbx 1", "pbx*", string(make([]byte, 129))} {
		if err := p.Apply(&Message{Node: bad, Kind: KindEvent, Event: "Hangup", Fields: MapFields{"Uniqueid": "1.1"}}); err != ErrBadNode {
			t.Fatalf("%q: %v", bad, err)
		}
	}
	n, _ := p.Lookup("pbx1")
	if n.Channels() != 1 || p.BadCount(ReasonBadNode) != 5 || len(told) != 5 || told[0] != ":bad_node" {
		t.Fatalf("channels %d bad %d told %v", n.Channels(), p.BadCount(ReasonBadNode), told)
	}
}

func TestDrain(t *testing.T) {
	f := newFeeder()
	f.newchannel("1.1")
	f.newchannel("1.2")
	f.ev("Hangup", "Uniqueid", "1.2") // created and gone before any flush: nothing to write
	type w struct {
		k   EntityKind
		id  string
		del bool
	}
	drain := func() []w {
		var out []w
		f.n.Drain(func(k EntityKind, id string, v any) { out = append(out, w{k, id, v == nil}) })
		return out
	}
	if got := drain(); !reflect.DeepEqual(got, []w{{EntityChannel, "1.1", false}}) {
		t.Fatalf("%v", got)
	}
	if got := drain(); len(got) != 0 {
		t.Fatalf("second drain %v", got)
	}
	f.ev("Newstate", chanBlock("1.1", "x", 6)...)
	f.ev("Hangup", "Uniqueid", "1.1") // stored before: its delete must be written
	if got := drain(); !reflect.DeepEqual(got, []w{{EntityChannel, "1.1", true}}) {
		t.Fatalf("%v", got)
	}
}

func TestKeys(t *testing.T) {
	for _, id := range []string{"1795398116.4", "asterisk-1.2", "a_b", "x=y", "67534d72-0844-47a5-88cf-488ed7322b50", "sales queue/ü", ""} {
		tok := EncodeToken(id)
		for i := 0; i < len(tok); i++ {
			c := tok[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '=') {
				t.Fatalf("%q -> %q: byte %q", id, tok, c)
			}
		}
		back, ok := DecodeToken(tok)
		if !ok || back != id {
			t.Fatalf("%q -> %q -> %q", id, tok, back)
		}
	}
	if EncodeToken("1795398116.4") != "1795398116_4" || EncodeToken("a_b") != "a=5Fb" {
		t.Fatal(EncodeToken("1795398116.4"), EncodeToken("a_b"))
	}
	k := Key("pbx1", EntityChannel, "1.2")
	if k != "pbx1.channel.1_2" {
		t.Fatal(k)
	}
	if node, kind, id, ok := ParseKey(k); !ok || node != "pbx1" || kind != EntityChannel || id != "1.2" {
		t.Fatal(node, kind, id, ok)
	}
	if _, _, _, ok := ParseKey(StatusKey("pbx1")); ok {
		t.Fatal("status key parsed as entity")
	}
	for _, bad := range []string{"=", "=4", "=ZZ", "a.b", "a b"} {
		if _, ok := DecodeToken(bad); ok {
			t.Fatalf("%q decoded", bad)
		}
	}
}
