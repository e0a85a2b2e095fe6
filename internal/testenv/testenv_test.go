package testenv

import (
	"context"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/amibus/amibus/pkg/amisim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestNATSRestart: a stream stored before an outage is there after the
// server starts again on the same port, and the client reconnects to it.
func TestNATSRestart(t *testing.T) {
	ns := StartNATS(t, MaxPayload(4096))
	url := ns.ClientURL()
	reconnected := make(chan struct{}, 1)
	nc := Connect(t, url, nats.ReconnectHandler(func(*nats.Conn) { reconnected <- struct{}{} }))
	if got := nc.MaxPayload(); got != 4096 {
		t.Fatalf("max payload %d, want 4096", got)
	}
	js := JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
	defer cancel()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "S", Subjects: []string{"s"}}); err != nil {
		t.Fatal(err)
	}
	ns.Stop()
	if ns.Server() != nil {
		t.Fatal("server still set after Stop")
	}
	ns.Stop() // a second Stop does nothing
	ns.Start()
	if ns.ClientURL() != url {
		t.Fatalf("URL %s after restart, was %s", ns.ClientURL(), url)
	}
	select {
	case <-reconnected:
	case <-ctx.Done():
		t.Fatal("no reconnect")
	}
	if _, err := js.Stream(ctx, "S"); err != nil {
		t.Fatalf("stream after restart: %v", err)
	}
}

// TestNoJetStream: a core-only server refuses the JetStream API.
func TestNoJetStream(t *testing.T) {
	ns := StartNATS(t, NoJetStream())
	js := JetStream(t, Connect(t, ns.ClientURL()))
	ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err == nil {
		t.Fatal("JetStream answered on a core-only server")
	}
}

// TestSimFleet: a fleet's PBXs are named pbx1..pbxn and listen; a dead
// address refuses.
func TestSimFleet(t *testing.T) {
	sims := StartFleet(t, 2, amisim.Config{})
	for i, s := range sims {
		if want := fmt.Sprintf("pbx%d", i+1); s.Node() != want {
			t.Errorf("node %q, want %q", s.Node(), want)
		}
	}
	one := StartSim(t, amisim.Config{Node: "x"})
	WaitSim(t, one, "nothing", func() bool { return true })
	if one.Addr() == DeadAddr(t) {
		t.Fatal("dead address is the simulator's")
	}
}

// TestProc: lines are waited for in order, the exit code comes back.
func TestProc(t *testing.T) {
	p := Run(t, "/bin/sh", []string{"X=from-env"}, nil, "-c", `echo one >&2; echo "$X" >&2; exit 3`)
	if l := p.WaitLine("from-env"); l != "from-env" {
		t.Fatalf("line %q", l)
	}
	if code, _ := p.Wait(WaitLimit); code != 3 {
		t.Fatalf("exit code %d, want 3", code)
	}
	if got := p.Stderr(); got != "one\nfrom-env" {
		t.Fatalf("stderr %q", got)
	}
	if got := p.Tail(1); got != "from-env" {
		t.Fatalf("tail %q", got)
	}
}

// TestProcKeepsLastLines: past the cap the oldest lines go, and a line
// waited for after they went is still found.
func TestProcKeepsLastLines(t *testing.T) {
	total := 2*maxLines + 5
	p := Run(t, "/bin/sh", nil, nil, "-c", fmt.Sprintf(`i=0; while [ $i -lt %d ]; do echo l$i >&2; i=$((i+1)); done; echo last >&2`, total))
	p.WaitLine("last")
	p.Wait(WaitLimit)
	lines := strings.Split(p.Stderr(), "\n")
	first := fmt.Sprintf("l%d", total+1-maxLines)
	if len(lines) != maxLines || lines[0] != first || lines[maxLines-1] != "last" {
		t.Fatalf("%d lines from %q to %q, want %d from %s to last", len(lines), lines[0], lines[len(lines)-1], maxLines, first)
	}
}

// TestReply: the shipped schema is applied, and the outcome is read.
func TestReply(t *testing.T) {
	if _, err := CheckReply[string]([]byte(`{"ok":true}`)); err == nil {
		t.Fatal("a reply without node and action passed the schema")
	}
	bad := `{"ok":false,"node":"pbx1","action":"Ping","elapsed_ms":1,"error":{"code":"timeout","message":"m"}}`
	r, err := CheckReply[string]([]byte(bad))
	if err != nil {
		t.Fatal(err)
	}
	if r.Outcome() != "timeout" || *r.Elapsed != 1 || string(r.Raw) != bad {
		t.Fatalf("%+v", r)
	}
}

// TestLog: the waiter is woken by the Add that makes its condition true,
// from another goroutine.
func TestLog(t *testing.T) {
	var l Log[int]
	go func() {
		for i := range 3 {
			l.Add(i)
		}
	}()
	if got := l.WaitFor(t, "three items", func(xs []int) bool { return len(xs) == 3 }); got[2] != 2 {
		t.Fatalf("woken with %v", got)
	}
	if got := l.All(); len(got) != 3 {
		t.Fatalf("All %v", got)
	}
}

// TestTCPServerDropAll: DropAll ends the open connections (their handlers
// return) and the server accepts new ones.
func TestTCPServerDropAll(t *testing.T) {
	started, handled := make(chan struct{}), make(chan struct{})
	s := ServeTCP(t, func(c net.Conn) {
		started <- struct{}{}         // registered before handle runs
		_, _ = io.Copy(io.Discard, c) // until the connection is closed
		handled <- struct{}{}
	})
	for range 2 {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		<-started
		s.DropAll()
		<-handled
	}
}

// TestSubscribe: a message another connection publishes right after
// Subscribe returns arrives (the interest is at the server already), and
// the test's end unsubscribes.
func TestSubscribe(t *testing.T) {
	ns := StartNATS(t, NoJetStream())
	nc := Connect(t, ns.ClientURL())
	pub := Connect(t, ns.ClientURL())
	var sub *nats.Subscription
	t.Run("subscribed", func(t *testing.T) {
		got := make(chan string, 1)
		sub = Subscribe(t, nc, "s.>", func(m *nats.Msg) { got <- m.Subject })
		if err := pub.Publish("s.x", nil); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
		defer cancel()
		select {
		case s := <-got:
			if s != "s.x" {
				t.Fatalf("got %q, want s.x", s)
			}
		case <-ctx.Done():
			t.Fatal("no message")
		}
	})
	if sub.IsValid() {
		t.Fatal("still subscribed after the test's end")
	}
}

// TestGo: stop cancels run's context and returns its error, the same on a
// second call; a run the test never stops is stopped by its cleanup.
func TestGo(t *testing.T) {
	boom := fmt.Errorf("boom")
	stop := Go(t, "run", func(ctx context.Context) error {
		<-ctx.Done()
		return boom
	})
	if err := stop(); err != boom {
		t.Fatalf("stop = %v, want boom", err)
	}
	if err := stop(); err != boom {
		t.Fatalf("second stop = %v, want boom", err)
	}
	ended := make(chan struct{})
	t.Run("unstopped", func(t *testing.T) {
		Go(t, "run", func(ctx context.Context) error {
			<-ctx.Done()
			close(ended)
			return nil
		})
	})
	select {
	case <-ended:
	default:
		t.Fatal("the subtest's end did not stop its run")
	}
}
