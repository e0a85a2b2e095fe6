package actor_test

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

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
