//go:build linux

package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

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
	pbx := testenv.StartReloadPBXs(t, ns.ClientURL())
	a, b, c := pbx.A, pbx.B, pbx.C
	msgs := subscribe(t, testenv.Connect(t, ns.ClientURL()), "ami.events.>")
	p, cm := testenv.RunWatching(t, binary, pbx.Config(a, b))
	msgs.WaitFor(t, "a and b up", func(m []*nats.Msg) bool { return hasMeta(m, "pbxa", "snapshot") && hasMeta(m, "pbxb", "snapshot") })

	cm.Update(pbx.Config(a, c))
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

	pbx.CheckBadReloads(t, p, cm)
	testenv.CheckReloadsCounted(t, pbx.HTTPAddr)
	if hasMeta(msgs.All(), "pbxb", "snapshot") && strings.Count(strings.Join(metaOf(msgs.All(), "pbxb"), " "), "session_start") > 1 {
		t.Fatal("b started again after an invalid or refused reload")
	}
	p.Terminate()
	noCrash(t, p.Stderr())
}
