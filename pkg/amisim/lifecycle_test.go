package amisim

import (
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestCloseStopsEverything: Close ends every goroutine of a busy Server:
// sessions in every state, writers blocked on a full socket, traffic, an
// event flood, a call in progress, a restart in progress.
func TestCloseStopsEverything(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	for _, restart := range []bool{false, true} {
		s, err := Start(Config{AuthFailDelay: time.Hour, CallDuration: time.Hour, TLSConfig: nil})
		if err != nil {
			t.Fatal(err)
		}
		stuck := dial(t, s) // logged in, events on, never reads
		stuck.login("ami", "amisecret", "on")
		failing := dial(t, s) // waiting out a failed login
		failing.banner()
		failing.send("Action: Login", "Username: ami", "Secret: wrong")
		silent := dial(t, s) // never logs in
		silent.banner()
		slow := dial(t, s) // an answer delayed for an hour
		slow.login("ami2", "amisecret2", "off")
		slow.do("Action: Originate", "Channel: Local/200@demo", "Exten: 100", "Context: demo", "Priority: 1", "Async: true")
		s.SetAnswerDelay("Ping", time.Hour)
		slow.send("Action: Ping")
		s.StartTraffic(100)
		flood := make(chan struct{})
		go func() {
			defer close(flood)
			s.EmitEvents(1<<30, 0)
		}()
		waitFor(t, s, "a long call and traffic", func() bool { return s.LiveCalls() > 1 })
		waitFor(t, s, "a backlog for the client that does not read", func() bool { return !queueEmpty(s, 1) })
		restarted := make(chan struct{})
		go func() {
			defer close(restarted)
			if restart {
				s.Restart(time.Hour)
			}
		}()
		if restart {
			waitFor(t, s, "the restart to take the node down", func() bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				return s.ln == nil
			})
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		<-flood
		<-restarted
		for _, c := range []*client{stuck, failing, silent, slow} {
			c.nc.Close()
		}
	}
}

// TestFleet: n nodes, named, on their own ports, each its own PBX.
func TestFleet(t *testing.T) {
	f, err := StartFleet(3, Config{})
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	for i, s := range f.Servers() {
		if want := "pbx" + strconv.Itoa(i+1); s.Node() != want {
			t.Errorf("node %d named %q, want %q", i, s.Node(), want)
		}
		if seen[s.Addr()] {
			t.Fatalf("address %s used twice", s.Addr())
		}
		seen[s.Addr()] = true
		c := loggedIn(t, s)
		if r := c.do("Action: CoreSettings"); r.get("SystemName") != s.Node() {
			t.Errorf("SystemName %q", r.get("SystemName"))
		}
		c.do("Action: Events", "EventMask: call")
		c.do("Action: Originate", "Channel: Local/200@demo", "Exten: 100", "Context: demo", "Priority: 1", "Async: true")
		if m := c.mustRead(); !strings.HasPrefix(m.get("Uniqueid"), s.Node()+"-") {
			t.Errorf("Uniqueid %q on %s", m.get("Uniqueid"), s.Node())
		}
	}
	if f.Servers()[0].Logins() != 1 || f.Servers()[1].Logins() != 1 {
		t.Fatal("nodes share state")
	}
}

// TestFleetConsecutivePorts: with a fixed port the nodes take the ports
// from it on.
func TestFleetConsecutivePorts(t *testing.T) {
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		if port > 65000 {
			continue
		}
		f, err := StartFleet(2, Config{Addr: "127.0.0.1:" + strconv.Itoa(port), Node: "node"})
		if err != nil {
			lastErr = err // a port of the range was taken meanwhile
			continue
		}
		defer f.Close()
		for i, s := range f.Servers() {
			if want := "127.0.0.1:" + strconv.Itoa(port+i); s.Addr() != want || s.Node() != "node"+strconv.Itoa(i+1) {
				t.Fatalf("node %d: %s %s", i, s.Addr(), s.Node())
			}
		}
		return
	}
	t.Fatalf("no free port pair found: %v", lastErr)
}

// TestStartErrors: bad configuration is refused with the field named, and
// a failed fleet closes what it started.
func TestStartErrors(t *testing.T) {
	if _, err := Start(Config{Addr: "nonsense"}); err == nil || !strings.Contains(err.Error(), "Addr") {
		t.Fatalf("bad Addr: %v", err)
	}
	if _, err := Start(Config{Users: map[string]string{"": "x"}}); err == nil || !strings.Contains(err.Error(), "Users") {
		t.Fatalf("empty user: %v", err)
	}
	s := start(t, Config{})
	if _, err := StartFleet(2, Config{Addr: s.Addr()}); err == nil {
		t.Fatal("fleet on a taken port started")
	}
	if _, err := StartFleet(0, Config{}); err == nil {
		t.Fatal("fleet of 0 started")
	}
}
