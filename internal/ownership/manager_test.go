package ownership

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/amibus/amibus/internal/lifecycle"
)

// tolerant is for tests where two replicas could overlap: a 4s safety
// margin absorbs the multi-second stalls that a race-instrumented test
// process sees on a loaded 2-core machine, while 500ms rounds keep
// rebalancing quick. A lease is given up 1s after its last renewal and
// expires after 5s.
func tolerant(extra ...Option) []Option {
	return append([]Option{WithTTL(5 * time.Second), WithSafetyMargin(4 * time.Second), WithRenewInterval(500 * time.Millisecond)}, extra...)
}

// testKV binds the test's own handle on the lease bucket (created by a
// running Manager).
func testKV(t *testing.T, js jetstream.JetStream) jetstream.KeyValue {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func TestSingleManagerTakesAllAndHandsOverOnShutdown(t *testing.T) {
	js := startJS(t)
	nodes := []string{"pbx3", "pbx1", "pbx2", "pbx5", "pbx4"}
	c := newChecker(t)

	var kv jetstream.KeyValue
	var kvMu sync.Mutex
	// The lease must still be ours while Release runs: the caller drains
	// before the node is handed over.
	c.duringRelease = func(ctx context.Context, instance, node string) {
		kvMu.Lock()
		h := kv
		kvMu.Unlock()
		e, err := h.Get(ctx, leaseKey(node))
		if err != nil || !strings.HasPrefix(string(e.Value()), instance+"/") {
			t.Errorf("during Release of %s the lease is not %s's: %v", node, instance, err)
		}
	}
	r := start(t, js, "a", nodes, c)
	c.waitFor(t, 10*time.Second, "a owns all 5 nodes", split(5, map[string]int{"a": 5}))
	kvMu.Lock()
	kv = testKV(t, js)
	kvMu.Unlock()

	if got, want := r.m.Owned(), []string{"pbx1", "pbx2", "pbx3", "pbx4", "pbx5"}; !slices.Equal(got, want) {
		t.Errorf("Owned() = %v, want %v", got, want)
	}
	if r.m.Owner() != "a" {
		t.Errorf("Owner() = %q", r.m.Owner())
	}
	if g := testutil.ToFloat64(r.m.met.owned); g != 5 {
		t.Errorf("nodes_owned gauge = %v, want 5", g)
	}
	if g := testutil.ToFloat64(r.m.met.replicas); g != 1 {
		t.Errorf("replicas gauge = %v, want 1", g)
	}
	// One liveness key carrying the incarnation; every entry names it.
	inc := kvValue(t, kv, presenceKey("a"))
	if inc == "" || strings.Contains(inc, " ") {
		t.Errorf("liveness = %q, want an incarnation id", inc)
	}
	for _, n := range nodes {
		if v := kvValue(t, kv, leaseKey(n)); v != "a/"+inc {
			t.Errorf("entry %s = %q, want a/%s", n, v, inc)
		}
		if got := testutil.ToFloat64(r.m.met.acquired.WithLabelValues(n)); got != 1 {
			t.Errorf("acquired_total{%s} = %v, want 1", n, got)
		}
	}

	if err := r.stop(); err != nil {
		t.Fatalf("Run returned %v, want nil after cancel", err)
	}
	if rel := c.releasesOf("a"); len(rel) != 5 {
		t.Fatalf("Release called %d times, want 5", len(rel))
	}
	for _, n := range nodes {
		if v := kvValue(t, kv, leaseKey(n)); v != "" {
			t.Errorf("lease %s still held by %q after shutdown", n, v)
		}
		if got := testutil.ToFloat64(r.m.met.released.WithLabelValues(n, reasonShutdown)); got != 1 {
			t.Errorf("released_total{%s,shutdown} = %v, want 1", n, got)
		}
	}
	if v := kvValue(t, kv, presenceKey("a")); v != "" {
		t.Errorf("presence still %q after shutdown", v)
	}
	if o := r.m.Owned(); len(o) != 0 {
		t.Errorf("Owned() after Run = %v", o)
	}
}

func TestThreeManagersSplitTwelveNodesEvenly(t *testing.T) {
	srv := testenv.StartNATS(t)
	nodes := nodeNames(12)
	c := newChecker(t)
	rs, _ := startReplicas(t, srv.ClientURL(), nodes, c, "a", "b", "c")
	c.waitFor(t, 30*time.Second, "4/4/4", split(12, map[string]int{"a": 4, "b": 4, "c": 4}))
	for _, r := range rs {
		if n := len(r.m.Owned()); n != 4 {
			t.Errorf("%s: Owned() has %d nodes, want 4", r.m.Owner(), n)
		}
	}
}

func TestGracefulShutdownHandsOverAtOnce(t *testing.T) {
	srv := testenv.StartNATS(t)
	nodes := nodeNames(12)
	c := newChecker(t)
	// TTL 20s and 8s rounds: a take-over driven by expiry (20s) or by the
	// survivors' first round (8s after they started) misses the 4s bound
	// below; only their watch seeing the deletes meets it. The even split
	// comes later, in rounds: a or b may not have seen the other yet.
	opts := []Option{WithTTL(20 * time.Second), WithRenewInterval(8 * time.Second)}
	_, jsC := connect(t, srv.ClientURL())
	rc := start(t, jsC, "c", nodes, c, opts...)
	c.waitFor(t, 10*time.Second, "c owns all 12", split(12, map[string]int{"c": 12}))
	for _, id := range []string{"a", "b"} {
		_, js := connect(t, srv.ClientURL())
		start(t, js, id, nodes, c, opts...)
	}

	if err := rc.stop(); err != nil {
		t.Fatal(err)
	}
	stopped := time.Now()
	c.waitFor(t, 4*time.Second, "c's nodes taken over", func(owners map[string]string) bool {
		return len(owners) == 12 && counts(owners)["c"] == 0
	})
	t.Logf("take-over completed %v after c's Run returned", time.Since(stopped))
	rel := c.releasesOf("c")
	if len(rel) != 12 {
		t.Fatalf("c released %d nodes, want 12", len(rel))
	}
	for _, r := range rel {
		if r.doneAtStart {
			t.Errorf("graceful Release of %s got a context already done", r.node)
		}
	}
}

func TestJoiningReplicaTakesNodesGradually(t *testing.T) {
	srv := testenv.StartNATS(t)
	nodes := nodeNames(12)
	c := newChecker(t)
	opts := tolerant(WithStep(2))

	_, jsA := connect(t, srv.ClientURL())
	a, err := New(jsA, "a", nodes, append([]Option{WithAcquire(c.acquire("a")), WithRelease(c.release("a"))}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		rounds = map[uint64][]string{}
	)
	a.hookRebalance = func(round uint64, given []string) {
		mu.Lock()
		defer mu.Unlock()
		rounds[round] = append(rounds[round], given...)
	}
	ra := runManager(t, a)
	c.waitFor(t, 10*time.Second, "a owns all 12", split(12, map[string]int{"a": 12}))

	_, jsB := connect(t, srv.ClientURL())
	start(t, jsB, "b", nodes, c, opts...)
	c.waitFor(t, 30*time.Second, "6/6", split(12, map[string]int{"a": 6, "b": 6}))
	if err := ra.stop(); err != nil { // no more rounds from here
		t.Fatal(err)
	}

	mu.Lock()
	defer mu.Unlock()
	given := 0
	for round, ns := range rounds {
		if len(ns) > 2 {
			t.Errorf("round %d gave up %d nodes %v, step is 2", round, len(ns), ns)
		}
		given += len(ns)
	}
	if given != 6 {
		t.Errorf("a gave up %d nodes to rebalance, want 6", given)
	}
	if len(rounds) < 3 {
		t.Errorf("a gave up its 6 excess nodes in %d rounds, want at least 3 at step 2", len(rounds))
	}
}

func TestCutConnectionReleasesBeforeExpiry(t *testing.T) {
	const ttl = 5 * time.Second // as in tolerant()
	for _, tc := range []struct {
		name      string
		partition bool // true: cut the TCP path and restore it; false: close the nats.Conn
	}{
		{"closed connection", false},
		{"network partition", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testenv.StartNATS(t)
			nodes := nodeNames(12)
			c := newChecker(t)

			url := srv.ClientURL()
			var p *proxy
			if tc.partition {
				p = newProxy(t, srv.Server().Addr().String())
				url = p.url()
			}
			ncA, jsA := connect(t, url)
			a := start(t, jsA, "a", nodes, c, tolerant()...)
			_, jsB := connect(t, srv.ClientURL())
			b := start(t, jsB, "b", nodes, c, tolerant()...)
			c.waitFor(t, 30*time.Second, "6/6", split(12, map[string]int{"a": 6, "b": 6}))
			aNodes := a.m.Owned()
			before := len(c.releasesOf("a")) // rebalancing while settling
			lostBefore, atRiskBefore := map[string]float64{}, map[string]float64{}
			for _, n := range aNodes {
				lostBefore[n] = testutil.ToFloat64(a.m.met.lost.WithLabelValues(n))
				atRiskBefore[n] = testutil.ToFloat64(a.m.met.released.WithLabelValues(n, reasonAtRisk))
			}

			cut := time.Now()
			if tc.partition {
				p.setCut(true)
			} else {
				ncA.Close()
			}
			c.waitFor(t, 4*ttl, "b owns all 12", split(12, map[string]int{"b": 12}))

			rel := c.releasesOf("a")[before:]
			if len(rel) != 6 {
				t.Fatalf("a released %d nodes after the cut, want 6", len(rel))
			}
			for _, r := range rel {
				// The last renewal was sent before the cut, so the lease
				// cannot expire before cut+ttl: the session must end first.
				if !r.end.Before(cut.Add(ttl)) {
					t.Errorf("a released %s %v after the cut, not before the ttl %v", r.node, r.end.Sub(cut), ttl)
				}
				if !r.hasDeadline || !r.deadline.Before(cut.Add(ttl)) {
					t.Errorf("Release(%s) deadline %v after cut, want one before the ttl", r.node, r.deadline.Sub(cut))
				}
			}
			if got := testutil.ToFloat64(b.m.met.owned); got != 12 {
				t.Errorf("b nodes_owned = %v, want 12", got)
			}

			if tc.partition {
				// Back on the network: a rejoins and gets its share back
				// from b, with no overlap (checked on every Acquire).
				p.setCut(false)
				c.waitFor(t, 30*time.Second, "6/6 after a rejoined", split(12, map[string]int{"a": 6, "b": 6}))
			}
			// a's metrics, once Run returned and every release is booked.
			if err := a.stop(); err != nil {
				t.Fatal(err)
			}
			for _, n := range aNodes {
				if got := testutil.ToFloat64(a.m.met.lost.WithLabelValues(n)) - lostBefore[n]; got != 1 {
					t.Errorf("lease_lost_total{%s} rose by %v, want 1", n, got)
				}
				if got := testutil.ToFloat64(a.m.met.released.WithLabelValues(n, reasonAtRisk)) - atRiskBefore[n]; got != 1 {
					t.Errorf("released_total{%s,at_risk} rose by %v, want 1", n, got)
				}
				if got := testutil.ToFloat64(a.m.met.releaseLate.WithLabelValues(n)); got != 0 {
					t.Errorf("release_late_total{%s} = %v", n, got)
				}
			}
		})
	}
}

func TestLeaseChangedByAnotherWriterIsReleasedAtOnce(t *testing.T) {
	js := startJS(t)
	c := newChecker(t)
	// Rounds every 6.7s: the 4s bounds below need the watch.
	r := start(t, js, "a", []string{"pbx1", "pbx2", "pbx3"}, c, WithTTL(20*time.Second))
	c.waitFor(t, 10*time.Second, "a owns 3", split(3, map[string]int{"a": 3}))
	kv := testKV(t, js)

	ctx := context.Background()
	if _, err := kv.PutString(ctx, leaseKey("pbx2"), "intruder"); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, 4*time.Second, "pbx2 released", func(owners map[string]string) bool { return owners["pbx2"] == "" })
	rel := c.releasesOf("a")
	if len(rel) != 1 || rel[0].node != "pbx2" || !rel[0].doneAtStart {
		t.Fatalf("releases = %+v, want one of pbx2 with its context already done", rel)
	}
	if got := testutil.ToFloat64(r.m.met.lost.WithLabelValues("pbx2")); got != 1 {
		t.Errorf("lease_lost_total{pbx2} = %v, want 1", got)
	}

	// Once the intruder is gone, a takes the node back: it is under its share.
	if err := kv.Delete(ctx, leaseKey("pbx2")); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, 4*time.Second, "pbx2 re-acquired", func(owners map[string]string) bool { return owners["pbx2"] == "a" })

	// An intruder on a node that a then gives up at shutdown: a must not
	// delete a lease that is not its own.
	if _, err := kv.PutString(ctx, leaseKey("pbx3"), "intruder"); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, 4*time.Second, "pbx3 released", func(owners map[string]string) bool { return owners["pbx3"] == "" })
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if v := kvValue(t, kv, leaseKey("pbx3")); v != "intruder" {
		t.Errorf("lease pbx3 = %q after a's shutdown, want the intruder's", v)
	}
	if v := kvValue(t, kv, leaseKey("pbx1")); v != "" {
		t.Errorf("lease pbx1 = %q after a's shutdown, want deleted", v)
	}
}

func TestRunRefusesUnsafeBucket(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  jetstream.KeyValueConfig
	}{
		{"other ttl", jetstream.KeyValueConfig{Bucket: DefaultBucket, TTL: 5 * time.Second, LimitMarkerTTL: time.Second}},
		{"no expiry markers", jetstream.KeyValueConfig{Bucket: DefaultBucket, TTL: 2 * time.Second}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := testenv.StartNATS(t)
			_, js := connect(t, srv.ClientURL())
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if _, err := js.CreateKeyValue(ctx, tc.cfg); err != nil {
				t.Fatal(err)
			}
			c := newChecker(t)
			m, err := New(js, "a", []string{"pbx1"}, WithTTL(2*time.Second),
				WithAcquire(c.acquire("a")), WithRelease(c.release("a")))
			if err != nil {
				t.Fatal(err)
			}
			if err := m.Run(ctx); !errors.Is(err, ErrBucketConfig) {
				t.Fatalf("Run = %v, want ErrBucketConfig", err)
			}
			if n := c.acquires["a"]; n != 0 {
				t.Errorf("Acquire called %d times on an unsafe bucket", n)
			}
		})
	}
}

func TestRunTwice(t *testing.T) {
	js := startJS(t)
	c := newChecker(t)
	r := start(t, js, "a", []string{"pbx1"}, c, WithTTL(2*time.Second))
	c.waitFor(t, 10*time.Second, "a owns pbx1", split(1, map[string]int{"a": 1}))
	if err := r.m.Run(context.Background()); !errors.Is(err, lifecycle.ErrStarted) {
		t.Fatalf("second Run = %v, want lifecycle.ErrStarted", err)
	}
}
