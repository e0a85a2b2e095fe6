package amisim

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

func received(s *Server, actionID string) bool {
	for _, a := range s.Received() {
		if a.ActionID == actionID {
			return true
		}
	}
	return false
}

// TestDropConnections: every connection is closed at once, and an action
// that was sent but not yet read is never processed, even by a new
// connection (the "no stale replay" setup of the session tests).
func TestDropConnections(t *testing.T) {
	s := start(t, Config{})
	a, b := dial(t, s), dial(t, s)
	a.login("ami", "amisecret", "off")
	b.login("ami2", "amisecret2", "off")
	s.SetStopReading(true)
	a.send("Action: Ping", "ActionID: stale-1")
	// Nothing signals that the simulator ignores a line, so this waits a
	// bounded time for the Ping not to be processed.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := s.WaitUntil(ctx, func() bool { return received(s, "stale-1") }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Ping processed while reading was stopped (WaitUntil: %v)", err)
	}
	s.DropConnections()
	s.SetStopReading(false)
	a.expectEOF()
	b.expectEOF()
	waitFor(t, s, "no connections", func() bool { return s.Connections() == 0 && s.ActiveSessions("") == 0 })

	c := loggedIn(t, s)
	if r := c.do("Action: Ping", "ActionID: fresh-1"); r.get("Ping") != "Pong" {
		t.Fatalf("ping after reconnect: %v", r)
	}
	if received(s, "stale-1") {
		t.Fatal("the Ping sent before the drop was received")
	}
	if got := s.Stats().Accepted; got != 3 {
		t.Errorf("Accepted = %d, want 3", got)
	}
}

// TestStopReadingBacksUpClient: while stopped, the client's writes fill
// the kernel buffers and block; when resumed everything is processed in
// order.
func TestStopReadingBacksUpClient(t *testing.T) {
	s := start(t, Config{})
	c := loggedIn(t, s)
	s.SetStopReading(true)
	ping := "Action: Ping\r\nActionID: backlog\r\n\r\n"
	chunk := strings.Repeat(ping, 1<<12) // 150 KiB
	total := 0
	_ = c.nc.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	var err error
	for total < 64<<20 {
		var n int
		n, err = io.WriteString(c.nc, chunk)
		total += n
		if err != nil {
			break
		}
	}
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("client wrote %d bytes without blocking (err %v)", total, err)
	}
	if received(s, "backlog") {
		t.Fatal("an action was processed while reading was stopped")
	}
	s.SetStopReading(false)
	// The kernel held whole and partial Pings; the first one is answered.
	if r := c.mustRead(); r.get("ActionID") != "backlog" || r.get("Ping") != "Pong" {
		t.Fatalf("after resume: %v", r)
	}
}

// TestNeverAnswer: the action is recorded but not answered; the session
// goes on with the next action.
func TestNeverAnswer(t *testing.T) {
	s := start(t, Config{})
	c := loggedIn(t, s)
	s.SetNeverAnswer("PING", true)
	c.send("Action: ping", "ActionID: lost")
	if r := c.do("Action: CoreStatus", "ActionID: next"); r.get("ActionID") != "next" {
		t.Fatalf("first answer after an unanswered Ping: %v", r)
	}
	if !received(s, "lost") {
		t.Fatal("the unanswered Ping was not recorded")
	}
	s.SetNeverAnswer("ping", false)
	if r := c.do("Action: Ping", "ActionID: back"); r.get("ActionID") != "back" {
		t.Fatalf("Ping after SetNeverAnswer(false): %v", r)
	}
}

// TestAnswerDelay: the answer comes after the delay, and (one action at a
// time, as in Asterisk) the next action's answer after it.
func TestAnswerDelay(t *testing.T) {
	s := start(t, Config{})
	c := loggedIn(t, s)
	const d = 300 * time.Millisecond
	s.SetAnswerDelay("ping", d)
	t0 := time.Now()
	c.send("Action: Ping", "ActionID: slow")
	c.send("Action: CoreStatus", "ActionID: after")
	if r := c.mustRead(); r.get("ActionID") != "slow" {
		t.Fatalf("first answer: %v", r)
	}
	if el := time.Since(t0); el < d {
		t.Fatalf("answered after %v, want at least %v", el, d)
	}
	if r := c.mustRead(); r.get("ActionID") != "after" {
		t.Fatalf("second answer: %v", r)
	}
	s.SetAnswerDelay("ping", 0)
	t0 = time.Now()
	c.do("Action: Ping")
	if el := time.Since(t0); el >= d {
		t.Fatalf("delay still applied after removal (%v)", el)
	}
}

// expectReset dials and expects the connection reset with no byte sent;
// the reset may even reach the dialer before connect returns.
func expectReset(t *testing.T, s *Server) {
	t.Helper()
	nc, err := net.Dial("tcp", s.Addr())
	if err != nil {
		if !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("dial: %v, want a reset", err)
		}
		return
	}
	defer nc.Close()
	_ = nc.SetReadDeadline(time.Now().Add(testTimeout))
	if n, err := nc.Read(make([]byte, 1)); n > 0 {
		t.Fatal("a reset connection got a byte")
	} else if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("read: %v, want a reset", err)
	}
}

// TestRefuse: new connections are reset with no banner; existing ones
// keep working; turning it off restores the banner.
func TestRefuse(t *testing.T) {
	s := start(t, Config{})
	a := loggedIn(t, s)
	s.SetRefuse(true)
	expectReset(t, s)
	if got := s.Stats().Refused; got != 1 {
		t.Errorf("Refused = %d, want 1", got)
	}
	if r := a.do("Action: Ping"); r.get("Ping") != "Pong" {
		t.Fatalf("existing session: %v", r)
	}
	s.SetRefuse(false)
	dial(t, s).banner()
}

// TestRestart follows transcript 11: Shutdown, close, no service, then a
// login before the boot ends gets no FullyBooted after its answer, and
// FullyBooted comes later in its post-restart header order.
func TestRestart(t *testing.T) {
	const down = 300 * time.Millisecond
	s := start(t, Config{BootDelay: time.Second})
	steps := readTranscript(t, "11-restart")
	var shutdown, bootedAfter tmsg
	var conn3 []tmsg
	for _, st := range steps {
		if st.kind == stepServer && st.conn == 1 && st.msg.first() == "Event: Shutdown" {
			shutdown = st.msg
		}
		if st.kind == stepServer && st.conn == 3 {
			conn3 = append(conn3, st.msg)
		}
	}
	bootedAfter = conn3[2]
	if shutdown == nil || bootedAfter.first() != "Event: FullyBooted" {
		t.Fatal("transcript 11 not as expected")
	}

	a := dial(t, s)
	a.login("ami", "amisecret", "on")
	quiet := dial(t, s)
	quiet.login("ami2", "amisecret2", "off")
	done := make(chan struct{})
	t0 := time.Now()
	go func() {
		defer close(done)
		s.Restart(down)
	}()
	ms := a.readUntil("Event: Shutdown") // after the second login's SuccessfulAuth
	if err := newRenamer().compare(shutdown, ms[len(ms)-1]); err != nil {
		t.Fatal(err)
	}
	a.expectEOF()
	quiet.expectEOF()

	// Down: a connection is reset (listener still open) or refused. The
	// reset can come during the handshake itself, when the listener closes
	// with the connection still in its accept queue: then Dial reports it.
	if nc, err := net.Dial("tcp", s.Addr()); err == nil {
		buf := make([]byte, 1)
		_ = nc.SetReadDeadline(time.Now().Add(testTimeout))
		if n, err := nc.Read(buf); n > 0 || err == nil {
			t.Fatalf("got a byte from a restarting PBX")
		}
		_ = nc.Close()
	} else if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("dial while down: %v", err)
	}

	waitFor(t, s, "listening again", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.ln != nil && !s.restarting
	})
	if el := time.Since(t0); el < down {
		t.Fatalf("back after %v, want at least %v down", el, down)
	}
	b := dial(t, s)
	b.banner()
	r := newRenamer()
	if err := r.compare(conn3[0], b.do("Action: Login", "Username: ami", "Secret: amisecret", "Events: on", "ActionID: login-3")); err != nil {
		t.Fatal(err)
	}
	if err := r.compare(conn3[1], b.mustRead()); err != nil {
		t.Fatalf("after the login: %v", err) // SuccessfulAuth, no FullyBooted
	}
	if err := r.compare(bootedAfter, b.mustRead()); err != nil {
		t.Fatalf("boot: %v", err)
	}
	<-done
	// A new process: counters start over.
	b.do("Action: Originate", "Channel: Local/200@demo", "Exten: 100", "Context: demo", "Priority: 1", "Async: true")
	if m := b.mustRead(); m.first() != "Event: Newchannel" || !strings.HasSuffix(m.get("Uniqueid"), ".0") ||
		!strings.HasSuffix(m.get("Channel"), "-00000000;1") {
		t.Fatalf("first channel after restart: %v", m)
	}
}

// TestAuthTimeout: a connection that never logs in is closed with nothing
// sent after the banner.
func TestAuthTimeout(t *testing.T) {
	const d = 200 * time.Millisecond
	s := start(t, Config{AuthTimeout: d})
	t0 := time.Now()
	c := dial(t, s)
	c.banner()
	c.expectEOF()
	if el := time.Since(t0); el < d {
		t.Fatalf("closed after %v, want at least %v", el, d)
	}
	if got := s.Stats().AuthTimeouts; got != 1 {
		t.Errorf("AuthTimeouts = %d, want 1", got)
	}
	// A logged-in session is not subject to it.
	c2 := loggedIn(t, s)
	s.SetAnswerDelay("Ping", 2*d)
	if r := c2.do("Action: Ping"); r.get("Ping") != "Pong" {
		t.Fatalf("logged-in session: %v", r)
	}
}

// TestLoginFailureDelay: "Authentication failed" after AuthFailDelay, then
// the server closes.
func TestLoginFailureDelay(t *testing.T) {
	const d = 300 * time.Millisecond
	s := start(t, Config{AuthFailDelay: d})
	c := dial(t, s)
	c.banner()
	t0 := time.Now()
	r := c.do("Action: Login", "Username: ami", "Secret: wrong", "ActionID: bad")
	if el := time.Since(t0); el < d {
		t.Fatalf("answered after %v, want at least %v", el, d)
	}
	if r.get("Message") != "Authentication failed" || r.get("ActionID") != "bad" {
		t.Fatalf("answer: %v", r)
	}
	c.expectEOF()
	if s.Stats().LoginFailures != 1 || s.Logins() != 0 {
		t.Fatalf("stats %+v, logins %d", s.Stats(), s.Logins())
	}
}

// TestSlowReaderDropped: a client that stops reading is dropped once its
// socket blocks, possibly mid-event; it has every event recorded as sent
// to it, whole, and the other sessions are unaffected.
func TestSlowReaderDropped(t *testing.T) {
	s := start(t, Config{})
	slow := dial(t, s)
	slow.login("ami", "amisecret", "on")
	other := dial(t, s)
	other.login("ami2", "amisecret2", "off")
	s.EmitEvents(200_000, 0) // ~74 MB, far more than the socket buffers hold
	waitFor(t, s, "the slow reader to be dropped", func() bool {
		st := s.Stats()
		return st.SlowClientDrops+st.QueueFullDrops == 1 && s.Connections() == 1
	})
	if r := other.do("Action: Ping"); r.get("Ping") != "Pong" {
		t.Fatalf("other session: %v", r)
	}
	n := 2 // FullyBooted and SuccessfulAuth, read by login
	for {
		m, err := slow.read()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("after %d events: %v", n, err)
			}
			break
		}
		if !isEvent(m) {
			t.Fatalf("not an event: %v", m)
		}
		n++
	}
	if want := sentTo(s, 1); n != want {
		t.Fatalf("the dropped client read %d whole events, %d were recorded as sent to it", n, want)
	}
	if n >= 200_000 {
		t.Fatal("the slow reader got everything")
	}
}

// TestQueueFullDrop: a producer that finds a connection's queue full for
// the write timeout drops that connection and goes on.
func TestQueueFullDrop(t *testing.T) {
	s := start(t, Config{QueueBytes: 100, WriteTimeout: 20 * time.Millisecond})
	client, server := net.Pipe()
	defer client.Close()
	c := newConn(s, 99, server) // no writer: the queue never drains
	if !c.enqueue(outItem{b: make([]byte, 60)}) {
		t.Fatal("first item refused")
	}
	if !c.enqueue(outItem{b: make([]byte, 40)}) {
		t.Fatal("an item that fits the cap exactly was refused")
	}
	t0 := time.Now()
	if c.enqueue(outItem{b: make([]byte, 1)}) {
		t.Fatal("item over the cap queued")
	}
	if el := time.Since(t0); el < 20*time.Millisecond {
		t.Fatalf("dropped after %v, before the write timeout", el)
	}
	if !c.isClosed() || s.Stats().QueueFullDrops != 1 {
		t.Fatalf("closed %v, stats %+v", c.isClosed(), s.Stats())
	}
	if c.enqueue(outItem{b: []byte("x")}) {
		t.Fatal("queued to a closed connection")
	}
}

// TestMaxConns: beyond MaxConns a connection is reset, counted.
func TestMaxConns(t *testing.T) {
	s := start(t, Config{MaxConns: 1})
	dial(t, s).banner()
	expectReset(t, s)
	if got := s.Stats().OverConnCap; got != 1 {
		t.Fatalf("OverConnCap = %d, want 1", got)
	}
}

// TestEmitRaw: raw bytes reach logged-in sessions as they are (garbage, an
// oversized message) and are not recorded as events.
func TestEmitRaw(t *testing.T) {
	s := start(t, Config{})
	c := loggedIn(t, s) // raw bytes ignore event masks
	anon := dial(t, s)
	anon.banner()
	s.EmitRaw([]byte("this is not AMI\r\n\r\n"))
	if m := c.mustRead(); len(m) != 1 || m[0] != [2]string{"", "this is not AMI"} {
		t.Fatalf("garbage: %v", m)
	}
	big := "Event: Huge\r\nData: " + strings.Repeat("x", 2<<20) + "\r\n\r\n"
	s.EmitRaw([]byte(big))
	if m := c.mustRead(); m.get("Data") != strings.Repeat("x", 2<<20) {
		t.Fatalf("oversized message not intact (%d headers)", len(m))
	}
	if n := s.SentEventCount(); n != 0 {
		t.Fatalf("%d raw writes recorded as events", n)
	}
	if s.Stats().RawWrites != 2 {
		t.Fatalf("RawWrites = %d", s.Stats().RawWrites)
	}
	// The session that never logged in got nothing but its banner.
	anon.send("Action: Logoff")
	if r := anon.mustRead(); r.get("Response") != "Goodbye" {
		t.Fatalf("anonymous session: %v", r)
	}
}

// TestEmit: privilege from the event table or given, masks honoured.
func TestEmit(t *testing.T) {
	s := start(t, Config{TimestampEvents: true})
	all := dial(t, s)
	all.login("ami", "amisecret", "on")
	sys := dial(t, s)
	sys.login("ami", "amisecret", "system")
	if m := sys.mustRead(); m.first() != "Event: FullyBooted" {
		t.Fatalf("system session after login: %v", m)
	}
	s.Emit("Newchannel", [2]string{"Channel", "PJSIP/1-00000001"}, [2]string{"Empty", ""})
	s.Emit("UserEvent", [2]string{"Privilege", "user,all"}, [2]string{"UserEvent", "ping"})
	s.Emit("Reload", [2]string{"Module", "manager"}, [2]string{"Status", "0"})
	// The SuccessfulAuth of the second login reached the first session.
	if m := all.mustRead(); m.first() != "Event: SuccessfulAuth" {
		t.Fatalf("got %v", m)
	}
	m := all.mustRead()
	if m.first() != "Event: Newchannel" || m[1] != [2]string{"Privilege", "call,all"} || m[2][0] != "Timestamp" ||
		m.get("Channel") != "PJSIP/1-00000001" || m[4] != [2]string{"Empty", ""} {
		t.Fatalf("Newchannel: %v", m)
	}
	if m := all.mustRead(); m[1] != [2]string{"Privilege", "user,all"} || m.get("UserEvent") != "ping" {
		t.Fatalf("UserEvent: %v", m)
	}
	if m := all.mustRead(); m.first() != "Event: Reload" {
		t.Fatalf("Reload: %v", m)
	}
	if m := sys.mustRead(); m.first() != "Event: Reload" || m[1] != [2]string{"Privilege", "system,all"} {
		t.Fatalf("system-only session got %v first", m)
	}
}
