package actor_test

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"github.com/amibus/amibus/internal/actor"
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

	// Room for every request answered twice: a duplicate reply is kept
	// for counting, not dropped as a slow consumer.
	replies := make(chan *nats.Msg, 2*total)
	sub, err := nc.ChanSubscribe("replicas.>", replies)
	if err != nil {
		t.Fatal(err)
	}
	counts := make(map[int]int)
	count := func(m *nats.Msg) {
		id, _ := strconv.Atoi(strings.TrimPrefix(m.Subject, "replicas."))
		counts[id]++
	}
	for i := range total {
		body := fmt.Sprintf(`{"action":"Ping","fields":{"Marker":"r-%d"}}`, i)
		if err := nc.PublishRequest("ami.action.pbx1", "replicas."+strconv.Itoa(i), []byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	for range total {
		select {
		case m := <-replies:
			count(m)
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
	for len(replies) > 0 {
		count(<-replies)
	}
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

// TestSessionsOnDemand: while every open session owes an answer a request
// opens another, up to sessions_per_node; a request then goes to the
// session owing least; the node's pending cap is for all of them; and the
// extra sessions log off after extra_session_idle, so that a quiet PBX sees
// one manager connection again.
func TestSessionsOnDemand(t *testing.T) {
	e := newEnv(t, amisim.Config{}, 0, false, "actor:\n  sessions_per_node: 3\n  extra_session_idle: 1s\n  max_pending: 5\n")
	sim, act, nc := e.sim, e.act, e.nc
	up := act.m.SessionUp.WithLabelValues("pbx1")
	if n := sim.ActiveSessions("ami2"); n != 1 {
		t.Fatalf("%d sessions at start, want 1", n)
	}

	sim.SetAnswerDelay("CoreStatus", 2*time.Second)
	var held []<-chan *nats.Msg
	for i := range 5 {
		held = append(held, requestAsync(t, nc, "ami.action.pbx1.CoreStatus", fmt.Sprintf(`{"timeout_ms":10000,"fields":{"Marker":"held-%d"}}`, i)))
	}
	testenv.WaitSim(t, sim, "three sessions, each running a CoreStatus", func() bool {
		return sim.ActiveSessions("ami2") == 3 && len(receivedWith(sim, "Marker", "held-")) >= 3
	})
	if got := testutil.ToFloat64(up); got != 3 {
		t.Errorf("ami_session_up{node=pbx1} = %v, want 3", got)
	}
	// The node's cap (5) is reached over its three sessions.
	pending := act.m.ActionsPending.WithLabelValues("pbx1")
	waitCond(t, "all five CoreStatus pending", func() bool { return testutil.ToFloat64(pending) == 5 })
	wantCode(t, request(t, nc, "ami.action.pbx1.Ping", ``), "overloaded")
	for _, ch := range held {
		wantCode(t, recvReply(t, ch), "ok")
	}
	if max := sim.MaxConcurrentLogins("ami2"); max != 3 {
		t.Errorf("%d sessions at once, want sessions_per_node = 3", max)
	}
	sim.SetAnswerDelay("CoreStatus", 0)
	wantCode(t, request(t, nc, "ami.action.pbx1.Ping", ``), "ok")

	testenv.WaitSim(t, sim, "the extra sessions to log off", func() bool { return sim.ActiveSessions("ami2") == 1 })
	waitCond(t, "ami_session_up{node=pbx1} back to 1", func() bool { return testutil.ToFloat64(up) == 1 })
	wantCode(t, request(t, nc, "ami.action.pbx1.Ping", ``), "ok")
	if logoffs := received(sim, "Logoff"); logoffs != 2 {
		t.Errorf("%d Logoffs, want the 2 extra sessions", logoffs)
	}
}

// TestExtraLoginRefused: a PBX with allowmultiplelogin = no refuses the
// extra session; the node goes on with the one it has (requests queue
// behind the slow one, none fails for it), says so once in the log, counts
// it, and /metrics shows one session up.
func TestExtraLoginRefused(t *testing.T) {
	e := newEnv(t, amisim.Config{SingleLogin: true, AuthFailDelay: 50 * time.Millisecond}, 0, false, "")
	e.sim.SetAnswerDelay("CoreStatus", 300*time.Millisecond)
	pingsBehindSlow(t, e)
	if n := e.logs.FilterMessageSnippet("refused an extra AMI session").Len(); n != 1 {
		t.Errorf("%d log lines about the refusal, want 1", n)
	}
	if got := testutil.ToFloat64(e.act.m.ExtraSessionsRefused.WithLabelValues("pbx1")); got != 1 {
		t.Errorf("ami_actor_extra_sessions_refused_total = %v, want 1 (then the node stops asking)", got)
	}
	if got := testutil.ToFloat64(e.act.m.SessionUp.WithLabelValues("pbx1")); got != 1 {
		t.Errorf("ami_session_up{node=pbx1} = %v, want 1", got)
	}
	if n := e.sessionsEnded(); n != 0 {
		t.Errorf("%d sessions ended", n)
	}
}

// TestExtraSessionFailureHoldsBack: a PBX that takes no new connection
// (reset before the banner) while the first session is up: the extra
// session a request opens fails, and the requests that follow queue
// behind the slow action instead of each bringing another connection
// attempt.
func TestExtraSessionFailureHoldsBack(t *testing.T) {
	e := newEnv(t, amisim.Config{}, 0, false, "")
	e.sim.SetRefuse(true)
	e.sim.SetAnswerDelay("CoreStatus", 300*time.Millisecond)
	before := testutil.ToFloat64(e.act.m.DialAttempts)
	pingsBehindSlow(t, e)
	if n := testutil.ToFloat64(e.act.m.DialAttempts) - before; n != 1 {
		t.Errorf("%v connection attempts for extra sessions, want 1 (then held back)", n)
	}
}

// pingsBehindSlow runs three rounds of a slow CoreStatus on pbx1 (once the
// PBX has it) and a Ping sent meanwhile: both are answered ok each round.
func pingsBehindSlow(t *testing.T, e *env) {
	t.Helper()
	for round := range 3 {
		slow := requestAsync(t, e.nc, "ami.action.pbx1.CoreStatus", `{"timeout_ms":5000}`)
		testenv.WaitSim(t, e.sim, "the CoreStatus", func() bool { return received(e.sim, "CoreStatus") == round+1 })
		wantCode(t, request(t, e.nc, "ami.action.pbx1.Ping", `{"timeout_ms":5000}`), "ok")
		wantCode(t, recvReply(t, slow), "ok")
	}
}

// shortKeepalive shortens the keepalive so that a test sees in seconds what
// the defaults (20 s / 10 s) would show in a minute; the rule is the same.
const shortKeepalive = fastSession + "  ping_interval: 1s\n  ping_timeout: 1s\n"

// ringing is the Originate: a sync Originate (no Async) to the
// extension that rings without answering.
func ringing(timeoutHeader, timeoutMS int) string {
	return fmt.Sprintf(`{"action":"Originate","fields":{"Channel":"Local/199@demo","Context":"demo","Exten":"500","Priority":"1","Timeout":"%d"},"timeout_ms":%d}`,
		timeoutHeader, timeoutMS)
}

// TestPingAfterSyncOriginateTimedOut is steps 1 and 2 of issue 14: a sync
// Originate times out for its caller while the PBX still holds it (30 s);
// a Ping to the same node right after is answered ok within 1 s, and the
// node's sessions stay up through the hold and beyond its deadline.
func TestPingAfterSyncOriginateTimedOut(t *testing.T) {
	e := newEnv(t, amisim.Config{}, 0, false, shortKeepalive)
	orig := request(t, e.nc, "ami.action.pbx1", ringing(30000, 500))
	wantCode(t, orig, "timeout")

	for i := range 3 {
		start := time.Now()
		r := request(t, e.nc, "ami.action.pbx1", `{"action":"Ping","timeout_ms":1000}`)
		wantCode(t, r, "ok")
		if rtt := time.Since(start); rtt > time.Second {
			t.Fatalf("Ping %d answered after %v, want within 1 s", i, rtt)
		}
	}
	// Steps 3 and 4 went wrong at ping_interval + ping_timeout after the
	// Originate (here 2 s): a CoreSettings waiting then, and a Ping after
	// it, must still be answered, with no session ended.
	core := requestAsync(t, e.nc, "ami.action.pbx1", `{"action":"CoreSettings","timeout_ms":5000}`)
	wantCode(t, recvReply(t, core), "ok")
	tick := time.NewTicker(250 * time.Millisecond) // the request rate
	defer tick.Stop()
	for range 12 {
		<-tick.C
		wantCode(t, request(t, e.nc, "ami.action.pbx1.Ping", `{"timeout_ms":1000}`), "ok")
	}
	if n := e.sessionsEnded(); n != 0 {
		t.Fatalf("%d AMI sessions ended while the PBX was working: %v", n, e.logs.FilterMessage("AMI session ended").All())
	}
	if n := testutil.ToFloat64(e.act.m.SessionReconnects.WithLabelValues("pbx1")); n != 0 {
		t.Errorf("ami_session_reconnects_total = %v, want 0", n)
	}
}

// TestLongSyncOriginate is step 4 of issue 14: during a 20 s sync
// Originate (Timeout 20000, timeout_ms inside max_timeout_ms) Pings every
// 2 s all succeed, the Originate gets its own answer (the PBX's Error /
// Originate failed, not disconnected), and no session ends.
func TestLongSyncOriginate(t *testing.T) {
	if testing.Short() {
		t.Skip("runs 20 s")
	}
	e := newEnv(t, amisim.Config{}, 0, false, shortKeepalive)
	start := time.Now()
	orig := requestAsync(t, e.nc, "ami.action.pbx1", ringing(20000, 30000))
	var origReply *nats.Msg
	tick := time.NewTicker(2 * time.Second)
	defer tick.Stop()
	pings := 0
	for origReply == nil {
		select {
		case m := <-orig:
			origReply = m
		case <-tick.C:
			r := request(t, e.nc, "ami.action.pbx1.Ping", `{"timeout_ms":1500}`)
			pings++
			if !r.OK {
				t.Fatalf("Ping %d at %v: %s", pings, time.Since(start).Round(time.Millisecond), r.Raw)
			}
		case <-time.After(40 * time.Second):
			t.Fatal("no answer to the Originate")
		}
	}
	r := testenv.DecodeReply[string](t, origReply.Data)
	wantCode(t, r, "ami_error")
	if r.Message != "Originate failed" {
		t.Errorf("Originate message %q, want Originate failed", r.Message)
	}
	if el := time.Since(start); el < 20*time.Second {
		t.Errorf("Originate answered after %v, before its 20 s Timeout", el)
	}
	if pings < 9 {
		t.Errorf("%d Pings during the Originate, want 9 or more", pings)
	}
	if n := e.sessionsEnded(); n != 0 {
		t.Fatalf("%d AMI sessions ended while the PBX was working: %v", n, e.logs.FilterMessage("AMI session ended").All())
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
	cfg := actorConfig(t, "nats://"+addr, []node{{"pbx1", sim.Addr()}}, "")
	log := zaptest.NewLogger(t)

	t.Run("stop while waiting", func(t *testing.T) {
		r := launch(t, cfg, log)
		if err := r.svc.WaitUp(ctxLimit(t), "pbx1"); err != nil {
			t.Fatal(err)
		}
		if err := r.svc.Ready(); err == nil || !strings.Contains(err.Error(), "nats") {
			t.Errorf("Ready without NATS: %v", err)
		}
		if err := r.stop(); err != nil {
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
	good := actorConfig(t, ns.ClientURL(), []node{{"pbx1", "127.0.0.1:5038"}}, "")
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
