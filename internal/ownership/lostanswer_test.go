package ownership

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestCreateWithLostAnswerIsAdopted: an entry write the server stored but whose
// answer timed out shows up on the watch with this replica's value; the
// replica takes the node on it, rather than deleting its own lease (or,
// with the delete failing too, leaving the node without a session for a
// TTL).
func TestCreateWithLostAnswerIsAdopted(t *testing.T) {
	js := startJS(t)
	ljs := &lossyJS{JetStream: js, key: leaseKey("pbx2")}
	c := newChecker(t)
	nodes := []string{"pbx1", "pbx2", "pbx3"}
	r := start(t, ljs, "a", nodes, c, WithTTL(30*time.Second))
	// Well within the TTL: the watch shows the stored Create at once.
	c.waitFor(t, 10*time.Second, "a owns all 3 nodes", split(3, map[string]int{"a": 3}))

	ljs.mu.Lock()
	lost, deletes := ljs.lost, ljs.deletes
	ljs.mu.Unlock()
	if !lost {
		t.Fatal("the Create of pbx2 was never made")
	}
	if deletes != 0 {
		t.Fatalf("the replica deleted its own stored lease %d times instead of taking the node", deletes)
	}
	if got := kvValue(t, testKV(t, js), leaseKey("pbx2")); !strings.HasPrefix(got, "a/") {
		t.Fatalf("lease of pbx2 holds %q, want a", got)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}

// TestFreedNodeTakenDespiteStaleCreate: a lease deleted by its owner is
// taken at once by its revision on the watch, even when Create would claim
// the key still exists (a follower's stale read); otherwise the node would
// wait for the delete marker to expire, a whole TTL.
func TestFreedNodeTakenDespiteStaleCreate(t *testing.T) {
	js := startJS(t)
	ljs := &lossyJS{JetStream: js, staleCreate: true}
	c := newChecker(t)
	m, err := New(ljs, "a", []string{"pbx1"},
		WithTTL(time.Minute),
		WithAcquire(c.acquire("a")), WithRelease(c.release("a")))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, m.bucketConfig())
	if err != nil {
		t.Fatal(err)
	}
	// A previous owner held pbx1 and handed it over.
	if _, err := kv.Put(ctx, leaseKey("pbx1"), []byte("z")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, leaseKey("pbx1")); err != nil {
		t.Fatal(err)
	}
	runManager(t, m)
	c.waitFor(t, 10*time.Second, "a owns pbx1 long before the marker expires", split(1, map[string]int{"a": 1}))
}
