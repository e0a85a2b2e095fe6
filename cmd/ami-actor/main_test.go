package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"go.uber.org/goleak"

	"github.com/amibus/amibus/pkg/amisim"
)

// binary is the ami-actor built once by TestMain; the tests run it as a
// process, as an operator or Kubernetes would.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ami-actor-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "ami-actor")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	code := 1
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "go build:", err)
	} else {
		code = m.Run()
		if code == 0 {
			if err := goleak.Find(); err != nil {
				fmt.Fprintln(os.Stderr, "goleak:", err)
				code = 1
			}
		}
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

// waitLimit bounds waits that should end promptly, generous for a busy
// machine; reaching it fails the test.
const waitLimit = 20 * time.Second

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "amibus.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

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
			return []string{"--config", writeConfig(t, `nats:
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
			return []string{"--config", writeConfig(t, `nodes:
  - {name: pbx1, address: "127.0.0.1:5038", username: ami, secret: `+secret+`}
actor:
  allow: [Ping, Logoff]
`)}
		}, []string{`actor.allow[1]: "Logoff" is always denied`}},
		{"bad log level flag", func(t *testing.T) []string {
			return []string{"--log-level", "verbose", "--config", writeConfig(t, `nodes:
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
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			cmd := exec.CommandContext(ctx, binary, c.args(t)...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			start := time.Now()
			err := cmd.Run()
			took := time.Since(start)
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 2 {
				t.Fatalf("exit: %v, want exit code 2\n%s", err, stderr.String())
			}
			// "Within a second" on an idle machine; the bound is loose
			// for a shared one, and the time is logged.
			t.Logf("exited in %v: %s", took, strings.TrimSpace(stderr.String()))
			if took > 5*time.Second {
				t.Errorf("took %v to refuse a bad configuration", took)
			}
			out := stderr.String()
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

// logLine is the part of a JSON log line the tests read.
type logLine struct {
	Msg  string `json:"msg"`
	HTTP string `json:"http"`
}

// TestSIGTERMGracefulShutdown runs the binary against an embedded NATS
// server and a simulated PBX, sends SIGTERM while a request is in flight,
// and checks that the request still gets the PBX's answer, the AMI session
// logs off, and the process exits 0.
func TestSIGTERMGracefulShutdown(t *testing.T) {
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	ns.Start()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if !ns.ReadyForConnections(waitLimit) {
		t.Fatal("nats-server not ready")
	}
	sim, err := amisim.Start(amisim.Config{Node: "pbx1"})
	if err != nil {
		t.Fatal(err)
	}
	defer sim.Close()
	path := writeConfig(t, fmt.Sprintf(`nats:
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

	cmd := exec.Command(binary, "--config", path)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	var lines []logLine
	var linesMu sync.Mutex
	serving := make(chan string, 1) // the HTTP address, once subscribed
	var scanDone sync.WaitGroup
	scanDone.Add(1)
	go func() {
		defer scanDone.Done()
		httpAddr := ""
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var l logLine
			if json.Unmarshal(sc.Bytes(), &l) != nil {
				l.Msg = "not JSON: " + sc.Text()
			}
			linesMu.Lock()
			lines = append(lines, l)
			linesMu.Unlock()
			if l.HTTP != "" {
				httpAddr = l.HTTP
			}
			if l.Msg == "ami-actor serving" {
				serving <- httpAddr
			}
		}
		_, _ = io.Copy(io.Discard, stderr)
	}()
	go func() {
		scanDone.Wait() // Wait must follow the reads of the pipe
		exited <- cmd.Wait()
	}()
	waited := false
	defer func() {
		if !waited {
			_ = cmd.Process.Kill()
			<-exited
		}
	}()

	var httpAddr string
	select {
	case httpAddr = <-serving:
	case err := <-exited:
		waited = true
		t.Fatalf("exited before serving: %v", err)
	case <-time.After(waitLimit):
		t.Fatal("never logged that it serves")
	}
	resp, err := http.Get("http://" + httpAddr + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("/readyz: %s", resp.Status)
	}

	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
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
		first = nil
		if e, _ := first["error"].(map[string]any); e == nil || e["code"] != "unavailable" {
			t.Fatalf("first request: %s", msg.Data)
		}
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
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
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
	select {
	case err := <-exited:
		waited = true
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v, want 0", err)
		}
	case <-time.After(waitLimit):
		t.Fatal("still running after SIGTERM")
	}
	if err := sim.WaitUntil(ctxLimit(t), func() bool { return sim.ActiveSessions("ami2") == 0 }); err != nil {
		t.Errorf("the AMI session was not closed: %v", err)
	}
	linesMu.Lock()
	defer linesMu.Unlock()
	var msgs []string
	for _, l := range lines {
		msgs = append(msgs, l.Msg)
	}
	all := strings.Join(msgs, "\n")
	for _, want := range []string{"signal received", "stopped serving AMI actions", "ami-actor stopped"} {
		if !strings.Contains(all, want) {
			t.Errorf("log lacks %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "amisecret") {
		t.Error("a secret is in the log")
	}
}

func ctxLimit(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}
