package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// TestIngestPartitioned is scenario 3: one ingest replica is cut off the
// NATS network but still reaches the PBXs. It closes its AMI sessions
// before its leases can expire, the others take its nodes over, and once
// the network is back it rejoins and takes its share again, with nothing
// stored twice and no history interleaved.
func TestIngestPartitioned(t *testing.T) {
	c, ctx := StartLive(t, Spec{TTL: 3 * time.Second})

	victim := c.Ingest[0]
	survivors := c.Ingest[1:]
	before := c.OpenSessions()
	orphans, _ := c.nodesOf(victim, 4)

	cut := time.Now()
	if err := victim.Disconnect(ctx); err != nil {
		t.Fatal(err)
	}
	taken := c.waitTakeOver(ctx, victim, orphans, before, cut, survivors)
	t.Logf("take-over after the cut: %v", taken)

	// The victim closed its AMI sessions before its leases could expire:
	// amisim never had two ingest sessions of a node at once.
	var seen []string
	nodes, err := c.Ctl.Nodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes {
		if n.MaxActive[ingestUser] > 1 {
			seen = append(seen, fmt.Sprintf("%s had %d ingest sessions at once", n.Node, n.MaxActive[ingestUser]))
		}
	}
	if len(seen) > 0 {
		t.Fatalf("the cut-off replica's sessions outlived its leases: %s", strings.Join(seen, "; "))
	}
	c.WaitSettled(ctx, survivors...)

	// It gave every node up as at risk, and each Release returned by its
	// deadline: its Manager counts a node owned until Release returned,
	// and processes that within one KV call (renew interval / 2) after.
	var m Metrics
	octx, ocancel := context.WithDeadline(ctx, cut.Add(c.Spec.TTL+2*time.Second))
	defer ocancel()
	if err := pollUntil(octx, victim.Name+" owns no node", func() error {
		var err error
		if m, err = victim.Metrics(ctx); err != nil {
			return err
		}
		if got := m.Sum("ami_ownership_nodes_owned"); got != 0 {
			return fmt.Errorf("owns %v", got)
		}
		return nil
	}); err != nil {
		seen = append(seen, fmt.Sprintf("%s still owns nodes (Release not returned) %v after the cut: %v", victim.Name,
			time.Since(cut).Round(time.Millisecond), err))
	}
	if m == nil {
		t.Fatal("no metrics from the victim")
	}
	if got := m.Sum("ami_ownership_release_late_total"); got != 0 {
		seen = append(seen, fmt.Sprintf("%s: %v releases returned after the lease could have expired", victim.Name, got))
	}
	if len(seen) > 0 {
		t.Fatalf("the cut-off replica did not give its nodes up by its lease deadline: %s", strings.Join(seen, "; "))
	}
	if got := m.Sum("ami_ownership_released_total", "reason", "at_risk"); got != float64(len(orphans)) {
		t.Errorf("%s released %v nodes at risk, want %d", victim.Name, got, len(orphans))
	}

	healed := time.Now()
	if err := victim.Reconnect(ctx); err != nil {
		t.Fatal(err)
	}
	c.WaitSettled(ctx, c.Ingest...)
	t.Logf("rejoined and rebalanced %v after the network came back", time.Since(healed).Round(time.Millisecond))
	byOwner := map[string]int{}
	for _, o := range c.Owners() {
		byOwner[o]++
	}
	if byOwner[victim.Instance()] != 4 {
		t.Errorf("%s owns %d nodes after it came back, want 4: %v", victim.Name, byOwner[victim.Instance()], byOwner)
	}
	c.WaitEvents(ctx, 50)

	c.Quiesce(ctx)
	var interleaved []string
	for _, v := range CheckStream(subjectPrefix, c.Nodes, c.Tail.Records()).Violations() {
		if strings.Contains(v, "interleaved") {
			interleaved = append(interleaved, v)
		}
	}
	if len(interleaved) > 0 {
		t.Fatalf("publishes of the cut-off replica stored after the new owner's session started: %d messages, the first: %s",
			len(interleaved), interleaved[0])
	}
	h := c.Verify(ctx)
	for _, n := range orphans {
		s := h.Nodes[n].Session(before[n])
		if s == nil || s.Owner != victim.Instance() {
			t.Errorf("%s: the victim's session %s is missing: %s", n, before[n], describe(h.Nodes[n]))
		}
	}
}
