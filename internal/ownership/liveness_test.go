package ownership

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/amibus/amibus/internal/testenv"
)

// writeCounter counts the writes stored in the lease bucket, by key (a
// watch of the bucket's updates). Not a subscription on the bucket's
// subjects: that also sees compare-and-set attempts the server refuses,
// such as a replica's attempt on a node another replica had just taken
// while neither knew the other yet, which change nothing.
type writeCounter struct {
	mu     sync.Mutex
	counts map[string]int
}

func countWrites(t *testing.T, url string) *writeCounter {
	t.Helper()
	_, js := connect(t, url)
	kv, err := js.KeyValue(t.Context(), DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	watcher, err := kv.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	w := &writeCounter{counts: map[string]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for e := range watcher.Updates() {
			if e == nil {
				continue
			}
			w.mu.Lock()
			w.counts[e.Key()]++
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		_ = watcher.Stop()
		cancel()
		<-done
	})
	return w
}

// take returns the counts so far and starts afresh.
func (w *writeCounter) take() map[string]int {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.counts
	w.counts = map[string]int{}
	return out
}

// TestOneWritePerRoundWhateverTheNodeCount: once the nodes are placed, a
// replica writes its liveness key once per renew round and nothing else,
// with 4 nodes as with 400: node entries are written only when ownership
// changes.
func TestOneWritePerRoundWhateverTheNodeCount(t *testing.T) {
	const renew = 200 * time.Millisecond
	for _, n := range []int{4, 400} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			srv := testenv.StartNATS(t)
			nodes := make([]string, n)
			for i := range nodes {
				nodes[i] = fmt.Sprintf("pbx%03d", i)
			}
			c := newChecker(t)
			for _, id := range []string{"a", "b"} {
				_, js := connect(t, srv.ClientURL())
				start(t, js, id, nodes, c, WithTTL(5*time.Second), WithSafetyMargin(4*time.Second), WithRenewInterval(renew))
			}
			c.waitFor(t, 60*time.Second, "an even split", split(n, map[string]int{"a": n / 2, "b": n / 2}))
			w := countWrites(t, srv.ClientURL())
			const window = 3 * time.Second
			time.Sleep(window) // the measured interval itself, not a synchronisation
			got := w.take()
			rounds := int(window / renew)
			for key, k := range got {
				if strings.HasPrefix(key, leasePrefix) {
					t.Errorf("node entry %s written %d times while ownership did not change", key, k)
				}
			}
			for _, id := range []string{"a", "b"} {
				// At most one write per round (the ticker cannot fire more
				// often); at least a few, or nothing was measured.
				if k := got[presenceKey(id)]; k < 3 || k > rounds+1 {
					t.Errorf("%s wrote its liveness key %d times in %v, want one per %v round (%d)", id, k, window, renew, rounds)
				}
			}
			t.Logf("%d nodes: writes in %v: %v", n, window, got)
		})
	}
}

// TestKilledReplicaNodesTakenOver: a replica cut off without a hand-over
// releases its nodes before its liveness key can expire; its entries stay
// (they have no TTL) until the survivors, having seen the expiry, replace
// them by compare-and-set, and share its nodes. The checker fails the test
// on any overlap.
func TestKilledReplicaNodesTakenOver(t *testing.T) {
	const ttl = 5 * time.Second // as in tolerant()
	srv := testenv.StartNATS(t)
	nodes := nodeNames(12)
	c := newChecker(t)
	rs, ncs := startReplicas(t, srv.ClientURL(), nodes, c, "a", "b", "c")
	ncC := ncs[2]
	c.waitFor(t, 30*time.Second, "4/4/4", split(12, map[string]int{"a": 4, "b": 4, "c": 4}))
	_, js := connect(t, srv.ClientURL())
	kv := testKV(t, js)
	cNodes := rs[2].m.Owned()
	entries := map[string]string{}
	for _, n := range cNodes {
		entries[n] = kvValue(t, kv, leaseKey(n))
	}
	before := len(c.releasesOf("c"))

	cut := time.Now()
	ncC.Close()
	c.waitFor(t, 4*ttl, "c released its nodes", func(owners map[string]string) bool { return counts(owners)["c"] == 0 })
	// Released by c, not yet taken: the entries are still c's (no TTL on
	// them), unless a survivor already took the node over.
	for _, n := range cNodes {
		if v := kvValue(t, kv, leaseKey(n)); v != entries[n] && !strings.HasPrefix(v, "a/") && !strings.HasPrefix(v, "b/") {
			t.Errorf("entry %s = %q after c released it, want c's %q or a survivor's", n, v, entries[n])
		}
	}
	c.waitFor(t, 4*ttl, "a and b own all 12", func(owners map[string]string) bool {
		k := counts(owners)
		return len(owners) == 12 && k["c"] == 0
	})
	t.Logf("take-over of c's %d nodes %v after the cut", len(cNodes), time.Since(cut))
	for _, r := range c.releasesOf("c")[before:] {
		if !r.end.Before(cut.Add(ttl)) {
			t.Errorf("c released %s %v after the cut, not before its liveness could expire (%v)", r.node, r.end.Sub(cut), ttl)
		}
	}
	for _, n := range cNodes {
		if v := kvValue(t, kv, leaseKey(n)); !strings.HasPrefix(v, "a/") && !strings.HasPrefix(v, "b/") {
			t.Errorf("entry %s = %q after the take-over", n, v)
		}
	}
	c.waitFor(t, 30*time.Second, "6/6", split(12, map[string]int{"a": 6, "b": 6}))
}

// TestReturningReplicaRetakesByCAS: a lone replica cut off long enough for
// its liveness key to expire gives its nodes up; nobody takes them, so its
// entries stay. Back on the network it never resumes them: it announces a
// new incarnation and takes each node again by compare-and-set on the old
// entry (Acquire called again, the entry rewritten with the new value).
func TestReturningReplicaRetakesByCAS(t *testing.T) {
	srv := testenv.StartNATS(t)
	p := newProxy(t, srv.Server().Addr().String())
	nodes := nodeNames(4)
	c := newChecker(t)
	_, jsA := connect(t, p.url())
	a := start(t, jsA, "a", nodes, c, tolerant()...)
	c.waitFor(t, 30*time.Second, "a owns 4", split(4, map[string]int{"a": 4}))

	_, js := connect(t, srv.ClientURL())
	kv := testKV(t, js)
	oldInc := kvValue(t, kv, presenceKey("a"))
	revs := map[string]uint64{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, n := range nodes {
		e, err := kv.Get(ctx, leaseKey(n))
		if err != nil || string(e.Value()) != "a/"+oldInc {
			t.Fatalf("entry %s: %v, %v; want a/%s", n, e, err, oldInc)
		}
		revs[n] = e.Revision()
	}
	w, err := kv.Watch(ctx, presenceKey("a"), jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()

	p.setCut(true)
	c.waitFor(t, 30*time.Second, "a released all", func(owners map[string]string) bool { return len(owners) == 0 })
	for e := range w.Updates() {
		if e != nil && e.Operation() != jetstream.KeyValuePut {
			break // the liveness key expired
		}
	}
	for _, n := range nodes {
		if v := kvValue(t, kv, leaseKey(n)); v != "a/"+oldInc {
			t.Fatalf("entry %s = %q while a was away, want its old a/%s", n, v, oldInc)
		}
	}
	p.setCut(false)
	c.waitFor(t, 30*time.Second, "a owns 4 again", split(4, map[string]int{"a": 4}))
	inc := kvValue(t, kv, presenceKey("a"))
	if inc == oldInc || inc == "" {
		t.Fatalf("liveness %q after the return, old incarnation %q: want a new one", inc, oldInc)
	}
	for _, n := range nodes {
		e, err := kv.Get(ctx, leaseKey(n))
		if err != nil || string(e.Value()) != "a/"+inc || e.Revision() <= revs[n] {
			t.Errorf("entry %s: %v, %v; want a/%s rewritten after revision %d", n, e, err, inc, revs[n])
		}
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if got := testutil.ToFloat64(a.m.met.acquired.WithLabelValues(n)); got != 2 {
			t.Errorf("acquired_total{%s} = %v, want 2", n, got)
		}
		if got := testutil.ToFloat64(a.m.met.released.WithLabelValues(n, reasonAtRisk)); got != 1 {
			t.Errorf("released_total{%s,at_risk} = %v, want 1", n, got)
		}
	}
}
