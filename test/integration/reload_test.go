package integration

import (
	"context"
	"testing"
)

// TestReloadNodes is the HA reload scenario (issue 18): the three ingest
// replicas reload a new node list one after the other (SIGHUP after the
// file changed, as a ConfigMap update reaches each pod at its own moment),
// two nodes removed and two added, while calls flow. Between their reloads
// the replicas disagree about the list; one owner per node must hold
// throughout: amisim never sees two ingest sessions of one node logged in
// at once and the per-node history checker finds no interleaved sessions
// (Verify). The removed nodes end with session_end reason removed and no
// replica holds them afterwards; the added ones are shared out; no session
// ends without session_end.
func TestReloadNodes(t *testing.T) {
	// Eight simulated PBXs, six in the first file; no actors: only the
	// ingest's leases are under test.
	c := StartCluster(t, Spec{Nodes: 8, Listed: 6, Actors: -1})
	ctx := context.Background()
	c.WaitEvents(ctx, 30)

	kept := []string{"pbx3", "pbx4", "pbx5", "pbx6"}
	removed := []string{"pbx1", "pbx2"}
	added := []string{"pbx7", "pbx8"}
	c.SetNodes(append(append([]string(nil), kept...), added...))
	for _, b := range c.Ingest {
		if err := b.Reload(ctx); err != nil {
			t.Fatal(err)
		}
		// A few lease rounds (renewals every TTL/3) with the replicas
		// disagreeing, measured in the events of the nodes every list has
		// (about 40 per second per node).
		c.WaitNodeEvents(ctx, 100, kept)
	}
	c.WaitSettled(ctx, c.Ingest...)
	c.WaitEvents(ctx, 20)

	c.Quiesce(ctx)
	h := c.Verify(ctx)
	for _, n := range removed {
		nh := h.Nodes[n]
		if s := nh.Current(); s == nil || s.End == nil || s.End.Reason != "removed" {
			t.Errorf("%s: last session does not end with session_end reason removed: %s", n, describe(nh))
		}
	}
	for _, n := range added {
		if s := h.Nodes[n].Current(); s == nil || !s.Open() {
			t.Errorf("%s: no open session after the reloads: %s", n, describe(h.Nodes[n]))
		}
	}
	moved := 0
	for _, n := range c.ever {
		nh := h.Nodes[n]
		if _, _, _, abrupt := nh.Totals(); abrupt > 0 {
			t.Errorf("%s: %d sessions ended without session_end, though every change was a reload: %s", n, abrupt, describe(nh))
		}
		if len(nh.Sessions) > 1 {
			moved++
		}
	}
	t.Logf("%d of %d nodes changed session during the reloads", moved, len(c.ever))
}
