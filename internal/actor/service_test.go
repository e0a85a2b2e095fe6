package actor_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"github.com/amibus/amibus/internal/actor"
	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/daemon"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// TestTwoReplicasOneQueueGroup runs two actors side by side: each request
// is answered exactly once, by one of them, and runs once on the PBX.
func TestTwoReplicasOneQueueGroup(t *testing.T) {
	const total = 200
	ns := testenv.StartNATS(t)
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx1"})
	yaml := configYAML(ns.ClientURL(), []node{{"pbx1", sim.Addr()}}, "")
	a := startActor(t, yaml, "pbx1")
	b := startActor(t, yaml, "pbx1")
	if got := sim.ActiveSessions("ami2"); got != 2 {
		t.Fatalf("%d actor sessions logged in as ami2, want one per replica", got)
	}
	nc := testenv.Connect(t, ns.ClientURL())

	var mu sync.Mutex
	counts := make(map[int]int)
	got := make(chan struct{}, total)
	sub, err := nc.Subscribe("replicas.>", func(m *nats.Msg) {
		id, _ := strconv.Atoi(strings.TrimPrefix(m.Subject, "replicas."))
		mu.Lock()
		counts[id]++
		mu.Unlock()
		got <- struct{}{} // capacity total: a duplicate beyond it would block, so it is counted first
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range total {
		body := fmt.Sprintf(`{"action":"Ping","fields":{"Marker":"r-%d"}}`, i)
		if err := nc.PublishRequest("ami.action.pbx1", "replicas."+strconv.Itoa(i), []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	for range total {
		select {
		case <-got:
		case <-time.After(waitLimit):
			t.Fatal("not every request was answered")
		}
	}
	// Both stop gracefully (answering and flushing everything), so a
	// second reply would be delivered before this flush returns.
	for _, r := range []*running{a, b} {
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	closed := sub.StatusChanged(nats.SubscriptionClosed)
	if err := sub.Drain(); err != nil {
		t.Fatal(err)
	}
	<-closed
	mu.Lock()
	defer mu.Unlock()
	for i := range total {
		if counts[i] != 1 {
			t.Errorf("request %d answered %d times", i, counts[i])
		}
	}
	na, nb := outcome(a.m, "pbx1", "Ping", "ok"), outcome(b.m, "pbx1", "Ping", "ok")
	t.Logf("replica a answered %v, replica b %v", na, nb)
	if na+nb != total || na == 0 || nb == 0 {
		t.Errorf("replicas answered %v + %v, want %d shared between both", na, nb, total)
	}
	seen := make(map[string]int)
	for _, act := range receivedWith(sim, "Marker", "r-") {
		v, _ := act.Header("Marker")
		seen[v]++
	}
	for i := range total {
		if n := seen[fmt.Sprintf("r-%d", i)]; n != 1 {
			t.Errorf("r-%d reached the PBX %d times", i, n)
		}
	}
}

// TestActorSessionIdentity: the actor logs in with its own AMI user and
// with events off, so that the PBX sends it nothing but answers.
func TestActorSessionIdentity(t *testing.T) {
	e := newEnv(t, amisim.Config{}, 0, false, "")
	if n := e.sim.ActiveSessions("ami"); n != 0 {
		t.Errorf("%d sessions as the ingest's user ami", n)
	}
	var logins []amisim.Action
	for _, a := range e.sim.Received() {
		if a.Name == "Login" {
			logins = append(logins, a)
		}
	}
	if len(logins) != 1 {
		t.Fatalf("%d logins, want 1", len(logins))
	}
	if u, _ := logins[0].Header("Username"); u != "ami2" {
		t.Errorf("login as %q, want actor_username ami2", u)
	}
	if ev, _ := logins[0].Header("Events"); ev != "off" {
		t.Errorf("login with Events: %q, want off", ev)
	}
	e.sim.Emit("UserEvent", [2]string{"UserEvent", "probe"})
	wantCode(t, request(t, e.nc, "ami.action.pbx1.Ping", ``), "ok")
	if n := e.sim.SentEventCount(); n != 0 {
		t.Errorf("the PBX sent the actor %d events", n)
	}
}

// TestGracefulShutdownOrder: on shutdown a request in flight still gets
// the PBX's answer (the command server drains before the sessions close),
// then the sessions log off, and the NATS connection is left to its owner.
func TestGracefulShutdownOrder(t *testing.T) {
	e := newEnv(t, amisim.Config{}, 0, false, "")
	// Longer than the session's Logoff timeout (1 s): were the sessions
	// closed first, their Logoff would give up before this answer and the
	// request would be answered disconnected.
	e.sim.SetAnswerDelay("Ping", 1500*time.Millisecond)
	ch := requestAsync(t, e.nc, "ami.action.pbx1", `{"action":"Ping","fields":{"Marker":"inflight"}}`)
	testenv.WaitSim(t, e.sim, "the in-flight Ping", func() bool { return len(receivedWith(e.sim, "Marker", "inflight")) == 1 })

	svcDone := make(chan error, 1)
	go func() { svcDone <- e.act.stop() }()
	r := recvReply(t, ch)
	wantCode(t, r, "ok")
	if err := <-svcDone; err != nil {
		t.Fatalf("Run: %v", err)
	}
	if err := e.act.svc.Ready(); err == nil {
		t.Error("Ready after shutdown")
	}
	testenv.WaitSim(t, e.sim, "the actor to log off", func() bool { return e.sim.ActiveSessions("ami2") == 0 })
	var names []string
	for _, a := range nonLogin(e.sim.Received()) {
		names = append(names, a.Name)
	}
	if strings.Join(names, ",") != "Ping,Logoff" {
		t.Errorf("the PBX received %v, want the Ping answered, then Logoff", names)
	}
	if !e.act.ncOpenAfterRun {
		t.Error("Run closed the NATS connection it does not own")
	}
	if err := e.act.svc.Run(context.Background()); !errors.Is(err, actor.ErrRunTwice) {
		t.Errorf("second Run: %v, want ErrRunTwice", err)
	}
}

// TestWaitsForNATS: an actor started before NATS subscribes once NATS is
// there (daemon.ConnectNATS retries the first connection), is not ready meanwhile,
// and a stop while it waits returns at once and cleanly.
func TestWaitsForNATS(t *testing.T) {
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx1"})
	addr := testenv.DeadAddr(t)
	_, portStr, _ := strings.Cut(addr, ":")
	port, _ := strconv.Atoi(portStr)
	cfg, err := config.Parse([]byte(configYAML("nats://"+addr, []node{{"pbx1", sim.Addr()}}, "")))
	if err != nil {
		t.Fatal(err)
	}
	log := zaptest.NewLogger(t)

	t.Run("stop while waiting", func(t *testing.T) {
		nc, err := daemon.ConnectNATS(cfg.NATS.URL, cfg.NATS, "t", log)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		svc, err := actor.New(cfg, nc, metrics.New(), log)
		if err != nil {
			t.Fatal(err)
		}
		stop := testenv.Go(t, "Run", svc.Run)
		if err := svc.WaitUp(ctxLimit(t), "pbx1"); err != nil {
			t.Fatal(err)
		}
		if err := svc.Ready(); err == nil || !strings.Contains(err.Error(), "nats") {
			t.Errorf("Ready without NATS: %v", err)
		}
		if err := stop(); err != nil {
			t.Errorf("Run: %v", err)
		}
		testenv.WaitSim(t, sim, "the session to log off", func() bool { return sim.ActiveSessions("ami2") == 0 })
	})

	t.Run("NATS comes later", func(t *testing.T) {
		r := launch(t, cfg, log)
		if err := r.svc.WaitUp(ctxLimit(t), "pbx1"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-r.svc.Serving():
			t.Fatal("serving without NATS")
		default:
		}
		ns := testenv.StartNATS(t, testenv.NoJetStream(), testenv.Port(port))
		select {
		case <-r.svc.Serving():
		case <-time.After(waitLimit):
			t.Fatal("never subscribed once NATS was up")
		}
		wantCode(t, request(t, testenv.Connect(t, ns.ClientURL()), "ami.action.pbx1.Ping", ``), "ok")
		// Before the server goes: a shutdown flushes its replies to NATS.
		if err := r.stop(); err != nil {
			t.Fatal(err)
		}
	})
}

// TestNewRefusesBadInput: New names what is wrong and starts nothing.
func TestNewRefusesBadInput(t *testing.T) {
	ns := testenv.StartNATS(t)
	nc := testenv.Connect(t, ns.ClientURL())
	good, err := config.Parse([]byte(configYAML(ns.ClientURL(), []node{{"pbx1", "127.0.0.1:5038"}}, "")))
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New()
	if _, err := actor.New(nil, nc, m, nil); err == nil {
		t.Error("nil config accepted")
	}
	if _, err := actor.New(good, nil, m, nil); err == nil {
		t.Error("nil NATS connection accepted")
	}
	if _, err := actor.New(good, nc, nil, nil); err == nil {
		t.Error("nil metrics accepted")
	}
	huge := *good
	huge.Actor.MaxAnswerBytes = 2 << 30
	if _, err := actor.New(&huge, nc, m, nil); err == nil || !strings.Contains(err.Error(), "actor.max_answer_bytes") {
		t.Errorf("max_answer_bytes over the reader's limit: %v", err)
	}
	svc, err := actor.New(good, nc, m, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.WaitUp(context.Background(), "nope"); !errors.Is(err, actor.ErrUnknownNode) {
		t.Errorf("WaitUp(nope): %v, want ErrUnknownNode", err)
	}
	// The metrics are registered once per registry: a second Service on
	// the same metrics is refused rather than panicking.
	if _, err := actor.New(good, nc, m, nil); err == nil {
		t.Error("a second Service on one registry was accepted")
	}
	if got := testutil.ToFloat64(m.SessionUp.WithLabelValues("pbx1")); got != 0 {
		t.Errorf("New connected a session (ami_session_up = %v)", got)
	}
	for _, name := range []string{"ami_requests_dropped_total", "ami_nats_slow_consumers_total"} {
		if n, err := testutil.GatherAndCount(m.Registry, name); err != nil || n != 1 {
			t.Errorf("%s: %d series, %v; want it exported at 0", name, n, err)
		}
	}
}
