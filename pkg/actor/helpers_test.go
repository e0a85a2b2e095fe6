package actor_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/amibus/amibus/pkg/actor"
	"github.com/amibus/amibus/pkg/amisim"
	"github.com/amibus/amibus/pkg/config"
	"github.com/amibus/amibus/pkg/metrics"
	"github.com/amibus/amibus/pkg/natsconn"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// waitLimit bounds every wait for something that should happen promptly;
// reaching it fails the test rather than hanging it. Generous, for a busy
// two-core machine under -race.
const waitLimit = 20 * time.Second

func ctxLimit(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// startNATS runs an embedded nats-server with JetStream on a free port, as
// production runs it; maxPayload 0 keeps the 1 MiB default.
func startNATS(t testing.TB, maxPayload int32) *server.Server {
	t.Helper()
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		JetStream: true, StoreDir: t.TempDir(), MaxPayload: maxPayload,
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	if !ns.ReadyForConnections(waitLimit) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		ns.Shutdown()
		ns.WaitForShutdown()
	})
	return ns
}

// startSim runs a simulated PBX over real TCP.
func startSim(t testing.TB, cfg amisim.Config) *amisim.Server {
	t.Helper()
	s, err := amisim.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// deadAddr returns a loopback address nothing listens on: connecting to
// it is refused at once, the quickest kind of PBX that is down.
func deadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// node is one nodes: entry of a test configuration.
type node struct {
	name, addr string
}

// configYAML writes the shared configuration file ami-actor reads, so that
// the tests go through config.Parse like the binary. The actor logs in as
// ami2, its own AMI user, while ami-ingest would use ami. extra is YAML
// merged at the top level (actor: and session: blocks); sessions reconnect
// fast so that the tests do not wait on backoff.
func configYAML(natsURL string, nodes []node, extra string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "nats:\n  url: %s\nnodes:\n", natsURL)
	for _, n := range nodes {
		fmt.Fprintf(&b, "  - name: %s\n    address: %s\n    username: ami\n    secret: amisecret\n"+
			"    actor_username: ami2\n    actor_secret: amisecret2\n", n.name, n.addr)
	}
	b.WriteString(extra)
	if !strings.Contains(extra, "session:") {
		b.WriteString("session:\n  backoff_initial: 10ms\n  backoff_max: 100ms\n  dial_timeout: 2s\n  banner_timeout: 2s\n  login_timeout: 2s\n")
	}
	return b.String()
}

// fastSession is the session: block configYAML adds by default, for tests
// that set other session keys too.
const fastSession = "session:\n  backoff_initial: 10ms\n  backoff_max: 100ms\n  dial_timeout: 2s\n  banner_timeout: 2s\n  login_timeout: 2s\n"

// running is one ami-actor Service running in the test.
type running struct {
	svc *actor.Service
	m   *metrics.Metrics
	cfg *config.Config
	nc  *nats.Conn // the actor's own connection
	// stop ends Run and closes nc; safe to call more than once.
	stop func() error
	// ncOpenAfterRun: nc was still open when Run returned (set by stop).
	ncOpenAfterRun bool
}

// startActor parses yaml, connects to NATS as the binary does and runs a
// Service until the end of the test (or stop). It returns once every node
// in up has its AMI session logged in.
func startActor(t testing.TB, yaml string, up ...string) *running {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	return startActorConfig(t, cfg, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)), up...)
}

func startActorConfig(t testing.TB, cfg *config.Config, log *zap.Logger, up ...string) *running {
	t.Helper()
	r := launch(t, cfg, log)
	ready := ctxLimit(t)
	if err := r.svc.WaitUp(ready, up...); err != nil {
		t.Fatalf("AMI sessions of %v not up: %v", up, err)
	}
	select {
	case <-r.svc.Serving():
	case <-ready.Done():
		t.Fatal("the actor never subscribed")
	}
	if err := r.svc.Ready(); err != nil {
		t.Fatalf("Ready after subscribing: %v", err)
	}
	return r
}

// launch connects to NATS as the binary does (natsconn: retry forever)
// and runs a Service until the end of the test or stop, waiting for
// nothing.
func launch(t testing.TB, cfg *config.Config, log *zap.Logger) *running {
	t.Helper()
	nc, err := natsconn.Connect(cfg.NATS.URL, cfg.NATS, "ami-actor-test", log)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	svc, err := actor.New(cfg, nc, m, log)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	var once sync.Once
	var runErr error
	r := &running{svc: svc, m: m, cfg: cfg, nc: nc}
	r.stop = func() error {
		once.Do(func() {
			cancel()
			runErr = <-done
			r.ncOpenAfterRun = !nc.IsClosed()
			nc.Close()
		})
		return runErr
	}
	t.Cleanup(func() {
		if err := r.stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return r
}

// waitCond waits for cond where no signal exists to wait on (a gauge): it checks every 2 ms up to waitLimit. Everything else waits
// on a channel, amisim.WaitUntil or Service.WaitUp.
func waitCond(t testing.TB, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	limit := time.NewTimer(waitLimit)
	defer limit.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-limit.C:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

func simWait(t testing.TB, sim *amisim.Server, what string, cond func() bool) {
	t.Helper()
	if err := sim.WaitUntil(ctxLimit(t), cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

func connect(t testing.TB, ns *server.Server) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// reply is an action reply as requesters decode it.
type reply struct {
	OK       bool                              `json:"ok"`
	Node     string                            `json:"node"`
	Action   string                            `json:"action"`
	ActionID string                            `json:"action_id"`
	Response string                            `json:"response"`
	Message  string                            `json:"message"`
	Fields   map[string]any                    `json:"fields"`
	Events   []struct{ Fields map[string]any } `json:"events"`
	Output   []string                          `json:"output"`
	Elapsed  float64                           `json:"elapsed_ms"`
	Error    *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	raw []byte
}

// code is the error code, or "ok".
func (r reply) code() string {
	if r.OK {
		return "ok"
	}
	if r.Error == nil {
		return "<no error>"
	}
	return r.Error.Code
}

func (r reply) field(key string) string {
	s, _ := r.Fields[key].(string)
	return s
}

var (
	schemaOnce  sync.Once
	replySchema *jsonschema.Schema
	schemaErr   error
)

// checkReply checks data against the shipped reply schema and decodes it;
// safe to call from any goroutine.
func checkReply(data []byte) (reply, error) {
	schemaOnce.Do(func() {
		replySchema, schemaErr = jsonschema.NewCompiler().Compile(filepath.Join("..", "..", "schemas", "action-reply.schema.json"))
	})
	if schemaErr != nil {
		return reply{}, fmt.Errorf("compile schema: %w", schemaErr)
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return reply{}, fmt.Errorf("reply is not JSON: %w\n%s", err, data)
	}
	if err := replySchema.Validate(v); err != nil {
		return reply{}, fmt.Errorf("reply does not match action-reply.schema.json: %w\n%s", err, data)
	}
	var r reply
	if err := json.Unmarshal(data, &r); err != nil {
		return reply{}, fmt.Errorf("decode reply: %w\n%s", err, data)
	}
	r.raw = data
	return r, nil
}

// decodeReply is checkReply for the test goroutine.
func decodeReply(t testing.TB, data []byte) reply {
	t.Helper()
	r, err := checkReply(data)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// request sends one request and returns its checked reply.
func request(t testing.TB, nc *nats.Conn, subject, body string) reply {
	t.Helper()
	msg, err := nc.Request(subject, []byte(body), waitLimit)
	if err != nil {
		t.Fatalf("request %s %s: %v", subject, body, err)
	}
	return decodeReply(t, msg.Data)
}

// requestAsync sends a request and delivers its one reply on the channel.
func requestAsync(t testing.TB, nc *nats.Conn, subject, body string) <-chan *nats.Msg {
	t.Helper()
	ch := make(chan *nats.Msg, 1)
	inbox := nats.NewInbox()
	sub, err := nc.ChanSubscribe(inbox, ch)
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.AutoUnsubscribe(1); err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest(subject, inbox, []byte(body)); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return ch
}

func recvReply(t testing.TB, ch <-chan *nats.Msg) reply {
	t.Helper()
	select {
	case m := <-ch:
		return decodeReply(t, m.Data)
	case <-time.After(waitLimit):
		t.Fatal("no reply")
	}
	return reply{}
}

func wantCode(t testing.TB, r reply, code string) {
	t.Helper()
	if r.code() != code {
		t.Fatalf("reply %s, want code %s", r.raw, code)
	}
}

// receivedWith returns the actions the simulator received that carry the
// header key with a value starting with prefix.
func receivedWith(sim *amisim.Server, key, prefix string) []amisim.Action {
	var out []amisim.Action
	for _, a := range sim.Received() {
		if v, ok := header(a, key); ok && strings.HasPrefix(v, prefix) {
			out = append(out, a)
		}
	}
	return out
}

func header(a amisim.Action, key string) (string, bool) {
	for _, h := range a.Headers {
		if strings.EqualFold(h[0], key) {
			return h[1], true
		}
	}
	return "", false
}

// actionsBy returns the actions the simulator received from the actor's
// own user other than its login: what requests made reach the PBX.
func nonLogin(actions []amisim.Action) []amisim.Action {
	return slices.DeleteFunc(slices.Clone(actions), func(a amisim.Action) bool {
		return strings.EqualFold(a.Name, "Login")
	})
}

func outcome(m *metrics.Metrics, node, action, outcome string) float64 {
	return testutil.ToFloat64(m.Actions.WithLabelValues(node, action, outcome))
}

// outcomes sums ami_actions_total by outcome over every node and action.
func outcomes(t testing.TB, m *metrics.Metrics) map[string]int {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[string]int)
	for _, mf := range mfs {
		if mf.GetName() != "ami_actions_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			for _, l := range mt.GetLabel() {
				if l.GetName() == "outcome" {
					out[l.GetValue()] += int(mt.GetCounter().GetValue())
				}
			}
		}
	}
	return out
}
