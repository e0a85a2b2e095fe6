//go:build linux

package main

import (
	"context"
	"fmt"
	"testing"

	"github.com/amibus/amibus/internal/testenv"
)

// TestReloadConfigMap: ami-state with leases (state.ha), run with
// --watch-config, follows a ConfigMap update (a symlink swap): the node
// added is taken and projected from the stream, the node removed is
// released (its lease deleted, unknown_node to requests) with its keys
// kept in the bucket, the node kept keeps its state. An invalid update
// changes nothing and names its field; a setting that cannot change while
// running, sent by SIGHUP, is refused naming the field; each reload is
// counted by result; SIGTERM still ends it cleanly.
func TestReloadConfigMap(t *testing.T) {
	emb := testenv.StartNATS(t)
	nc := testenv.Connect(t, emb.ClientURL())
	js := testenv.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), testenv.WaitLimit)
	defer cancel()
	ensureStream(t, js)
	for i, node := range []string{"pbx1", "pbx2", "pbx3"} {
		publishChannel(t, js, node, i+1)
	}
	httpAddr := testenv.DeadAddr(t)
	file := func(state string, nodes ...string) string {
		s := fmt.Sprintf("nats: {url: %q}\nhttp: {listen: %q}\nstate: {storage: memory, flush_interval: 10ms, ha: {enabled: %s, ttl: 2s}}\nnodes:\n",
			emb.ClientURL(), httpAddr, state)
		for _, n := range nodes {
			s += fmt.Sprintf("  - {name: %s, address: 'h:1', username: u, secret: s}\n", n)
		}
		return s
	}
	p, cm := testenv.RunWatching(t, binary, file("true", "pbx1", "pbx2"))
	p.WaitLine("ami-state started")
	waitKey(t, js, "ami_state", "pbx1.status", true)
	waitKey(t, js, "ami_state", "pbx2.status", true)
	for node, want := range map[string]string{"pbx1": "ok", "pbx2": "ok", "pbx3": "unknown_node"} {
		if got := testenv.Outcome(t, nc, "ami.state."+node, nil); got != want {
			t.Fatalf("%s before the reload: %s, want %s", node, got, want)
		}
	}

	cm.Update(file("true", "pbx2", "pbx3"))
	p.WaitLine("configuration reloaded")
	waitKey(t, js, "ami_state", "pbx3.status", true)
	waitKey(t, js, "ami_state_owners", "node.pbx1", false) // deleted once released
	for node, want := range map[string]string{"pbx1": "unknown_node", "pbx2": "ok", "pbx3": "ok"} {
		if got := testenv.Outcome(t, nc, "ami.state."+node, nil); got != want {
			t.Fatalf("%s after the reload: %s, want %s", node, got, want)
		}
	}
	kv, err := js.KeyValue(ctx, "ami_state")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(ctx, "pbx1.channel.1_1"); err != nil {
		t.Fatalf("the removed node's channel key: %v; want it kept", err)
	}

	testenv.CheckBadReloads(t, p, cm,
		testenv.BadReload{File: file("true", "pbx2", "pbx3") + "  - {name: pbx4, username: u, secret: s}\n", Field: "nodes[2].address"},
		testenv.BadReload{File: file("false", "pbx1", "pbx2", "pbx3"), Field: "state.ha.enabled"})
	if got := testenv.Outcome(t, nc, "ami.state."+"pbx1", nil); got != "unknown_node" {
		t.Fatalf("pbx1 after an invalid and a refused file: %s, want unknown_node", got)
	}
	testenv.CheckReloadsCounted(t, httpAddr)
	p.Terminate()
}
