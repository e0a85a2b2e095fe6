package ownership

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// runServer starts an embedded nats-server with JetStream on a free port.
func runServer(t *testing.T) *server.Server {
	t.Helper()
	s, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats-server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

// connect opens a connection that reconnects quickly and forever.
func connect(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc, err := nats.Connect(url, nats.ReconnectWait(50*time.Millisecond), nats.MaxReconnects(-1),
		nats.IgnoreDiscoveredServers(), nats.ReconnectJitter(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return nc, js
}

// proxy forwards TCP connections to a NATS server until cut, so a test can
// partition one client from the server while the process lives on.
type proxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	cut    bool
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

func (p *proxy) url() string { return "nats://" + p.ln.Addr().String() }

func (p *proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", p.target)
		p.mu.Lock()
		if err != nil || p.cut {
			p.mu.Unlock()
			c.Close()
			if up != nil {
				up.Close()
			}
			continue
		}
		p.conns[c], p.conns[up] = struct{}{}, struct{}{}
		p.mu.Unlock()
		pipe := func(dst, src net.Conn) {
			defer p.wg.Done()
			_, _ = io.Copy(dst, src)
			dst.Close()
			src.Close()
		}
		p.wg.Add(2)
		go pipe(c, up)
		go pipe(up, c)
	}
}

// setCut drops every forwarded connection and refuses new ones (true), or
// forwards again (false).
func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cut = cut
	if cut {
		for c := range p.conns {
			c.Close()
		}
		clear(p.conns)
	}
}

func (p *proxy) close() {
	p.ln.Close()
	p.setCut(true)
	p.wg.Wait()
}

// releaseRecord is one Release call seen by the checker.
type releaseRecord struct {
	instance, node string
	start, end     time.Time
	deadline       time.Time
	hasDeadline    bool
	doneAtStart    bool
}

// checker plays the AMI sessions: Acquire starts one, Release ends it. It
// fails the test when a node is acquired while another instance owns it.
type checker struct {
	t        *testing.T
	mu       sync.Mutex
	owners   map[string]string // node -> instance
	changed  chan struct{}     // closed and replaced on every change
	releases []releaseRecord
	acquires map[string]int // instance -> Acquire calls
	// duringRelease, if set, runs inside every Release before the session
	// is ended.
	duringRelease func(ctx context.Context, instance, node string)
}

func newChecker(t *testing.T) *checker {
	return &checker{t: t, owners: map[string]string{}, changed: make(chan struct{}), acquires: map[string]int{}}
}

func (c *checker) notify() {
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *checker) acquire(instance string) func(string) {
	return func(node string) {
		c.mu.Lock()
		defer c.mu.Unlock()
		if o := c.owners[node]; o != "" {
			c.t.Errorf("overlap: %s acquired %s while %s owns it", instance, node, o)
		}
		c.owners[node] = instance
		c.acquires[instance]++
		c.notify()
	}
}

func (c *checker) release(instance string) func(context.Context, string) {
	return func(ctx context.Context, node string) {
		rec := releaseRecord{instance: instance, node: node, start: time.Now(), doneAtStart: ctx.Err() != nil}
		rec.deadline, rec.hasDeadline = ctx.Deadline()
		if f := c.duringRelease; f != nil {
			f(ctx, instance, node)
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if o := c.owners[node]; o != instance {
			c.t.Errorf("%s released %s owned by %q", instance, node, o)
		}
		delete(c.owners, node)
		rec.end = time.Now()
		c.releases = append(c.releases, rec)
		c.notify()
	}
}

// waitFor blocks until cond holds on the owners table, or fails the test.
func (c *checker) waitFor(t *testing.T, timeout time.Duration, what string, cond func(owners map[string]string) bool) {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		c.mu.Lock()
		ok := cond(c.owners)
		ch := c.changed
		c.mu.Unlock()
		if ok {
			return
		}
		select {
		case <-ch:
		case <-deadline.C:
			c.mu.Lock()
			owners := maps.Clone(c.owners)
			c.mu.Unlock()
			t.Fatalf("timed out after %v waiting for %s; owners: %v", timeout, what, owners)
		}
	}
}

func (c *checker) releasesOf(instance string) []releaseRecord {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []releaseRecord
	for _, r := range c.releases {
		if r.instance == instance {
			out = append(out, r)
		}
	}
	return out
}

// counts returns how many nodes each instance owns.
func counts(owners map[string]string) map[string]int {
	n := map[string]int{}
	for _, o := range owners {
		n[o]++
	}
	return n
}

// split reports whether the instances own exactly want nodes each and all
// nodes are owned.
func split(total int, want map[string]int) func(map[string]string) bool {
	return func(owners map[string]string) bool {
		return len(owners) == total && maps.Equal(counts(owners), want)
	}
}

func nodeNames(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("pbx%02d", i+1)
	}
	return out
}

// running is a Manager whose Run goroutine the test owns.
type running struct {
	m      *Manager
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// start creates a Manager wired to the checker and runs it until stop (or
// the end of the test).
func start(t *testing.T, js jetstream.JetStream, instance string, nodes []string, c *checker, opts ...Option) *running {
	t.Helper()
	all := append([]Option{
		WithAcquire(c.acquire(instance)),
		WithRelease(c.release(instance)),
		WithLogger(zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)).Named(instance)),
		WithRegisterer(prometheus.NewRegistry()),
	}, opts...)
	m, err := New(js, instance, nodes, all...)
	if err != nil {
		t.Fatal(err)
	}
	return runManager(t, m)
}

func runManager(t *testing.T, m *Manager) *running {
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{m: m, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- m.Run(ctx) }()
	t.Cleanup(func() { r.stop(t) })
	return r
}

// stop cancels Run and waits for it to return.
func (r *running) stop(t *testing.T) error {
	t.Helper()
	r.once.Do(func() {
		r.cancel()
		select {
		case r.err = <-r.done:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: Run did not return within 30s of cancel", r.m.Owner())
		}
	})
	return r.err
}

// kvValue returns the value of key, or "" if it is absent or deleted.
func kvValue(t *testing.T, kv jetstream.KeyValue, key string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := kv.Get(ctx, key)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
		return ""
	}
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	return string(e.Value())
}

func sortedKeys(m map[string]string) []string {
	return slices.Sorted(maps.Keys(m))
}
