package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/internal/state"
	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/publish"
)

// This file is the rig of the ami-state benchmarks: ami-state as a
// subprocess, a writer that stores messages in the event stream exactly as
// ami-ingest's publisher encodes them (pkg/publish's envelope), a generator
// of call traffic, and a watcher of the state bucket.

// stateFlush is ami-state's flush interval in these benchmarks: its
// default, the one the targets are stated for.
const stateFlush = 50 * time.Millisecond

// seedLimit bounds the wait for the acknowledgements of a stream seeded
// with up to millions of messages.
const seedLimit = 10 * time.Minute

// startState runs ami-state on the NATS server at natsURL and returns once
// it reads the stream (its bucket exists). It reads every node of the
// stream (no state.ha); the one node of the file is there because the
// shared file format requires a node list. env is added to its
// environment.
func startState(b *testing.B, natsURL string, env ...string) *mainProc {
	b.Helper()
	p := startMain(b, "ami-state", env, fmt.Sprintf(`nats:
  url: %s
nodes:
  - {name: pbx1, address: '127.0.0.1:1', username: u, secret: s}
%sstate:
  flush_interval: %v
`, natsURL, procHTTP, stateFlush))
	p.WaitLine(`"msg":"state: running"`)
	return p
}

// envelopeWriter stores messages in the event stream as ami-ingest does:
// the payloads of pkg/publish's AppendEvent and AppendMeta on its
// subjects, published asynchronously (at most 4096 unacknowledged). It
// keeps each node's highest acknowledged stream sequence.
type envelopeWriter struct {
	js    jetstream.JetStream
	onAck func(node string, seq uint64, at time.Time) // optional, in the ack handler

	mu     sync.Mutex
	last   map[string]uint64 // node -> highest acknowledged stream sequence; one entry per node written
	failed int
	err    error // the first failure
}

// newEnvelopeWriter creates the event stream (file storage, as ami-ingest
// creates it) on nc; onAck, if set, sees every acknowledgement as it comes.
func newEnvelopeWriter(b *testing.B, nc *nats.Conn, onAck func(node string, seq uint64, at time.Time)) *envelopeWriter {
	b.Helper()
	w := &envelopeWriter{onAck: onAck, last: map[string]uint64{}}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncAckHandler(w.acked), jetstream.WithPublishAsyncErrHandler(w.refused))
	if err != nil {
		b.Fatal(err)
	}
	w.js = js
	if _, err := publish.EnsureStream(ctxT(b), js, publish.StreamConfig{}); err != nil {
		b.Fatal(err)
	}
	return w
}

// nodeOf is the node token of a subject <prefix>.events.<node>.<token>.
func nodeOf(subject string) string {
	f := strings.Split(subject, ".")
	if len(f) < 4 {
		return ""
	}
	return f[len(f)-2]
}

func (w *envelopeWriter) acked(_ jetstream.JetStream, m *nats.Msg, a *jetstream.PubAck) {
	now := time.Now()
	node := nodeOf(m.Subject)
	w.mu.Lock()
	w.last[node] = max(w.last[node], a.Sequence)
	w.mu.Unlock()
	if w.onAck != nil {
		w.onAck(node, a.Sequence, now)
	}
}

func (w *envelopeWriter) refused(_ jetstream.JetStream, m *nats.Msg, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failed++
	if w.err == nil {
		w.err = fmt.Errorf("%s: %w", m.Subject, err)
	}
}

// event stores one AMI event of node's session at session sequence seq.
func (w *envelopeWriter) event(b *testing.B, node, session string, seq uint64, t time.Time, m *amiwire.Message) {
	it := eventq.Item{Kind: eventq.KindEvent, Session: session, Seq: seq, Time: t, Msg: m}
	// A fresh buffer per message: nats.go keeps the message until its ack.
	w.publish(b, publish.EventSubject(publish.DefaultPrefix, node, m.Name()), publish.AppendEvent(nil, node, &it, nil))
}

// meta stores a session start, session end, gap or snapshot item of node.
func (w *envelopeWriter) meta(b *testing.B, node string, it *eventq.Item) {
	w.publish(b, publish.MetaSubject(publish.DefaultPrefix, node), publish.AppendMeta(nil, node, it, nil, publish.SnapshotLimits{}))
}

func (w *envelopeWriter) publish(b *testing.B, subject string, data []byte) {
	if _, err := w.js.PublishAsync(subject, data); err != nil {
		b.Fatal(err)
	}
}

// wait returns once every message is acknowledged, and fails the benchmark
// if one was refused; it answers each node's last stream sequence.
func (w *envelopeWriter) wait(b *testing.B) map[string]uint64 {
	b.Helper()
	select {
	case <-w.js.PublishAsyncComplete():
	case <-time.After(seedLimit):
		b.Fatalf("%d publishes still unacknowledged after %v", w.js.PublishAsyncPending(), seedLimit)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed > 0 {
		b.Fatalf("%d publishes refused, the first: %v", w.failed, w.err)
	}
	last := make(map[string]uint64, len(w.last))
	for n, s := range w.last {
		last[n] = s
	}
	return last
}

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

// stateWatch follows every key of the state bucket (a KV watcher in the
// benchmark, as a consumer of the bucket sees it), handing each update to
// its hooks and keeping each node's last status sequence.
type stateWatch struct {
	w        jetstream.KeyWatcher
	done     chan struct{}
	onStatus func(st state.Status, at time.Time) // in the watch goroutine
	onKey    func(key string, at time.Time)      // a channel, bridge or queue key put or deleted

	mu      sync.Mutex
	seqs    map[string]uint64 // node -> last status sequence; one entry per node of the bucket
	changed chan struct{}     // capacity 1: a status came
}

// statusSuffix ends every status key.
var statusSuffix = state.StatusKey("")

// watchState watches the bucket ami-state created on nc's server; the
// benchmark's cleanup stops the watcher and waits for its goroutine.
func watchState(b *testing.B, nc *nats.Conn, onStatus func(state.Status, time.Time), onKey func(string, time.Time)) *stateWatch {
	b.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	kv, err := js.KeyValue(ctxT(b), state.DefaultBucket)
	if err != nil {
		b.Fatal(err)
	}
	s := &stateWatch{done: make(chan struct{}), onStatus: onStatus, onKey: onKey, seqs: map[string]uint64{}, changed: make(chan struct{}, 1)}
	s.w, err = kv.WatchAll(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	go s.run()
	b.Cleanup(func() {
		_ = s.w.Stop()
		<-s.done
	})
	return s
}

func (s *stateWatch) run() {
	defer close(s.done)
	for e := range s.w.Updates() {
		if e == nil {
			continue // the end of the initial values
		}
		at := time.Now()
		if !strings.HasSuffix(e.Key(), statusSuffix) {
			if s.onKey != nil {
				s.onKey(e.Key(), at)
			}
			continue
		}
		var st state.Status
		if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &st) != nil {
			continue
		}
		if s.onStatus != nil {
			s.onStatus(st, at)
		}
		s.mu.Lock()
		s.seqs[st.Node] = max(s.seqs[st.Node], st.Seq)
		s.mu.Unlock()
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
}

// waitApplied returns once the status of every node of want is at or past
// its stream sequence there: ami-state has applied and flushed everything
// stored. diag describes ami-state when it has not within limit.
func (s *stateWatch) waitApplied(b *testing.B, want map[string]uint64, limit time.Duration, diag func() string) {
	b.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		behind := 0
		for n, seq := range want {
			if s.seqs[n] < seq {
				behind++
			}
		}
		s.mu.Unlock()
		if behind == 0 {
			return
		}
		select {
		case <-s.changed:
		case <-deadline.C:
			b.Fatalf("%d of %d nodes not applied after %v\n%s", behind, len(want), limit, diag())
		}
	}
}

// stateDiag is the accounting of ami-state from its /metrics and the end of
// its log, for a failure message.
func stateDiag(b *testing.B, p *mainProc) func() string {
	return func() string {
		text := p.metrics(b)
		return fmt.Sprintf("ami-state: applied %v, invalid %v, bad %v, kv writes %v (errors %v), lag %v messages\n%s",
			sumMetric(text, "ami_state_events_applied_total"), sumMetric(text, "ami_state_messages_invalid_total"),
			sumMetric(text, "ami_state_bad_events_total"), sumMetric(text, "ami_state_kv_writes_total"),
			sumMetric(text, "ami_state_kv_write_errors_total"), sumMetric(text, "ami_state_projection_lag_messages"), p.lastLines())
	}
}
