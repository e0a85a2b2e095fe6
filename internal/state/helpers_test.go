package state

import (
	"fmt"
	"sort"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var t0 = time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)

// feeder applies messages to one node with increasing stream sequences and
// times, one second apart.
type feeder struct {
	n   *Node
	seq uint64
}

func newFeeder() *feeder { return &feeder{n: NewNode("pbx1")} }

func (f *feeder) next() (uint64, time.Time) {
	f.seq++
	return f.seq, t0.Add(time.Duration(f.seq) * time.Second)
}

// ev applies event name with fields given as key, value pairs.
func (f *feeder) ev(name string, kv ...string) {
	fs := MapFields{"Event": name}
	for i := 0; i+1 < len(kv); i += 2 {
		fs[kv[i]] = kv[i+1]
	}
	s, t := f.next()
	f.n.Apply(&Message{StreamSeq: s, Node: "pbx1", Session: "s1", Seq: s, Time: t, Kind: KindEvent, Event: name, Fields: fs})
}

func (f *feeder) marker(k Kind) {
	s, t := f.next()
	f.n.Apply(&Message{StreamSeq: s, Node: "pbx1", Session: "s1", Time: t, Kind: k})
}

func (f *feeder) snap(action string, truncated bool, items ...MapFields) {
	s, t := f.next()
	l := make(ItemList, len(items))
	for i := range items {
		l[i] = items[i]
	}
	f.n.Apply(&Message{StreamSeq: s, Node: "pbx1", Session: "s1", Time: t, Kind: KindSnapshot, Action: action, Items: l, Truncated: truncated})
}

// chanBlock is a full channel block as Asterisk sends it.
func chanBlock(uid, name string, state int) []string {
	desc := map[int]string{0: "Down", 4: "Ring", 5: "Ringing", 6: "Up"}[state]
	return []string{"Channel", name, "ChannelState", fmt.Sprint(state), "ChannelStateDesc", desc,
		"CallerIDNum", "100", "CallerIDName", "Alice", "ConnectedLineNum", "<unknown>", "ConnectedLineName", "<unknown>",
		"Language", "en", "AccountCode", "", "Context", "demo", "Exten", "100", "Priority", "1",
		"Uniqueid", uid, "Linkedid", uid}
}

func (f *feeder) newchannel(uid string) {
	f.ev("Newchannel", chanBlock(uid, "PJSIP/"+uid+"-0001", 0)...)
}

func (f *feeder) bridgeCreate(id string) {
	f.ev("BridgeCreate", "BridgeUniqueid", id, "BridgeType", "basic", "BridgeTechnology", "simple_bridge",
		"BridgeCreator", "<unknown>", "BridgeName", "<unknown>", "BridgeNumChannels", "0")
}

func (f *feeder) enter(id, uid string, extra ...string) {
	kv := append([]string{"BridgeUniqueid", id, "BridgeType", "basic"}, chanBlock(uid, "PJSIP/"+uid+"-0001", 6)...)
	f.ev("BridgeEnter", append(kv, extra...)...)
}

// checkInvariants fails t when the state breaks what every state must hold.
func checkInvariants(t testing.TB, n *Node) {
	t.Helper()
	if err := invariants(n); err != nil {
		t.Fatal(err)
	}
}

func invariants(n *Node) error {
	inBridge := map[string]string{}
	for id, b := range n.bridges {
		if !sort.StringsAreSorted(b.Members) {
			return fmt.Errorf("bridge %s members not sorted: %v", id, b.Members)
		}
		for _, uid := range b.Members {
			c, ok := n.channels[uid]
			if !ok {
				return fmt.Errorf("bridge %s member %s is not a live channel", id, uid)
			}
			if other, dup := inBridge[uid]; dup {
				return fmt.Errorf("channel %s in bridges %s and %s", uid, other, id)
			}
			inBridge[uid] = id
			if c.Bridge != id {
				return fmt.Errorf("channel %s says bridge %q, member of %s", uid, c.Bridge, id)
			}
		}
	}
	for uid, c := range n.channels {
		if c.Bridge != "" && inBridge[uid] != c.Bridge {
			return fmt.Errorf("channel %s says bridge %q, not a member", uid, c.Bridge)
		}
		if n.isTombstoned(uid) {
			return fmt.Errorf("channel %s live and tombstoned", uid)
		}
	}
	for name, q := range n.queues {
		for _, qc := range q.Callers {
			if _, ok := n.channels[qc.Uniqueid]; !ok {
				return fmt.Errorf("queue %s caller %s is not a live channel", name, qc.Uniqueid)
			}
		}
	}
	return nil
}
