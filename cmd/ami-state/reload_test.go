//go:build linux

package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/publish"
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
	if _, err := publish.EnsureStream(ctx, js, publish.StreamConfig{Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
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
	cm := testenv.NewConfigMap(t, file("true", "pbx1", "pbx2"))
	p := testenv.Run(t, binary, nil, nil, "--config", cm.Path(), "--watch-config")
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

	cm.Update(file("true", "pbx2", "pbx3") + "  - {name: pbx4, username: u, secret: s}\n")
	if line := p.WaitLine("invalid file, nothing changed"); !strings.Contains(line, `"field":"nodes[2].address"`) {
		t.Fatalf("invalid reload line does not name the field: %s", line)
	}
	if err := os.WriteFile(cm.Path(), []byte(file("false", "pbx1", "pbx2", "pbx3")), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGHUP)
	if line := p.WaitLine("configuration reload refused"); !strings.Contains(line, "state.ha.enabled") {
		t.Fatalf("refusal does not name the field: %s", line)
	}
	if got := testenv.Outcome(t, nc, "ami.state."+"pbx1", nil); got != "unknown_node" {
		t.Fatalf("pbx1 after an invalid and a refused file: %s, want unknown_node", got)
	}
	resp, err := http.Get("http://" + httpAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	for _, result := range []string{"applied", "invalid", "refused"} {
		if want := `ami_config_reloads_total{result="` + result + `"} 1`; !strings.Contains(string(body), want) {
			t.Errorf("/metrics has no %s", want)
		}
	}

	p.Signal(syscall.SIGTERM)
	if code, _ := p.Wait(testenv.WaitLimit); code != 0 {
		t.Fatalf("exit %d; stderr:\n%s", code, p.Stderr())
	}
}

// publishChannel writes a session start and one Newchannel (Uniqueid 1.1)
// of node to the stream, as ami-ingest does.
func publishChannel(t *testing.T, js jetstream.JetStream, node string, i int) {
	t.Helper()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	session := fmt.Sprintf("s%d", i)
	msgs := []struct {
		subject string
		v       map[string]any
	}{
		{"ami.events." + node + "._meta", map[string]any{"node": node, "type": "session_start", "session": session,
			"time": now, "version": "9.0.0", "owner": "test"}},
		{"ami.events." + node + ".Newchannel", map[string]any{"node": node, "event": "Newchannel", "session": session,
			"seq": 1, "time": now, "fields": map[string]string{"Event": "Newchannel", "Uniqueid": "1.1", "Channel": "PJSIP/a"}}},
	}
	for _, m := range msgs {
		b, _ := json.Marshal(m.v)
		if _, err := js.Publish(context.Background(), m.subject, b); err != nil {
			t.Fatal(err)
		}
	}
}

// waitKey waits until key of bucket exists (present) or is gone, watching
// the bucket, which may not exist yet (the process creates it).
func waitKey(t *testing.T, js jetstream.JetStream, bucket, key string, present bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.WaitLimit)
	defer cancel()
	var kv jetstream.KeyValue
	for {
		var err error
		if kv, err = js.KeyValue(ctx, bucket); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("bucket %s: %v", bucket, err)
		case <-time.After(50 * time.Millisecond): // created by the other process: no signal to wait on
		}
	}
	w, err := kv.Watch(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	seen := false
	for {
		select {
		case e := <-w.Updates():
			if e == nil { // end of the initial values
				if !seen && !present {
					return // none: gone (a delete marker expires with the lease bucket's TTL)
				}
				continue
			}
			seen = true
			if (e.Operation() == jetstream.KeyValuePut) == present {
				return
			}
		case <-ctx.Done():
			t.Fatalf("%s %s: never %s", bucket, key, map[bool]string{true: "written", false: "deleted"}[present])
		}
	}
}
