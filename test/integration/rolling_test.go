package integration

import (
	"fmt"
	"testing"
	"time"
)

// TestRollingRestart is scenario 5: every ingest replica is stopped with
// SIGTERM (as Kubernetes does), exits 0 after draining, and starts again,
// one at a time. Every node's history stays complete or marked: each
// session ends with a session_end that accounts for all its seqs before
// the next one starts, and a graceful hand-over costs about one reconnect,
// far less than the lease TTL.
func TestRollingRestart(t *testing.T) {
	c, ctx := StartLive(t, Spec{TTL: 10 * time.Second})

	// The grace period is the drain timeout (10 s) with a margin: a
	// replica killed at its end would not have exited 0.
	const grace = 20 * time.Second
	for i, b := range c.Ingest {
		others := append(append([]*Box(nil), c.Ingest[:i]...), c.Ingest[i+1:]...)
		start := time.Now()
		code, err := b.Stop(ctx, grace)
		if err != nil {
			t.Fatal(err)
		}
		if code != 0 {
			t.Errorf("%s exited %d on SIGTERM, want 0", b.Name, code)
		}
		stopped := time.Since(start)
		c.WaitSettled(ctx, others...)
		moved := time.Since(start)
		if err := b.Start(ctx); err != nil {
			t.Fatal(err)
		}
		c.WaitSettled(ctx, c.Ingest...)
		t.Logf("%s: stopped in %v, its nodes owned by the others %v after SIGTERM, back with its share %v after SIGTERM",
			b.Name, stopped.Round(time.Millisecond), moved.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
		c.WaitEvents(ctx, 20)
	}

	c.Quiesce(ctx)
	h := c.Verify(ctx)
	var handovers int
	var longest time.Duration
	var slowByBug []string
	for _, n := range c.Nodes {
		nh := h.Nodes[n]
		for k, s := range nh.Sessions {
			if k == len(nh.Sessions)-1 {
				if !s.Open() {
					t.Errorf("%s: last session %s is not open: %s", n, s.ID, describe(nh))
				}
				break
			}
			if s.End == nil {
				t.Errorf("%s: session %s ended without session_end though every stop was graceful: %s", n, s.ID, describe(nh))
				continue
			}
			// From the old owner's session_end to the new owner's
			// session_start, both stamped by the ingest.
			gap := nh.Sessions[k+1].Start.Time.Sub(s.End.Time)
			handovers++
			longest = max(longest, gap)
			if gap > c.Spec.TTL/2 {
				next := nh.Sessions[k+1]
				if c.wroteLeaseEarly(n, next.Owner, s.End.Time, next.Start.Time) {
					slowByBug = append(slowByBug, fmt.Sprintf("%s: %v (lease write sent by %s at once, session %v later)",
						n, gap.Round(time.Millisecond), next.Owner, gap.Round(time.Millisecond)))
					continue
				}
				t.Errorf("%s: hand-over from %s (session_end at %s) to %s took %v, want well under the TTL (%v); lease writes: %s; presence deletes: %s",
					n, s.ID, s.End.Time.Format("15:04:05.000"), nh.Sessions[k+1].ID, gap, c.Spec.TTL,
					c.leaseOps("node."+n, s.End.Time.Add(-time.Second), nh.Sessions[k+1].Start.Time.Add(time.Second)),
					c.presenceOps(s.End.Time.Add(-15*time.Second), nh.Sessions[k+1].Start.Time.Add(time.Second)))
			}
		}
	}
	t.Logf("%d graceful hand-overs, the longest %v from session_end to the next session_start", handovers, longest)
	if handovers < len(c.Nodes) {
		t.Errorf("%d hand-overs for %d nodes: the restarts moved too few nodes", handovers, len(c.Nodes))
	}
	if len(slowByBug) > 0 {
		t.Errorf("hand-overs that waited for the TTL although the new owner sent its lease write at once: %v", slowByBug)
	}
}
