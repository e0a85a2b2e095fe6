package ownership

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/testenv"
)

// rounds counts renewal rounds by this replica's liveness writes, one per
// round.
type rounds struct{ testenv.Log[string] }

func newRounds() *rounds { return new(rounds) }

func (r *rounds) put(key string) {
	if key == presenceKey("a") {
		r.Add(key)
	}
}

// waitMore waits until n more rounds have ended than at the call.
func (r *rounds) waitMore(t *testing.T, n int) {
	t.Helper()
	want := len(r.All()) + n
	r.WaitFor(t, fmt.Sprintf("%d more renewal rounds", n), func(puts []string) bool { return len(puts) >= want })
}

// TestAtRiskNodeNotRewritten: a replica whose liveness renewals failed
// until its release-by time gives its node up; once the store answers
// again (the liveness renewed, still the same incarnation) the node's
// entry is not rewritten while its Release runs, whatever rounds pass:
// the node is being released, not kept.
func TestAtRiskNodeNotRewritten(t *testing.T) {
	js := startJS(t)
	var (
		failing atomic.Bool
		writes  atomic.Int32 // writes of pbx1's entry made after it was at risk
		atRisk  atomic.Bool
	)
	rs := newRounds()
	ljs := &lossyJS{JetStream: js, onPut: rs.put,
		beforeUpdate: func(_ context.Context, _ jetstream.KeyValue, k string) error {
			if k == presenceKey("a") && failing.Load() {
				return context.DeadlineExceeded
			}
			return nil
		},
		onEntry: func(k string) {
			if k == leaseKey("pbx1") && atRisk.Load() {
				writes.Add(1)
			}
		}}
	c := newChecker(t)
	releasing := make(chan struct{})
	finish := make(chan struct{})
	c.duringRelease = func(ctx context.Context, _, node string) {
		if node != "pbx1" {
			return
		}
		atRisk.Store(true)
		failing.Store(false) // the store answers again while Release runs
		close(releasing)
		<-finish
	}
	r := start(t, ljs, "a", []string{"pbx1"}, c, WithTTL(3*time.Second), WithRenewInterval(200*time.Millisecond))
	c.waitFor(t, 10*time.Second, "a owns pbx1", split(1, map[string]int{"a": 1}))
	failing.Store(true)
	select {
	case <-releasing:
	case <-time.After(testenv.WaitLimit):
		t.Fatal("pbx1 never given up while the liveness renewals failed")
	}
	if rel := c.releasesOf("a"); len(rel) != 0 {
		t.Fatalf("releases before the one running: %+v", rel)
	}
	rs.waitMore(t, 3) // rounds with the store answering, Release still running
	n := writes.Load()
	close(finish)
	if n != 0 {
		t.Fatalf("the entry of the node at risk was written %d times while the node was being released", n)
	}
	// cond runs under the checker's lock: the releases are its to read.
	c.waitFor(t, 10*time.Second, "pbx1's release returned", func(map[string]string) bool { return len(c.releases) > 0 })
	if got := c.releasesOf("a"); len(got) != 1 || !got[0].hasDeadline {
		t.Fatalf("releases %+v, want one with a deadline", got)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}

// TestLivenessOverwrittenEndsIncarnation: a renewal that finds the
// liveness key rewritten by another writer (here: another incarnation)
// ends this incarnation: every node is given up at once, and the replica
// comes back under a new incarnation, taking its old entries back only by
// compare-and-set.
func TestLivenessOverwrittenEndsIncarnation(t *testing.T) {
	js := startJS(t)
	key := presenceKey("a")
	var armed atomic.Bool // the next renewal of key finds it overwritten
	rs := newRounds()
	ljs := &lossyJS{JetStream: js, onPut: rs.put,
		beforeUpdate: func(ctx context.Context, kv jetstream.KeyValue, k string) error {
			if k == key && armed.CompareAndSwap(true, false) {
				if _, err := kv.PutString(ctx, key, "intruder"); err != nil {
					return errors.Join(errors.New("intruder put"), err)
				}
			}
			return nil
		}}
	c := newChecker(t)
	nodes := []string{"pbx1", "pbx2"}
	r := start(t, ljs, "a", nodes, c, WithTTL(20*time.Second), WithRenewInterval(200*time.Millisecond))
	c.waitFor(t, 10*time.Second, "a owns both", split(2, map[string]int{"a": 2}))
	kv := testKV(t, js)
	old := kvValue(t, kv, leaseKey("pbx1"))
	armed.Store(true)
	c.waitFor(t, 10*time.Second, "both released", func(owners map[string]string) bool { return len(owners) == 0 })
	for _, rel := range c.releasesOf("a") {
		if !rel.doneAtStart {
			t.Errorf("release of %s: context not done at start (the node was lost)", rel.node)
		}
	}
	c.waitFor(t, 10*time.Second, "both re-acquired", split(2, map[string]int{"a": 2}))
	inc := kvValue(t, kv, key)
	if inc == "" || inc == "intruder" || "a/"+inc == old {
		t.Fatalf("liveness %q after the overwrite, old entry value %q: want a new incarnation", inc, old)
	}
	for _, n := range nodes {
		if v := kvValue(t, kv, leaseKey(n)); v != "a/"+inc {
			t.Errorf("entry %s = %q, want a/%s", n, v, inc)
		}
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(old, "a/") {
		t.Errorf("old entry %q", old)
	}
}
