//go:build linux

package main

import (
	"testing"

	"github.com/amibus/amibus/internal/testenv"
)

// TestReloadConfigMap: ami-actor run with --watch-config follows a
// ConfigMap update (a symlink swap): the node added is served, the node
// removed is unknown_node, the node kept keeps its one AMI session. An
// invalid update changes nothing and names its field; a setting that
// cannot change while running, sent by SIGHUP, is refused naming the
// field; each reload is counted by result; SIGTERM still ends it cleanly.
func TestReloadConfigMap(t *testing.T) {
	ns := testenv.StartNATS(t, testenv.NoJetStream())
	pbx := testenv.StartReloadPBXs(t, ns.ClientURL())
	a, b, c := pbx.A, pbx.B, pbx.C
	nc := testenv.Connect(t, ns.ClientURL())

	p, cm := testenv.RunWatching(t, binary, pbx.Config(a, b))
	// The PBX counts a session as soon as it answers the login; the actor
	// only once it has read that answer: wait for the actor's line.
	up := func(node string) { p.WaitLine("AMI session up", `"node":"`+node+`"`) }
	p.WaitLine("ami-actor serving")
	up("pbxa")
	up("pbxb")
	if got := testenv.Outcome(t, nc, "ami.action."+"pbxa"+".Ping", nil); got != "ok" {
		t.Fatalf("pbxa before the reload: %s", got)
	}

	cm.Update(pbx.Config(a, c))
	p.WaitLine("configuration reloaded")
	up("pbxc")
	testenv.WaitSim(t, b, "b's session to end", func() bool { return b.ActiveSessions("ami") == 0 })
	for n, want := range map[string]string{"pbxa": "ok", "pbxb": "unknown_node", "pbxc": "ok"} {
		if got := testenv.Outcome(t, nc, "ami.action."+n+".Ping", nil); got != want {
			t.Errorf("%s after the reload: %s, want %s", n, got, want)
		}
	}
	if a.Logins() != 1 || a.Connections() != 1 {
		t.Fatalf("a: %d logins, %d connections; want its session untouched", a.Logins(), a.Connections())
	}

	pbx.CheckBadReloads(t, p, cm)
	if got := testenv.Outcome(t, nc, "ami.action."+"pbxb"+".Ping", nil); got != "unknown_node" {
		t.Fatalf("pbxb after an invalid and a refused file: %s, want unknown_node", got)
	}
	if b.Logins() != 1 {
		t.Fatalf("b logged in %d times: an invalid or refused file started it again", b.Logins())
	}
	testenv.CheckReloadsCounted(t, pbx.HTTPAddr)
	if a.Logins() != 1 {
		t.Fatalf("a: %d logins after all reloads", a.Logins())
	}

	p.Terminate()
	p.WaitLine("ami-actor stopped")
}
