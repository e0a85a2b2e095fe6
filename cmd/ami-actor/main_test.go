package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// waitLimit bounds waits that should end promptly, generous for a busy
// machine; reaching it fails the test.
const waitLimit = 20 * time.Second

// TestBadConfigExitsFast: a bad configuration ends the process with exit
// code 2 within a second or so, with a message naming each field at fault,
// no stack trace and no secret.
func TestBadConfigExitsFast(t *testing.T) {
	const secret = "s3cr3t-value"
	cases := []struct {
		name string
		args func(t *testing.T) []string
		want []string
	}{
		{"unknown key, missing field, bad value", func(t *testing.T) []string {
			return []string{"--config", testenv.WriteFile(t, "amibus.yaml", `nats:
  url: nats://127.0.0.1:4222
nodes:
  - name: pbx1
    username: ami
    secret: `+secret+`
actor:
  max_pendng: 5
  default_timeout_ms: 5000
  max_timeout_ms: 1000
`)}
		}, []string{"actor.max_pendng: unknown key", "nodes[0].address: missing", "actor.max_timeout_ms: must be >= actor.default_timeout_ms"}},
		{"deny list entry", func(t *testing.T) []string {
			return []string{"--config", testenv.WriteFile(t, "amibus.yaml", `nodes:
  - {name: pbx1, address: "127.0.0.1:5038", username: ami, secret: `+secret+`}
actor:
  allow: [Ping, Logoff]
`)}
		}, []string{`actor.allow[1]: "Logoff" is always denied`}},
		{"bad log level flag", func(t *testing.T) []string {
			return []string{"--log-level", "verbose", "--config", testenv.WriteFile(t, "amibus.yaml", `nodes:
  - {name: pbx1, address: "127.0.0.1:5038", username: ami, secret: `+secret+`}
`)}
		}, []string{"--log-level"}},
		{"no --config", func(*testing.T) []string { return nil }, []string{"--config: missing"}},
		{"file not found", func(t *testing.T) []string {
			return []string{"--config", filepath.Join(t.TempDir(), "nope.yaml")}
		}, []string{"nope.yaml", "no such file"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := testenv.Run(t, binary, nil, nil, c.args(t)...)
			code, took := p.Wait(waitLimit)
			if code != 2 {
				t.Fatalf("exit code %d, want 2\n%s", code, p.Stderr())
			}
			// "Within a second" on an idle machine; the bound is loose
			// for a shared one, and the time is logged.
			t.Logf("exited in %v: %s", took, p.Stderr())
			if took > 5*time.Second {
				t.Errorf("took %v to refuse a bad configuration", took)
			}
			out := p.Stderr()
			for _, w := range c.want {
				if !strings.Contains(out, w) {
					t.Errorf("stderr does not say %q:\n%s", w, out)
				}
			}
			for _, bad := range []string{secret, "panic", "goroutine "} {
				if strings.Contains(out, bad) {
					t.Errorf("stderr holds %q:\n%s", bad, out)
				}
			}
		})
	}
}

// TestSIGTERMGracefulShutdown runs the binary against an embedded NATS
// server and a simulated PBX, sends SIGTERM while a request is in flight,
// and checks that the request still gets the PBX's answer, the AMI session
// logs off, and the process exits 0.
func TestSIGTERMGracefulShutdown(t *testing.T) {
	ns := testenv.StartNATS(t, testenv.NoJetStream())
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx1"})
	path := testenv.WriteFile(t, "amibus.yaml", fmt.Sprintf(`nats:
  url: %s
nodes:
  - name: pbx1
    address: %s
    username: ami
    secret: amisecret
    actor_username: ami2
    actor_secret: amisecret2
http:
  listen: 127.0.0.1:0
session:
  backoff_initial: 10ms
  backoff_max: 100ms
`, ns.ClientURL(), sim.Addr()))

	p := testenv.Run(t, binary, nil, nil, "--config", path)
	var started struct {
		HTTP string `json:"http"`
	}
	if line := p.WaitLine(`"http":"`); json.Unmarshal([]byte(line), &started) != nil || started.HTTP == "" {
		t.Fatalf("no HTTP address in %s", line)
	}
	httpAddr := started.HTTP
	p.WaitLine(`"msg":"ami-actor serving"`)
	if code, body := testenv.Get(t, "http://"+httpAddr+"/readyz"); code != http.StatusOK {
		t.Fatalf("/readyz: %d %s", code, body)
	}

	nc := testenv.Connect(t, ns.ClientURL())
	if err := sim.WaitUntil(ctxLimit(t), func() bool { return sim.ActiveSessions("ami2") == 1 }); err != nil {
		t.Fatalf("the actor never logged in: %v", err)
	}
	// The session is up on the PBX's side; it may not be on the actor's
	// yet, so the first request may be answered unavailable: retry that
	// only.
	var first map[string]any
	for deadline := time.Now().Add(waitLimit); time.Now().Before(deadline); {
		msg, err := nc.Request("ami.action.pbx1.Ping", nil, waitLimit)
		if err != nil {
			t.Fatal(err)
		}
		first = nil
		if err := json.Unmarshal(msg.Data, &first); err != nil {
			t.Fatal(err)
		}
		if first["ok"] == true {
			break
		}
		if e, _ := first["error"].(map[string]any); e == nil || e["code"] != "unavailable" {
			t.Fatalf("first request: %s", msg.Data)
		}
		first = nil
	}
	if first == nil {
		t.Fatal("the actor's session never came up")
	}

	// Longer than the session's Logoff timeout (1 s), so the answer only
	// arrives if the sessions are closed after the requests in flight.
	sim.SetAnswerDelay("Ping", 1500*time.Millisecond)
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.PublishRequest("ami.action.pbx1", inbox, []byte(`{"action":"Ping","fields":{"Marker":"inflight"}}`)); err != nil {
		t.Fatal(err)
	}
	if err := sim.WaitUntil(ctxLimit(t), func() bool {
		for _, a := range sim.Received() {
			for _, h := range a.Headers {
				if h[0] == "Marker" && h[1] == "inflight" {
					return true
				}
			}
		}
		return false
	}); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGTERM)
	msg, err := sub.NextMsg(waitLimit)
	if err != nil {
		t.Fatalf("the in-flight request got no reply: %v", err)
	}
	var r struct {
		OK bool `json:"ok"`
	}
	if err := json.Unmarshal(msg.Data, &r); err != nil || !r.OK {
		t.Fatalf("in-flight request: %s, want the PBX's answer", msg.Data)
	}
	if code, _ := p.Wait(waitLimit); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0\n%s", code, p.Stderr())
	}
	if err := sim.WaitUntil(ctxLimit(t), func() bool { return sim.ActiveSessions("ami2") == 0 }); err != nil {
		t.Errorf("the AMI session was not closed: %v", err)
	}
	all := p.Stderr()
	for _, want := range []string{"signal received", "stopped serving AMI actions", "ami-actor stopped"} {
		if !strings.Contains(all, want) {
			t.Errorf("log lacks %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "amisecret") {
		t.Errorf("a secret is in the log:\n%s", all)
	}
}

func ctxLimit(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}
