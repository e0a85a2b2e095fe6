package amisim

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// TestReceived: every message, all connections, in order, as sent.
func TestReceived(t *testing.T) {
	s := start(t, Config{})
	a, b := dial(t, s), dial(t, s)
	a.banner()
	b.banner()
	a.do("Action: ping", "ActionID: a1", "X-Extra:  spaced")
	b.do("Action: Ping", "ActionID: b1")
	a.write("garbage line\r\n\r\n")
	a.mustRead()
	got := s.Received()
	want := []Action{
		{Conn: 1, Name: "ping", ActionID: "a1", Headers: [][2]string{{"Action", "ping"}, {"ActionID", "a1"}, {"X-Extra", "spaced"}}},
		{Conn: 2, Name: "Ping", ActionID: "b1", Headers: [][2]string{{"Action", "Ping"}, {"ActionID", "b1"}}},
		{Conn: 1, Headers: [][2]string{{"", "garbage line"}}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Received:\n%+v\nwant\n%+v", got, want)
	}
	// A copy: changing it changes nothing in the Server.
	got[0].Name = "changed"
	if s.Received()[0].Name != "ping" {
		t.Fatal("Received returned the Server's own slice")
	}
}

// TestSentEventsExact: SentEvents holds what the client read, header for
// header, and not responses or list items.
func TestSentEventsExact(t *testing.T) {
	s := start(t, Config{})
	c := dial(t, s)
	c.banner()
	c.send("Action: Login", "Username: ami", "Secret: amisecret")
	// Read the raw bytes to compare with what the Server recorded.
	var raw []string
	for len(raw) < 3 {
		var msg strings.Builder
		for {
			l, err := c.r.ReadString('\n')
			if err != nil {
				t.Fatal(err)
			}
			msg.WriteString(l)
			if l == "\r\n" {
				break
			}
		}
		raw = append(raw, msg.String())
	}
	c.do("Action: CoreShowChannels", "ActionID: list") // list items are not events
	c.readUntil("Event: CoreShowChannelsComplete")
	s.Emit("UserEvent", [2]string{"UserEvent", "x"}, [2]string{"Blank", ""})
	c.mustRead()
	waitFor(t, s, "3 events recorded", func() bool { return s.SentEventCount() == 3 })
	sent := s.SentEvents()
	for i, want := range raw[1:] { // raw[0] is the login response
		var b strings.Builder
		for _, h := range sent[i].Headers {
			b.WriteString(h[0] + ": " + h[1] + "\r\n")
		}
		b.WriteString("\r\n")
		if b.String() != want || sent[i].Conn != 1 {
			t.Fatalf("event %d recorded as\n%q (conn %d), written\n%q", i, b.String(), sent[i].Conn, want)
		}
	}
	if sent[2].Headers[0] != [2]string{"Event", "UserEvent"} || sent[2].Headers[3] != [2]string{"Blank", ""} {
		t.Fatalf("emitted event: %v", sent[2].Headers)
	}
}

// TestRecordLimit: beyond RecordLimit nothing more is recorded, and what
// is left out is counted; < 0 records nothing.
func TestRecordLimit(t *testing.T) {
	s := start(t, Config{RecordLimit: 3})
	c := dial(t, s)
	c.login("ami", "amisecret", "on") // 1 action, 2 events
	for i := 0; i < 4; i++ {
		c.do("Action: Ping")
	}
	s.Emit("UserEvent")
	s.Emit("UserEvent")
	c.mustRead()
	c.mustRead()
	waitFor(t, s, "events counted", func() bool { return s.Stats().EventsNotRecorded == 1 })
	if n := len(s.Received()); n != 3 {
		t.Fatalf("%d actions recorded, want 3", n)
	}
	if st := s.Stats(); st.ActionsNotRecorded != 2 || s.SentEventCount() != 3 {
		t.Fatalf("stats %+v, %d events recorded", st, s.SentEventCount())
	}

	none := start(t, Config{RecordLimit: -1})
	c2 := dial(t, none)
	c2.login("ami", "amisecret", "on")
	c2.do("Action: Ping")
	waitFor(t, none, "events counted", func() bool { return none.Stats().EventsNotRecorded == 2 })
	if len(none.Received()) != 0 || none.SentEventCount() != 0 || none.Stats().ActionsNotRecorded != 2 {
		t.Fatalf("recorded with RecordLimit -1: %+v", none.Stats())
	}
}

// TestLoginCounts: Logins, ActiveSessions and MaxConcurrentLogins per user
// (case-insensitive) and overall.
func TestLoginCounts(t *testing.T) {
	s := start(t, Config{})
	var cs []*client
	for _, u := range []string{"ami", "AMI", "ami", "ami2"} {
		c := dial(t, s)
		secret := "amisecret"
		if u == "ami2" {
			secret = "amisecret2"
		}
		c.login(u, secret, "off")
		cs = append(cs, c)
	}
	// A login is counted just after its answer is queued.
	waitFor(t, s, "four logins counted", func() bool { return s.Logins() == 4 })
	if s.Logins() != 4 || s.ActiveSessions("ami") != 3 || s.ActiveSessions("Ami2") != 1 || s.ActiveSessions("") != 4 {
		t.Fatalf("logins %d, ami %d, ami2 %d, all %d", s.Logins(), s.ActiveSessions("ami"), s.ActiveSessions("ami2"), s.ActiveSessions(""))
	}
	cs[0].do("Action: Logoff")
	cs[0].expectEOF()
	cs[1].nc.Close()
	waitFor(t, s, "two sessions of ami gone", func() bool { return s.ActiveSessions("ami") == 1 })
	if s.MaxConcurrentLogins("ami") != 3 || s.MaxConcurrentLogins("") != 4 || s.Logins() != 4 {
		t.Fatalf("max ami %d, max all %d, logins %d", s.MaxConcurrentLogins("ami"), s.MaxConcurrentLogins(""), s.Logins())
	}
	// A second Login on a session is "Already authenticated", not a login.
	if r := cs[2].do("Action: Login", "Username: ami", "Secret: wrong"); r.get("Message") != "Already authenticated" {
		t.Fatalf("second login: %v", r)
	}
	if s.Logins() != 4 {
		t.Fatalf("Logins = %d after a repeated Login", s.Logins())
	}
}

// TestWaitUntil: woken by a state change, ends with ctx, or with Close.
func TestWaitUntil(t *testing.T) {
	s, err := Start(Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
		defer cancel()
		done <- s.WaitUntil(ctx, func() bool { return s.Logins() == 1 })
	}()
	loggedIn(t, s)
	if err := <-done; err != nil {
		t.Fatalf("WaitUntil: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.WaitUntil(ctx, func() bool { return false }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitUntil with a deadline: %v", err)
	}
	go func() {
		done <- s.WaitUntil(context.Background(), func() bool { return false })
	}()
	s.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("WaitUntil after Close: %v", err)
	}
}

// TestActionHeader: the first header of the key, in any case; absent is "", false.
func TestActionHeader(t *testing.T) {
	a := Action{Name: "Ping", Headers: [][2]string{{"Action", "Ping"}, {"marker", "one"}, {"Marker", "two"}, {"Empty", ""}}}
	if v, ok := a.Header("MARKER"); v != "one" || !ok {
		t.Errorf("Header(MARKER) = %q, %v; want one, true", v, ok)
	}
	if v, ok := a.Header("Empty"); v != "" || !ok {
		t.Errorf("Header(Empty) = %q, %v; want \"\", true", v, ok)
	}
	if v, ok := a.Header("Missing"); v != "" || ok {
		t.Errorf("Header(Missing) = %q, %v; want \"\", false", v, ok)
	}
}
