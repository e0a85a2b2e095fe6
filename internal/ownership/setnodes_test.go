package ownership

import (
	"github.com/amibus/amibus/internal/testenv"
	"maps"
	"slices"
	"testing"
	"time"
)

// TestSetNodesReloadOneReplicaAfterAnother: three replicas own nine nodes;
// a new list drops three and adds three, and reaches the replicas one after
// the other (a ConfigMap seen at different moments). No node ever has two
// owners (the checker fails the test at once); the removed nodes end
// released, with their leases deleted; the added ones are placed and the
// new list ends split evenly.
func TestSetNodesReloadOneReplicaAfterAnother(t *testing.T) {
	srv := testenv.StartNATS(t)
	before := nodeNames(9)     // pbx01..pbx09
	after := nodeNames(12)[3:] // pbx04..pbx12
	c := newChecker(t)
	rs, _ := startReplicas(t, srv.ClientURL(), before, c, "a", "b", "c")
	c.waitFor(t, 30*time.Second, "3/3/3", split(9, map[string]int{"a": 3, "b": 3, "c": 3}))

	for i, r := range rs {
		if err := r.m.SetNodes(after); err != nil {
			t.Fatal(err)
		}
		// Each replica has applied its list before the next one gets it:
		// the removed nodes it owned are gone from it.
		c.waitFor(t, 30*time.Second, r.m.Owner()+" applied the new list", func(owners map[string]string) bool {
			for _, n := range before[:3] {
				if owners[n] == r.m.Owner() {
					return false
				}
			}
			return true
		})
		c.mu.Lock()
		owners := maps.Clone(c.owners)
		c.mu.Unlock()
		t.Logf("after replica %d: %v", i+1, owners)
	}
	c.waitFor(t, 60*time.Second, "the new list split 3/3/3", split(9, map[string]int{"a": 3, "b": 3, "c": 3}))
	c.mu.Lock()
	for n := range c.owners {
		if !slices.Contains(after, n) {
			t.Errorf("%s owned after the reload", n)
		}
	}
	c.mu.Unlock()
	_, js := connect(t, srv.ClientURL())
	kv := testKV(t, js)
	for _, n := range before[:3] {
		if v := kvValue(t, kv, leaseKey(n)); v != "" {
			t.Errorf("lease of removed %s still held by %q", n, v)
		}
	}
	if err := rs[0].m.SetNodes(nil); err == nil {
		t.Fatal("an empty list accepted")
	}
	if err := rs[0].m.SetNodes([]string{"x", "x"}); err == nil {
		t.Fatal("a repeated node accepted")
	}
}
