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

// shortKeepalive shortens the keepalive so that a test sees in seconds what
// the defaults (20 s / 10 s) would show in a minute; the rule is the same.
const shortKeepalive = fastSession + "  ping_interval: 1s\n  ping_timeout: 1s\n"

// slowEnv runs the actor against one simulator with the short keepalive,
// and records its log lines so that a test can count ended sessions.
type slowEnv struct {
	*env
	logs *observer.ObservedLogs
}

func newSlowEnv(t *testing.T, extra string) *slowEnv {
	t.Helper()
	ns := testenv.StartNATS(t)
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx1"})
	cfg, err := config.Parse([]byte(configYAML(ns.ClientURL(), []node{{"pbx1", sim.Addr()}}, shortKeepalive+extra)))
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.InfoLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Core(), core))
	act := startActorConfig(t, cfg, log, "pbx1")
	return &slowEnv{env: &env{ns: ns, sim: sim, nc: testenv.Connect(t, ns.ClientURL()), act: act}, logs: logs}
}

func (e *slowEnv) sessionsEnded() int {
	return e.logs.FilterMessage("AMI session ended").Len()
}

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
	e := newSlowEnv(t, "")
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
	e := newSlowEnv(t, "")
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
