package actor_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/amibus/amibus/internal/actor"
	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/daemon"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
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

// actorConfig is the configuration configYAML writes, read by config.Parse
// as the binary reads it.
func actorConfig(t testing.TB, natsURL string, nodes []node, extra string) *config.Config {
	t.Helper()
	yaml := configYAML(natsURL, nodes, extra)
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, yaml)
	}
	return cfg
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

// env is one NATS server, one simulated PBX (node pbx1) and one actor,
// plus a requester connection.
type env struct {
	ns  *testenv.NATS
	sim *amisim.Server
	nc  *nats.Conn
	act *running
	// logs records the actor's log lines at info and above, for a test
	// that counts them.
	logs *observer.ObservedLogs
}

// newEnv starts an env. withDown adds a node "down" whose address refuses
// connections; extra is appended to the configuration file.
func newEnv(t *testing.T, simCfg amisim.Config, maxPayload int32, withDown bool, extra string) *env {
	t.Helper()
	ns := testenv.StartNATS(t, testenv.MaxPayload(maxPayload))
	if simCfg.Node == "" {
		simCfg.Node = "pbx1"
	}
	sim := testenv.StartSim(t, simCfg)
	nodes := []node{{"pbx1", sim.Addr()}}
	if withDown {
		nodes = append(nodes, node{"down", testenv.DeadAddr(t)})
	}
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Core(), core))
	act := startActorConfig(t, actorConfig(t, ns.ClientURL(), nodes, extra), log, "pbx1")
	return &env{ns: ns, sim: sim, nc: testenv.Connect(t, ns.ClientURL()), act: act, logs: logs}
}

// sessionsEnded counts the AMI sessions the actor logged as ended.
func (e *env) sessionsEnded() int {
	return e.logs.FilterMessage("AMI session ended").Len()
}

// launch connects to NATS as the binary does (daemon.ConnectNATS: retry forever)
// and runs a Service until the end of the test or stop, waiting for
// nothing.
func launch(t testing.TB, cfg *config.Config, log *zap.Logger) *running {
	t.Helper()
	nc, err := daemon.ConnectNATS(cfg.NATS.URL, cfg.NATS, "ami-actor-test", log)
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	svc, err := actor.New(cfg, nc, m, log)
	if err != nil {
		nc.Close()
		t.Fatal(err)
	}
	run := testenv.Go(t, "Service.Run", svc.Run)
	var once sync.Once
	var runErr error
	r := &running{svc: svc, m: m, cfg: cfg, nc: nc}
	r.stop = func() error {
		once.Do(func() {
			runErr = run()
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

// reply is an action reply as requesters decode it.
type reply = testenv.Reply[string]

// request sends one request and returns its checked reply.
func request(t testing.TB, nc *nats.Conn, subject, body string) reply {
	t.Helper()
	msg, err := nc.Request(subject, []byte(body), waitLimit)
	if err != nil {
		t.Fatalf("request %s %s: %v", subject, body, err)
	}
	return testenv.DecodeReply[string](t, msg.Data)
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
		return testenv.DecodeReply[string](t, m.Data)
	case <-time.After(waitLimit):
		t.Fatal("no reply")
	}
	return reply{}
}

func wantCode(t testing.TB, r reply, code string) {
	t.Helper()
	if r.Outcome() != code {
		t.Fatalf("reply %s, want code %s", r.Raw, code)
	}
}

// received counts the actions named name the simulator received.
func received(sim *amisim.Server, name string) int {
	n := 0
	for _, a := range sim.Received() {
		if a.Name == name {
			n++
		}
	}
	return n
}

// receivedWith returns the actions the simulator received that carry the
// header key with a value starting with prefix.
func receivedWith(sim *amisim.Server, key, prefix string) []amisim.Action {
	var out []amisim.Action
	for _, a := range sim.Received() {
		if v, ok := a.Header(key); ok && strings.HasPrefix(v, prefix) {
			out = append(out, a)
		}
	}
	return out
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
