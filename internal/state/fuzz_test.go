package state

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"reflect"
	"testing"
	"time"
)

// fuzzEvents are the events the fuzz driver picks from, with fields drawn
// from a small universe so that sequences collide on purpose: enter before
// create, hangup twice, merge into itself, snapshots mid-call.
var fuzzEvents = []string{"Newchannel", "Newstate", "Hangup", "Rename", "DialBegin", "DialEnd", "Hold", "Unhold",
	"BridgeCreate", "BridgeEnter", "BridgeLeave", "BridgeDestroy", "BridgeMerge", "LocalBridge",
	"QueueCallerJoin", "QueueCallerLeave", "QueueCallerAbandon", "QueueMemberAdded", "QueueMemberRemoved",
	"QueueMemberPause", "AgentConnect", "AgentComplete", "FullyBooted", "Newexten", "NewCallerid",
	"_gap", "_session_start", "_session_end", "_snap_channels", "_snap_bridges", "_snap_queues", "_drain"}

// fuzzRun drives one node with the decisions in data and checks the
// invariants after every message; kv mirrors what Drain wrote.
func fuzzRun(t *testing.T, data []byte) {
	n := NewNode("pbx1")
	runBytes(t, n, data, nil)
}

// replayBytes applies the random sequence data stands for, without checks.
func replayBytes(n *Node, data []byte) { runBytes(nil, n, data, nil) }

// runBytes applies the sequence data stands for to n, checking the
// invariants when t is set; each message is also passed to record if set.
func runBytes(t *testing.T, n *Node, data []byte, record func(*Message)) {
	kv := map[string]string{}
	drain := func() {
		n.Drain(func(k EntityKind, id string, v any) {
			key := Key("pbx1", k, id)
			if v == nil {
				delete(kv, key)
				return
			}
			b, _ := json.Marshal(v)
			kv[key] = string(b)
		})
	}
	pos := 0
	next := func(m int) int {
		if pos >= len(data) {
			return 0
		}
		b := int(data[pos])
		pos++
		return b % m
	}
	uid := func() string { return fmt.Sprintf("1.%d", next(8)) }
	bid := func() string { return fmt.Sprintf("b%d", next(3)) }
	hungup := map[string]bool{}
	var seq uint64
	for pos < len(data) {
		seq++
		ev := fuzzEvents[next(len(fuzzEvents))]
		m := &Message{StreamSeq: seq, Node: "pbx1", Session: "s", Seq: seq, Time: t0.Add(time.Duration(seq) * time.Second), Kind: KindEvent, Event: ev}
		f := MapFields{"Event": ev}
		u := uid()
		switch ev {
		case "_gap":
			m.Kind = KindGap
		case "_session_start":
			m.Kind = KindSessionStart
		case "_session_end":
			m.Kind = KindSessionEnd
		case "_snap_channels":
			m.Kind, m.Action = KindSnapshot, "CoreShowChannels"
			var items ItemList
			for i, k := 0, next(4); i < k; i++ {
				it := MapFields{"Event": "CoreShowChannel", "Uniqueid": uid(), "Channel": "x"}
				if next(2) == 1 {
					it["BridgeId"] = bid()
				}
				items = append(items, it)
			}
			m.Items, m.Truncated = items, next(4) == 0
		case "_snap_bridges":
			m.Kind, m.Action = KindSnapshot, "BridgeList"
			m.Items = ItemList{MapFields{"BridgeUniqueid": bid()}}
		case "_snap_queues":
			m.Kind, m.Action = KindSnapshot, "QueueStatus"
			m.Items = ItemList{MapFields{"Event": "QueueMember", "Queue": "q", "Location": "a"},
				MapFields{"Event": "QueueEntry", "Queue": "q", "Uniqueid": uid(), "Position": "1"}}
		case "_drain":
			drain()
			if record != nil {
				record(nil)
			}
			continue
		default:
			if next(8) != 0 { // mostly well-formed
				f["Uniqueid"] = u
				f["Channel"] = "PJSIP/" + u
				f["BridgeUniqueid"] = bid()
			}
			f["DestUniqueid"] = uid()
			f["LocalOneUniqueid"] = uid()
			f["LocalTwoUniqueid"] = uid()
			f["ToBridgeUniqueid"] = bid()
			f["FromBridgeUniqueid"] = bid()
			f["SwapUniqueid"] = uid()
			f["Newname"] = "renamed"
			f["Queue"] = "q"
			f["Interface"] = "a"
			f["Position"] = fmt.Sprint(next(4))
			f["Uptime"] = fmt.Sprint(next(5))
			f["ChannelState"] = fmt.Sprint(next(8))
			m.Fields = f
		}
		n.Apply(m)
		if record != nil {
			record(m)
		}
		if t == nil {
			continue
		}
		if ev == "Hangup" && f["Uniqueid"] != "" {
			hungup[f["Uniqueid"]] = true
		}
		if err := invariants(n); err != nil {
			t.Fatalf("after message %d (%s): %v", seq, ev, err)
		}
	}
	drain()
	if t == nil {
		return
	}
	want := map[string]string{}
	for id, c := range n.channels {
		b, _ := json.Marshal(c)
		want[Key("pbx1", EntityChannel, id)] = string(b)
	}
	for id, b := range n.bridges {
		v, _ := json.Marshal(b)
		want[Key("pbx1", EntityBridge, id)] = string(v)
	}
	for id, q := range n.queues {
		v, _ := json.Marshal(q)
		want[Key("pbx1", EntityQueue, id)] = string(v)
	}
	if !reflect.DeepEqual(kv, want) {
		t.Fatalf("drained keys differ from the state:\nkv   %v\nwant %v", kv, want)
	}
	for u := range hungup {
		if _, live := n.channels[u]; live {
			continue // a later snapshot said it is up
		}
		if _, ok := kv[Key("pbx1", EntityChannel, u)]; ok {
			t.Fatalf("key left for hung-up channel %s", u)
		}
	}
}

func FuzzApply(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add([]byte("the quick brown fox jumps over the lazy dog, twice over"))
	r := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 20; i++ {
		b := make([]byte, 400)
		for j := range b {
			b[j] = byte(r.UintN(256))
		}
		f.Add(b)
	}
	f.Fuzz(fuzzRun)
}

// TestRandomSequences runs the fuzz body over many seeded random inputs in
// every ordinary test run (the fuzz corpus alone is small).
func TestRandomSequences(t *testing.T) {
	for seed := uint64(0); seed < 300; seed++ {
		r := rand.New(rand.NewPCG(seed, 7))
		b := make([]byte, 2000)
		for j := range b {
			b[j] = byte(r.UintN(256))
		}
		t.Run(fmt.Sprint(seed), func(t *testing.T) { fuzzRun(t, b) })
	}
}
