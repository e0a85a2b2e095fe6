package simcmd

import (
	"bufio"
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amibus/amibus/pkg/amisim"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// startRun runs Run with args until stop, which returns its exit code; it
// returns once the fleet listens.
func startRun(t *testing.T, args ...string) (fleet *amisim.Fleet, log *syncBuffer, stop func() int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	log = new(syncBuffer)
	ready := make(chan *amisim.Fleet, 1)
	code := make(chan int, 1)
	go func() { code <- Run(ctx, args, log, func(f *amisim.Fleet) { ready <- f }) }()
	stopped := false
	var exit int
	stop = func() int {
		if !stopped {
			stopped = true
			cancel()
			exit = <-code
		}
		return exit
	}
	t.Cleanup(func() { stop() })
	select {
	case fleet = <-ready:
	case c := <-code:
		stopped, exit = true, c
		t.Fatalf("exited %d: %s", c, log.String())
	}
	return fleet, log, stop
}

// readUntil reads lines from r until one starts with prefix.
func readUntil(t *testing.T, r *bufio.Reader, prefix string) {
	t.Helper()
	for {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("before %q: %v", prefix, err)
		}
		if strings.HasPrefix(l, prefix) {
			return
		}
	}
}

// TestRun: two nodes with traffic and a flood serve AMI until the context
// ends, log where they listen, never a secret, and exit 0.
func TestRun(t *testing.T) {
	fleet, log, stop := startRun(t, "--listen", "127.0.0.1:0", "--nodes", "2", "--users", "ops:s3cr3t-value",
		"--calls-per-second", "20", "--events-per-second", "200")
	if n := len(fleet.Servers()); n != 2 {
		t.Fatalf("%d nodes", n)
	}
	for _, s := range fleet.Servers() {
		nc, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
		r := bufio.NewReader(nc)
		if l, _ := r.ReadString('\n'); l != "Asterisk Call Manager/9.0.0\r\n" {
			t.Fatalf("banner %q", l)
		}
		_, _ = nc.Write([]byte("Action: Login\r\nUsername: ops\r\nSecret: s3cr3t-value\r\nEvents: call\r\n\r\n"))
		readUntil(t, r, "Event: Newchannel")
		nc.Close()
		if !strings.Contains(log.String(), s.Addr()) {
			t.Errorf("the log does not name %s", s.Addr())
		}
	}
	if c := stop(); c != 0 {
		t.Fatalf("exit code %d", c)
	}
	out := log.String()
	if strings.Contains(out, "s3cr3t") {
		t.Fatalf("the secret was logged: %s", out)
	}
	if !strings.Contains(out, `"amisim ready"`) || !strings.Contains(out, `"stopped"`) {
		t.Fatalf("log: %s", out)
	}
}

// TestRunBadFlags: a clear message and exit code 2, nothing started.
func TestRunBadFlags(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--nodes", "0"}, "--nodes"},
		{[]string{"--users", "nosecret"}, "--users"},
		{[]string{"--users", "a:hidden,b"}, "entry 2"},
		{[]string{"--tls-cert", "x.pem"}, "--tls-key"},
		{[]string{"--log-level", "loud"}, "--log-level"},
		{[]string{"--listen", "127.0.0.1:0", "extra"}, "unexpected argument"},
		{[]string{"--traffic-mix", "nope=1"}, "--traffic-mix"},
		{[]string{"--traffic-mix", "basic=1", "--calls-per-second", "-1"}, "--traffic-mix"},
	} {
		var log syncBuffer
		if c := Run(context.Background(), tc.args, &log, nil); c != 2 {
			t.Errorf("%v: exit %d", tc.args, c)
		}
		if !strings.Contains(log.String(), tc.want) || strings.Contains(log.String(), "hidden") {
			t.Errorf("%v: message %q", tc.args, log.String())
		}
	}
}

// TestRunTrafficMix: --traffic-mix makes the nodes play the hard calls.
func TestRunTrafficMix(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var log syncBuffer
	ready := make(chan *amisim.Fleet, 1)
	code := make(chan int, 1)
	go func() {
		code <- Run(ctx, []string{"--listen", "127.0.0.1:0", "--calls-per-second", "50", "--call-duration", "300ms",
			"--traffic-mix", "blind=1,queue=1", "--traffic-seed", "9"}, &log, func(f *amisim.Fleet) { ready <- f })
	}()
	var fleet *amisim.Fleet
	select {
	case fleet = <-ready:
	case c := <-code:
		t.Fatalf("exited %d: %s", c, log.String())
	}
	nc, err := net.DialTimeout("tcp", fleet.Servers()[0].Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(nc)
	_, _ = nc.Write([]byte("Action: Login\r\nUsername: ami\r\nSecret: amisecret\r\n\r\n"))
	seen := map[string]bool{}
	for !seen["Event: BlindTransfer\r\n"] || !seen["Event: QueueCallerJoin\r\n"] {
		l, err := r.ReadString('\n')
		if err != nil {
			t.Fatalf("%v (seen %v)", err, seen)
		}
		seen[l] = true
		if strings.HasPrefix(l, "Channel: Local/200@demo") {
			t.Fatal("a template call outside the mix")
		}
	}
	cancel()
	if c := <-code; c != 0 {
		t.Fatalf("exit code %d", c)
	}
}
