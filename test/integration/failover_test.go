package integration

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"
)

// TestIngestKilled is scenario 2: one ingest container is killed
// (SIGKILL). The survivors take over each of its nodes within TTL + 5 s,
// and amisim never sees two ingest sessions of one node logged in at once.
func TestIngestKilled(t *testing.T) {
	c := StartCluster(t, Spec{TTL: 3 * time.Second})
	ctx := context.Background()
	c.WaitEvents(ctx, 100)

	victim := c.Ingest[1]
	before := c.OpenSessions()
	owners := c.Owners()
	var orphans []string
	for _, n := range c.Nodes {
		if owners[n] == victim.Instance() {
			orphans = append(orphans, n)
		}
	}
	sort.Strings(orphans)
	if len(orphans) != 4 {
		t.Fatalf("%s owns %v before the kill, want 4 nodes", victim.Name, orphans)
	}

	killed := time.Now()
	if err := victim.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	// Each orphan gets a new session from a survivor. The time is when
	// the test read its session_start: an upper bound of the hand-over.
	deadline := c.Spec.TTL + 5*time.Second
	wctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	taken := map[string]time.Duration{}
	err := c.Tail.Wait(wctx, func(v View) bool {
		for _, n := range orphans {
			if _, done := taken[n]; done {
				continue
			}
			if r, ok := v.Open(n); ok && r.Session != before[n] {
				taken[n] = r.Received.Sub(killed)
			}
		}
		return len(taken) == len(orphans)
	})
	if err != nil {
		var left []string
		for _, n := range orphans {
			if _, ok := taken[n]; !ok {
				left = append(left, n)
			}
		}
		c.failUnowned(fmt.Sprintf("nodes of %s not taken over within TTL + 5 s (%v): taken %v", victim.Name, deadline, taken),
			left, []*Box{c.Ingest[0], c.Ingest[2]})
	}
	t.Logf("take-over after the kill: %v", taken)
	survivors := []*Box{c.Ingest[0], c.Ingest[2]}
	live := instances(survivors)
	for n, o := range c.Owners() {
		if !live[o] {
			t.Errorf("%s owned by %q after the take-over, want a survivor", n, o)
		}
	}
	// Nodes of the survivors were not disturbed by the take-over.
	after := c.OpenSessions()
	for _, n := range c.Nodes {
		if owners[n] != victim.Instance() && after[n] != before[n] {
			t.Errorf("%s changed session (%s -> %s) though its owner lived", n, before[n], after[n])
		}
	}
	c.WaitSettled(ctx, survivors...)
	c.WaitEvents(ctx, 50)

	c.Quiesce(ctx)
	h := c.Verify(ctx)
	// Exactly the victim's sessions ended without session_end.
	for _, n := range c.Nodes {
		nh := h.Nodes[n]
		_, _, _, abrupt := nh.Totals()
		want := 0
		if owners[n] == victim.Instance() {
			want = 1
		}
		if abrupt != want {
			t.Errorf("%s: %d sessions ended without session_end, want %d: %s", n, abrupt, want, describe(nh))
		}
	}
}
