package session

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// TestKeepaliveSparesASlowAction: while the PBX works on an action longer
// than ping_interval + ping_timeout, the session sends no Ping (it would
// wait behind the action) and stays up; the action gets its answer.
func TestKeepaliveSparesASlowAction(t *testing.T) {
	leakCheck(t)
	const slow = 1200 * time.Millisecond
	srv := testenv.StartSim(t, amisim.Config{})
	s, rec, _ := startSession(t, srv.Addr(), WithKeepalive(150*time.Millisecond, 150*time.Millisecond))
	waitStarts(t, rec, 1)
	srv.SetAnswerDelay("CoreStatus", slow)
	pingsBefore := len(received(srv, "Ping"))
	res, err := s.Send(ctxTimeout(t, 5*time.Second), Action{Name: "CoreStatus"})
	if err != nil {
		t.Fatalf("CoreStatus held %v: %v", slow, err)
	}
	if res.Response.Get("Response") != "Success" {
		t.Fatalf("CoreStatus: %s", res.Response.String())
	}
	if n := len(received(srv, "Ping")) - pingsBefore; n != 0 {
		t.Errorf("%d Pings sent while the action was owed", n)
	}
	if n := count(rec.snapshot(), "end"); n != 0 {
		t.Fatalf("%d sessions ended while the PBX worked", n)
	}
}

// TestKeepaliveHeldSyncOriginate: a sync Originate whose caller gave up
// long before the PBX's Timeout keeps its session up until the PBX
// answers: its answer is due at its Timeout, not at the caller's deadline.
// The answer is then read, counted late, and the session goes on.
func TestKeepaliveHeldSyncOriginate(t *testing.T) {
	leakCheck(t)
	srv := testenv.StartSim(t, amisim.Config{})
	s, rec, m := startSession(t, srv.Addr(), WithKeepalive(100*time.Millisecond, 100*time.Millisecond))
	waitStarts(t, rec, 1)
	_, err := s.Send(ctxTimeout(t, 100*time.Millisecond), Action{Name: "Originate", Headers: []Header{
		{Key: "Channel", Value: "Local/199@demo"}, {Key: "Exten", Value: "500"}, {Key: "Context", Value: "demo"},
		{Key: "Priority", Value: "1"}, {Key: "Timeout", Value: "1000"},
	}})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("Originate: %v, want ErrTimeout", err)
	}
	late := m.LateResponses.WithLabelValues("pbx1")
	eventually(t, "the late Originate answer", func() bool { return testutil.ToFloat64(late) == 1 })
	if n := count(rec.snapshot(), "end"); n != 0 {
		t.Fatalf("%d sessions ended while the PBX held the Originate", n)
	}
	if _, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "Ping"}); err != nil {
		t.Fatalf("Ping after the Originate: %v", err)
	}
}

// TestKeepaliveDetectsAPBXThatStopsAnswering: a PBX that never answers an
// owed action is declared dead PingTimeout after the action's deadline,
// not sooner, and the session reconnects.
func TestKeepaliveDetectsAPBXThatStopsAnswering(t *testing.T) {
	leakCheck(t)
	const deadline, grace = 300 * time.Millisecond, 200 * time.Millisecond
	srv := testenv.StartSim(t, amisim.Config{})
	srv.SetNeverAnswer("CoreStatus", true)
	s, rec, _ := startSession(t, srv.Addr(), WithKeepalive(100*time.Millisecond, grace))
	waitStarts(t, rec, 1)
	start := time.Now()
	if _, err := s.Send(ctxTimeout(t, deadline), Action{Name: "CoreStatus"}); !errors.Is(err, ErrTimeout) {
		t.Fatalf("CoreStatus: %v, want ErrTimeout", err)
	}
	log := rec.waitFor(t, "the session to end", func(l []call) bool { return count(l, "end") >= 1 })
	var end call
	for _, x := range log {
		if x.kind == "end" {
			end = x
		}
	}
	if end.name != ReasonKeepalive {
		t.Errorf("ended with %q, want %q", end.name, ReasonKeepalive)
	}
	if after := end.t.Sub(start); after < deadline+grace {
		t.Errorf("declared dead %v after the send, before deadline + ping_timeout = %v", after, deadline+grace)
	}
	waitStarts(t, rec, 2)
}

// TestAnswerDue: the deadline by which an owed answer must come.
func TestAnswerDue(t *testing.T) {
	now := time.Unix(1000, 0)
	ctx, cancel := context.WithDeadline(context.Background(), now.Add(time.Second))
	defer cancel()
	orig := func(h ...Header) Action { return Action{Name: "originate", Headers: h} }
	cases := []struct {
		name string
		ctx  context.Context
		a    Action
		want time.Duration
	}{
		{"caller deadline", ctx, Action{Name: "Ping"}, time.Second},
		{"no deadline", context.Background(), Action{Name: "Ping"}, 20 * time.Second},
		{"sync Originate, default Timeout", ctx, orig(), 30 * time.Second},
		{"sync Originate, Timeout", ctx, orig(Header{Key: "timeout", Value: "45000"}), 45 * time.Second},
		{"sync Originate, Timeout under the deadline", ctx, orig(Header{Key: "Timeout", Value: "500"}), time.Second},
		{"async Originate", ctx, orig(Header{Key: "Async", Value: "true"}), time.Second},
		{"bad Timeout: the default", ctx, orig(Header{Key: "Timeout", Value: "x"}), 30 * time.Second},
	}
	for _, c := range cases {
		if got := answerDue(c.ctx, c.a, now, 20*time.Second).Sub(now); got != c.want {
			t.Errorf("%s: due in %v, want %v", c.name, got, c.want)
		}
	}
}

// TestTCPKeepAlive: every AMI socket gets kernel keepalive probes derived
// from the session's keepalive settings.
func TestTCPKeepAlive(t *testing.T) {
	ka := tcpKeepAlive(Config{PingInterval: 20 * time.Second, PingTimeout: 10 * time.Second})
	if !ka.Enable || ka.Idle != 20*time.Second || ka.Interval != 10*time.Second/3 || ka.Count != 3 {
		t.Errorf("keepalive %+v", ka)
	}
	if ka := tcpKeepAlive(Config{PingInterval: time.Second, PingTimeout: time.Second}); ka.Interval != time.Second {
		t.Errorf("interval %v, want the 1 s floor", ka.Interval)
	}
}
