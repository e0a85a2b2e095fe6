package actor_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// TestSessionsOnDemand: while every open session owes an answer a request
// opens another, up to sessions_per_node; a request then goes to the
// session owing least; the node's pending cap is for all of them; and the
// extra sessions log off after extra_session_idle, so that a quiet PBX sees
// one manager connection again.
func TestSessionsOnDemand(t *testing.T) {
	ns := testenv.StartNATS(t)
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx1"})
	act := startActor(t, configYAML(ns.ClientURL(), []node{{"pbx1", sim.Addr()}},
		"actor:\n  sessions_per_node: 3\n  extra_session_idle: 1s\n  max_pending: 5\n"), "pbx1")
	nc := testenv.Connect(t, ns.ClientURL())
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
	ns := testenv.StartNATS(t)
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx1", SingleLogin: true, AuthFailDelay: 50 * time.Millisecond})
	cfg, err := config.Parse([]byte(configYAML(ns.ClientURL(), []node{{"pbx1", sim.Addr()}}, "")))
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Core(), core))
	act := startActorConfig(t, cfg, log, "pbx1")
	nc := testenv.Connect(t, ns.ClientURL())

	sim.SetAnswerDelay("CoreStatus", 300*time.Millisecond)
	pingsBehindSlow(t, sim, nc)
	if n := logs.FilterMessageSnippet("refused an extra AMI session").Len(); n != 1 {
		t.Errorf("%d log lines about the refusal, want 1", n)
	}
	if got := testutil.ToFloat64(act.m.ExtraSessionsRefused.WithLabelValues("pbx1")); got != 1 {
		t.Errorf("ami_actor_extra_sessions_refused_total = %v, want 1 (then the node stops asking)", got)
	}
	if got := testutil.ToFloat64(act.m.SessionUp.WithLabelValues("pbx1")); got != 1 {
		t.Errorf("ami_session_up{node=pbx1} = %v, want 1", got)
	}
	if n := logs.FilterMessage("AMI session ended").Len(); n != 0 {
		t.Errorf("%d sessions ended", n)
	}
}

// TestExtraSessionFailureHoldsBack: a PBX that takes no new connection
// (reset before the banner) while the first session is up: the extra
// session a request opens fails, and the requests that follow queue
// behind the slow action instead of each bringing another connection
// attempt.
func TestExtraSessionFailureHoldsBack(t *testing.T) {
	ns := testenv.StartNATS(t)
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx1"})
	cfg, err := config.Parse([]byte(configYAML(ns.ClientURL(), []node{{"pbx1", sim.Addr()}}, "")))
	if err != nil {
		t.Fatal(err)
	}
	act := startActorConfig(t, cfg, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)), "pbx1")
	nc := testenv.Connect(t, ns.ClientURL())
	sim.SetRefuse(true)
	sim.SetAnswerDelay("CoreStatus", 300*time.Millisecond)
	before := testutil.ToFloat64(act.m.DialAttempts)
	pingsBehindSlow(t, sim, nc)
	if n := testutil.ToFloat64(act.m.DialAttempts) - before; n != 1 {
		t.Errorf("%v connection attempts for extra sessions, want 1 (then held back)", n)
	}
}

// pingsBehindSlow runs three rounds of a slow CoreStatus on pbx1 (once the
// PBX has it) and a Ping sent meanwhile: both are answered ok each round.
func pingsBehindSlow(t *testing.T, sim *amisim.Server, nc *nats.Conn) {
	t.Helper()
	for round := range 3 {
		slow := requestAsync(t, nc, "ami.action.pbx1.CoreStatus", `{"timeout_ms":5000}`)
		testenv.WaitSim(t, sim, "the CoreStatus", func() bool { return received(sim, "CoreStatus") == round+1 })
		wantCode(t, request(t, nc, "ami.action.pbx1.Ping", `{"timeout_ms":5000}`), "ok")
		wantCode(t, recvReply(t, slow), "ok")
	}
}
