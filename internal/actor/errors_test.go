package actor_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// TestErrorCodes covers the codes that need no fault in the PBX: each
// request gets its code, and only the two requests that may reach the PBX
// (ok and ami_error) ever do.
func TestErrorCodes(t *testing.T) {
	e := newEnv(t, amisim.Config{}, 0, true, "actor:\n  deny: [Hangup]\n")

	t.Run("ok", func(t *testing.T) {
		r := request(t, e.nc, "ami.action.pbx1", `{"action":"Ping","fields":{"Marker":"ok-1"}}`)
		wantCode(t, r, "ok")
		if r.Node != "pbx1" || r.Action != "Ping" || r.Response != "Success" || r.Field("Ping") != "Pong" {
			t.Fatalf("reply %s", r.Raw)
		}
		got := receivedWith(e.sim, "Marker", "ok-1")
		if len(got) != 1 || got[0].ActionID != r.ActionID {
			t.Fatalf("the PBX received %+v, want one Ping with ActionID %q", got, r.ActionID)
		}
	})

	bad := []struct{ name, subject, body string }{
		{"not JSON", "ami.action.pbx1", `{"action":`},
		{"not an object", "ami.action.pbx1", `["Ping"]`},
		{"unknown key", "ami.action.pbx1", `{"action":"Ping","Marker":"x"}`},
		{"missing action", "ami.action.pbx1", `{"fields":{"Marker":"x"}}`},
		{"empty body without subject action", "ami.action.pbx1", ``},
		{"field a number", "ami.action.pbx1", `{"action":"Ping","fields":{"Marker":1}}`},
		{"field nested", "ami.action.pbx1", `{"action":"Ping","fields":{"Marker":{"a":"b"}}}`},
		{"timeout zero", "ami.action.pbx1", `{"action":"Ping","timeout_ms":0}`},
		{"timeout fraction", "ami.action.pbx1", `{"action":"Ping","timeout_ms":1.5}`},
		{"timeout string", "ami.action.pbx1", `{"action":"Ping","timeout_ms":"100"}`},
		{"subject and body disagree", "ami.action.pbx1.Ping", `{"action":"Originate"}`},
		{"invalid UTF-8", "ami.action.pbx1", "{\"action\":\"Ping\",\"fields\":{\"Marker\":\"\xff\"}}"},
		// Asterisk's spelling only in the subject (issue 14), even for a
		// denied action: refused before the policy is asked.
		{"subject in upper case", "ami.action.pbx1.LOGOFF", ``},
		{"subject in lower case", "ami.action.pbx1.hangup", `{"fields":{"Channel":"Local/100@demo-00000001;1"}}`},
	}
	for _, c := range bad {
		t.Run("bad_request/"+c.name, func(t *testing.T) {
			r := request(t, e.nc, c.subject, c.body)
			wantCode(t, r, "bad_request")
		})
	}

	forbidden := []struct{ subject, body string }{
		{"ami.action.pbx1", `{"action":"Logoff"}`},
		{"ami.action.pbx1", `{"action":"logoff"}`},
		{"ami.action.pbx1.Logoff", ``},
		{"ami.action.pbx1", `{"action":"Login","fields":{"Username":"ami","Secret":"x"}}`},
		{"ami.action.pbx1", `{"action":"Events","fields":{"EventMask":"on"}}`},
		{"ami.action.pbx1", `{"action":"Filter","fields":{"Filter":"!Event: VarSet"}}`},
		{"ami.action.pbx1", `{"action":"Challenge","fields":{"AuthType":"MD5"}}`},
		{"ami.action.pbx1.Hangup", `{"fields":{"Channel":"Local/100@demo-00000001;1"}}`}, // actor.deny
	}
	for _, c := range forbidden {
		t.Run("forbidden/"+c.subject+c.body, func(t *testing.T) {
			r := request(t, e.nc, c.subject, c.body)
			wantCode(t, r, "forbidden")
			if r.Node != "pbx1" {
				t.Errorf("reply %s: want node pbx1", r.Raw)
			}
		})
	}

	t.Run("unknown_node", func(t *testing.T) {
		r := request(t, e.nc, "ami.action.pbx9.Ping", ``)
		wantCode(t, r, "unknown_node")
		if !strings.Contains(r.Error.Message, `"pbx9"`) {
			t.Errorf("message %q does not name the node", r.Error.Message)
		}
		if got := outcome(e.act.m, "unknown", "Ping", "unknown_node"); got != 1 {
			t.Errorf("ami_actions_total{node=unknown,action=Ping,outcome=unknown_node} = %v, want 1", got)
		}
	})

	t.Run("unavailable at once", func(t *testing.T) {
		// The deadline is 10 s; the answer must not wait for it.
		start := time.Now()
		r := request(t, e.nc, "ami.action.down.Ping", `{"timeout_ms":10000}`)
		rtt := time.Since(start)
		wantCode(t, r, "unavailable")
		t.Logf("unavailable answered in %v (elapsed_ms %.3f)", rtt, *r.Elapsed)
		if rtt > 2*time.Second || *r.Elapsed > 1000 {
			t.Fatalf("unavailable after %v (elapsed_ms %.3f): not at once", rtt, *r.Elapsed)
		}
	})

	t.Run("ami_error", func(t *testing.T) {
		r := request(t, e.nc, "ami.action.pbx1", `{"action":"NoSuchAction","fields":{"Marker":"err-1"}}`)
		wantCode(t, r, "ami_error")
		if r.Response != "Error" || !strings.HasPrefix(r.Error.Message, "Invalid/unknown command: NoSuchAction") ||
			r.Message != r.Error.Message || r.Field("Response") != "Error" {
			t.Fatalf("ami_error reply does not carry the PBX's answer: %s", r.Raw)
		}
		if got := receivedWith(e.sim, "Marker", "err-1"); len(got) != 1 || got[0].ActionID != r.ActionID {
			t.Fatalf("the PBX received %+v, want the action once with ActionID %q", got, r.ActionID)
		}
	})

	// Only the two requests above that were allowed through reached the
	// PBX, each once; everything refused cost the PBX nothing.
	got := nonLogin(e.sim.Received())
	if len(got) != 2 {
		t.Fatalf("the PBX received %d actions besides the login, want 2: %+v", len(got), got)
	}
	for _, code := range []string{"bad_request", "forbidden"} {
		var n float64
		for _, a := range []string{"Ping", "other", "Logoff", "Login", "Events", "Filter", "Challenge", "Hangup", "Originate"} {
			n += outcome(e.act.m, "pbx1", a, code)
		}
		want := map[string]float64{"bad_request": float64(len(bad)), "forbidden": float64(len(forbidden))}[code]
		if n != want {
			t.Errorf("ami_actions_total{node=pbx1,outcome=%s} = %v, want %v", code, n, want)
		}
	}
}

// TestInjectionRefusedBeforePBX sends requests that would forge AMI headers
// or smuggle a second action if they were written: each is refused
// bad_request, and the PBX receives nothing at all until the sentinel
// Ping that follows them.
func TestInjectionRefusedBeforePBX(t *testing.T) {
	e := newEnv(t, amisim.Config{}, 0, false, "actor:\n  max_request_bytes: 65536\n")
	manyFields := make([]string, 127)
	for i := range manyFields {
		manyFields[i] = fmt.Sprintf(`"F%d":"v"`, i)
	}
	cases := []struct{ name, subject, body string }{
		{"CRLF in a value", "ami.action.pbx1", `{"action":"Ping","fields":{"X":"a\r\nAction: Originate\r\nChannel: Local/100@demo"}}`},
		{"LF in a value", "ami.action.pbx1", `{"action":"Ping","fields":{"X":"a\nAction: Hangup"}}`},
		{"CR in a value", "ami.action.pbx1", `{"action":"Ping","fields":{"X":"a\rAction: Hangup"}}`},
		{"LF in an array element", "ami.action.pbx1", `{"action":"Ping","fields":{"Variable":["A=1","B=2\nAction: Hangup"]}}`},
		{"NUL in a value", "ami.action.pbx1", `{"action":"Ping","fields":{"X":"a\u0000b"}}`},
		{"CRLF in a key", "ami.action.pbx1", `{"action":"Ping","fields":{"X\r\nAction":"Hangup"}}`},
		{"colon in a key", "ami.action.pbx1", `{"action":"Ping","fields":{"Action: Hangup\r\nX":"y"}}`},
		{"space in a key", "ami.action.pbx1", `{"action":"Ping","fields":{"Bad Key":"v"}}`},
		{"ActionID field", "ami.action.pbx1", `{"action":"Ping","fields":{"ActionID":"mine"}}`},
		{"Action field", "ami.action.pbx1", `{"action":"Ping","fields":{"action":"Hangup"}}`},
		{"CRLF in the action", "ami.action.pbx1", `{"action":"Ping\r\nAction: Hangup"}`},
		{"colon in the action", "ami.action.pbx1", `{"action":"Ping:"}`},
		{"repeated key in another case", "ami.action.pbx1", `{"action":"Ping","fields":{"Channel":"a","channel":"b"}}`},
		{"line over 1022 bytes", "ami.action.pbx1", `{"action":"Ping","fields":{"X":"` + strings.Repeat("y", 1100) + `"}}`},
		{"more than 126 values", "ami.action.pbx1", `{"action":"Ping","fields":{` + strings.Join(manyFields, ",") + `}}`},
		{"body over max_request_bytes", "ami.action.pbx1", `{"action":"Ping","fields":{"X":"` + strings.Repeat("y", 100000) + `"}}`},
		{"deeply nested", "ami.action.pbx1", `{"action":"Ping","fields":{"X":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}}`},
	}
	before := len(e.sim.Received())
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := request(t, e.nc, c.subject, c.body)
			wantCode(t, r, "bad_request")
		})
	}
	// Each refusal was answered before the next request was sent, and the
	// session writes in order: if any had been written, it would be on the
	// wire before the sentinel.
	ping := request(t, e.nc, "ami.action.pbx1", `{"action":"Ping","fields":{"Marker":"sentinel"}}`)
	wantCode(t, ping, "ok")
	testenv.WaitSim(t, e.sim, "the sentinel", func() bool { return len(receivedWith(e.sim, "Marker", "sentinel")) == 1 })
	got := e.sim.Received()[before:]
	if len(got) != 1 || got[0].ActionID != ping.ActionID {
		t.Fatalf("the PBX received %d actions, want only the sentinel Ping: %+v", len(got), got)
	}
	for _, h := range got[0].Headers {
		if !strings.EqualFold(h[0], "Action") && !strings.EqualFold(h[0], "ActionID") && h[0] != "Marker" {
			t.Errorf("sentinel carried an unexpected header %q", h)
		}
	}
}

// TestSubjectSpellingWithBodyFormOff: with actor.body_form off, the
// action's other spellings in the subject (command, COMMAND) are refused
// bad_request naming Asterisk's spelling, and so is the body form; none
// reaches the PBX.
func TestSubjectSpellingWithBodyFormOff(t *testing.T) {
	e := newEnv(t, amisim.Config{}, 0, false, "actor:\n  body_form: false\n")
	before := len(nonLogin(e.sim.Received()))
	for _, subj := range []string{"ami.action.pbx1.command", "ami.action.pbx1.COMMAND"} {
		r := request(t, e.nc, subj, `{"fields":{"Command":"core show version"}}`)
		wantCode(t, r, "bad_request")
		if !strings.Contains(r.Error.Message, "ami.action.pbx1.Command") {
			t.Errorf("%s: message %q does not name ami.action.pbx1.Command", subj, r.Error.Message)
		}
	}
	r := request(t, e.nc, "ami.action.pbx1", `{"action":"Command","fields":{"Command":"core show version"}}`)
	wantCode(t, r, "bad_request")
	if !strings.Contains(r.Error.Message, "ami.action.pbx1.<Action>") {
		t.Errorf("body form: message %q does not name the subject form", r.Error.Message)
	}
	if got := nonLogin(e.sim.Received()); len(got) != before {
		t.Fatalf("the PBX received %+v", got[before:])
	}
	r = request(t, e.nc, "ami.action.pbx1.Command", `{"fields":{"Command":"core show version"}}`)
	wantCode(t, r, "ok")
}

// TestNATSPermissionsPingOnly runs a real nats-server with users and
// allow-list permissions: the actor may subscribe to ami.action.> and
// answer requests; the monitor may publish on ami.action.*.Ping and read
// its own inbox, nothing else. The monitor can run Ping and nothing else,
// by no subject (other actions, other spellings, the body form) and by no
// body.
func TestNATSPermissionsPingOnly(t *testing.T) {
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true,
		Users: []*server.User{
			{Username: "actor", Password: "actor-pw", Permissions: &server.Permissions{
				Subscribe: &server.SubjectPermission{Allow: []string{"ami.action.>"}},
				// No publish rights but the replies to requests it took.
				Response: &server.ResponsePermission{MaxMsgs: 1, Expires: time.Minute},
			}},
			{Username: "monitor", Password: "monitor-pw", Permissions: &server.Permissions{
				Publish:   &server.SubjectPermission{Allow: []string{"ami.action.*.Ping"}},
				Subscribe: &server.SubjectPermission{Allow: []string{"_INBOX_monitor.>"}},
			}},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(waitLimit) {
		t.Fatal("nats-server not ready")
	}
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx1"})
	yaml := configYAML(ns.ClientURL(), []node{{"pbx1", sim.Addr()}}, "actor:\n  body_form: false\n")
	yaml = strings.Replace(yaml, "nats:\n", "nats:\n  user: actor\n  password: actor-pw\n", 1)
	startActor(t, yaml, "pbx1")

	denied := make(chan error, 16)
	mon, err := nats.Connect(ns.ClientURL(), nats.UserInfo("monitor", "monitor-pw"),
		nats.CustomInboxPrefix("_INBOX_monitor"),
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) { denied <- err }))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(mon.Close)

	wantCode(t, request(t, mon, "ami.action.pbx1.Ping", ``), "ok")
	wantCode(t, request(t, mon, "ami.action.pbx1.Ping", `{"action":"ping","timeout_ms":2000}`), "ok")

	// Refused by the NATS server: the request never reaches the actor.
	for _, c := range []struct{ subject, body string }{
		{"ami.action.pbx1.Command", `{"fields":{"Command":"core show version"}}`},
		{"ami.action.pbx1.command", `{"fields":{"Command":"core show version"}}`},
		{"ami.action.pbx1.COMMAND", `{"fields":{"Command":"core show version"}}`},
		{"ami.action.pbx1.PING", ``},
		{"ami.action.pbx1.Originate", `{"fields":{"Channel":"Local/100@demo","Exten":"100","Context":"demo","Priority":"1"}}`},
		{"ami.action.pbx1", `{"action":"Command","fields":{"Command":"core show version"}}`},
		{"ami.action.pbx1", `{"action":"Ping"}`},
	} {
		inbox := mon.NewRespInbox()
		if err := mon.PublishRequest(c.subject, inbox, []byte(c.body)); err != nil {
			t.Fatal(err)
		}
		if err := mon.Flush(); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-denied:
			if !errors.Is(err, nats.ErrPermissionViolation) || !strings.Contains(err.Error(), fmt.Sprintf("%q", c.subject)) {
				t.Fatalf("%s: error %v, want a permissions violation for it", c.subject, err)
			}
		case <-time.After(waitLimit):
			t.Fatalf("%s: the server did not refuse the publish", c.subject)
		}
	}
	// Allowed by the server, refused by the actor: a body cannot name
	// another action than its subject.
	for _, body := range []string{`{"action":"Command","fields":{"Command":"core show version"}}`,
		`{"action":"Originate","fields":{"Channel":"Local/100@demo","Exten":"100","Context":"demo","Priority":"1"}}`} {
		wantCode(t, request(t, mon, "ami.action.pbx1.Ping", body), "bad_request")
	}
	for _, a := range nonLogin(sim.Received()) {
		if a.Name != "Ping" {
			t.Errorf("the PBX ran %s for the monitor", a.Name)
		}
	}
}

// TestOverloaded fills the node's pending cap with actions the PBX never
// answers: the next request is refused overloaded at once, without
// reaching the PBX, and the pending ones still get their timeout.
func TestOverloaded(t *testing.T) {
	// Two nodes, so the process-wide cap (max_pending per node) is 4 and
	// the node's session is what refuses.
	e := newEnv(t, amisim.Config{}, 0, true, "actor:\n  max_pending: 2\n")
	e.sim.SetNeverAnswer("Ping", true)
	var pending []<-chan *nats.Msg
	for i := range 2 {
		pending = append(pending, requestAsync(t, e.nc, "ami.action.pbx1",
			fmt.Sprintf(`{"action":"Ping","timeout_ms":1500,"fields":{"Marker":"held-%d"}}`, i)))
	}
	testenv.WaitSim(t, e.sim, "the two held Pings", func() bool { return len(receivedWith(e.sim, "Marker", "held-")) == 2 })

	start := time.Now()
	r := request(t, e.nc, "ami.action.pbx1", `{"action":"Ping","timeout_ms":10000,"fields":{"Marker":"over"}}`)
	wantCode(t, r, "overloaded")
	if rtt := time.Since(start); rtt > 2*time.Second {
		t.Errorf("overloaded after %v: not at once", rtt)
	}
	for _, ch := range pending {
		wantCode(t, recvReply(t, ch), "timeout")
	}
	if got := receivedWith(e.sim, "Marker", "over"); len(got) != 0 {
		t.Fatalf("the refused action reached the PBX: %+v", got)
	}
	if got := outcome(e.act.m, "pbx1", "Ping", "overloaded"); got != 1 {
		t.Errorf("ami_actions_total{outcome=overloaded} = %v, want 1", got)
	}
}

// TestTimeoutAtDeadline: a request the PBX never answers is answered
// timeout at its deadline, never before it and within a few ms after on an
// idle machine; the default timeout and the cap come from the
// configuration.
func TestTimeoutAtDeadline(t *testing.T) {
	e := newEnv(t, amisim.Config{}, 0, false, "actor:\n  default_timeout_ms: 300\n  max_timeout_ms: 600\n")
	e.sim.SetNeverAnswer("Ping", true)
	// Generous for a shared two-core machine under -race; the measured
	// lateness is logged, and the 50 ms target is for an idle machine.
	const slack = 500 * time.Millisecond
	cases := []struct {
		body string
		want time.Duration
	}{
		{`{"action":"Ping","timeout_ms":100}`, 100 * time.Millisecond},
		{`{"action":"Ping","timeout_ms":250}`, 250 * time.Millisecond},
		{`{"action":"Ping"}`, 300 * time.Millisecond},                     // actor.default_timeout_ms
		{`{"action":"Ping","timeout_ms":100000}`, 600 * time.Millisecond}, // lowered to actor.max_timeout_ms
	}
	for i, c := range cases {
		start := time.Now()
		r := request(t, e.nc, "ami.action.pbx1", c.body)
		rtt := time.Since(start)
		wantCode(t, r, "timeout")
		elapsed := time.Duration(*r.Elapsed * float64(time.Millisecond))
		t.Logf("deadline %v: reply at elapsed_ms %.3f (%v after the deadline), round trip %v",
			c.want, *r.Elapsed, elapsed-c.want, rtt)
		if elapsed < c.want || rtt < c.want {
			t.Fatalf("case %d: timeout reply before the deadline %v: elapsed %v, round trip %v", i, c.want, elapsed, rtt)
		}
		if elapsed > c.want+slack || rtt > c.want+slack {
			t.Fatalf("case %d: timeout reply %v (round trip %v) after the deadline %v", i, elapsed-c.want, rtt-c.want, c.want)
		}
		if !strings.Contains(r.Error.Message, fmt.Sprintf("within %d ms", c.want.Milliseconds())) {
			t.Errorf("message %q does not state the deadline", r.Error.Message)
		}
	}
	// Each was written once and never again.
	if got := len(nonLogin(e.sim.Received())); got != len(cases) {
		t.Errorf("the PBX received %d actions, want %d", got, len(cases))
	}
}

// TestLateResponseDiscarded: an answer that comes after the deadline is
// read, counted and dropped; the requester had its one timeout reply and
// the action is never resent.
func TestLateResponseDiscarded(t *testing.T) {
	e := newEnv(t, amisim.Config{}, 0, false, "")
	e.sim.SetAnswerDelay("CoreStatus", 500*time.Millisecond)

	inbox := nats.NewInbox()
	sub, err := e.nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.nc.PublishRequest("ami.action.pbx1.CoreStatus", inbox, []byte(`{"timeout_ms":150}`)); err != nil {
		t.Fatal(err)
	}
	msg, err := sub.NextMsg(waitLimit)
	if err != nil {
		t.Fatal(err)
	}
	wantCode(t, testenv.DecodeReply[string](t, msg.Data), "timeout")

	// The session that owes the late answer is not idle, so this Ping
	// runs on another session of the node; the late answer arrives on its
	// own (500 ms after the request) and nothing signals it but the count.
	ping := request(t, e.nc, "ami.action.pbx1.Ping", ``)
	wantCode(t, ping, "ok")
	waitCond(t, "the late answer counted", func() bool {
		return testutil.ToFloat64(e.act.m.LateResponses.WithLabelValues("pbx1")) == 1
	})
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n, _, _ := sub.Pending(); n != 0 {
		m, _ := sub.NextMsg(0)
		t.Fatalf("a second reply to the timed-out request: %s", m.Data)
	}
	if statuses := received(e.sim, "CoreStatus"); statuses != 1 {
		t.Errorf("the PBX received CoreStatus %d times, want 1", statuses)
	}
	if got := outcome(e.act.m, "pbx1", "CoreStatus", "ok"); got != 0 {
		t.Errorf("the late answer was counted as ok")
	}
}

// TestDisconnected: the session drops while the action is pending; the
// requester is told at once, not at its deadline, and the session comes
// back for the next request.
func TestDisconnected(t *testing.T) {
	e := newEnv(t, amisim.Config{}, 0, false, "")
	e.sim.SetNeverAnswer("Ping", true)
	logins := e.sim.Logins()
	ch := requestAsync(t, e.nc, "ami.action.pbx1", `{"action":"Ping","timeout_ms":30000,"fields":{"Marker":"drop"}}`)
	testenv.WaitSim(t, e.sim, "the Ping", func() bool { return len(receivedWith(e.sim, "Marker", "drop")) == 1 })
	start := time.Now()
	e.sim.DropConnections()
	r := recvReply(t, ch)
	wantCode(t, r, "disconnected")
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("disconnected after %v; the deadline was 30 s", d)
	}
	e.sim.SetNeverAnswer("Ping", false)
	testenv.WaitSim(t, e.sim, "the actor to log in again", func() bool { return e.sim.Logins() > logins })
	if err := e.act.svc.WaitUp(ctxLimit(t), "pbx1"); err != nil {
		t.Fatal(err)
	}
	wantCode(t, request(t, e.nc, "ami.action.pbx1.Ping", ``), "ok")
	if got := len(receivedWith(e.sim, "Marker", "drop")); got != 1 {
		t.Errorf("the dropped Ping reached the PBX %d times, want 1", got)
	}
}

// TestNoResendAfterReconnect queues actions while the PBX does not read,
// so that they back up in the kernel and in the session's write queue,
// kills the connection, and checks that every requester is told
// (disconnected) and that none of those actions ever reaches the PBX, on
// the old connection or on the next one.
func TestNoResendAfterReconnect(t *testing.T) {
	// A long keepalive and write deadline: only the drop ends the
	// connection. 300 actions of ~100 KB are far more than the socket
	// buffers hold, so some are written and some still queued.
	const stale = 300
	e := newEnv(t, amisim.Config{}, 0, false,
		"actor:\n  max_pending: 400\n"+strings.Replace(fastSession, "session:\n", "session:\n  ping_interval: 1m\n  ping_timeout: 1m\n", 1))
	e.sim.SetStopReading(true)
	pad := strings.Repeat("x", 1000)
	fields := make([]string, 100)
	for j := range fields {
		fields[j] = fmt.Sprintf(`"Pad%d":%q`, j, pad)
	}
	var replies []<-chan *nats.Msg
	for i := range stale {
		body := fmt.Sprintf(`{"action":"UserEvent","timeout_ms":60000,"fields":{"Marker":"stale-%d",%s}}`, i, strings.Join(fields, ","))
		replies = append(replies, requestAsync(t, e.nc, "ami.action.pbx1", body))
	}
	// The session exposes no signal for "registered"; its pending gauge
	// is the only outside view.
	pending := e.act.m.ActionsPending.WithLabelValues("pbx1")
	waitCond(t, "every stale action pending in the session", func() bool { return testutil.ToFloat64(pending) == stale })

	// Reading stays stopped, so the next connection cannot log in before
	// every stale action has been failed.
	e.sim.DropConnections()
	for i, ch := range replies {
		r := recvReply(t, ch)
		if r.Outcome() != "disconnected" {
			t.Fatalf("stale action %d: %s, want disconnected", i, r.Raw)
		}
	}
	if got := testutil.ToFloat64(pending); got != 0 {
		t.Errorf("ami_actions_pending = %v after the drop, want 0", got)
	}

	e.sim.SetStopReading(false)
	if err := e.act.svc.WaitUp(ctxLimit(t), "pbx1"); err != nil {
		t.Fatal(err)
	}
	fresh := request(t, e.nc, "ami.action.pbx1", `{"action":"Ping","fields":{"Marker":"fresh"}}`)
	wantCode(t, fresh, "ok")
	testenv.WaitSim(t, e.sim, "the fresh action", func() bool { return len(receivedWith(e.sim, "Marker", "fresh")) == 1 })
	if got := receivedWith(e.sim, "Marker", "stale-"); len(got) != 0 {
		t.Fatalf("the PBX received %d stale actions (first %s on connection %d): stale replay",
			len(got), got[0].ActionID, got[0].Conn)
	}
}

// TestRandomDropsExactlyOneReply runs 10,000 requests while the simulator
// drops its connections at random: every request gets exactly one reply,
// sent = ok + the sum of every error code, and the actor's own
// ami_actions_total says the same.
func TestRandomDropsExactlyOneReply(t *testing.T) {
	const (
		total      = 10000
		requesters = 32
	)
	// Reconnects within ~20 ms, so that the session is up most of the
	// time between drops and many requests are in flight at each one.
	e := newEnv(t, amisim.Config{RecordLimit: -1}, 0, true, "actor:\n  deny: [Hangup]\n"+
		"session:\n  backoff_initial: 5ms\n  backoff_max: 20ms\n  dial_timeout: 2s\n  banner_timeout: 2s\n  login_timeout: 2s\n")

	// Replies go to chaos.<id>; one subscription counts them all.
	var (
		mu                   sync.Mutex
		counts               = make([]int, total)
		codes                = make(map[string]int)
		badSubject, badReply atomic.Int64
	)
	first := make([]chan struct{}, total)
	for i := range first {
		first[i] = make(chan struct{})
	}
	sub, err := e.nc.Subscribe("chaos.>", func(m *nats.Msg) {
		id, err := strconv.Atoi(strings.TrimPrefix(m.Subject, "chaos."))
		if err != nil || id < 0 || id >= total {
			badSubject.Add(1)
			return
		}
		code := "<invalid reply>"
		if r, err := testenv.CheckReply[string](m.Data); err == nil {
			code = r.Outcome()
		} else {
			badReply.Add(1)
		}
		mu.Lock()
		counts[id]++
		n := counts[id]
		if n == 1 {
			codes[code]++
		}
		mu.Unlock()
		if n == 1 {
			close(first[id])
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}

	// The fault: drop every connection at random intervals of 20-100 ms.
	// This timer is the schedule of the fault, not a synchronisation.
	ctx, cancel := context.WithCancel(context.Background())
	var drops atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			tm := time.NewTimer(time.Duration(20+rand.IntN(81)) * time.Millisecond)
			select {
			case <-ctx.Done():
				tm.Stop()
				return
			case <-tm.C:
				e.sim.DropConnections()
				drops.Add(1)
			}
		}
	}()

	// A mix of requests, so that several codes are in the sum.
	body := func(i int) (string, string) {
		switch i % 20 {
		case 0:
			return "ami.action.pbx1", `{"action":`
		case 1:
			return "ami.action.pbx1.Hangup", ``
		case 2:
			return "ami.action.down.Ping", ``
		case 3:
			return "ami.action.nowhere.Ping", ``
		case 4:
			return "ami.action.pbx1.CoreShowChannels", ``
		case 5:
			return "ami.action.pbx1.NoSuchAction", ``
		}
		return "ami.action.pbx1", `{"action":"Ping","timeout_ms":2000}`
	}
	var next atomic.Int64
	errs := make(chan error, requesters)
	for range requesters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= total {
					return
				}
				subj, b := body(i)
				if err := e.nc.PublishRequest(subj, "chaos."+strconv.Itoa(i), []byte(b)); err != nil {
					errs <- err
					return
				}
				select {
				case <-first[i]:
				case <-time.After(waitLimit):
					errs <- fmt.Errorf("request %d (%s %s): no reply", i, subj, b)
					return
				}
			}
		}()
	}
	waitRequesters := make(chan struct{})
	go func() {
		for _, ch := range first {
			<-ch
		}
		close(waitRequesters)
	}()
	select {
	case <-waitRequesters:
	case err := <-errs:
		cancel()
		wg.Wait()
		t.Fatal(err)
	}
	cancel()
	wg.Wait()

	// The graceful shutdown answers and flushes everything; a duplicate
	// reply would be on the wire before the requester's flush returns.
	if err := e.act.stop(); err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	closed := sub.StatusChanged(nats.SubscriptionClosed)
	if err := sub.Drain(); err != nil { // every reply delivered so far goes through the callback
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(waitLimit):
		t.Fatal("the reply subscription did not drain")
	}
	mu.Lock()
	defer mu.Unlock()
	sum := 0
	for i, n := range counts {
		if n != 1 {
			t.Errorf("request %d got %d replies", i, n)
		}
	}
	for _, n := range codes {
		sum += n
	}
	t.Logf("%d requests, %d connection drops: %v", total, drops.Load(), codes)
	if sum != total {
		t.Errorf("sent %d, ok + each error code = %d (%v)", total, sum, codes)
	}
	if got := outcomes(t, e.act.m); fmt.Sprint(got) != fmt.Sprint(codes) {
		t.Errorf("ami_actions_total by outcome %v, requesters counted %v", got, codes)
	}
	if badSubject.Load()+badReply.Load() != 0 {
		t.Errorf("%d replies on unexpected subjects, %d not matching the schema", badSubject.Load(), badReply.Load())
	}
	// The run only means something if the faults hit requests in flight.
	if codes["ok"] == 0 || codes["disconnected"]+codes["unavailable"] == 0 || drops.Load() < 10 {
		t.Errorf("faults did not bite: %d drops, outcomes %v", drops.Load(), codes)
	}
}

// TestTooLarge: an answer over the actor's caps (bytes or list events) is
// read to its end and refused too_large, and the session stays up; a reply
// over the NATS max payload is refused too_large as well.
func TestTooLarge(t *testing.T) {
	// QueueStatus on the simulator is a response and 6 list events, about
	// 2.5 KB on the wire and 3 KB as JSON.
	caps := []struct{ name, extra string }{
		{"max_answer_bytes", "actor:\n  max_answer_bytes: 1024\n" + strings.Replace(fastSession, "session:\n", "session:\n  max_message_bytes: 1024\n", 1)},
		{"max_list_events", "actor:\n  max_list_events: 3\n"},
	}
	for _, c := range caps {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, amisim.Config{}, 0, false, c.extra)
			r := request(t, e.nc, "ami.action.pbx1.QueueStatus", ``)
			wantCode(t, r, "too_large")
			// The rest of the answer was read and discarded: the next
			// action gets its own answer, and no session was cut. (The
			// Ping may go on an extra session, opened because the first
			// still owed the rest of the answer: a new login, not a
			// reconnect.)
			wantCode(t, request(t, e.nc, "ami.action.pbx1.Ping", ``), "ok")
			if got := testutil.ToFloat64(e.act.m.SessionReconnects.WithLabelValues("pbx1")); got != 0 {
				t.Errorf("ami_session_reconnects_total = %v: a session was cut", got)
			}
			if got := testutil.ToFloat64(e.act.m.ActionsOversized.WithLabelValues("pbx1")); got != 1 {
				t.Errorf("ami_action_answers_oversized_total = %v, want 1", got)
			}
		})
	}
	t.Run("nats max_payload", func(t *testing.T) {
		e := newEnv(t, amisim.Config{}, 1024, false, "")
		r := request(t, e.nc, "ami.action.pbx1.QueueStatus", ``)
		wantCode(t, r, "too_large")
		if !strings.Contains(r.Error.Message, "max payload") {
			t.Errorf("message %q does not name the NATS max payload", r.Error.Message)
		}
		wantCode(t, request(t, e.nc, "ami.action.pbx1.Ping", ``), "ok")
	})
}
