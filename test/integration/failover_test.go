package integration

import (
	"testing"
	"time"
)

// TestIngestKilled is scenario 2: one ingest container is killed
// (SIGKILL). The survivors take over each of its nodes within TTL + 5 s,
// and amisim never sees two ingest sessions of one node logged in at once.
func TestIngestKilled(t *testing.T) {
	c, ctx := StartLive(t, Spec{TTL: 3 * time.Second})

	victim := c.Ingest[1]
	before := c.OpenSessions()
	orphans, owners := c.nodesOf(victim, 4)
	survivors := []*Box{c.Ingest[0], c.Ingest[2]}

	killed := time.Now()
	if err := victim.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	// Each orphan gets a new session from a survivor.
	taken := c.waitTakeOver(ctx, victim, orphans, before, killed, survivors)
	t.Logf("take-over after the kill: %v", taken)
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
