package bench

import (
	"fmt"
	"strconv"
	"time"

	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/pkg/amiwire"
)

// This file generates what the ami-state benchmarks store in the event
// stream (staterig_test.go's envelopeWriter): session markers, channel
// snapshots and the events of calls, shaped like Asterisk 20's.

// sessionStart is the session_start marker of a session, as ami-ingest
// stores it after a login.
func sessionStart(session string, t time.Time) *eventq.Item {
	return &eventq.Item{Kind: eventq.KindSessionStart, Session: session, Time: t, Version: "9.0.0", Owner: "bench"}
}

// channelSnapshot is a CoreShowChannels snapshot of node listing n live,
// answered channels (Uniqueids <node>-snap.<i>).
func channelSnapshot(node, session string, seq uint64, t time.Time, n int) *eventq.Item {
	items := make([]*amiwire.Message, n)
	for i := range items {
		c := benchChannel{node: node, uid: fmt.Sprintf("%s-snap.%d", node, i), state: 6, exten: "100" + strconv.Itoa(i%10)}
		m := new(amiwire.Message)
		m.Add("Event", "CoreShowChannel")
		m.Add("ActionID", "amibus-snapshot-1")
		c.addBlock(m)
		m.Add("Application", "Dial")
		m.Add("ApplicationData", "PJSIP/"+c.exten+",30,tT")
		m.Add("Duration", "00:01:07")
		m.Add("BridgeId", "")
		items[i] = m
	}
	return &eventq.Item{Kind: eventq.KindSnapshot, Session: session, Seq: seq, Time: t, Action: "CoreShowChannels", Items: items, Total: n}
}

// benchChannel is one channel of the generated traffic.
type benchChannel struct {
	node, uid, exten string
	state            int
}

// channelStates are Asterisk's ChannelStateDesc for the states used here.
var channelStates = map[int]string{0: "Down", 4: "Ring", 5: "Ringing", 6: "Up"}

// addBlock appends the channel block every channel event carries, with
// values of the sizes a PJSIP channel of Asterisk 20 has.
func (c *benchChannel) addBlock(m *amiwire.Message) {
	m.Add("Channel", "PJSIP/"+c.exten+"-"+c.uid)
	m.Add("ChannelState", strconv.Itoa(c.state))
	m.Add("ChannelStateDesc", channelStates[c.state])
	m.Add("CallerIDNum", c.exten)
	m.Add("CallerIDName", "Bench Caller "+c.exten)
	m.Add("ConnectedLineNum", "<unknown>")
	m.Add("ConnectedLineName", "<unknown>")
	m.Add("Language", "en")
	m.Add("AccountCode", "")
	m.Add("Context", "from-internal")
	m.Add("Exten", c.exten)
	m.Add("Priority", "1")
	m.Add("Uniqueid", c.uid)
	m.Add("Linkedid", c.uid)
}

// channelEvent is event name of c: Event, Privilege, c's block, then the
// extra key, value pairs.
func channelEvent(name string, c *benchChannel, extra ...string) *amiwire.Message {
	m := new(amiwire.Message)
	m.Add("Event", name)
	m.Add("Privilege", "call,all")
	c.addBlock(m)
	for i := 0; i+1 < len(extra); i += 2 {
		m.Add(extra[i], extra[i+1])
	}
	return m
}

// callSteps is the life of one generated call leg, one event per step:
// created, dialplan, caller id, ringing, answered, on hold and back, hung
// up. A step with a state sets the channel's state before its event.
var callSteps = []struct {
	event string
	state int // -1: unchanged
	extra []string
}{
	{"Newchannel", 0, nil},
	{"Newexten", -1, []string{"Extension", "s", "Application", "Answer", "AppData", ""}},
	{"NewCallerid", -1, []string{"CID-CallingPres", "0 (Presentation Allowed, Not Screened)"}},
	{"Newstate", 4, nil},
	{"Newexten", -1, []string{"Extension", "s", "Application", "Dial", "AppData", "PJSIP/200,30"}},
	{"Newstate", 5, nil},
	{"Newstate", 6, nil},
	{"Hold", -1, []string{"MusicClass", "default"}},
	{"Unhold", -1, nil},
	{"Hangup", -1, []string{"Cause", "16", "Cause-txt", "Normal Clearing"}},
}

// callStep builds the event of step i of c's call.
func callStep(c *benchChannel, i int) *amiwire.Message {
	st := callSteps[i]
	if st.state >= 0 {
		c.state = st.state
	}
	return channelEvent(st.event, c, st.extra...)
}

// callTraffic generates call traffic on nodes: each node has slots call
// legs in progress; the nodes take turns, and a node's turn advances its
// next slot by burst steps at once (the events of a call come in bursts,
// so a key changes more than once between two flushes). A hung-up leg's
// slot starts a new call (a new Uniqueid) on its next turn.
type callTraffic struct {
	nodes []*trafficNode
	burst int
	turn  int
	out   []trafficEvent // reused by next
}

type trafficNode struct {
	name, session string
	seq           uint64 // the session's last event sequence
	slots         []trafficSlot
	next          int // the slot of the node's next turn
}

type trafficSlot struct {
	c     benchChannel
	call  int // calls started in this slot
	step  int // the next step of the current call
	index int
}

// trafficEvent is one generated event with its node and session position.
type trafficEvent struct {
	node, session string
	seq           uint64
	msg           *amiwire.Message
}

func newCallTraffic(names []string, slots, burst int) *callTraffic {
	t := &callTraffic{burst: burst}
	for _, name := range names {
		n := &trafficNode{name: name, session: "bench-" + name, slots: make([]trafficSlot, slots)}
		for i := range n.slots {
			n.slots[i].index = i
		}
		t.nodes = append(t.nodes, n)
	}
	return t
}

// next answers the events of the next node's turn (valid until the next
// call).
func (t *callTraffic) next() []trafficEvent {
	n := t.nodes[t.turn%len(t.nodes)]
	t.turn++
	s := &n.slots[n.next]
	n.next = (n.next + 1) % len(n.slots)
	t.out = t.out[:0]
	for range t.burst {
		if s.step == 0 {
			s.call++
			s.c = benchChannel{node: n.name, uid: fmt.Sprintf("%s-%d.%d", n.name, s.index, s.call), exten: strconv.Itoa(200 + s.index%800)}
		}
		n.seq++
		t.out = append(t.out, trafficEvent{node: n.name, session: n.session, seq: n.seq, msg: callStep(&s.c, s.step)})
		s.step = (s.step + 1) % len(callSteps)
	}
	return t.out
}

// live is how many generated channels of node are up (created, not hung
// up).
func (t *callTraffic) live(node string) int {
	live := 0
	for _, n := range t.nodes {
		if n.name != node {
			continue
		}
		for _, s := range n.slots {
			if s.step != 0 {
				live++
			}
		}
	}
	return live
}
