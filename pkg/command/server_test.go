package command

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/session"
)

// blockingSender is a Sender that ignores ctx: each call signals entered
// (capacity 1), then waits for release before it echoes the action.
func blockingSender() (snd *fakeSender, entered <-chan struct{}, release chan struct{}) {
	in := make(chan struct{}, 1)
	release = make(chan struct{})
	return &fakeSender{fn: func(_ context.Context, a session.Action) (*session.Result, error) {
		in <- struct{}{}
		<-release
		return echoResult(a), nil
	}}, in, release
}

// subscribe delivers the messages on subject to the returned channel of
// capacity n until the test ends.
func subscribe(t *testing.T, nc *nats.Conn, subject string, n int) chan *nats.Msg {
	t.Helper()
	ch := make(chan *nats.Msg, n)
	sub, err := nc.ChanSubscribe(subject, ch)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sub.Unsubscribe() })
	return ch
}

// fakeSender stands in for a session: fn decides the outcome, calls counts
// how often the Server got as far as the PBX.
type fakeSender struct {
	calls   atomic.Int64
	mu      sync.Mutex
	actions []session.Action
	fn      func(ctx context.Context, a session.Action) (*session.Result, error)
}

func (f *fakeSender) Send(ctx context.Context, a session.Action) (*session.Result, error) {
	f.calls.Add(1)
	f.mu.Lock()
	f.actions = append(f.actions, a)
	f.mu.Unlock()
	return f.fn(ctx, a)
}

func (f *fakeSender) last() session.Action {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.actions[len(f.actions)-1]
}

// echoResult answers Success and echoes the action's headers as fields.
func echoResult(a session.Action) *session.Result {
	m := msgOf("Response", "Success", "ActionID", "inst.pbx1.1.7", "Message", "echo "+a.Name)
	for _, h := range a.Headers {
		m.Add(h.Key, h.Value)
	}
	return &session.Result{ActionID: "inst.pbx1.1.7", Response: m}
}

func echoSender() *fakeSender {
	return &fakeSender{fn: func(_ context.Context, a session.Action) (*session.Result, error) { return echoResult(a), nil }}
}

type testEnv struct {
	ns  *testenv.NATS
	nc  *nats.Conn // the requesters' connection
	srv *Server
	m   *metrics.Metrics
}

// newEnv starts NATS and a Server for nodes on its own connection; the
// Server is shut down at the end of the test unless the test did it.
func newEnv(t *testing.T, maxPayload int32, nodes Nodes, opts ...Option) *testEnv {
	t.Helper()
	ns := testenv.StartNATS(t, testenv.NoJetStream(), testenv.MaxPayload(maxPayload))
	env := &testEnv{ns: ns, nc: testenv.Connect(t, ns.ClientURL()), m: metrics.New()}
	env.srv = startServer(t, testenv.Connect(t, ns.ClientURL()), nodes, append([]Option{WithMetrics(env.m)}, opts...)...)
	return env
}

func startServer(t *testing.T, nc *nats.Conn, nodes Nodes, opts ...Option) *Server {
	t.Helper()
	s, err := New(nc, nodes, opts...)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.mu.Lock()
		stopped := s.stopped
		s.mu.Unlock()
		if !stopped {
			if err := s.Shutdown(ctx); err != nil {
				t.Errorf("Shutdown: %v", err)
			}
		}
	})
	return s
}

// request sends one request and returns its schema-checked reply.
func (env *testEnv) request(t *testing.T, subject, body string) replyJSON {
	t.Helper()
	msg, err := env.nc.Request(subject, []byte(body), 10*time.Second)
	if err != nil {
		t.Fatalf("request %s: %v", subject, err)
	}
	return decodeReply(t, msg.Data)
}

func (env *testEnv) outcome(node, action, outcome string) float64 {
	return testutil.ToFloat64(env.m.Actions.WithLabelValues(node, action, outcome))
}

// wantOutcome fails the test unless ami_actions_total counts want
// requests with these labels.
func (env *testEnv) wantOutcome(t *testing.T, node, action, outcome string, want float64) {
	t.Helper()
	if got := env.outcome(node, action, outcome); got != want {
		t.Fatalf("ami_actions_total{node=%q,action=%q,outcome=%q} = %v, want %v", node, action, outcome, got, want)
	}
}

func TestServerSuccess(t *testing.T) {
	snd := echoSender()
	env := newEnv(t, 0, Nodes{"pbx1": snd})
	r := env.request(t, "ami.action.pbx1", `{"action":"Originate","fields":{"Channel":"Local/100@demo","Variable":["A=1","B=2"],"Async":"true"},"timeout_ms":5000}`)
	if !r.OK || r.Node != "pbx1" || r.Action != "Originate" || r.ActionID != "inst.pbx1.1.7" || r.Response != "Success" || r.Message != "echo Originate" {
		t.Fatalf("reply %+v", r)
	}
	if v, _ := json.Marshal(r.Fields["Variable"]); string(v) != `["A=1","B=2"]` || r.Fields["Channel"] != "Local/100@demo" {
		t.Fatalf("fields %v", r.Fields)
	}
	a := snd.last()
	if a.Name != "Originate" || fmt.Sprint(a.Headers) != "[{Channel Local/100@demo} {Variable A=1} {Variable B=2} {Async true}]" {
		t.Fatalf("sent %+v", a)
	}
	env.wantOutcome(t, "pbx1", "Originate", "ok", 1)
	if n := testutil.CollectAndCount(env.m.ActionDuration); n != 1 {
		t.Fatalf("%d duration series", n)
	}
}

func TestServerSubjectForm(t *testing.T) {
	snd := echoSender()
	env := newEnv(t, 0, Nodes{"pbx1": snd})

	if r := env.request(t, "ami.action.pbx1.Ping", ``); !r.OK || r.Action != "Ping" || snd.last().Name != "Ping" {
		t.Fatalf("empty body: %+v", r)
	}
	if r := env.request(t, "ami.action.pbx1.Ping", `{"action":"PING"}`); !r.OK || r.Action != "Ping" {
		t.Fatalf("body action matching the subject's without case: %+v", r)
	}
	if r := env.request(t, "ami.action.pbx1.Command", `{"fields":{"Command":"core show version"}}`); !r.OK || snd.last().Name != "Command" {
		t.Fatalf("action from subject, fields from body: %+v", r)
	}
	calls := snd.calls.Load()
	r := env.request(t, "ami.action.pbx1.Ping", `{"action":"Originate"}`)
	if r.OK || r.Error.Code != CodeBadRequest || !strings.Contains(r.Error.Message, "does not match") {
		t.Fatalf("mismatch: %+v", r)
	}
	if snd.calls.Load() != calls {
		t.Fatal("a mismatched request reached the Sender")
	}
	// A subject permission on ami.action.*.Ping must not be a way to run
	// Logoff: the subject's action is the one that runs or is refused.
	r = env.request(t, "ami.action.pbx1.Ping", `{"action":"Logoff"}`)
	if r.OK || r.Error.Code != CodeBadRequest || snd.calls.Load() != calls {
		t.Fatalf("Logoff under a Ping subject: %+v", r)
	}
}

func TestServerErrorCodes(t *testing.T) {
	blockUntilCancelled := func(ctx context.Context, _ session.Action) (*session.Result, error) {
		<-ctx.Done()
		return nil, fmt.Errorf("pbx1: %w", session.ErrTimeout)
	}
	amiErr := resultOf(t, "unknown-action.raw", false)
	tests := []struct {
		name      string
		subject   string
		body      string
		fn        func(context.Context, session.Action) (*session.Result, error)
		wantCode  Code
		wantCalls int64
		wantLabel [2]string // node, action labels
		wantMsg   string
	}{
		{"bad_request", "ami.action.pbx1", `not json`, nil, CodeBadRequest, 0, [2]string{"pbx1", "other"}, "not valid JSON"},
		{"forbidden", "ami.action.pbx1", `{"action":"Logoff"}`, nil, CodeForbidden, 0, [2]string{"pbx1", "Logoff"}, "not allowed"},
		{"forbidden lower case", "ami.action.pbx1", `{"action":"logoff"}`, nil, CodeForbidden, 0, [2]string{"pbx1", "Logoff"}, "not allowed"},
		{"upper case by subject", "ami.action.pbx1.LOGOFF", ``, nil, CodeBadRequest, 0, [2]string{"pbx1", "Logoff"}, `ami.action.pbx1.Logoff`},
		{"forbidden Events", "ami.action.pbx1", `{"action":"events","fields":{"EventMask":"off"}}`, nil, CodeForbidden, 0, [2]string{"pbx1", "Events"}, "not allowed"},
		{"unknown_node", "ami.action.nosuch", `{"action":"Ping"}`, nil, CodeUnknownNode, 0, [2]string{"unknown", "Ping"}, `"nosuch"`},
		{"unknown_node by subject", "ami.action.nosuch.Ping", ``, nil, CodeUnknownNode, 0, [2]string{"unknown", "Ping"}, `"nosuch"`},
		{"unavailable", "ami.action.pbx1", `{"action":"Ping"}`, errFn(session.ErrNotConnected), CodeUnavailable, 1, [2]string{"pbx1", "Ping"}, "not connected"},
		{"overloaded (session)", "ami.action.pbx1", `{"action":"Ping"}`, errFn(session.ErrOverloaded), CodeOverloaded, 1, [2]string{"pbx1", "Ping"}, "pending"},
		{"timeout (session honours ctx)", "ami.action.pbx1", `{"action":"Ping","timeout_ms":30}`, blockUntilCancelled, CodeTimeout, 1, [2]string{"pbx1", "Ping"}, "within 30 ms"},
		{"disconnected", "ami.action.pbx1", `{"action":"Ping"}`, errFn(session.ErrDisconnected), CodeDisconnected, 1, [2]string{"pbx1", "Ping"}, "disconnected"},
		{"disconnected (closed)", "ami.action.pbx1", `{"action":"Ping"}`, errFn(session.ErrClosed), CodeDisconnected, 1, [2]string{"pbx1", "Ping"}, "closed"},
		{"too_large (session)", "ami.action.pbx1", `{"action":"Command","fields":{"Command":"x"}}`, errFn(session.ErrTooLarge), CodeTooLarge, 1, [2]string{"pbx1", "Command"}, "too large"},
		{"bad_request (session refuses)", "ami.action.pbx1", `{"action":"Ping"}`, errFn(session.ErrInvalidAction), CodeBadRequest, 1, [2]string{"pbx1", "Ping"}, "invalid action"},
		{"ami_error", "ami.action.pbx1", `{"action":"NoSuchAction"}`, resFn(amiErr), CodeAMIError, 1, [2]string{"pbx1", "other"}, "Invalid/unknown command"},
		{"internal (no answer, no error)", "ami.action.pbx1", `{"action":"Ping"}`, resFn(nil), CodeInternal, 1, [2]string{"pbx1", "Ping"}, "neither"},
		{"internal (unknown error)", "ami.action.pbx1", `{"action":"Ping"}`, errFn(errors.New("boom")), CodeInternal, 1, [2]string{"pbx1", "Ping"}, "boom"},
		{"internal (Sender panics)", "ami.action.pbx1", `{"action":"Ping"}`, func(context.Context, session.Action) (*session.Result, error) { panic("bug") }, CodeInternal, 1, [2]string{"pbx1", "Ping"}, "panicked"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			snd := &fakeSender{fn: tt.fn}
			if snd.fn == nil {
				snd.fn = func(context.Context, session.Action) (*session.Result, error) {
					t.Error("the Sender was called")
					return nil, errors.New("must not be called")
				}
			}
			env := newEnv(t, 0, Nodes{"pbx1": snd})
			r := env.request(t, tt.subject, tt.body)
			if r.OK || r.Error.Code != tt.wantCode || !strings.Contains(r.Error.Message, tt.wantMsg) {
				t.Fatalf("reply %+v, want code %s with %q", r.Error, tt.wantCode, tt.wantMsg)
			}
			if got := snd.calls.Load(); got != tt.wantCalls {
				t.Fatalf("Sender called %d times, want %d", got, tt.wantCalls)
			}
			env.wantOutcome(t, tt.wantLabel[0], tt.wantLabel[1], string(tt.wantCode), 1)
			if testutil.CollectAndCount(env.m.Actions) != 1 {
				t.Fatal("more than one outcome counted")
			}
		})
	}
}

func errFn(err error) func(context.Context, session.Action) (*session.Result, error) {
	return func(context.Context, session.Action) (*session.Result, error) {
		return nil, fmt.Errorf("node pbx1: %w", err)
	}
}

func resFn(res *session.Result) func(context.Context, session.Action) (*session.Result, error) {
	return func(context.Context, session.Action) (*session.Result, error) { return res, nil }
}

// TestServerRefusesInjectionBeforeSender: nothing that could forge a
// header or smuggle an action gets as far as the Sender.
func TestServerRefusesInjectionBeforeSender(t *testing.T) {
	snd := echoSender()
	env := newEnv(t, 0, Nodes{"pbx1": snd})
	for _, body := range []string{
		`{"action":"Ping\r\nAction: Logoff"}`,
		`{"action":"Ping\nAction: Logoff"}`,
		`{"action":"Ping","fields":{"X":"1\r\nAction: Logoff"}}`,
		`{"action":"Ping","fields":{"X":"1\nAction: Logoff"}}`,
		`{"action":"Ping","fields":{"X":"1\rAction: Logoff"}}`,
		`{"action":"Ping","fields":{"X\r\nAction":"Logoff"}}`,
		`{"action":"Ping","fields":{"X: Y":"1"}}`,
		`{"action":"Ping","fields":{"Variable":["A=1","B=2\r\nAction: Logoff"]}}`,
		`{"action":"Ping","fields":{"ActionID":"spoofed"}}`,
		`{"action":"Ping","fields":{"actionID":"spoofed"}}`,
		`{"action":"Ping","fields":{"Action":"Logoff"}}`,
		`{"action":"Ping","fields":{"X":"a\u0000b"}}`,
		`{"action":"Ping","fields":{"X":"` + strings.Repeat("y", 2000) + `"}}`,
	} {
		r := env.request(t, "ami.action.pbx1", body)
		if r.OK || r.Error.Code != CodeBadRequest {
			t.Errorf("%s: reply %+v", body, r)
		}
	}
	if n := snd.calls.Load(); n != 0 {
		t.Fatalf("the Sender was called %d times", n)
	}
}

// TestServerBadInputKeepsServing: each piece of bad input gets its error
// and costs nothing else: the next request is served.
func TestServerBadInputKeepsServing(t *testing.T) {
	snd := echoSender()
	env := newEnv(t, 16<<20, Nodes{"pbx1": snd}) // a NATS server that lets 10 MB through
	var many strings.Builder
	many.WriteString(`{"action":"Ping","fields":{`)
	for i := 0; i < 5000; i++ {
		fmt.Fprintf(&many, `"X-%d":"v",`, i)
	}
	many.WriteString(`"Last":"v"}}`)
	for _, tc := range []struct{ name, body, want string }{
		{"10 MB body", `{"action":"Ping","fields":{"X":"` + strings.Repeat("x", 10<<20) + `"}}`, "over the limit of 1048576 bytes"},
		{"invalid UTF-8", "{\"action\":\"Ping\",\"fields\":{\"X\":\"\xc3\x28\"}}", "not valid UTF-8"},
		{"thousands of fields", many.String(), "more than 126 fields or values"},
		{"nested JSON", `{"action":"Ping","fields":{"X":{"Y":{"Z":["deep"]}}}}`, "not an object"},
		{"deep arrays", `{"action":"Ping","fields":{"X":` + strings.Repeat("[", 500000) + `}}`, "must be a string"},
	} {
		r := env.request(t, "ami.action.pbx1", tc.body)
		if r.OK || r.Error.Code != CodeBadRequest || !strings.Contains(r.Error.Message, tc.want) {
			t.Fatalf("%s: reply %+v", tc.name, r.Error)
		}
		if r := env.request(t, "ami.action.pbx1.Ping", ``); !r.OK {
			t.Fatalf("after %s: %+v", tc.name, r)
		}
	}
	if n := snd.calls.Load(); n != 5 {
		t.Fatalf("Sender called %d times, want only the 5 Pings", n)
	}
}

// TestServerTimeoutPrecision: with a Sender that ignores ctx and never
// returns in time, the timeout reply still goes out at the deadline; the
// Sender's later answer is discarded and counted, and no second reply is
// ever sent.
func TestServerTimeoutPrecision(t *testing.T) {
	snd, entered, release := blockingSender()
	env := newEnv(t, 0, Nodes{"pbx1": snd})
	inbox := nats.NewInbox()
	replies := subscribe(t, env.nc, inbox, 10)

	const deadline = 200 * time.Millisecond
	start := time.Now()
	if err := env.nc.PublishRequest("ami.action.pbx1", inbox, []byte(`{"action":"Ping","timeout_ms":200}`)); err != nil {
		t.Fatal(err)
	}
	var first *nats.Msg
	select {
	case first = <-replies:
	case <-time.After(5 * time.Second):
		t.Fatal("no reply")
	}
	elapsed := time.Since(start)
	t.Logf("timeout reply %v after the request for a %v deadline (%v late)", elapsed, deadline, elapsed-deadline)
	if r := decodeReply(t, first.Data); r.OK || r.Error.Code != CodeTimeout || !strings.Contains(r.Error.Message, "within 200 ms") {
		t.Fatalf("reply %+v", r.Error)
	}
	if elapsed < deadline || elapsed > deadline+200*time.Millisecond {
		t.Fatalf("timeout reply after %v, want within [%v, %v]", elapsed, deadline, deadline+200*time.Millisecond)
	}
	<-entered

	// The Sender's answer comes now, late: it is discarded and counted.
	close(release)
	shutdown(t, env.srv)
	if err := env.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := len(replies); n != 0 {
		t.Fatalf("%d more replies after the timeout reply", n)
	}
	if got := testutil.ToFloat64(env.m.LateResponses.WithLabelValues("pbx1")); got != 1 {
		t.Fatalf("late responses = %v, want 1", got)
	}
	env.wantOutcome(t, "pbx1", "Ping", "timeout", 1)
	// A discarded answer is not counted ok.
	env.wantOutcome(t, "pbx1", "Ping", "ok", 0)
}

func shutdown(t *testing.T, s *Server) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// TestServerTimeoutDefaultAndCap: no timeout_ms means the default, and a
// timeout_ms over the cap is lowered to it rather than refused.
func TestServerTimeoutDefaultAndCap(t *testing.T) {
	snd := &fakeSender{fn: func(ctx context.Context, _ session.Action) (*session.Result, error) {
		<-ctx.Done()
		return nil, session.ErrTimeout
	}}
	env := newEnv(t, 0, Nodes{"pbx1": snd}, WithTimeouts(50*time.Millisecond, 150*time.Millisecond))
	for _, tc := range []struct {
		body string
		ms   string
	}{
		{`{"action":"Ping"}`, "within 50 ms"},
		{`{"action":"Ping","timeout_ms":100}`, "within 100 ms"},
		{`{"action":"Ping","timeout_ms":600000}`, "within 150 ms"},
	} {
		start := time.Now()
		r := env.request(t, "ami.action.pbx1", tc.body)
		if r.Error == nil || r.Error.Code != CodeTimeout || !strings.Contains(r.Error.Message, tc.ms) {
			t.Fatalf("%s: reply %+v", tc.body, r.Error)
		}
		if e := time.Since(start); e > 5*time.Second {
			t.Fatalf("%s: reply after %v", tc.body, e)
		}
	}
	if got := testutil.ToFloat64(env.m.LateResponses.WithLabelValues("pbx1")); got != 0 {
		t.Fatalf("late responses = %v: a timeout error is not an answer", got)
	}
}

// TestServerRaceAtDeadline: answers that come around the deadline race the
// timeout reply. Every request gets exactly one reply, and every answer
// that lost the race is counted late.
func TestServerRaceAtDeadline(t *testing.T) {
	const n = 200
	snd := &fakeSender{fn: func(_ context.Context, a session.Action) (*session.Result, error) {
		// The fake's own behaviour, not synchronisation: answer around
		// the 20 ms deadline, ignoring ctx.
		time.Sleep(time.Duration(rand.IntN(40)) * time.Millisecond)
		return echoResult(a), nil
	}}
	env := newEnv(t, 0, Nodes{"pbx1": snd})
	counts := collectReplies(t, env.nc, n, func(inbox string) error {
		return env.nc.PublishRequest("ami.action.pbx1", inbox, []byte(`{"action":"Ping","timeout_ms":20}`))
	}, env.srv)
	var ok, timeout int
	for _, msgs := range counts {
		if len(msgs) != 1 {
			t.Fatalf("a request got %d replies", len(msgs))
		}
		switch r := decodeReply(t, msgs[0]); {
		case r.OK:
			ok++
		case r.Error.Code == CodeTimeout:
			timeout++
		default:
			t.Fatalf("reply %+v", r.Error)
		}
	}
	late := int(testutil.ToFloat64(env.m.LateResponses.WithLabelValues("pbx1")))
	t.Logf("%d ok, %d timeout, %d late", ok, timeout, late)
	if ok+timeout != n || late != timeout || int(env.outcome("pbx1", "Ping", "ok")) != ok {
		t.Fatalf("ok %d + timeout %d != %d or late %d != timeout", ok, timeout, n, late)
	}
}

// collectReplies sends n requests, each with its own reply subject, waits
// for one reply to each, shuts the servers down (so everything they would
// ever send is sent) and returns every reply per request.
func collectReplies(t *testing.T, nc *nats.Conn, n int, send func(inbox string) error, servers ...*Server) map[string][][]byte {
	t.Helper()
	prefix := nats.NewInbox()
	ch := make(chan *nats.Msg, 2*n)
	sub, err := nc.ChanSubscribe(prefix+".*", ch)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	for i := 0; i < n; i++ {
		if err := send(fmt.Sprintf("%s.%d", prefix, i)); err != nil {
			t.Fatal(err)
		}
	}
	got := make(map[string][][]byte, n)
	timeout := time.After(30 * time.Second)
	for len(got) < n {
		select {
		case m := <-ch:
			got[m.Subject] = append(got[m.Subject], m.Data)
		case <-timeout:
			t.Fatalf("%d of %d requests answered", len(got), n)
		}
	}
	for _, s := range servers {
		shutdown(t, s)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for {
		select {
		case m := <-ch:
			got[m.Subject] = append(got[m.Subject], m.Data)
		default:
			return got
		}
	}
}

func TestServerNoReplySubject(t *testing.T) {
	snd := echoSender()
	env := newEnv(t, 0, Nodes{"pbx1": snd})
	if err := env.nc.Publish("ami.action.pbx1", []byte(`{"action":"Originate"}`)); err != nil {
		t.Fatal(err)
	}
	// Requests from one connection arrive in order, so once this one is
	// answered the plain publish has been dealt with.
	if r := env.request(t, "ami.action.pbx1", `{"action":"Ping"}`); !r.OK {
		t.Fatalf("reply %+v", r)
	}
	if got := testutil.ToFloat64(env.m.RequestsIgnored.WithLabelValues("no_reply_subject")); got != 1 {
		t.Fatalf("ignored = %v, want 1", got)
	}
	if n := snd.calls.Load(); n != 1 || snd.last().Name != "Ping" {
		t.Fatalf("Sender called %d times; a request without a reply subject must not run", n)
	}
}

// TestServerQueueGroupExactlyOnce: two replicas in one queue group share
// the requests and each request is answered exactly once.
func TestServerQueueGroupExactlyOnce(t *testing.T) {
	ns := testenv.StartNATS(t, testenv.NoJetStream())
	nc := testenv.Connect(t, ns.ClientURL())
	a, b := echoSender(), echoSender()
	srvA := startServer(t, testenv.Connect(t, ns.ClientURL()), Nodes{"pbx1": a})
	srvB := startServer(t, testenv.Connect(t, ns.ClientURL()), Nodes{"pbx1": b})
	const n = 400
	counts := collectReplies(t, nc, n, func(inbox string) error {
		return nc.PublishRequest("ami.action.pbx1.Ping", inbox, nil)
	}, srvA, srvB)
	for subj, msgs := range counts {
		if len(msgs) != 1 {
			t.Fatalf("%s got %d replies", subj, len(msgs))
		}
		if r := decodeReply(t, msgs[0]); !r.OK {
			t.Fatalf("reply %+v", r)
		}
	}
	ca, cb := a.calls.Load(), b.calls.Load()
	t.Logf("replica A ran %d, replica B %d", ca, cb)
	if ca+cb != n || ca == 0 || cb == 0 {
		t.Fatalf("replicas ran %d + %d actions for %d requests", ca, cb, n)
	}
}

// TestServerOverloaded: with every worker busy a request is answered
// overloaded at once, and the busy ones still complete.
func TestServerOverloaded(t *testing.T) {
	release := make(chan struct{})
	entered := make(chan struct{}, 2)
	snd := &fakeSender{fn: func(_ context.Context, a session.Action) (*session.Result, error) {
		entered <- struct{}{}
		<-release
		return echoResult(a), nil
	}}
	env := newEnv(t, 0, Nodes{"pbx1": snd}, WithMaxInflight(2))
	inbox := nats.NewInbox()
	busy := subscribe(t, env.nc, inbox+".*", 2)
	for i := 0; i < 2; i++ {
		if err := env.nc.PublishRequest("ami.action.pbx1.Ping", fmt.Sprintf("%s.%d", inbox, i), nil); err != nil {
			t.Fatal(err)
		}
	}
	<-entered
	<-entered
	start := time.Now()
	r := env.request(t, "ami.action.pbx1.Originate", `{"timeout_ms":60000}`)
	if r.OK || r.Error.Code != CodeOverloaded || r.Node != "pbx1" || r.Action != "Originate" {
		t.Fatalf("reply %+v", r)
	}
	t.Logf("overloaded reply in %v", time.Since(start))
	env.wantOutcome(t, "pbx1", "Originate", "overloaded", 1)
	if snd.calls.Load() != 2 {
		t.Fatalf("Sender called %d times", snd.calls.Load())
	}
	close(release)
	for i := 0; i < 2; i++ {
		if r := decodeReply(t, (<-busy).Data); !r.OK {
			t.Fatalf("busy request: %+v", r)
		}
	}
}

// TestServerReplyTooLarge: an answer over the NATS max payload becomes a
// too_large reply.
func TestServerReplyTooLarge(t *testing.T) {
	const maxPayload = 64 << 10
	big := &session.Result{ActionID: "x", Response: msgOf("Response", "Success", "Message", "Command output follows")}
	for i := 0; i < 2000; i++ {
		big.Output = append(big.Output, strings.Repeat("o", 60))
	}
	snd := &fakeSender{fn: resFn(big)}
	env := newEnv(t, maxPayload, Nodes{"pbx1": snd})
	r := env.request(t, "ami.action.pbx1", `{"action":"Command","fields":{"Command":"core show help"}}`)
	if r.OK || r.Error.Code != CodeTooLarge || !strings.Contains(r.Error.Message, "65536") {
		t.Fatalf("reply %+v", r.Error)
	}
	env.wantOutcome(t, "pbx1", "Command", "too_large", 1)
}

// TestServerLabelsAreBounded: unknown nodes and actions do not create
// label values.
func TestServerLabelsAreBounded(t *testing.T) {
	snd := echoSender()
	p, err := NewPolicy(nil, []string{"MyDenied"})
	if err != nil {
		t.Fatal(err)
	}
	env := newEnv(t, 0, Nodes{"pbx1": snd}, WithPolicy(p))
	for i := 0; i < 5; i++ {
		env.request(t, fmt.Sprintf("ami.action.node%d", i), `{"action":"Ping"}`)
		env.request(t, "ami.action.pbx1", fmt.Sprintf(`{"action":"Custom%d"}`, i))
	}
	env.request(t, "ami.action.pbx1.mydenied", ``)
	env.wantOutcome(t, "unknown", "Ping", "unknown_node", 5)
	env.wantOutcome(t, "pbx1", "other", "ok", 5)
	env.wantOutcome(t, "pbx1", "MyDenied", "forbidden", 1)
	if n := testutil.CollectAndCount(env.m.Actions); n != 3 {
		t.Fatalf("%d action series, want 3", n)
	}
}

// TestServerGracefulShutdown: Shutdown stops taking requests at once, but
// the request in flight is answered before it returns.
func TestServerGracefulShutdown(t *testing.T) {
	snd, entered, release := blockingSender()
	env := newEnv(t, 0, Nodes{"pbx1": snd})
	drained := make(chan struct{})
	env.srv.testHookDrained = func() { close(drained) }

	inbox := nats.NewInbox()
	inflight := subscribe(t, env.nc, inbox, 2)
	if err := env.nc.PublishRequest("ami.action.pbx1.Ping", inbox, nil); err != nil {
		t.Fatal(err)
	}
	<-entered

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		done <- env.srv.Shutdown(ctx)
	}()
	<-drained
	// No new request is taken: with the only replica gone, NATS says so.
	if _, err := env.nc.Request("ami.action.pbx1.Ping", nil, 5*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("request during shutdown: err = %v, want no responders", err)
	}
	select {
	case err := <-done:
		t.Fatalf("Shutdown returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	select {
	case m := <-inflight:
		if r := decodeReply(t, m.Data); !r.OK {
			t.Fatalf("in-flight reply %+v", r)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request in flight was not answered")
	}
	if snd.calls.Load() != 1 {
		t.Fatalf("Sender called %d times", snd.calls.Load())
	}
}

// TestServerShutdownDeadline: Shutdown gives up when its context ends
// before a stuck Sender returns, and says how many requests it left.
func TestServerShutdownDeadline(t *testing.T) {
	snd, entered, release := blockingSender()
	env := newEnv(t, 0, Nodes{"pbx1": snd}, WithTimeouts(time.Second, time.Minute))
	defer close(release) // runs before the cleanups, so the handler ends
	if err := env.nc.PublishRequest("ami.action.pbx1.Ping", nats.NewInbox(), nil); err != nil {
		t.Fatal(err)
	}
	<-entered
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	err := env.srv.Shutdown(ctx)
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "1 requests still in flight") {
		t.Fatalf("Shutdown = %v", err)
	}
	if err := env.srv.Shutdown(context.Background()); err == nil {
		t.Fatal("a second Shutdown succeeded")
	}
}

// TestServerShutdownWhileNATSDown: a SIGTERM during a NATS outage must not
// wait for a drain or flush that only a server could confirm: Shutdown
// returns in well under a second instead of its whole budget.
func TestServerShutdownWhileNATSDown(t *testing.T) {
	ns := testenv.StartNATS(t, testenv.NoJetStream())
	nc, err := nats.Connect(ns.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	down := make(chan struct{})
	nc.SetDisconnectErrHandler(func(*nats.Conn, error) { close(down) })
	s, err := New(nc, Nodes{"pbx1": echoSender()})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	ns.Stop()
	<-down
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	start := time.Now()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Shutdown took %v with NATS down", d)
	}
}

func TestServerRun(t *testing.T) {
	ns := testenv.StartNATS(t, testenv.NoJetStream())
	s, err := New(testenv.Connect(t, ns.ClientURL()), Nodes{"pbx1": echoSender()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := s.Run(ctx); err != nil {
		t.Fatalf("Run with an ended context: %v", err)
	}
	if err := s.Run(context.Background()); err == nil {
		t.Fatal("Run after Shutdown succeeded")
	}
}

// TestCallRepliesOnce: however many paths try to reply to one request,
// exactly one reply is sent and counted.
func TestCallRepliesOnce(t *testing.T) {
	ns := testenv.StartNATS(t, testenv.NoJetStream())
	nc := testenv.Connect(t, ns.ClientURL())
	m := metrics.New()
	s, err := New(nc, Nodes{"pbx1": echoSender()}, WithMetrics(m))
	if err != nil {
		t.Fatal(err)
	}
	inbox := nats.NewInbox()
	replies := subscribe(t, nc, inbox, 100)
	c := s.newCall(&nats.Msg{Subject: "ami.action.pbx1.Ping", Reply: inbox}, *s.nodes.Load(), "pbx1", "Ping", time.Now())
	var wg sync.WaitGroup
	for i := 0; i < 50; i++ {
		wg.Go(func() { c.fail(CodeTimeout, "t") })
	}
	wg.Wait()
	if err := nc.Flush(); err != nil { // every reply has come back by the PONG
		t.Fatal(err)
	}
	if n := len(replies); n != 1 {
		t.Fatalf("%d replies, want 1", n)
	}
	if got := testutil.ToFloat64(m.Actions.WithLabelValues("pbx1", "Ping", "timeout")); got != 1 {
		t.Fatalf("counted %v", got)
	}
}

func TestNewValidates(t *testing.T) {
	ns := testenv.StartNATS(t, testenv.NoJetStream())
	nc := testenv.Connect(t, ns.ClientURL())
	ok := Nodes{"pbx1": echoSender()}
	for _, tc := range []struct {
		name  string
		nc    *nats.Conn
		nodes Nodes
		opts  []Option
		want  string
	}{
		{"nil conn", nil, ok, nil, "nil NATS connection"},
		{"bad node name", nc, Nodes{"pbx.1": echoSender()}, nil, `node name "pbx.1"`},
		{"nil sender", nc, Nodes{"pbx1": nil}, nil, "nil Sender"},
		{"bad prefix", nc, ok, []Option{WithSubjectPrefix("ami.>")}, "subject prefix"},
		{"empty prefix token", nc, ok, []Option{WithSubjectPrefix("a..b")}, "subject prefix"},
		{"bad queue", nc, ok, []Option{WithQueueGroup("")}, "queue group"},
		{"default over max", nc, ok, []Option{WithTimeouts(2*time.Second, time.Second)}, "timeouts"},
		{"zero in-flight", nc, ok, []Option{WithMaxInflight(0)}, "max in-flight"},
		{"zero request bytes", nc, ok, []Option{WithMaxRequestBytes(0)}, "max request bytes"},
		{"nil policy", nc, ok, []Option{WithPolicy(nil)}, "policy"},
	} {
		if _, err := New(tc.nc, tc.nodes, tc.opts...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

// TestServerSubjectPrefix: a custom, dotted prefix and queue group work.
func TestServerSubjectPrefix(t *testing.T) {
	env := newEnv(t, 0, Nodes{"pbx1": echoSender()}, WithSubjectPrefix("acme.pbx"), WithQueueGroup("q1"))
	if r := env.request(t, "acme.pbx.action.pbx1.Ping", ``); !r.OK || r.Node != "pbx1" || r.Action != "Ping" {
		t.Fatalf("reply %+v", r)
	}
	if _, err := env.nc.Request("ami.action.pbx1.Ping", nil, 5*time.Second); !errors.Is(err, nats.ErrNoResponders) {
		t.Fatalf("default prefix answered: %v", err)
	}
}

// TestServerSetNodes: SetNodes replaces the node list while serving: a
// node dropped is unknown_node (counted under node "unknown"), a node added
// is served; a bad list is refused whole and changes nothing.
func TestServerSetNodes(t *testing.T) {
	one, two := echoSender(), echoSender()
	env := newEnv(t, 0, Nodes{"pbx1": one})
	if r := env.request(t, "ami.action.pbx2.Ping", ``); r.Error == nil || r.Error.Code != CodeUnknownNode {
		t.Fatalf("pbx2 before SetNodes: %+v", r)
	}
	for _, bad := range []Nodes{{"pbx2": two, "bad.name": two}, {"pbx2": nil}} {
		if err := env.srv.SetNodes(bad); err == nil {
			t.Fatalf("SetNodes(%v) accepted", bad)
		}
	}
	if r := env.request(t, "ami.action.pbx1.Ping", ``); !r.OK {
		t.Fatalf("pbx1 after refused lists: %+v", r)
	}
	if err := env.srv.SetNodes(Nodes{"pbx2": two}); err != nil {
		t.Fatal(err)
	}
	if r := env.request(t, "ami.action.pbx1.Ping", ``); r.Error == nil || r.Error.Code != CodeUnknownNode {
		t.Fatalf("pbx1 after its removal: %+v", r)
	}
	if r := env.request(t, "ami.action.pbx2.Ping", ``); !r.OK {
		t.Fatalf("pbx2 after SetNodes: %+v", r)
	}
	if one.calls.Load() != 1 || two.calls.Load() != 1 {
		t.Fatalf("calls: pbx1 %d, pbx2 %d; want 1 each", one.calls.Load(), two.calls.Load())
	}
	env.wantOutcome(t, "unknown", "Ping", string(CodeUnknownNode), 2)
}
