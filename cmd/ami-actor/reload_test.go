//go:build linux

package main

import (
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// TestReloadConfigMap: ami-actor run with --watch-config follows a
// ConfigMap update (a symlink swap): the node added is served, the node
// removed is unknown_node, the node kept keeps its one AMI session. An
// invalid update changes nothing and names its field; a setting that
// cannot change while running, sent by SIGHUP, is refused naming the
// field; each reload is counted by result; SIGTERM still ends it cleanly.
func TestReloadConfigMap(t *testing.T) {
	ns := testenv.StartNATS(t, testenv.NoJetStream())
	a := testenv.StartSim(t, amisim.Config{Node: "pbxa"})
	b := testenv.StartSim(t, amisim.Config{Node: "pbxb"})
	c := testenv.StartSim(t, amisim.Config{Node: "pbxc"})
	httpAddr := testenv.DeadAddr(t)
	head := fmt.Sprintf("nats: {url: %s}\nhttp: {listen: %q}\nsession: {backoff_initial: 10ms, backoff_max: 100ms}\nnodes:\n", ns.ClientURL(), httpAddr)
	node := func(s *amisim.Server) string {
		return fmt.Sprintf("  - {name: %s, address: %q, username: ami, secret: amisecret}\n", s.Node(), s.Addr())
	}
	nc := testenv.Connect(t, ns.ClientURL())

	cm := testenv.NewConfigMap(t, head+node(a)+node(b))
	p := testenv.Run(t, binary, nil, nil, "--config", cm.Path(), "--watch-config")
	// The PBX counts a session as soon as it answers the login; the actor
	// only once it has read that answer: wait for the actor's line.
	up := func(node string) { p.WaitLine("AMI session up", `"node":"`+node+`"`) }
	p.WaitLine("ami-actor serving")
	up("pbxa")
	up("pbxb")
	if got := testenv.Outcome(t, nc, "ami.action."+"pbxa"+".Ping", nil); got != "ok" {
		t.Fatalf("pbxa before the reload: %s", got)
	}

	cm.Update(head + node(a) + node(c))
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

	cm.Update(head + node(a) + node(b) + "  - {name: pbxd, username: ami, secret: x}\n")
	if line := p.WaitLine("invalid file, nothing changed"); !strings.Contains(line, `"field":"nodes[2].address"`) {
		t.Fatalf("invalid reload line does not name the field: %s", line)
	}
	if err := os.WriteFile(cm.Path(),
		[]byte(strings.Replace(head, httpAddr, "127.0.0.1:1", 1)+node(a)+node(b)), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGHUP)
	if line := p.WaitLine("configuration reload refused"); !strings.Contains(line, "http.listen") {
		t.Fatalf("refusal does not name the field: %s", line)
	}
	if got := testenv.Outcome(t, nc, "ami.action."+"pbxb"+".Ping", nil); got != "unknown_node" {
		t.Fatalf("pbxb after an invalid and a refused file: %s, want unknown_node", got)
	}
	if b.Logins() != 1 {
		t.Fatalf("b logged in %d times: an invalid or refused file started it again", b.Logins())
	}
	m := testenv.Scrape(t, httpAddr)
	for _, result := range []string{"applied", "invalid", "refused"} {
		if got := m["ami_config_reloads_total{result="+result+"}"]; got != 1 {
			t.Errorf("ami_config_reloads_total{result=%s} = %v, want 1", result, got)
		}
	}
	if a.Logins() != 1 {
		t.Fatalf("a: %d logins after all reloads", a.Logins())
	}

	p.Signal(syscall.SIGTERM)
	if code, _ := p.Wait(waitLimit); code != 0 {
		t.Fatalf("exit %d after SIGTERM; stderr:\n%s", code, p.Stderr())
	}
	p.WaitLine("ami-actor stopped")
}
