package actor_test

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/amibus/amibus/internal/actor"
	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// actorLogins counts the logins of the actor's own user (ami2) a PBX saw.
func actorLogins(sim *amisim.Server) int {
	n := 0
	for _, a := range sim.Received() {
		if strings.EqualFold(a.Name, "Login") {
			if u, _ := a.Header("Username"); u == "ami2" {
				n++
			}
		}
	}
	return n
}

// TestReloadAppliesOnlyTheDifference: a reload that adds d, removes b and
// moves c to another address starts d, ends b (unknown_node afterwards,
// as for a node never configured), restarts c's sessions on its new PBX,
// and leaves a's session as it was: no new login, no reconnect.
func TestReloadAppliesOnlyTheDifference(t *testing.T) {
	ns := testenv.StartNATS(t)
	a := testenv.StartSim(t, amisim.Config{Node: "a"})
	b := testenv.StartSim(t, amisim.Config{Node: "b"})
	c := testenv.StartSim(t, amisim.Config{Node: "c"})
	c2 := testenv.StartSim(t, amisim.Config{Node: "c"})
	d := testenv.StartSim(t, amisim.Config{Node: "d"})
	act := startActor(t, configYAML(ns.ClientURL(), []node{{"a", a.Addr()}, {"b", b.Addr()}, {"c", c.Addr()}}, ""), "a", "b", "c")
	nc := testenv.Connect(t, ns.ClientURL())
	wantCode(t, request(t, nc, "ami.action.a.Ping", ``), "ok")
	wantCode(t, request(t, nc, "ami.action.d.Ping", ``), "unknown_node")

	next := actorConfig(t, ns.ClientURL(), []node{{"a", a.Addr()}, {"c", c2.Addr()}, {"d", d.Addr()}}, "")
	began := time.Now()
	ch, err := act.svc.Reload(ctxLimit(t), next)
	if err != nil {
		t.Fatalf("Reload: %v", err)
	}
	t.Logf("Reload (one node added, one removed, one moved, all idle) returned after %v", time.Since(began))
	want := config.NodeChanges{Added: []string{"d"}, Removed: []string{"b"}, Changed: []string{"c"}}
	if !reflect.DeepEqual(ch, want) {
		t.Fatalf("changes %+v, want %+v", ch, want)
	}
	if err := act.svc.WaitUp(ctxLimit(t), "c", "d"); err != nil {
		t.Fatal(err)
	}
	if err := act.svc.WaitUp(ctxLimit(t), "b"); !errors.Is(err, actor.ErrUnknownNode) {
		t.Fatalf("WaitUp(b) after its removal: %v", err)
	}
	wantCode(t, request(t, nc, "ami.action.b.Ping", ``), "unknown_node")
	wantCode(t, request(t, nc, "ami.action.d.Ping", `{"fields":{"Marker":"to-d"}}`), "ok")
	wantCode(t, request(t, nc, "ami.action.c.Ping", `{"fields":{"Marker":"to-c"}}`), "ok")
	if len(receivedWith(c2, "Marker", "to-c")) != 1 || len(receivedWith(c, "Marker", "to-c")) != 0 {
		t.Fatal("c's request did not go to its new address")
	}
	if len(receivedWith(d, "Marker", "to-d")) != 1 {
		t.Fatal("d did not get its request")
	}
	testenv.WaitSim(t, b, "b's session to log off", func() bool { return b.ActiveSessions("ami2") == 0 })
	testenv.WaitSim(t, c, "c's old session to log off", func() bool { return c.ActiveSessions("ami2") == 0 })

	// a: the session of the start, never interrupted.
	wantCode(t, request(t, nc, "ami.action.a.Ping", ``), "ok")
	if n, conns := actorLogins(a), a.Connections(); n != 1 || conns != 1 || a.ActiveSessions("ami2") != 1 {
		t.Fatalf("a: %d logins, %d connections; want its one session untouched", n, conns)
	}

	// The same file again changes nothing.
	if ch, err := act.svc.Reload(ctxLimit(t), actorConfig(t, ns.ClientURL(),
		[]node{{"a", a.Addr()}, {"c", c2.Addr()}, {"d", d.Addr()}}, "")); err != nil || !ch.Empty() {
		t.Fatalf("the same file: %+v, %v", ch, err)
	}
	if actorLogins(a) != 1 || actorLogins(c2) != 1 || actorLogins(d) != 1 {
		t.Fatalf("logins a %d, c2 %d, d %d after an unchanged reload; want 1 each", actorLogins(a), actorLogins(c2), actorLogins(d))
	}
}

// TestReloadRefusedNamesTheField: a file that changes a setting ami-actor
// cannot change while running is refused whole, naming the field: the
// node it also adds is not started and stays unknown.
func TestReloadRefusedNamesTheField(t *testing.T) {
	ns := testenv.StartNATS(t)
	a := testenv.StartSim(t, amisim.Config{Node: "a"})
	d := testenv.StartSim(t, amisim.Config{Node: "d"})
	act := startActor(t, configYAML(ns.ClientURL(), []node{{"a", a.Addr()}}, ""), "a")
	nc := testenv.Connect(t, ns.ClientURL())
	next := actorConfig(t, ns.ClientURL(), []node{{"a", a.Addr()}, {"d", d.Addr()}},
		"actor:\n  max_pending: 7\nhttp:\n  listen: 127.0.0.1:1\n")
	ch, err := act.svc.Reload(ctxLimit(t), next)
	if !errors.Is(err, config.ErrReloadRefused) || !ch.Empty() {
		t.Fatalf("Reload: %+v, %v; want refused", ch, err)
	}
	for _, field := range []string{"actor.max_pending", "http.listen"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("refusal %q does not name %s", err, field)
		}
	}
	wantCode(t, request(t, nc, "ami.action.d.Ping", ``), "unknown_node")
	wantCode(t, request(t, nc, "ami.action.a.Ping", ``), "ok")
	if d.Connections() != 0 || actorLogins(d) != 0 {
		t.Fatal("the refused file's node was dialled")
	}
	if actorLogins(a) != 1 {
		t.Fatalf("a: %d logins", actorLogins(a))
	}
}

// TestReloadRemovalAnswersUnavailable: removing a node answers its request
// that was not yet sent (waiting for a second session to log in)
// unavailable, never disconnected, and lets the action already sent end
// normally before its session logs off.
func TestReloadRemovalAnswersUnavailable(t *testing.T) {
	ns := testenv.StartNATS(t)
	a := testenv.StartSim(t, amisim.Config{Node: "a"})
	keep := testenv.StartSim(t, amisim.Config{Node: "k"})
	session := "session:\n  backoff_initial: 10ms\n  backoff_max: 100ms\n  dial_timeout: 2s\n  banner_timeout: 2s\n  login_timeout: 15s\n"
	act := startActor(t, configYAML(ns.ClientURL(), []node{{"a", a.Addr()}, {"k", keep.Addr()}},
		"actor:\n  sessions_per_node: 2\n"+session), "a", "k")
	nc := testenv.Connect(t, ns.ClientURL())

	a.SetAnswerDelay("CoreStatus", 2*time.Second)
	held := requestAsync(t, nc, "ami.action.a.CoreStatus", `{"timeout_ms":10000,"fields":{"Marker":"held"}}`)
	testenv.WaitSim(t, a, "the held CoreStatus", func() bool { return len(receivedWith(a, "Marker", "held")) == 1 })
	// The next request finds the session owing and waits for a second
	// one, whose login the PBX never answers.
	a.SetNeverAnswer("Login", true)
	waiting := requestAsync(t, nc, "ami.action.a.Ping", `{"timeout_ms":10000,"fields":{"Marker":"waiting"}}`)
	testenv.WaitSim(t, a, "the second session's login", func() bool { return actorLogins(a) == 2 })

	ch, err := act.svc.Reload(ctxLimit(t), actorConfig(t, ns.ClientURL(), []node{{"k", keep.Addr()}},
		"actor:\n  sessions_per_node: 2\n"+session))
	if err != nil || !reflect.DeepEqual(ch.Removed, []string{"a"}) {
		t.Fatalf("Reload: %+v, %v", ch, err)
	}
	w := recvReply(t, waiting)
	wantCode(t, w, "unavailable")
	wantCode(t, recvReply(t, held), "ok")
	if len(receivedWith(a, "Marker", "waiting")) != 0 {
		t.Fatal("the waiting request reached the PBX")
	}
	testenv.WaitSim(t, a, "a's sessions to end", func() bool { return a.ActiveSessions("ami2") == 0 })
	wantCode(t, request(t, nc, "ami.action.a.Ping", ``), "unknown_node")
	wantCode(t, request(t, nc, "ami.action.k.Ping", ``), "ok")
	if actorLogins(keep) != 1 {
		t.Fatalf("k: %d logins", actorLogins(keep))
	}
}
