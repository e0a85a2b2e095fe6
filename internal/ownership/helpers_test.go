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

	"github.com/amibus/amibus/internal/testenv"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// connect opens a connection that reconnects quickly and forever.
func connect(t *testing.T, url string) (*nats.Conn, jetstream.JetStream) {
	t.Helper()
	nc := testenv.Connect(t, url, nats.IgnoreDiscoveredServers())
	return nc, testenv.JetStream(t, nc)
}

// startJS starts a NATS server and returns JetStream on a connection to it.
func startJS(t *testing.T) jetstream.JetStream {
	t.Helper()
	_, js := connect(t, testenv.StartNATS(t).ClientURL())
	return js
}

// proxy forwards TCP connections to a NATS server until cut, so a test can
// partition one client from the server while the process lives on.
type proxy struct {
	srv    *testenv.TCPServer
	target string
	mu     sync.Mutex
	cut    bool
}

func newProxy(t *testing.T, target string) *proxy {
	t.Helper()
	p := &proxy{target: target}
	p.srv = testenv.ServeTCP(t, p.forward)
	return p
}

func (p *proxy) url() string { return "nats://" + p.srv.Addr() }

// forward pipes one client connection to the target until either side
// ends; a connection made while cut is closed at once.
func (p *proxy) forward(c net.Conn) {
	p.mu.Lock()
	cut := p.cut
	p.mu.Unlock()
	if cut {
		return
	}
	up, err := net.Dial("tcp", p.target)
	if err != nil {
		return
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(up, c)
		up.Close()
		c.Close()
	}()
	_, _ = io.Copy(c, up)
	c.Close()
	up.Close()
	<-done
}

// setCut drops every forwarded connection and refuses new ones (true), or
// forwards again (false).
func (p *proxy) setCut(cut bool) {
	p.mu.Lock()
	p.cut = cut
	p.mu.Unlock()
	if cut {
		p.srv.DropAll()
	}
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
	m *Manager
	// stop cancels Run and waits for it to return, failing the test
	// after testenv.WaitLimit; it returns Run's error.
	stop func() error
}

// startReplicas starts one manager per id on nodes, each on its own
// connection to url, with tolerant() timings; it returns them and their
// connections in the order of ids.
func startReplicas(t *testing.T, url string, nodes []string, c *checker, ids ...string) ([]*running, []*nats.Conn) {
	t.Helper()
	var rs []*running
	var ncs []*nats.Conn
	for _, id := range ids {
		nc, js := connect(t, url)
		ncs = append(ncs, nc)
		rs = append(rs, start(t, js, id, nodes, c, tolerant()...))
	}
	return rs, ncs
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
	return &running{m: m, stop: testenv.Go(t, m.Owner()+": Run", m.Run)}
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
