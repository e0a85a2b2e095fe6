//go:build linux

package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/amibus/amibus/pkg/amisim"
)

// waitLimit bounds every wait: reaching it is a hang and fails the test.
const waitLimit = 30 * time.Second

// binary is ami-ingest, built once by TestMain.
var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ami-ingest-test")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binary = filepath.Join(dir, "ami-ingest")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building ami-ingest:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// proc is one run of the binary. Its stderr is read line by line as it
// comes, so a test can wait for a line instead of sleeping.
type proc struct {
	t     *testing.T
	cmd   *exec.Cmd
	exit  chan struct{} // closed when the process has exited
	err   error         // of Wait, set before exit is closed
	start time.Time

	mu      sync.Mutex
	lines   []string
	changed chan struct{} // capacity 1
	readers sync.WaitGroup
}

// runBinary starts the binary with args; stderr, when not nil, replaces the
// captured stderr (the blocked-stderr test).
func runBinary(t *testing.T, env []string, stderr *os.File, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, exit: make(chan struct{}), changed: make(chan struct{}, 1)}
	p.cmd = exec.Command(binary, args...)
	p.cmd.Env = append(os.Environ(), env...)
	if stderr != nil {
		p.cmd.Stderr = stderr
	} else {
		r, err := p.cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		p.readers.Add(1)
		go p.read(r)
	}
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.readers.Wait() // Wait closes the pipe: read it to its end first
		p.err = p.cmd.Wait()
		close(p.exit)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exit:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exit
		}
	})
	return p
}

func (p *proc) read(r io.Reader) {
	defer p.readers.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p.mu.Lock()
		p.lines = append(p.lines, sc.Text())
		p.mu.Unlock()
		select {
		case p.changed <- struct{}{}:
		default:
		}
	}
}

func (p *proc) stderr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines, "\n")
}

// waitLine waits for a stderr line containing s and returns it.
func (p *proc) waitLine(s string) string {
	p.t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	seen := 0
	for {
		p.mu.Lock()
		lines := p.lines[seen:]
		seen = len(p.lines)
		p.mu.Unlock()
		for _, l := range lines {
			if strings.Contains(l, s) {
				return l
			}
		}
		select {
		case <-p.changed:
		case <-p.exit:
			p.mu.Lock()
			done := seen == len(p.lines)
			p.mu.Unlock()
			if done {
				p.t.Fatalf("exited (%v) before logging %q; stderr:\n%s", p.err, s, p.stderr())
			}
		case <-deadline.C:
			p.t.Fatalf("no stderr line with %q; stderr:\n%s", s, p.stderr())
		}
	}
}

// wait waits for the exit and returns the exit code and the time since
// start.
func (p *proc) wait(within time.Duration) (int, time.Duration) {
	p.t.Helper()
	select {
	case <-p.exit:
	case <-time.After(within):
		p.t.Fatalf("still running after %v; stderr:\n%s", within, p.stderr())
	}
	elapsed := time.Since(p.start)
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode(), elapsed
	}
	if p.err != nil {
		p.t.Fatal(p.err)
	}
	return 0, elapsed
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// freeAddr returns a loopback address nobody listens on right now.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startNATS(t *testing.T, dir string, opts *server.Options) *server.Server {
	t.Helper()
	if opts == nil {
		opts = &server.Options{}
	}
	opts.Host, opts.Port = "127.0.0.1", server.RANDOM_PORT
	opts.JetStream, opts.StoreDir = true, dir
	opts.NoLog, opts.NoSigs = true, true
	srv, err := server.NewServer(opts)
	if err != nil {
		t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

func startSim(t *testing.T, cfg amisim.Config) *amisim.Server {
	t.Helper()
	s, err := amisim.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func waitSim(t *testing.T, s *amisim.Server, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := s.WaitUntil(ctx, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

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
				args = append(args, "--config", writeFile(t, "ami.yaml", c.file))
			}
			args = append(args, c.args...)
			p := runBinary(t, nil, nil, args...)
			code, elapsed := p.wait(10 * time.Second)
			stderr := p.stderr()
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

// counter keeps the core NATS messages of a subscription and signals each
// one.
type counter struct {
	mu   sync.Mutex
	msgs []*nats.Msg
	wake chan struct{}
}

// subscribe starts a counter on subject.
func subscribe(t *testing.T, nc *nats.Conn, subject string) *counter {
	t.Helper()
	c := &counter{wake: make(chan struct{}, 1)}
	sub, err := nc.Subscribe(subject, func(m *nats.Msg) {
		c.mu.Lock()
		c.msgs = append(c.msgs, m)
		c.mu.Unlock()
		select {
		case c.wake <- struct{}{}:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return c
}

func (c *counter) all() []*nats.Msg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]*nats.Msg(nil), c.msgs...)
}

func (c *counter) until(t *testing.T, what string, cond func(msgs []*nats.Msg) bool) {
	t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ok := cond(c.msgs)
		n := len(c.msgs)
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-c.wake:
		case <-deadline.C:
			t.Fatalf("timed out waiting for %s (%d messages)", what, n)
		}
	}
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
	sim := startSim(t, amisim.Config{Node: "pbx", AuthFailDelay: time.Millisecond})
	ns := startNATS(t, t.TempDir(), &server.Options{Authorization: natsTok})
	secretFile := writeFile(t, "secret", amiRight+"\n")
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
`, ns.ClientURL(), freeAddr(t), sim.Addr(), wrong, sim.Addr(), sim.Addr(), secretFile)
	nc, err := nats.Connect(ns.ClientURL(), nats.Token(natsTok))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	msgs := subscribe(t, nc, "ami.events.>")

	p := runBinary(t, []string{"TEST_AMI_SECRET=" + amiRight, "TEST_NATS_TOKEN=" + natsTok}, nil,
		"--config", writeFile(t, "ami.yaml", cfg), "--log-level", "debug")
	waitSim(t, sim, "two refused logins", func() bool { return sim.Stats().LoginFailures >= 2 })
	msgs.until(t, "both good nodes publishing", func(m []*nats.Msg) bool {
		return hasMeta(m, "env", "snapshot") && hasMeta(m, "md5", "snapshot")
	})
	// The connection is named for the binary and the instance that the
	// markers record as owner.
	var start struct{ Owner string }
	for _, m := range msgs.all() {
		if m.Subject == "ami.events.env._meta" && bytes.Contains(m.Data, []byte(`"session_start"`)) {
			if err := json.Unmarshal(m.Data, &start); err != nil {
				t.Fatal(err)
			}
		}
	}
	connz, err := ns.Connz(&server.ConnzOptions{})
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
	p.waitLine("PBX refused the login")
	p.signal(syscall.SIGTERM)
	if code, _ := p.wait(waitLimit); code != 0 {
		t.Fatalf("exit %d after SIGTERM; stderr:\n%s", code, p.stderr())
	}
	stderr := p.stderr()
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
	if hasMeta(msgs.all(), "wrong", "session_start") {
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

func scrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			key := name
			for _, l := range m.Label {
				key += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			}
		}
	}
	return out
}

// TestBlockedStderr: stderr is a pipe that nobody reads and that is full
// from the start, while a misconfigured node fails its login thousands of
// times (one log line each) and a good node receives events. Events keep
// flowing into NATS far beyond what the pipe could hold as log lines, the
// lost lines are counted in ami_log_lines_dropped_total, and SIGTERM still
// ends the process cleanly.
func TestBlockedStderr(t *testing.T) {
	sim := startSim(t, amisim.Config{Node: "pbx", AuthFailDelay: time.Microsecond})
	ns := startNATS(t, t.TempDir(), nil)
	httpAddr := freeAddr(t)
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
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	events := subscribe(t, nc, "ami.events.good.*")

	_, w := blockedPipe(t)
	p := runBinary(t, nil, w, "--config", writeFile(t, "ami.yaml", cfg))
	// Every refused login is one log line: past the logger's queue
	// (4096 lines) plus what one blocked write holds, lines are dropped.
	const failures = 6000
	waitSim(t, sim, "refused logins", func() bool { return sim.Stats().LoginFailures >= failures })
	// Each refused login also sends the good session an InvalidPassword
	// event (it reads the security class), and the PBX adds traffic.
	sim.EmitEvents(2000, 0)
	const wantEvents = 5000
	events.until(t, "events flowing with stderr blocked", func(m []*nats.Msg) bool { return len(m) >= wantEvents })

	m := scrape(t, httpAddr)
	if d := m["ami_log_lines_dropped_total"]; d < failures-4096-100 {
		t.Fatalf("ami_log_lines_dropped_total %v after %d refused logins", d, failures)
	}
	if pub := m["ami_events_published_total{node=good}"]; pub < wantEvents {
		t.Fatalf("ami_events_published_total{node=good} %v", pub)
	}
	p.signal(syscall.SIGTERM)
	if code, _ := p.wait(waitLimit); code != 0 {
		t.Fatalf("exit %d after SIGTERM with stderr blocked", code)
	}
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
	sim := startSim(t, amisim.Config{Node: "pbx1"})
	dataDir := t.TempDir()
	natsAddr := freeAddr(t)
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
`, natsAddr, freeAddr(t), sim.Addr())
	p := runBinary(t, nil, nil, "--config", writeFile(t, "ami.yaml", cfg), "--data-dir", dataDir)
	p.waitLine("stream ready")
	waitSim(t, sim, "the session's snapshot action", func() bool {
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
	waitSim(t, sim, "the flood under way", func() bool { return sim.SentEventCount() >= base+2000 })
	p.signal(syscall.SIGTERM)
	code, _ := p.wait(waitLimit)
	<-flood
	if code != 0 {
		t.Fatalf("exit %d after SIGTERM; stderr:\n%s", code, p.stderr())
	}
	stderr := p.stderr()
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
	srv := startNATS(t, dataDir, nil)
	nc2, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc2.Close()
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
	sim := startSim(t, amisim.Config{Node: "pbx1"})
	ns := startNATS(t, t.TempDir(), nil)
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
`, ns.ClientURL(), freeAddr(t), sim.Addr())
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	msgs := subscribe(t, nc, "ami.events.pbx1.>")
	p := runBinary(t, nil, nil, "--config", writeFile(t, "ami.yaml", cfg))
	msgs.until(t, "the snapshot", func(m []*nats.Msg) bool { return hasMeta(m, "pbx1", "snapshot") })
	nc.Close()
	ns.Shutdown()
	ns.WaitForShutdown()
	base := sim.SentEventCount()
	sim.EmitEvents(100, 0)
	waitSim(t, sim, "events buffered", func() bool { return sim.SentEventCount() == base+100 })

	p.signal(syscall.SIGTERM)
	p.waitLine("signal received")
	select {
	case <-p.exit:
		t.Fatalf("exited after the first signal with NATS down and events buffered; stderr:\n%s", p.stderr())
	default:
	}
	second := time.Now()
	p.signal(syscall.SIGTERM)
	code, _ := p.wait(waitLimit)
	if code == 0 {
		t.Fatal("exit 0 after an interrupted drain")
	}
	if d := time.Since(second); d > 5*time.Second {
		t.Fatalf("second signal took %v to end the process (drain deadline 1m)", d)
	}
	noCrash(t, p.stderr())
}
