//go:build linux

package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// waitLimit bounds every wait: reaching it is a hang and fails the test.
const waitLimit = 30 * time.Second

// crashTrace matches what the Go runtime prints on a panic or fatal error.
var crashTrace = regexp.MustCompile(`(?m)^(panic: |fatal error: |goroutine \d+ \[)`)

// noCrash asserts that stderr shows no panic or stack trace.
func noCrash(t *testing.T, stderr string) {
	t.Helper()
	if crashTrace.MatchString(stderr) || strings.Contains(stderr, `"stacktrace"`) {
		t.Fatalf("stderr shows a crash or a stack trace:\n%s", stderr)
	}
}

// TestBadConfiguration: a bad, missing or misspelt field stops the binary
// at once with a non-zero status and a message naming the field; never a
// panic, never the secret that the file holds.
func TestBadConfiguration(t *testing.T) {
	const secret = "s3cr3t-do-not-print"
	node := "nodes:\n  - name: pbx1\n    address: 127.0.0.1:5038\n    username: ami\n    secret: " + secret + "\n"
	cases := []struct {
		name string
		file string // config content; "" for no --config
		args []string
		want []string
	}{
		{"unknown key", node + "ingest:\n  bufer_events: 5\n", nil, []string{"ingest.bufer_events: unknown key"}},
		{"missing address", "nodes:\n  - name: pbx1\n    username: ami\n    secret: " + secret + "\n", nil,
			[]string{"nodes[0].address: missing"}},
		{"third node", node + "  - name: pbx2\n    address: 127.0.0.1:5039\n    username: ami\n    secret: x\n" +
			"  - name: pbx3\n    username: ami\n    secret: x\n", nil, []string{"nodes[2].address: missing"}},
		{"two problems", node + "ingest:\n  buffer_events: -1\nsession:\n  ping_interval: often\n", nil,
			[]string{"ingest.buffer_events", "session.ping_interval"}},
		{"bad node name", strings.Replace(node, "pbx1", "pbx.1", 1), nil, []string{"nodes[0].name"}},
		{"no nodes", "nats:\n  url: nats://127.0.0.1:4222\n", nil, []string{"nodes"}},
		{"unset env", strings.Replace(node, secret, "${AMIBUS_TEST_UNSET_VAR}", 1), nil, []string{"AMIBUS_TEST_UNSET_VAR"}},
		{"not yaml", "nodes: [\n", nil, []string{"yaml"}},
		{"no config flag", "", nil, []string{"--config"}},
		{"bad log level", node, []string{"--log-level", "verbose"}, []string{"--log-level", "verbose"}},
		{"unknown flag", node, []string{"--bufer", "5"}, []string{"bufer"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var args []string
			if c.file != "" {
				args = append(args, "--config", testenv.WriteFile(t, "ami.yaml", c.file))
			}
			args = append(args, c.args...)
			p := testenv.Run(t, binary, nil, nil, args...)
			code, elapsed := p.Wait(10 * time.Second)
			stderr := p.Stderr()
			if code == 0 {
				t.Fatalf("exit 0; stderr:\n%s", stderr)
			}
			if elapsed > time.Second {
				t.Errorf("took %v to refuse the configuration", elapsed)
			}
			for _, w := range c.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr does not name %q:\n%s", w, stderr)
				}
			}
			if strings.Contains(stderr, secret) {
				t.Errorf("stderr holds the secret:\n%s", stderr)
			}
			noCrash(t, stderr)
		})
	}
}

// counter keeps the core NATS messages of a subscription and wakes the
// test at each one.
type counter struct{ testenv.Log[*nats.Msg] }

// subscribe starts a counter on subject.
func subscribe(t *testing.T, nc *nats.Conn, subject string) *counter {
	t.Helper()
	c := new(counter)
	testenv.Subscribe(t, nc, subject, func(m *nats.Msg) { c.Add(m) })
	return c
}

func hasMeta(msgs []*nats.Msg, node, typ string) bool {
	for _, m := range msgs {
		if m.Subject == "ami.events."+node+"._meta" && bytes.Contains(m.Data, []byte(`"type":"`+typ+`"`)) {
			return true
		}
	}
	return false
}

// TestSecretNeverLogged runs the binary at debug level against a PBX that
// refuses one node's secret and accepts the others (plain, from an
// environment variable, and MD5 from a secret file), and a NATS server
// that wants a token: no secret appears on stderr, while the refusal is
// reported.
func TestSecretNeverLogged(t *testing.T) {
	const (
		wrong    = "wr0ng-s3cret-value"
		natsTok  = "n4ts-t0ken-value"
		amiRight = "amisecret"
	)
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx", AuthFailDelay: time.Millisecond})
	ns := testenv.StartNATS(t, testenv.ServerOptions(func(o *server.Options) { o.Authorization = natsTok }))
	secretFile := testenv.WriteFile(t, "secret", amiRight+"\n")
	cfg := fmt.Sprintf(`nats:
  url: %s
  token: ${TEST_NATS_TOKEN}
http:
  listen: %s
session:
  backoff_initial: 10ms
  backoff_max: 50ms
  auth_failure_backoff: 50ms
nodes:
  - name: wrong
    address: %s
    username: ami
    secret: %s
  - name: env
    address: %s
    username: ami
    secret: ${TEST_AMI_SECRET}
  - name: md5
    address: %s
    username: ami
    auth: md5
    secret_file: %s
`, ns.ClientURL(), testenv.DeadAddr(t), sim.Addr(), wrong, sim.Addr(), sim.Addr(), secretFile)
	nc := testenv.Connect(t, ns.ClientURL(), nats.Token(natsTok))
	msgs := subscribe(t, nc, "ami.events.>")

	p := testenv.Run(t, binary, []string{"TEST_AMI_SECRET=" + amiRight, "TEST_NATS_TOKEN=" + natsTok}, nil,
		"--config", testenv.WriteFile(t, "ami.yaml", cfg), "--log-level", "debug")
	testenv.WaitSim(t, sim, "two refused logins", func() bool { return sim.Stats().LoginFailures >= 2 })
	msgs.WaitFor(t, "both good nodes publishing", func(m []*nats.Msg) bool {
		return hasMeta(m, "env", "snapshot") && hasMeta(m, "md5", "snapshot")
	})
	// The connection is named for the binary and the instance that the
	// markers record as owner.
	var start struct{ Owner string }
	for _, m := range msgs.All() {
		if m.Subject == "ami.events.env._meta" && bytes.Contains(m.Data, []byte(`"session_start"`)) {
			if err := json.Unmarshal(m.Data, &start); err != nil {
				t.Fatal(err)
			}
		}
	}
	connz, err := ns.Server().Connz(&server.ConnzOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, c := range connz.Conns {
		names = append(names, c.Name)
	}
	if start.Owner == "" || !slices.Contains(names, "ami-ingest-"+start.Owner) {
		t.Fatalf("connection names %q, owner %q: want ami-ingest-<owner>", names, start.Owner)
	}
	p.WaitLine("PBX refused the login")
	p.Terminate()
	stderr := p.Stderr()
	if !strings.Contains(stderr, `"level":"debug"`) && !strings.Contains(stderr, `"level":"info"`) {
		t.Fatalf("no log lines at all:\n%s", stderr)
	}
	// Every credential that crossed the wire: plain secrets and MD5 keys.
	secrets := []string{wrong, amiRight, natsTok}
	for _, a := range sim.Received() {
		for _, h := range a.Headers {
			if h[0] == "Secret" || h[0] == "Key" {
				secrets = append(secrets, h[1])
			}
		}
	}
	if len(secrets) < 6 {
		t.Fatalf("credentials seen by the PBX: %q; want plain and MD5 logins", secrets[3:])
	}
	for _, s := range secrets {
		if strings.Contains(stderr, s) {
			t.Fatalf("stderr holds the secret %q:\n%s", s, stderr)
		}
	}
	noCrash(t, stderr)
	if hasMeta(msgs.All(), "wrong", "session_start") {
		t.Fatal("a session started with the wrong secret")
	}
}

// pipeSize is F_GETPIPE_SZ and F_SETPIPE_SZ (linux/fcntl.h).
const (
	fSetPipeSz = 1031
	fGetPipeSz = 1032
)

// blockedPipe returns a pipe whose buffer is full: any write to w blocks
// until someone reads r, which nobody does.
func blockedPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	fd := w.Fd() // also puts w in blocking mode, as the child will see it
	if _, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, fSetPipeSz, 4096); e != 0 {
		t.Fatalf("F_SETPIPE_SZ: %v", e)
	}
	size, _, e := syscall.Syscall(syscall.SYS_FCNTL, fd, fGetPipeSz, 0)
	if e != 0 {
		t.Fatalf("F_GETPIPE_SZ: %v", e)
	}
	// Exactly the capacity: this write fits, the next byte would block.
	if n, err := syscall.Write(int(fd), bytes.Repeat([]byte("x"), int(size))); err != nil || n != int(size) {
		t.Fatalf("filling the pipe: %d of %d, %v", n, size, err)
	}
	return r, w
}

// TestBlockedStderr: stderr is a pipe that nobody reads and that is full
// from the start, while a misconfigured node fails its login thousands of
// times (one log line each) and a good node receives events. Events keep
// flowing into NATS far beyond what the pipe could hold as log lines, the
// lost lines are counted in ami_log_lines_dropped_total, and SIGTERM still
// ends the process cleanly.
func TestBlockedStderr(t *testing.T) {
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx", AuthFailDelay: time.Microsecond})
	ns := testenv.StartNATS(t)
	httpAddr := testenv.DeadAddr(t)
	var bad strings.Builder
	for i := 0; i < 6; i++ {
		fmt.Fprintf(&bad, "  - name: bad%d\n    address: %s\n    username: ami\n    secret: wrong\n", i, sim.Addr())
	}
	cfg := fmt.Sprintf(`nats:
  url: %s
http:
  listen: %s
session:
  backoff_initial: 1ms
  backoff_max: 1ms
  auth_failure_backoff: 1ms
nodes:
  - name: good
    address: %s
    username: ami
    secret: amisecret
%s`, ns.ClientURL(), httpAddr, sim.Addr(), bad.String())
	nc := testenv.Connect(t, ns.ClientURL())
	events := subscribe(t, nc, "ami.events.good.*")

	_, w := blockedPipe(t)
	p := testenv.Run(t, binary, nil, w, "--config", testenv.WriteFile(t, "ami.yaml", cfg))
	// Every refused login is one log line: past the logger's queue
	// (4096 lines) plus what one blocked write holds, lines are dropped.
	const failures = 6000
	testenv.WaitSim(t, sim, "refused logins", func() bool { return sim.Stats().LoginFailures >= failures })
	// Each refused login also sends the good session an InvalidPassword
	// event (it reads the security class), and the PBX adds traffic.
	sim.EmitEvents(2000, 0)
	const wantEvents = 5000
	events.WaitFor(t, "events flowing with stderr blocked", func(m []*nats.Msg) bool { return len(m) >= wantEvents })

	m := testenv.Scrape(t, httpAddr)
	if d := m["ami_log_lines_dropped_total"]; d < failures-4096-100 {
		t.Fatalf("ami_log_lines_dropped_total %v after %d refused logins", d, failures)
	}
	if pub := m["ami_events_published_total{node=good}"]; pub < wantEvents {
		t.Fatalf("ami_events_published_total{node=good} %v", pub)
	}
	p.Terminate() // with stderr blocked
}

// logLine is the part of a JSON log line the tests read.
type logLine struct {
	Msg                  string `json:"msg"`
	Node                 string `json:"node"`
	Received             uint64 `json:"received"`
	Published            uint64 `json:"published"`
	DroppedBufferFull    uint64 `json:"dropped_buffer_full"`
	DroppedPublishFailed uint64 `json:"dropped_publish_failed"`
	DroppedShutdown      uint64 `json:"dropped_shutdown"`
	URL                  string `json:"url"`
}

func parseLine(t *testing.T, l string) logLine {
	t.Helper()
	var x logLine
	if err := json.Unmarshal([]byte(l), &x); err != nil {
		t.Fatalf("log line %q: %v", l, err)
	}
	return x
}

// TestGracefulDrain: ami-ingest with its embedded NATS server (no nats.url)
// gets SIGTERM in the middle of a flood. It stops reading, stores what its
// buffer holds and exits 0; its last summary says received = published,
// and the stream, opened from the data directory afterwards, holds exactly
// those events, numbered 1..N with no hole, and the session_end marker.
func TestGracefulDrain(t *testing.T) {
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx1"})
	dataDir := t.TempDir()
	natsAddr := testenv.DeadAddr(t)
	cfg := fmt.Sprintf(`nats:
  embedded:
    listen: %s
http:
  listen: %s
nodes:
  - name: pbx1
    address: %s
    username: ami
    secret: amisecret
`, natsAddr, testenv.DeadAddr(t), sim.Addr())
	p := testenv.Run(t, binary, nil, nil, "--config", testenv.WriteFile(t, "ami.yaml", cfg), "--data-dir", dataDir)
	p.WaitLine("stream ready")
	testenv.WaitSim(t, sim, "the session's snapshot action", func() bool {
		for _, a := range sim.Received() {
			if a.Name == "CoreShowChannels" {
				return true
			}
		}
		return false
	})

	base := sim.SentEventCount()
	flood := make(chan struct{})
	go func() {
		defer close(flood)
		sim.EmitEvents(6000, 0)
	}()
	testenv.WaitSim(t, sim, "the flood under way", func() bool { return sim.SentEventCount() >= base+2000 })
	p.Signal(syscall.SIGTERM)
	code, _ := p.Wait(waitLimit)
	<-flood
	if code != 0 {
		t.Fatalf("exit %d after SIGTERM; stderr:\n%s", code, p.Stderr())
	}
	stderr := p.Stderr()
	noCrash(t, stderr)
	var sum *logLine
	for _, l := range strings.Split(stderr, "\n") {
		if strings.Contains(l, `"node publishing stopped"`) {
			x := parseLine(t, l)
			sum = &x
		}
	}
	if sum == nil || sum.Node != "pbx1" {
		t.Fatalf("no summary line for pbx1:\n%s", stderr)
	}
	if sum.Received == 0 || sum.Received != sum.Published || sum.DroppedBufferFull+sum.DroppedPublishFailed+sum.DroppedShutdown != 0 {
		t.Fatalf("summary %+v: want received = published, nothing dropped", *sum)
	}
	if !strings.Contains(stderr, "every buffered event stored") {
		t.Fatalf("no drain confirmation:\n%s", stderr)
	}

	// The stream as stored in the data directory.
	srv := testenv.StartNATS(t, testenv.StoreDir(dataDir))
	nc2 := testenv.Connect(t, srv.ClientURL())
	js, _ := jetstream.New(nc2)
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cons, err := js.OrderedConsumer(ctx, "AMI_EVENTS", jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, "AMI_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	total := st.CachedInfo().State.Msgs
	var next uint64 = 1
	var end map[string]any
	// One pull for the whole stream: it returns once all are delivered.
	batch, err := cons.Fetch(int(total), jetstream.FetchMaxWait(waitLimit))
	if err != nil {
		t.Fatal(err)
	}
	var read uint64
	for msg := range batch.Messages() {
		read++
		var x map[string]any
		if err := json.Unmarshal(msg.Data(), &x); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(msg.Subject(), "._meta") {
			if x["type"] == "gap" {
				t.Fatalf("gap in a drained history: %s", msg.Data())
			}
			if x["type"] == "session_end" {
				end = x
			}
			continue
		}
		if seq := uint64(x["seq"].(float64)); seq != next {
			t.Fatalf("event seq %d, want %d", seq, next)
		}
		next++
	}
	if err := batch.Error(); err != nil || read != total {
		t.Fatalf("read %d of %d messages: %v", read, total, err)
	}
	stored := next - 1
	if stored != sum.Published {
		t.Fatalf("%d events stored, the summary says %d published", stored, sum.Published)
	}
	if end == nil || end["reason"] != "closed" || uint64(end["last_seq"].(float64)) != stored {
		t.Fatalf("session_end %v, want reason closed and last_seq %d", end, stored)
	}
	if stored < 1000 {
		t.Fatalf("only %d events stored; SIGTERM came after the PBX had written 2000", stored)
	}
}

// TestSecondSignalExitsAtOnce: with NATS gone, a graceful stop would wait
// out the drain deadline (a minute here); a second SIGTERM ends the process
// at once.
func TestSecondSignalExitsAtOnce(t *testing.T) {
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx1"})
	ns := testenv.StartNATS(t)
	cfg := fmt.Sprintf(`nats:
  url: %s
http:
  listen: %s
ingest:
  drain_timeout: 1m
nodes:
  - name: pbx1
    address: %s
    username: ami
    secret: amisecret
`, ns.ClientURL(), testenv.DeadAddr(t), sim.Addr())
	nc := testenv.Connect(t, ns.ClientURL())
	msgs := subscribe(t, nc, "ami.events.pbx1.>")
	p := testenv.Run(t, binary, nil, nil, "--config", testenv.WriteFile(t, "ami.yaml", cfg))
	msgs.WaitFor(t, "the snapshot", func(m []*nats.Msg) bool { return hasMeta(m, "pbx1", "snapshot") })
	nc.Close()
	ns.Stop()
	base := sim.SentEventCount()
	sim.EmitEvents(100, 0)
	testenv.WaitSim(t, sim, "events buffered", func() bool { return sim.SentEventCount() == base+100 })

	p.Signal(syscall.SIGTERM)
	p.WaitLine("signal received")
	select {
	case <-p.Exited():
		t.Fatalf("exited after the first signal with NATS down and events buffered; stderr:\n%s", p.Stderr())
	default:
	}
	second := time.Now()
	p.Signal(syscall.SIGTERM)
	code, _ := p.Wait(waitLimit)
	if code == 0 {
		t.Fatal("exit 0 after an interrupted drain")
	}
	if d := time.Since(second); d > 5*time.Second {
		t.Fatalf("second signal took %v to end the process (drain deadline 1m)", d)
	}
	noCrash(t, p.Stderr())
}
