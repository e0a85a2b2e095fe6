package amisim

import (
	"testing"
	"time"
)

// TestSyncOriginateHoldsItsConnection: a synchronous Originate to the
// extension that rings without answering holds its connection for its
// Timeout, as Asterisk's session thread does: the Ping sent right behind it
// is answered only after it, in order, while another connection of the same
// user is served at once.
func TestSyncOriginateHoldsItsConnection(t *testing.T) {
	s := start(t, Config{})
	c := loggedIn(t, s)
	other := loggedIn(t, s)

	const hold = 400 * time.Millisecond
	t0 := time.Now()
	c.send("Action: Originate", "Channel: Local/199@demo", "Exten: 500", "Context: demo", "Priority: 1",
		"Timeout: 400", "ActionID: orig")
	c.send("Action: Ping", "ActionID: behind")
	waitFor(t, s, "the Originate read", func() bool { return received(s, "orig") })

	if r := other.do("Action: Ping", "ActionID: other"); r.get("ActionID") != "other" || r.get("Response") != "Success" {
		t.Fatalf("Ping on another connection: %v", r)
	}
	if el := time.Since(t0); el >= hold {
		t.Fatalf("another connection's Ping took until %v: held by the Originate", el)
	}

	r := c.mustRead()
	if r.get("ActionID") != "orig" || r.get("Response") != "Error" || r.get("Message") != "Originate failed" {
		t.Fatalf("first answer: %v, want the Originate's Error / Originate failed", r)
	}
	if el := time.Since(t0); el < hold {
		t.Fatalf("Originate answered after %v, before its Timeout %v", el, hold)
	}
	if r := c.mustRead(); r.get("ActionID") != "behind" || r.get("Response") != "Success" {
		t.Fatalf("second answer: %v, want the Ping", r)
	}
}

// TestSyncOriginateAnsweredExtension: to an extension that answers, a
// synchronous Originate answers Success at once (transcript 07c), and with
// no Timeout header the ringing one would wait Asterisk's 30 s default.
func TestSyncOriginateAnsweredExtension(t *testing.T) {
	s := start(t, Config{})
	c := loggedIn(t, s)
	r := c.do("Action: Originate", "Channel: Local/200@demo", "Exten: 100", "Context: demo", "Priority: 1", "ActionID: ok")
	if r.get("Response") != "Success" || r.get("Message") != "Originate successfully queued" {
		t.Fatalf("sync Originate to an answering extension: %v", r)
	}
	c.send("Action: Originate", "Channel: Local/199@demo", "Exten: 500", "Context: demo", "Priority: 1", "ActionID: held")
	c.send("Action: Ping", "ActionID: behind")
	waitFor(t, s, "the held Originate read", func() bool { return received(s, "held") })
	_ = c.nc.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if m, err := c.read(); err == nil {
		t.Fatalf("answered %v within 300 ms; the default Timeout is 30 s", m)
	}
}

// TestSingleLogin: with allowmultiplelogin = no a user's second login
// fails as a wrong secret does, and succeeds again once the first session
// is gone.
func TestSingleLogin(t *testing.T) {
	s := start(t, Config{SingleLogin: true, AuthFailDelay: 10 * time.Millisecond})
	first := loggedIn(t, s)
	second := dial(t, s)
	second.banner()
	if r := second.do("Action: Login", "Username: ami", "Secret: amisecret", "ActionID: l2"); r.get("Response") != "Error" ||
		r.get("Message") != "Authentication failed" {
		t.Fatalf("second login: %v", r)
	}
	other := dial(t, s)
	other.login("ami2", "amisecret2", "off")
	first.do("Action: Logoff")
	waitFor(t, s, "the first session gone", func() bool { return s.ActiveSessions("ami") == 0 })
	loggedIn(t, s) // succeeds: the first session is gone
}
