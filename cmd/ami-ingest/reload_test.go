//go:build linux

package main

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/amibus/amibus/pkg/amisim"

	"github.com/amibus/amibus/internal/testenv"
)

// metaOf returns the markers of node, as "type" or "session_end:reason".
func metaOf(msgs []*nats.Msg, node string) []string {
	var out []string
	for _, m := range msgs {
		if m.Subject != "ami.events."+node+"._meta" {
			continue
		}
		for _, typ := range []string{"session_start", "snapshot", "session_end"} {
			if bytes.Contains(m.Data, []byte(`"type":"`+typ+`"`)) {
				if typ == "session_end" {
					i := bytes.Index(m.Data, []byte(`"reason":"`))
					j := bytes.IndexByte(m.Data[i+10:], '"')
					typ += ":" + string(m.Data[i+10:i+10+j])
				}
				out = append(out, typ)
			}
		}
	}
	return out
}

// TestReloadConfigMap: ami-ingest run with --watch-config follows a
// ConfigMap update (a symlink swap): the node added starts, the node
// removed ends with reason removed, the node kept is untouched. An invalid
// update changes nothing and names its field; a setting that cannot change
// while running, sent by SIGHUP, is refused naming the field; each reload
// is counted by result.
func TestReloadConfigMap(t *testing.T) {
	ns := testenv.StartNATS(t)
	a := testenv.StartSim(t, amisim.Config{Node: "pbxa"})
	b := testenv.StartSim(t, amisim.Config{Node: "pbxb"})
	c := testenv.StartSim(t, amisim.Config{Node: "pbxc"})
	httpAddr := testenv.DeadAddr(t)
	head := fmt.Sprintf("nats: {url: %s}\nhttp: {listen: %q}\nsession: {backoff_initial: 10ms, backoff_max: 100ms}\nnodes:\n", ns.ClientURL(), httpAddr)
	node := func(s *amisim.Server) string {
		return fmt.Sprintf("  - {name: %s, address: %q, username: ami, secret: amisecret}\n", s.Node(), s.Addr())
	}
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msgs := subscribe(t, nc, "ami.events.>")
	cm := testenv.NewConfigMap(t, head+node(a)+node(b))
	p := testenv.Run(t, binary, nil, nil, "--config", cm.Path(), "--watch-config")
	msgs.WaitFor(t, "a and b up", func(m []*nats.Msg) bool { return hasMeta(m, "pbxa", "snapshot") && hasMeta(m, "pbxb", "snapshot") })

	cm.Update(head + node(a) + node(c))
	msgs.WaitFor(t, "c up and b removed", func(m []*nats.Msg) bool {
		return hasMeta(m, "pbxc", "snapshot") && strings.Contains(strings.Join(metaOf(m, "pbxb"), " "), "session_end:removed")
	})
	p.WaitLine("configuration reloaded")
	// One session, and one snapshot per snapshot action (two by default):
	// no new round after the reload.
	if got := metaOf(msgs.All(), "pbxa"); strings.Count(strings.Join(got, " "), "session_start") != 1 ||
		strings.Contains(strings.Join(got, " "), "session_end") || strings.Count(strings.Join(got, " "), "snapshot") > 2 || a.Logins() != 1 {
		t.Fatalf("a: markers %v, %d logins; want its session untouched", got, a.Logins())
	}

	cm.Update(head + node(a) + node(b) + "  - {name: pbxd, username: ami, secret: x}\n")
	line := p.WaitLine("invalid file, nothing changed")
	if !strings.Contains(line, `"field":"nodes[2].address"`) {
		t.Fatalf("invalid reload line does not name the field: %s", line)
	}

	if err := os.WriteFile(cm.Path(),
		[]byte(strings.Replace(head, httpAddr, "127.0.0.1:1", 1)+node(a)+node(b)), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGHUP)
	line = p.WaitLine("configuration reload refused")
	if !strings.Contains(line, "http.listen") {
		t.Fatalf("refusal does not name the field: %s", line)
	}
	m := testenv.Scrape(t, httpAddr)
	for result, want := range map[string]float64{"applied": 1, "invalid": 1, "refused": 1} {
		if got := m["ami_config_reloads_total{result="+result+"}"]; got != want {
			t.Errorf("ami_config_reloads_total{result=%s} = %v, want %v", result, got, want)
		}
	}
	if hasMeta(msgs.All(), "pbxb", "snapshot") && strings.Count(strings.Join(metaOf(msgs.All(), "pbxb"), " "), "session_start") > 1 {
		t.Fatal("b started again after an invalid or refused reload")
	}
	p.Signal(syscall.SIGTERM)
	if code, _ := p.Wait(waitLimit); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, p.Stderr())
	}
	noCrash(t, p.Stderr())
}
