package session

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
	"github.com/amibus/amibus/pkg/amiwire"
)

// upSession starts a simulator with cfg and a session to it (startSession
// with opts), and returns once the session is up.
func upSession(t *testing.T, cfg amisim.Config, opts ...Option) (*amisim.Server, *Session, *recorder) {
	t.Helper()
	srv := testenv.StartSim(t, cfg)
	s, rec, _ := startSession(t, srv.Addr(), opts...)
	waitStarts(t, rec, 1)
	return srv, s, rec
}

// stalledSession is a session up on a simulator that has stopped reading,
// with room for 400 pending actions; long keepalive and write deadline:
// only a drop ends the connection.
func stalledSession(t *testing.T) (*amisim.Server, *Session, *recorder) {
	t.Helper()
	srv, s, rec := upSession(t, amisim.Config{}, WithMaxPending(400), WithKeepalive(time.Minute, time.Minute))
	srv.SetStopReading(true)
	return srv, s, rec
}

// startSession starts a session to addr as ami/amisecret with a recorder
// and a private metrics set; opts come last and win.
func startSession(t *testing.T, addr string, opts ...Option) (*Session, *recorder, *metrics.Metrics) {
	t.Helper()
	rec, m := newRecorder(), metrics.New()
	base := []Option{
		WithCredentials("ami", "amisecret"), WithHandler(rec), WithMetrics(m),
		WithBackoff(10*time.Millisecond, 200*time.Millisecond), WithDialLimiter(NewDialLimiter(4)),
	}
	s, err := New("pbx1", addr, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	return s, rec, m
}

// waitStarts waits for n SessionStarted calls and returns the recording.
func waitStarts(t *testing.T, r *recorder, n int) []call {
	t.Helper()
	return r.waitFor(t, fmt.Sprintf("%d session start(s)", n), func(l []call) bool { return count(l, "start") >= n })
}

// received returns the actions named name the simulator received.
func received(srv *amisim.Server, name string) []amisim.Action {
	var out []amisim.Action
	for _, a := range srv.Received() {
		if strings.EqualFold(a.Name, name) {
			out = append(out, a)
		}
	}
	return out
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestLoginPlainAndMD5(t *testing.T) {
	tests := []struct {
		name string
		auth AuthMethod
	}{{"plain", AuthPlain}, {"md5", AuthMD5}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			leakCheck(t)
			srv := testenv.StartSim(t, amisim.Config{})
			s, rec, _ := startSession(t, srv.Addr(), WithAuth(tt.auth))
			log := waitStarts(t, rec, 1)
			if log[0].name != "9.0.0" {
				t.Errorf("SessionStarted version %q, want the banner's 9.0.0", log[0].name)
			}
			if !strings.HasPrefix(log[0].id, ProcessInstance()+"-pbx1-") || s.ID() != log[0].id {
				t.Errorf("session id %q (ID() %q), want %q-pbx1-<epoch>", log[0].id, s.ID(), ProcessInstance())
			}

			logins := received(srv, "Login")
			if len(logins) != 1 {
				t.Fatalf("simulator received %d Logins, want 1", len(logins))
			}
			secret, hasSecret := logins[0].Header("Secret")
			key, hasKey := logins[0].Header("Key")
			switch tt.auth {
			case AuthPlain:
				if !hasSecret || secret != "amisecret" || hasKey {
					t.Errorf("plain Login headers %v", logins[0].Headers)
				}
			case AuthMD5:
				if hasSecret || !hasKey || len(key) != 32 || len(received(srv, "Challenge")) != 1 {
					t.Errorf("MD5 Login headers %v, Challenges %d", logins[0].Headers, len(received(srv, "Challenge")))
				}
			}

			res, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "Ping"})
			if err != nil {
				t.Fatalf("Ping: %v", err)
			}
			if got := res.Response.Get("Ping"); string(res.Response.Name()) != "Success" || got != "Pong" {
				t.Errorf("Ping answer %q", res.Response.String())
			}
			if len(res.ActionID) > maxActionIDLen || !strings.HasPrefix(res.ActionID, ProcessInstance()+".pbx1.") {
				t.Errorf("ActionID %q", res.ActionID)
			}
			if got := string(res.Response.ActionID()); got != res.ActionID {
				t.Errorf("response ActionID %q, Result.ActionID %q", got, res.ActionID)
			}

			s.Close()
			if got := len(received(srv, "Logoff")); got != 1 {
				t.Errorf("simulator received %d Logoffs after Close, want 1", got)
			}
			log = rec.snapshot()
			if last := log[len(log)-1]; last.kind != "end" || last.name != ReasonClosed {
				t.Errorf("last Handler call %+v, want end with reason closed", last)
			}
			if _, err := s.Send(context.Background(), Action{Name: "Ping"}); !errors.Is(err, ErrClosed) {
				t.Errorf("Send after Close: %v, want ErrClosed", err)
			}
		})
	}
}

func TestWrongPasswordIsReportedAndRetriedSlowly(t *testing.T) {
	leakCheck(t)
	const authBackoff = 300 * time.Millisecond
	srv := testenv.StartSim(t, amisim.Config{AuthFailDelay: 10 * time.Millisecond})
	logger, logs := observedLogger()
	// Without the auth backoff this would retry every ~10 ms.
	s, rec, m := startSession(t, srv.Addr(), WithCredentials("ami", "not-the-secret"),
		WithAuthFailureBackoff(authBackoff), WithBackoff(time.Millisecond, 10*time.Millisecond), WithLogger(logger))

	testenv.WaitSim(t, srv, "first login attempt", func() bool { return srv.Stats().LoginFailures >= 1 })
	first := time.Now()
	testenv.WaitSim(t, srv, "third login attempt", func() bool { return srv.Stats().LoginFailures >= 3 })
	if gap := time.Since(first); gap < 2*authBackoff-100*time.Millisecond {
		t.Errorf("3 login attempts within %v; the auth failure backoff (%v) was not applied", gap, authBackoff)
	}
	if _, err := s.Send(context.Background(), Action{Name: "Ping"}); !errors.Is(err, ErrNotConnected) {
		t.Errorf("Send while login fails: %v, want ErrNotConnected", err)
	}
	eventually(t, "login failures counted", func() bool {
		return testutil.ToFloat64(m.SessionLoginFailed.WithLabelValues("pbx1")) >= 3
	})
	s.Close()

	failures := int(testutil.ToFloat64(m.SessionLoginFailed.WithLabelValues("pbx1")))
	var lines int
	for _, e := range logs.All() {
		ctx := e.ContextMap()
		if strings.Contains(e.Message, "refused the login") {
			lines++
			if ctx["node"] != "pbx1" || ctx["username"] != "ami" {
				t.Errorf("auth failure line without node and username: %v", ctx)
			}
		}
	}
	if lines != failures {
		t.Errorf("%d auth failure log lines for %d failures, want one each", lines, failures)
	}
	if n := count(rec.snapshot(), "start"); n != 0 {
		t.Errorf("%d sessions started with a wrong secret", n)
	}
	assertNoSecret(t, logs, "not-the-secret")
}

func TestEventsMask(t *testing.T) {
	for _, mask := range []string{"on", "off"} {
		t.Run(mask, func(t *testing.T) {
			leakCheck(t)
			srv := testenv.StartSim(t, amisim.Config{})
			s, rec, _ := startSession(t, srv.Addr(), WithEvents(mask))
			waitStarts(t, rec, 1)
			if got, _ := received(srv, "Login")[0].Header("Events"); got != mask {
				t.Errorf("Login sent Events: %q, want %q", got, mask)
			}
			srv.Emit("UserEvent", [2]string{"UserEvent", "probe"})
			// The simulator answers after writing the event, on the same
			// stream: once the Ping's answer is read, so is the event.
			if _, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "Ping"}); err != nil {
				t.Fatal(err)
			}
			got := countName(rec.snapshot(), "UserEvent")
			if want := map[string]int{"on": 1, "off": 0}[mask]; got != want {
				t.Errorf("Events %s: %d UserEvents delivered, want %d", mask, got, want)
			}
		})
	}
}

func TestKeepaliveDetectsAPeerThatNeverAnswers(t *testing.T) {
	leakCheck(t)
	srv := testenv.StartSim(t, amisim.Config{})
	srv.SetNeverAnswer("Ping", true)
	_, rec, _ := startSession(t, srv.Addr(), WithKeepalive(100*time.Millisecond, 200*time.Millisecond))
	log := rec.waitFor(t, "the dead session to end and a new one to start", func(l []call) bool {
		return count(l, "end") >= 1 && count(l, "start") >= 2
	})
	var end call
	for _, x := range log {
		if x.kind == "end" {
			end = x
			break
		}
	}
	if end.name != ReasonKeepalive {
		t.Errorf("session ended with %q, want %q", end.name, ReasonKeepalive)
	}
	if len(received(srv, "Ping")) == 0 {
		t.Error("no Ping reached the simulator")
	}
}

func TestKeepaliveOnlyPingsAnIdleSession(t *testing.T) {
	leakCheck(t)
	const interval = 200 * time.Millisecond
	srv := testenv.StartSim(t, amisim.Config{})
	_, rec, _ := startSession(t, srv.Addr(), WithKeepalive(interval, 5*time.Second))
	waitStarts(t, rec, 1)
	pings := func() int { return len(received(srv, "Ping")) }

	testenv.WaitSim(t, srv, "first Ping", func() bool { return pings() >= 1 })
	first := time.Now()
	testenv.WaitSim(t, srv, "fourth Ping", func() bool { return pings() >= 4 })
	if gap := time.Since(first); gap < 3*interval-50*time.Millisecond {
		t.Errorf("4 Pings within %v on an idle session, want one per %v", gap, interval)
	}
	// Nothing but Login and Ping was sent on an idle session.
	for _, a := range srv.Received() {
		if a.Name != "Login" && a.Name != "Ping" {
			t.Errorf("idle session sent %s", a.Name)
		}
	}

	// Busy: an event every 5 ms for 2 s leaves the session never idle.
	before := pings()
	srv.EmitEvents(400, 200)
	rec.waitFor(t, "the 400 events", func(l []call) bool { return count(l, "event") >= 400 })
	if sent := pings() - before; sent > 1 {
		t.Errorf("%d Pings sent while events flowed every 5 ms (interval %v)", sent, interval)
	}
}

func TestRestartReconnectsQuickly(t *testing.T) {
	leakCheck(t)
	const down = time.Second
	srv := testenv.StartSim(t, amisim.Config{})
	// Default backoff: the restart path must be fast without tuning.
	_, rec, _ := startSession(t, srv.Addr(), WithBackoff(DefaultBackoffInitial, DefaultBackoffMax))
	waitStarts(t, rec, 1)
	rec.waitFor(t, "FullyBooted", func(l []call) bool { return countName(l, "FullyBooted") == 1 })

	restarted := make(chan time.Time, 1)
	go func() {
		srv.Restart(down)
		restarted <- time.Now()
	}()
	log := waitStarts(t, rec, 2)
	var back time.Time
	select {
	case back = <-restarted:
	case <-time.After(waitLimit):
		t.Fatal("Restart did not return")
	}
	// Restart returns BootDelay after listening again.
	listening := back.Add(-amisim.DefaultBootDelay)

	var first, second []call
	var end call
	for _, x := range log {
		switch {
		case x.kind == "end":
			end = x
		case x.id == log[0].id:
			first = append(first, x)
		default:
			second = append(second, x)
		}
	}
	if end.name != ReasonShutdown {
		t.Errorf("session ended with %q, want %q", end.name, ReasonShutdown)
	}
	if last := first[len(first)-1]; last.name != "Shutdown" || last.seq != end.lastSeq {
		t.Errorf("last event of the old session %s seq %d, SessionEnded last_seq %d; want Shutdown with the same seq",
			last.name, last.seq, end.lastSeq)
	}
	if second[0].kind != "start" || second[0].id == log[0].id {
		t.Fatalf("after the restart: %+v, want a start with a new session id", second[0])
	}
	if lag := second[0].t.Sub(listening); lag > time.Second {
		t.Errorf("session back %v after the PBX listened again, want within about a second", lag)
	}
}

func TestEventsAreNumberedAndFramedByTheLifecycle(t *testing.T) {
	leakCheck(t)
	srv, s, rec := upSession(t, amisim.Config{})
	srv.EmitEvents(500, 0)
	testenv.WaitSim(t, srv, "events sent", func() bool { return srv.SentEventCount() >= 500 })
	sent := srv.SentEventCount()
	rec.waitFor(t, "every sent event", func(l []call) bool { return count(l, "event") == sent })

	srv.DropConnections()
	waitStarts(t, rec, 2)
	srv.EmitEvents(100, 0)
	if _, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "Ping"}); err != nil {
		t.Fatal(err)
	}
	s.Close()

	log := rec.snapshot()
	byConn := map[int][]amisim.SentEvent{}
	for _, e := range srv.SentEvents() {
		byConn[e.Conn] = append(byConn[e.Conn], e)
	}
	logins := received(srv, "Login")
	if len(logins) != 2 {
		t.Fatalf("%d logins, want 2", len(logins))
	}
	// Split the recording per session and check each against what the
	// simulator wrote on that connection.
	var sessions [][]call
	for _, x := range log {
		if x.kind == "start" {
			sessions = append(sessions, nil)
		}
		sessions[len(sessions)-1] = append(sessions[len(sessions)-1], x)
	}
	if len(sessions) != 2 || sessions[0][0].id == sessions[1][0].id {
		t.Fatalf("%d sessions recorded, want 2 with distinct ids", len(sessions))
	}
	for i, calls := range sessions {
		if calls[0].kind != "start" || calls[len(calls)-1].kind != "end" {
			t.Fatalf("session %d: first %q last %q, want start ... end", i, calls[0].kind, calls[len(calls)-1].kind)
		}
		events := calls[1 : len(calls)-1]
		want := byConn[logins[i].Conn]
		if len(events) != len(want) {
			t.Fatalf("session %d: %d events delivered, simulator sent %d", i, len(events), len(want))
		}
		for j, e := range events {
			if e.kind != "event" || e.seq != uint64(j+1) || e.id != calls[0].id {
				t.Fatalf("session %d call %d: %+v, want event seq %d", i, j, e, j+1)
			}
			if !sameHeaders(e.msg, want[j].Headers) {
				t.Fatalf("session %d seq %d: delivered %q, sent %v", i, e.seq, e.msg.String(), want[j].Headers)
			}
			if j > 0 && e.t.Before(events[j-1].t) {
				t.Fatalf("session %d seq %d: read time goes back", i, e.seq)
			}
		}
		if end := calls[len(calls)-1]; end.lastSeq != uint64(len(events)) {
			t.Errorf("session %d ended with last_seq %d after %d events", i, end.lastSeq, len(events))
		}
	}
	if got := sessions[0][len(sessions[0])-1].name; got != ReasonEOF && got != ReasonReadError {
		t.Errorf("dropped session ended with %q, want eof or read_error", got)
	}
}

func sameHeaders(m *amiwire.Message, want [][2]string) bool {
	if m.Len() != len(want) {
		return false
	}
	for i, h := range want {
		if string(m.Key(i)) != h[0] || string(m.Value(i)) != h[1] {
			return false
		}
	}
	return true
}

func TestAcceptFilterRunsBeforeNumbering(t *testing.T) {
	leakCheck(t)
	srv := testenv.StartSim(t, amisim.Config{})
	accept := func(name []byte) bool { return string(name) != "VarSet" }
	s, rec, m := startSession(t, srv.Addr(), WithAccept(accept))
	waitStarts(t, rec, 1)
	srv.EmitEvents(300, 0)
	if _, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "Ping"}); err != nil {
		t.Fatal(err)
	}
	var varsets int
	for _, e := range srv.SentEvents() {
		if e.Headers[0][1] == "VarSet" {
			varsets++
		}
	}
	log := rec.snapshot()
	if varsets == 0 {
		t.Fatal("the event mix held no VarSet; the test proves nothing")
	}
	if n := countName(log, "VarSet"); n != 0 {
		t.Errorf("%d VarSet events passed the filter", n)
	}
	var seq uint64
	for _, x := range log {
		if x.kind == "event" {
			seq++
			if x.seq != seq {
				t.Fatalf("event %s has seq %d, want %d: filtered events must take no number", x.name, x.seq, seq)
			}
		}
	}
	if got := testutil.ToFloat64(m.EventsFiltered.WithLabelValues("pbx1")); int(got) != varsets {
		t.Errorf("EventsFiltered = %v, want %d", got, varsets)
	}
	if int(seq)+varsets != srv.SentEventCount() {
		t.Errorf("%d delivered + %d filtered != %d sent", seq, varsets, srv.SentEventCount())
	}
}

// sendAsync runs Send in a goroutine and delivers its outcome.
func sendAsync(ctx context.Context, s *Session, a Action) <-chan error {
	out := make(chan error, 1)
	go func() {
		_, err := s.Send(ctx, a)
		out <- err
	}()
	return out
}

func recv(t *testing.T, ch <-chan error) error {
	t.Helper()
	select {
	case err := <-ch:
		return err
	case <-time.After(waitLimit):
		t.Fatal("Send did not return")
		return nil
	}
}

func TestPendingActionsFailAtOnceOnDisconnect(t *testing.T) {
	leakCheck(t)
	srv := testenv.StartSim(t, amisim.Config{})
	srv.SetNeverAnswer("CoreStatus", true)
	s, rec, m := startSession(t, srv.Addr())
	waitStarts(t, rec, 1)
	const n = 5
	var outs []<-chan error
	for range n {
		// No deadline: only the disconnect can end these.
		outs = append(outs, sendAsync(context.Background(), s, Action{Name: "CoreStatus"}))
	}
	testenv.WaitSim(t, srv, "the actions to arrive", func() bool { return len(received(srv, "CoreStatus")) == n })
	if got := testutil.ToFloat64(m.ActionsPending.WithLabelValues("pbx1")); got != n {
		t.Errorf("ActionsPending = %v, want %d", got, n)
	}
	srv.DropConnections()
	for i, ch := range outs {
		if err := recv(t, ch); !errors.Is(err, ErrDisconnected) {
			t.Errorf("action %d: %v, want ErrDisconnected", i, err)
		}
	}
	if got := testutil.ToFloat64(m.ActionsPending.WithLabelValues("pbx1")); got != 0 {
		t.Errorf("ActionsPending = %v after the disconnect, want 0", got)
	}
}

func TestTimeoutDiscardsAndCountsTheLateAnswer(t *testing.T) {
	leakCheck(t)
	srv := testenv.StartSim(t, amisim.Config{CallDuration: 5 * time.Second})
	srv.StartTraffic(20)
	s, rec, m := startSession(t, srv.Addr())
	waitStarts(t, rec, 1)
	testenv.WaitSim(t, srv, "live channels", func() bool { return len(srv.LiveChannels()) >= 4 })
	late := func() float64 { return testutil.ToFloat64(m.LateResponses.WithLabelValues("pbx1")) }

	for i, name := range []string{"CoreStatus", "CoreShowChannels"} {
		srv.SetAnswerDelay(name, 300*time.Millisecond)
		_, err := s.Send(ctxTimeout(t, 50*time.Millisecond), Action{Name: name})
		if !errors.Is(err, ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: %v, want ErrTimeout", name, err)
		}
		if got := late(); got != float64(i) {
			t.Fatalf("%s: late answers %v when Send returned, want %d: Send waited for the answer", name, got, i)
		}
		srv.SetAnswerDelay(name, 0)
		// The simulator, like Asterisk, answers a session's actions in
		// order: once this answer is read, the late one has been too.
		res, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "CoreSettings"})
		if err != nil {
			t.Fatal(err)
		}
		if res.Response.Get("AMIversion") == "" {
			t.Errorf("CoreSettings got %q: the late answer was taken for it", res.Response.String())
		}
		if got := late(); got != float64(i+1) {
			t.Errorf("%s: late answers %v, want %d", name, got, i+1)
		}
	}
	if n := countName(rec.snapshot(), "CoreShowChannel") + countName(rec.snapshot(), "CoreShowChannelsComplete"); n != 0 {
		t.Errorf("%d late list events reached the Handler", n)
	}
	if got := testutil.ToFloat64(m.ActionsPending.WithLabelValues("pbx1")); got != 0 {
		t.Errorf("ActionsPending = %v, want 0", got)
	}
	if s.ID() != rec.snapshot()[0].id {
		t.Error("the session reconnected")
	}
}

func TestOverloadedAtTheCap(t *testing.T) {
	leakCheck(t)
	const maxPending = 3
	srv := testenv.StartSim(t, amisim.Config{})
	srv.SetNeverAnswer("CoreStatus", true)
	s, rec, _ := startSession(t, srv.Addr(), WithMaxPending(maxPending))
	waitStarts(t, rec, 1)
	ctx0, cancel0 := context.WithCancel(context.Background())
	defer cancel0()
	outs := []<-chan error{sendAsync(ctx0, s, Action{Name: "CoreStatus"})}
	for range maxPending - 1 {
		outs = append(outs, sendAsync(context.Background(), s, Action{Name: "CoreStatus"}))
	}
	testenv.WaitSim(t, srv, "the pending actions", func() bool { return len(received(srv, "CoreStatus")) == maxPending })

	if _, err := s.Send(context.Background(), Action{Name: "Ping"}); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("Send at the cap: %v, want ErrOverloaded", err)
	}
	// A caller that gives up does not free the slot: the PBX still owes
	// that answer and will send it before any later one.
	cancel0()
	if err := recv(t, outs[0]); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled Send: %v", err)
	}
	if _, err := s.Send(context.Background(), Action{Name: "Ping"}); !errors.Is(err, ErrOverloaded) {
		t.Fatalf("Send with an answer still owed: %v, want ErrOverloaded", err)
	}
	if got := len(received(srv, "Ping")); got != 0 {
		t.Errorf("refused actions reached the PBX: %d Pings", got)
	}
	// A new connection starts with nothing owed.
	srv.DropConnections()
	for _, ch := range outs[1:] {
		if err := recv(t, ch); !errors.Is(err, ErrDisconnected) {
			t.Errorf("pending at drop: %v, want ErrDisconnected", err)
		}
	}
	waitStarts(t, rec, 2)
	if _, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "Ping"}); err != nil {
		t.Errorf("Send after reconnect: %v", err)
	}
}

func TestTooLargeAnswerFailsAndTheSessionStaysUp(t *testing.T) {
	leakCheck(t)
	srv := testenv.StartSim(t, amisim.Config{CallDuration: 10 * time.Second})
	srv.StartTraffic(20)
	testenv.WaitSim(t, srv, "live channels", func() bool { return len(srv.LiveChannels()) >= 8 })
	srv.StopTraffic()

	tests := []struct {
		name   string
		opts   []Option
		action Action
		metric func(*metrics.Metrics) float64
	}{
		{"list over max events", []Option{WithAnswerLimits(DefaultMaxAnswerBytes, 3)},
			Action{Name: "CoreShowChannels"}, nil},
		{"list over max bytes", []Option{WithAnswerLimits(1500, DefaultMaxListEvents)},
			Action{Name: "CoreShowChannels"}, nil},
		{"response over the reader cap", []Option{WithReaderLimits(1024, DefaultMaxHeaders)},
			Action{Name: "Command", Headers: []Header{{Key: "Command", Value: "core show channels verbose"}}},
			func(m *metrics.Metrics) float64 {
				return testutil.ToFloat64(m.MessagesOversized.WithLabelValues("pbx1"))
			}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, rec, m := startSession(t, srv.Addr(), append(tt.opts, WithEvents("off"))...)
			waitStarts(t, rec, 1)
			_, err := s.Send(ctxTimeout(t, waitLimit), tt.action)
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("%s: %v, want ErrTooLarge", tt.action.Name, err)
			}
			if got := testutil.ToFloat64(m.ActionsOversized.WithLabelValues("pbx1")); got != 1 {
				t.Errorf("ActionsOversized = %v, want 1", got)
			}
			if tt.metric != nil && tt.metric(m) < 1 {
				t.Error("the skipped message was not counted")
			}
			// The rest of the answer was read and dropped: the next action
			// gets its own answer on the same session.
			res, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "CoreSettings"})
			if err != nil || res.Response.Get("AMIversion") == "" {
				t.Fatalf("CoreSettings after the oversized answer: %v %v", res, err)
			}
			if log := rec.snapshot(); count(log, "event") != 0 || count(log, "start") != 1 || s.ID() != log[0].id {
				t.Errorf("after the oversized answer: %d events to the Handler, %d starts", count(log, "event"), count(log, "start"))
			}
			s.Close()
		})
	}
}

func TestEventListWithLiveTraffic(t *testing.T) {
	leakCheck(t)
	srv, s, rec := upSession(t, amisim.Config{CallDuration: 2 * time.Second})
	srv.StartTraffic(25)
	testenv.WaitSim(t, srv, "live channels", func() bool { return len(srv.LiveChannels()) >= 6 })

	res, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "CoreShowChannels"})
	if err != nil {
		t.Fatal(err)
	}
	srv.StopTraffic()
	if string(res.Response.Name()) != "Success" || res.Response.Get("EventList") != "start" {
		t.Fatalf("response %q", res.Response.String())
	}
	if len(res.Events) < 2 {
		t.Fatalf("%d list events, want the channels and the completion", len(res.Events))
	}
	items, complete := res.Events[:len(res.Events)-1], res.Events[len(res.Events)-1]
	if string(complete.Name()) != "CoreShowChannelsComplete" || complete.Get("ListItems") != fmt.Sprint(len(items)) {
		t.Errorf("completion %q for %d items", complete.String(), len(items))
	}
	size := res.Response.Size()
	for _, e := range res.Events {
		size += e.Size()
		if string(e.ActionID()) != res.ActionID {
			t.Errorf("list event with ActionID %q in the answer to %q", e.ActionID(), res.ActionID)
		}
	}
	for _, e := range items {
		if string(e.Name()) != "CoreShowChannel" {
			t.Errorf("list item %s", e.Name())
		}
	}
	if res.Size != size {
		t.Errorf("Result.Size %d, want %d", res.Size, size)
	}
	// The call events around the list went to the Handler, numbered
	// without holes, and none of the list did.
	if _, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "Ping"}); err != nil {
		t.Fatal(err)
	}
	log := rec.snapshot()
	var seq uint64
	for _, x := range log {
		if x.kind != "event" {
			continue
		}
		seq++
		if x.seq != seq || x.name == "CoreShowChannel" || x.name == "CoreShowChannelsComplete" {
			t.Fatalf("Handler got %s seq %d (want seq %d, no list events)", x.name, x.seq, seq)
		}
	}
	if seq < 10 {
		t.Errorf("only %d call events reached the Handler; traffic was not live", seq)
	}
}

func TestCommandOutputBothFormats(t *testing.T) {
	var outputs [][]string
	for _, legacy := range []bool{false, true} {
		t.Run(fmt.Sprintf("legacy=%v", legacy), func(t *testing.T) {
			leakCheck(t)
			srv := testenv.StartSim(t, amisim.Config{LegacyCommand: legacy})
			s, rec, _ := startSession(t, srv.Addr(), WithEvents("off"))
			waitStarts(t, rec, 1)
			res, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "Command",
				Headers: []Header{{Key: "Command", Value: "core show uptime"}}})
			if err != nil {
				t.Fatal(err)
			}
			wantResp := map[bool]string{false: "Success", true: "Follows"}[legacy]
			if got := string(res.Response.Name()); got != wantResp {
				t.Errorf("Response %q, want %q", got, wantResp)
			}
			if len(res.Output) != 2 || !strings.HasPrefix(res.Output[0], "System uptime: ") ||
				!strings.HasPrefix(res.Output[1], "Last reload: ") {
				t.Errorf("Output %q", res.Output)
			}
			outputs = append(outputs, res.Output)
		})
	}
	if len(outputs) == 2 && len(outputs[0]) != len(outputs[1]) {
		t.Errorf("formats give different line counts: %q vs %q", outputs[0], outputs[1])
	}
}

func TestOriginateResponseEventGoesToTheHandler(t *testing.T) {
	leakCheck(t)
	_, s, rec := upSession(t, amisim.Config{CallDuration: 200 * time.Millisecond})
	res, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "Originate", Headers: []Header{
		{Key: "Channel", Value: "Local/200@demo"}, {Key: "Context", Value: "demo"},
		{Key: "Exten", Value: "100"}, {Key: "Priority", Value: "1"}, {Key: "Async", Value: "true"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := string(res.Response.Name()); got != "Success" || len(res.Events) != 0 {
		t.Fatalf("Originate answer %q with %d events", res.Response.String(), len(res.Events))
	}
	log := rec.waitFor(t, "OriginateResponse", func(l []call) bool { return countName(l, "OriginateResponse") == 1 })
	for _, x := range log {
		if x.name == "OriginateResponse" {
			if string(x.msg.ActionID()) != res.ActionID || x.msg.Kind() != amiwire.KindEvent {
				t.Errorf("OriginateResponse %q, want the Originate's ActionID %q", x.msg.String(), res.ActionID)
			}
		}
	}
}

// backUpWriter sends n actions of ~100 KB (Marker <marker>-<i>) to a
// session whose PBX does not read, far more than the socket buffers hold,
// and returns their outcomes once the writer has backed up with actions
// still queued.
func backUpWriter(t *testing.T, s *Session, n int, marker string) []<-chan error {
	t.Helper()
	pad := strings.Repeat("x", 1000)
	var outs []<-chan error
	for i := range n {
		hs := []Header{{Key: "Marker", Value: fmt.Sprintf("%s-%d", marker, i)}}
		for j := range 100 {
			hs = append(hs, Header{Key: fmt.Sprintf("Pad%d", j), Value: pad})
		}
		outs = append(outs, sendAsync(context.Background(), s, Action{Name: "UserEvent", Headers: hs}))
	}
	c := s.cur.Load()
	eventually(t, "the writer to back up with actions still queued", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return len(c.writeq) > 0 && len(c.pending) == n
	})
	return outs
}

// TestNoStaleReplay queues actions while the PBX does not read, so that
// they back up in the kernel and in the session's queue, kills the
// connection, and checks that none of them ever reaches the PBX, on the old
// connection or the next one.
func TestNoStaleReplay(t *testing.T) {
	leakCheck(t)
	srv, s, rec := stalledSession(t)
	outs := backUpWriter(t, s, 300, "stale")

	srv.DropConnections()
	for i, ch := range outs {
		if err := recv(t, ch); !errors.Is(err, ErrDisconnected) {
			t.Fatalf("stale action %d: %v, want ErrDisconnected", i, err)
		}
	}
	srv.SetStopReading(false)
	waitStarts(t, rec, 2)
	res, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "UserEvent", Headers: []Header{{Key: "Marker", Value: "fresh"}}})
	if err != nil {
		t.Fatalf("fresh action: %v", err)
	}
	testenv.WaitSim(t, srv, "the fresh action", func() bool {
		return slices.ContainsFunc(srv.Received(), func(a amisim.Action) bool { return a.ActionID == res.ActionID })
	})
	for _, a := range srv.Received() {
		if m, _ := a.Header("Marker"); strings.HasPrefix(m, "stale-") {
			t.Fatalf("the PBX received %s (ActionID %s) on connection %d: stale replay", m, a.ActionID, a.Conn)
		}
	}
}

func TestPoolNodeDownDoesNotDelayOthers(t *testing.T) {
	leakCheck(t)
	srv := testenv.StartSim(t, amisim.Config{})
	// "down" accepts and never speaks: the worst kind of dead PBX.
	hung := make(chan struct{}, 4)
	blackhole := testenv.ServeTCP(t, func(c net.Conn) {
		hung <- struct{}{}
		c.Read(make([]byte, 1)) // until the client closes
	})
	rec := newRecorder()
	pool := NewPool(WithCredentials("ami", "amisecret"), WithMetrics(metrics.New()),
		WithBackoff(10*time.Millisecond, 100*time.Millisecond), WithDialLimiter(NewDialLimiter(4)))
	defer pool.Close()

	if _, err := pool.Add("down", blackhole.Addr(), WithBannerTimeout(time.Minute)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-hung:
	case <-time.After(waitLimit):
		t.Fatal("the down node never dialled")
	}
	if _, err := pool.Add("up", srv.Addr(), WithHandler(rec)); err != nil {
		t.Fatal(err)
	}
	waitStarts(t, rec, 1)
	down, _ := pool.Get("down")
	if down.Up() {
		t.Fatal("the down node is up")
	}
	up, ok := pool.Get("up")
	if !ok {
		t.Fatal("Get(up) failed")
	}
	if _, err := up.Send(ctxTimeout(t, waitLimit), Action{Name: "Ping"}); err != nil {
		t.Errorf("Ping on up: %v", err)
	}
	if _, ok := pool.Get("nope"); ok {
		t.Error("Get of an unknown node succeeded")
	}
	if _, err := pool.Add("up", srv.Addr()); !errors.Is(err, ErrNodeExists) {
		t.Errorf("second Add of up: %v, want ErrNodeExists", err)
	}

	// Remove returns once the session has stopped, even mid-banner.
	if !pool.Remove("down") {
		t.Error("Remove(down) found nothing")
	}
	if _, err := down.Send(context.Background(), Action{Name: "Ping"}); !errors.Is(err, ErrClosed) {
		t.Errorf("removed session: %v, want ErrClosed", err)
	}
	rec2 := newRecorder()
	if _, err := pool.Add("up2", srv.Addr(), WithHandler(rec2)); err != nil {
		t.Fatal(err)
	}
	waitStarts(t, rec2, 1)
	if got := pool.Nodes(); !slices.Equal(got, []string{"up", "up2"}) {
		t.Errorf("Nodes() = %v", got)
	}
	pool.Close()
	// The PBX ends a session when it sees its socket close, which may come
	// a moment after Close returned (as on Asterisk, Goodbye precedes it).
	testenv.WaitSim(t, srv, "every session closed after Pool.Close", func() bool { return srv.ActiveSessions("") == 0 })
	if got := len(received(srv, "Logoff")); got != 2 {
		t.Errorf("%d Logoffs, want 2", got)
	}
	if _, err := pool.Add("late", srv.Addr()); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close: %v, want ErrClosed", err)
	}
}

// concurrentSend checks the session under many concurrent callers: each
// gets its own answer.
func TestConcurrentSendsGetTheirOwnAnswers(t *testing.T) {
	leakCheck(t)
	_, s, _ := upSession(t, amisim.Config{})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 20 {
				cmd := fmt.Sprintf("dialplan set global V%d_%d %d", i, j, i*100+j)
				res, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "Command", Headers: []Header{{Key: "Command", Value: cmd}}})
				if err != nil {
					errs <- err
					return
				}
				if want := fmt.Sprintf("    -- Global variable 'V%d_%d' set to '%d'", i, j, i*100+j); !slices.Contains(res.Output, want) {
					errs <- fmt.Errorf("answer to %q: %q", cmd, res.Output)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestTimedOutQueuedActionIsNeverWritten: an action still in the write
// queue when its deadline passes is dropped, never written later, so that
// nothing is done after the caller was told it failed.
func TestTimedOutQueuedActionIsNeverWritten(t *testing.T) {
	leakCheck(t)
	srv, s, _ := stalledSession(t)
	outs := backUpWriter(t, s, 200, "backed-up")
	// Queued behind a stalled write: it cannot be written before its
	// deadline.
	_, err := s.Send(ctxTimeout(t, 20*time.Millisecond), Action{Name: "UserEvent", Headers: []Header{{Key: "Marker", Value: "timed-out"}}})
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("queued action: %v, want ErrTimeout", err)
	}
	srv.SetStopReading(false)
	for _, ch := range outs {
		if err := recv(t, ch); err != nil {
			t.Fatalf("backed-up action: %v", err)
		}
	}
	res, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "UserEvent", Headers: []Header{{Key: "Marker", Value: "fresh"}}})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Response.Get("Message"); !strings.Contains(got, "Invalid/unknown command") {
		t.Errorf("fresh action answered %q", got)
	}
	for _, a := range srv.Received() {
		if m, _ := a.Header("Marker"); m == "timed-out" {
			t.Fatal("the PBX received an action whose caller had been told it timed out")
		}
	}
	if n := len(received(srv, "UserEvent")); n != 201 {
		t.Errorf("the PBX received %d UserEvents, want 201", n)
	}
}
