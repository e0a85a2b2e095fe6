package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/amibus/amibus/internal/testenv"
)

func TestBadConfigExits2(t *testing.T) {
	p := testenv.Run(t, binary, nil, nil, "--config",
		testenv.WriteFile(t, "c.yaml", "nodes: [{name: pbx1, address: 'h:1', username: u, secret: s}]\nstate: {flush_interval: 0s, bucket: 'a b'}\n"))
	if code, _ := p.Wait(testenv.WaitLimit); code != 2 {
		t.Fatalf("exit code %d, stderr %s", code, p.Stderr())
	}
	for _, want := range []string{"state.flush_interval", "state.bucket"} {
		if !strings.Contains(p.Stderr(), want) {
			t.Errorf("stderr lacks %q: %s", want, p.Stderr())
		}
	}
}

// TestServesAndStops: the process waits for the stream, becomes ready,
// answers ami.state.<node>, serves /metrics, and exits 0 on SIGTERM; alone
// and with node leases (state.ha).
func TestServesAndStops(t *testing.T) {
	t.Run("single", func(t *testing.T) { servesAndStops(t, "") })
	t.Run("ha", func(t *testing.T) { servesAndStops(t, ", ha: {enabled: true, ttl: 2s}") })
}

func servesAndStops(t *testing.T, ha string) {
	emb := testenv.StartNATS(t)
	httpAddr := testenv.DeadAddr(t)
	p := testenv.Run(t, binary, nil, nil, "--config", testenv.WriteFile(t, "c.yaml", fmt.Sprintf(`nats: {url: %q}
nodes: [{name: pbx1, address: 'h:1', username: u, secret: s}]
http: {listen: %q}
state: {storage: memory, flush_interval: 10ms%s}
`, emb.ClientURL(), httpAddr, ha)))
	get := func(p string) (int, string) {
		resp, err := http.Get("http://" + httpAddr + p)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	waitFor := func(what string, ok func() bool) {
		deadline := time.Now().Add(20 * time.Second)
		for !ok() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: timed out; stderr:\n%s", what, p.Stderr())
			}
			time.Sleep(50 * time.Millisecond) // polling an HTTP endpoint of another process: no signal to wait on
		}
	}
	waitFor("healthz", func() bool { c, _ := get("/healthz"); return c == 200 })
	if c, _ := get("/readyz"); c == 200 {
		t.Fatal("ready before the stream exists")
	}
	nc := testenv.Connect(t, emb.ClientURL())
	js := testenv.JetStream(t, nc)
	ensureStream(t, js)
	b, _ := json.Marshal(map[string]any{"node": "pbx1", "event": "Newchannel", "session": "s1", "seq": 1,
		"time": time.Now().UTC().Format(time.RFC3339Nano), "fields": map[string]string{"Event": "Newchannel", "Uniqueid": "1.1", "Channel": "PJSIP/a"}})
	if _, err := js.Publish(context.Background(), "ami.events.pbx1.Newchannel", b); err != nil {
		t.Fatal(err)
	}
	waitFor("readyz", func() bool { c, _ := get("/readyz"); return c == 200 })
	var answer map[string]any
	waitFor("state answer", func() bool {
		m, err := nc.Request("ami.state.pbx1", nil, 2*time.Second)
		if err != nil {
			return false
		}
		_ = json.Unmarshal(m.Data, &answer)
		return answer["ok"] == true && len(answer["channels"].([]any)) == 1
	})
	if _, body := get("/metrics"); !strings.Contains(body, "ami_state_events_applied_total 1") {
		t.Fatalf("metrics lack the applied count:\n%s", body)
	}
	p.Terminate()
	kv, err := js.KeyValue(context.Background(), "ami_state")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Get(context.Background(), "pbx1.channel.1_1"); err != nil {
		t.Fatalf("channel key: %v", err)
	}
}
