package ingest

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/daemon"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
	"github.com/amibus/amibus/pkg/publish"
)

// waitLimit bounds every wait of these tests: reaching it is a hang, not a
// slow machine, and fails the test.
const waitLimit = 30 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// leakCheck registers goleak first, so it runs after every other cleanup
// (service, NATS, simulators) has stopped its goroutines.
func leakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// connect connects as ami-ingest does: reconnecting forever, with nats.go's
// reconnect buffer off (the publisher requires it).
func connect(t *testing.T, url string) *nats.Conn {
	t.Helper()
	nc, err := daemon.ConnectNATS(url, config.NATS{}, "ingest-test", zap.NewNop(), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// nodesYAML is the nodes: block for sims, with extra lines (indented for
// a node's mapping) added to node i by perNode.
func nodesYAML(sims []*amisim.Server, perNode func(i int) string) string {
	var b strings.Builder
	b.WriteString("nodes:\n")
	for i, s := range sims {
		fmt.Fprintf(&b, "  - name: %s\n    address: %s\n    username: ami\n    secret: amisecret\n", s.Node(), s.Addr())
		if perNode != nil {
			b.WriteString(perNode(i))
		}
	}
	return b.String()
}

// startNATSFor starts a NATS server, writes the configuration for sims
// with quick reconnects and extra top-level YAML, connects, and creates the
// stream as ami-ingest does.
func startNATSFor(t *testing.T, sims []*amisim.Server, extra string) (*testenv.NATS, *config.Config, *nats.Conn) {
	t.Helper()
	ns := testenv.StartNATS(t)
	cfg := parseConfig(t, natsHead(ns)+nodesYAML(sims, nil)+extra)
	nc := connect(t, ns.ClientURL())
	preCreateStream(t, nc, cfg)
	return ns, cfg, nc
}

// startRig is startNATSFor with a reader of the stream from its start.
func startRig(t *testing.T, sims []*amisim.Server, extra string) (*testenv.NATS, *config.Config, *nats.Conn, *streamReader) {
	t.Helper()
	ns, cfg, nc := startNATSFor(t, sims, extra)
	return ns, cfg, nc, newStreamReader(t, nc, "AMI_EVENTS")
}

// testSession makes reconnects quick; the rest keeps its defaults.
const testSession = `session:
  backoff_initial: 10ms
  backoff_max: 200ms
  auth_failure_backoff: 200ms
`

// natsHead is the start of a configuration on ns with testSession; the
// nodes follow.
func natsHead(ns *testenv.NATS) string {
	return "nats: {url: " + ns.ClientURL() + "}\n" + testSession
}

func parseConfig(t *testing.T, yaml string) *config.Config {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	return cfg
}

// running is a Service started by startService.
type running struct {
	svc  *Service
	m    *metrics.Metrics
	stop func() error
}

// startService runs the ingest on nc until the test stops it (or ends).
func startService(t *testing.T, cfg *config.Config, nc *nats.Conn, log *zap.Logger, tune ...func(*Service)) *running {
	t.Helper()
	if log == nil {
		log = zap.NewNop()
	}
	m := metrics.New()
	svc, err := New(cfg, nc, m, log)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range tune {
		f(svc)
	}
	return &running{svc: svc, m: m, stop: testenv.Go(t, "Service.Run", svc.Run)}
}

// startServiceLogged is startService with a logger that keeps every line
// at info level and above, for the test to look for the ones it expects
// (or must not see).
func startServiceLogged(t *testing.T, cfg *config.Config, nc *nats.Conn, tune ...func(*Service)) (*running, *observer.ObservedLogs) {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	return startService(t, cfg, nc, zap.New(core), tune...), logs
}

// field is one key of an event's "fields" object, in order.
type field struct {
	Key    string
	Values []string
	Array  bool
}

// record is one message of the stream, decoded.
type record struct {
	Subject   string
	MsgID     string
	StreamSeq uint64
	Data      []byte

	Node    string `json:"node"`
	Event   string `json:"event"`
	Type    string `json:"type"`
	Session string `json:"session"`
	Seq     uint64 `json:"seq"`
	Time    string `json:"time"`

	Version   string            `json:"version"`
	Owner     string            `json:"owner"`
	Reason    string            `json:"reason"`
	LastSeq   uint64            `json:"last_seq"`
	FirstSeq  uint64            `json:"first_seq"`
	Count     uint64            `json:"count"`
	Action    string            `json:"action"`
	Items     []json.RawMessage `json:"items"`
	Truncated bool              `json:"truncated"`
	Total     int               `json:"total"`

	RawFields json.RawMessage `json:"fields"`
	Fields    []field         `json:"-"`
}

func (r *record) meta() bool { return strings.HasSuffix(r.Subject, "._meta") }

func (r record) String() string {
	if r.meta() {
		switch r.Type {
		case "gap":
			return fmt.Sprintf("#%d gap %s %d..%d (%d, %s)", r.StreamSeq, r.Session, r.FirstSeq, r.LastSeq, r.Count, r.Reason)
		case "session_end":
			return fmt.Sprintf("#%d session_end %s %s last_seq=%d", r.StreamSeq, r.Session, r.Reason, r.LastSeq)
		}
		return fmt.Sprintf("#%d %s %s", r.StreamSeq, r.Type, r.Session)
	}
	return fmt.Sprintf("#%d %s %s seq=%d", r.StreamSeq, r.Event, r.Session, r.Seq)
}

func decodeRecord(subject string, hdr nats.Header, data []byte, streamSeq uint64) (record, error) {
	r := record{Subject: subject, MsgID: hdr.Get(jetstream.MsgIDHeader), StreamSeq: streamSeq, Data: bytes.Clone(data)}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		return r, fmt.Errorf("stream message %d on %s: %w: %s", streamSeq, subject, err, data)
	}
	if r.RawFields != nil {
		fs, err := orderedFields(r.RawFields)
		if err != nil {
			return r, fmt.Errorf("stream message %d on %s: %w", streamSeq, subject, err)
		}
		r.Fields = fs
	}
	return r, nil
}

// orderedFields decodes a "fields" object keeping its key order, which a
// map would lose.
func orderedFields(raw []byte) ([]field, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	if d, err := dec.Token(); err != nil || d != json.Delim('{') {
		return nil, fmt.Errorf("fields is not an object: %s", raw)
	}
	var out []field
	for dec.More() {
		tk, err := dec.Token()
		key, ok := tk.(string)
		if err != nil || !ok {
			return nil, fmt.Errorf("fields %s: bad key", raw)
		}
		f := field{Key: key}
		tk, err = dec.Token()
		if err != nil {
			return nil, fmt.Errorf("fields %s: %w", raw, err)
		}
		switch v := tk.(type) {
		case string:
			f.Values = []string{v}
		case json.Delim:
			if v != '[' {
				return nil, fmt.Errorf("fields %s: %q holds an object", raw, key)
			}
			f.Array = true
			for dec.More() {
				tk, err := dec.Token()
				s, ok := tk.(string)
				if err != nil || !ok {
					return nil, fmt.Errorf("fields %s: %q holds a non-string", raw, key)
				}
				f.Values = append(f.Values, s)
			}
			if _, err := dec.Token(); err != nil { // ]
				return nil, fmt.Errorf("fields %s: %w", raw, err)
			}
		default:
			return nil, fmt.Errorf("fields %s: %q is %T, want string or array", raw, key, v)
		}
		out = append(out, f)
	}
	return out, nil
}

// expectedFields is what the contract says an AMI message becomes: its
// keys in order of first appearance, a repeated key as the array of its
// values in order.
func expectedFields(headers [][2]string) []field {
	var out []field
	idx := map[string]int{}
	for _, h := range headers {
		if i, ok := idx[h[0]]; ok {
			out[i].Values = append(out[i].Values, h[1])
			out[i].Array = true
			continue
		}
		idx[h[0]] = len(out)
		out = append(out, field{Key: h[0], Values: []string{h[1]}})
	}
	return out
}

func fieldsEqual(a, b []field) bool {
	return slices.EqualFunc(a, b, func(x, y field) bool {
		return x.Key == y.Key && x.Array == y.Array && slices.Equal(x.Values, y.Values)
	})
}

func fieldValue(fs []field, key string) string {
	for _, f := range fs {
		if f.Key == key && len(f.Values) > 0 {
			return f.Values[0]
		}
	}
	return ""
}

// sentTo returns the events sim wrote to connection conn.
func sentTo(sim *amisim.Server, conn int) []amisim.SentEvent {
	var out []amisim.SentEvent
	for _, e := range sim.SentEvents() {
		if e.Conn == conn {
			out = append(out, e)
		}
	}
	return out
}

// loginConns returns, in order, the connections on which user ami logged
// in to sim (sent Login): one per ingest session.
func loginConns(sim *amisim.Server) []int {
	var out []int
	for _, a := range sim.Received() {
		if strings.EqualFold(a.Name, "Login") {
			out = append(out, a.Conn)
		}
	}
	return out
}

// checkSessionEvents asserts that node's event records of session are the
// events sim sent on conn, in order, numbered 1..n, byte for byte in every
// value, each with Nats-Msg-Id "<session>-<seq>" and subject
// ami.events.<node>.<Event>. It returns the number compared.
func checkSessionEvents(t *testing.T, recs []record, node, session string, sent []amisim.SentEvent) int {
	t.Helper()
	var evs []record
	for _, r := range recs {
		if r.Node == node && r.Session == session && !r.meta() {
			evs = append(evs, r)
		}
	}
	if len(evs) != len(sent) {
		t.Fatalf("%s session %s: %d events in the stream, the PBX sent %d", node, session, len(evs), len(sent))
	}
	for i, r := range evs {
		want := expectedFields(sent[i].Headers)
		name := want[0].Values[0]
		switch {
		case r.Seq != uint64(i+1):
			t.Fatalf("%s: event %d has seq %d", node, i+1, r.Seq)
		case r.Event != name:
			t.Fatalf("%s seq %d: event %q, the PBX sent %q", node, r.Seq, r.Event, name)
		case r.Subject != "ami.events."+node+"."+name:
			t.Fatalf("%s seq %d: subject %q", node, r.Seq, r.Subject)
		case r.MsgID != fmt.Sprintf("%s-%d", session, r.Seq):
			t.Fatalf("%s seq %d: Nats-Msg-Id %q", node, r.Seq, r.MsgID)
		case r.Node != node:
			t.Fatalf("seq %d: node %q", r.Seq, r.Node)
		case !fieldsEqual(r.Fields, want):
			t.Fatalf("%s seq %d: fields differ\n got: %v\nwant: %v", node, r.Seq, r.Fields, want)
		}
		if _, err := time.Parse(time.RFC3339Nano, r.Time); err != nil {
			t.Fatalf("%s seq %d: time %q: %v", node, r.Seq, r.Time, err)
		}
	}
	return len(evs)
}

// checkHistory asserts the shape of one node's history: every session opens
// with session_start, its events and gaps cover 1..last exactly once and in
// order (a gap's count equals its range), and a session_end, if any, closes
// it with last_seq = the last number covered. It returns, per session in
// order, the number of events and the number covered by gaps.
func checkHistory(t *testing.T, recs []record, node string) (sessions []string, events, gapped map[string]uint64) {
	t.Helper()
	events, gapped = map[string]uint64{}, map[string]uint64{}
	var cur string
	var next uint64 = 1
	open := false
	for _, r := range nodeRecords(recs, node) {
		if r.meta() {
			switch r.Type {
			case "session_start":
				if open {
					t.Fatalf("%s: %v while session %s open", node, r, cur)
				}
				cur, next, open = r.Session, 1, true
				sessions = append(sessions, cur)
				if r.MsgID != cur+"-start" {
					t.Fatalf("%s: session_start Nats-Msg-Id %q", node, r.MsgID)
				}
				continue
			case "snapshot":
			case "gap":
				if r.FirstSeq != next || r.LastSeq < r.FirstSeq || r.Count != r.LastSeq-r.FirstSeq+1 {
					t.Fatalf("%s: %v, next expected seq %d", node, r, next)
				}
				gapped[cur] += r.Count
				next = r.LastSeq + 1
			case "session_end":
				if r.LastSeq != next-1 {
					t.Fatalf("%s: %v, but the history covers 1..%d", node, r, next-1)
				}
				open = false
			default:
				t.Fatalf("%s: unknown meta type %q", node, r.Type)
			}
			if r.Session != cur {
				t.Fatalf("%s: %v outside its session (current %s)", node, r, cur)
			}
			continue
		}
		if !open || r.Session != cur {
			t.Fatalf("%s: %v outside an open session (current %s)", node, r, cur)
		}
		if r.Seq != next {
			t.Fatalf("%s: %v, expected seq %d (a hole with no gap marker, or out of order)", node, r, next)
		}
		next++
		events[cur]++
	}
	return sessions, events, gapped
}

// preCreateStream creates the events stream as the ingest would, so that a
// reader can attach before the ingest starts.
func preCreateStream(t *testing.T, nc *nats.Conn, cfg *config.Config) {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if _, err := publish.EnsureStream(ctx, js, streamConfig(cfg)); err != nil {
		t.Fatal(err)
	}
}

// threeCalls runs traffic on sim until at least three calls are up, then
// stops it and waits until the calls are settled.
func threeCalls(t *testing.T, sim *amisim.Server) {
	t.Helper()
	sim.StartTraffic(50)
	testenv.WaitSim(t, sim, "three calls", func() bool { return sim.LiveCalls() >= 3 })
	sim.StopTraffic()
	waitCallsSettled(t, sim)
}

// waitCallsSettled waits, after the traffic stopped, until every live call
// (one at least) has its four channels: the calls' set-up is complete, and
// a call's next event comes at 0.504/3.007 of CallDuration.
func waitCallsSettled(t *testing.T, sim *amisim.Server) {
	t.Helper()
	testenv.WaitSim(t, sim, "the calls' channels", func() bool {
		return sim.LiveCalls() > 0 && len(sim.LiveChannels()) == 4*sim.LiveCalls()
	})
}
