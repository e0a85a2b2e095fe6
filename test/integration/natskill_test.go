package integration

import (
	"context"
	"testing"
	"time"
)

// TestNATSServerKilled is scenario 4: the NATS server that leads the R3
// stream is killed (SIGKILL). Publishing goes on through the other two, and
// nothing is lost beyond what gap markers account for: every open session
// covers exactly the events amisim wrote to it.
//
// The lease TTL is 20 s here. A killed leader's streams (the events and the
// lease bucket) elect a new leader only after nats-server's election
// timeout, 4 to 9 s of silence; a replica that cannot renew for TTL/2
// gives its nodes up, so with a shorter TTL the kill would also move nodes,
// which is scenario 2's subject, not this one's.
func TestNATSServerKilled(t *testing.T) {
	c, ctx := StartLive(t, Spec{TTL: 20 * time.Second})

	info, err := c.JS.Stream(ctx, streamName)
	if err != nil {
		t.Fatal(err)
	}
	leader := info.CachedInfo().Cluster.Leader
	var victim *Box
	for _, b := range c.NATS {
		if b.Name == leader {
			victim = b
		}
	}
	if victim == nil {
		t.Fatalf("stream leader %q is none of the servers", leader)
	}
	before := c.OpenSessions()
	killed := time.Now()
	if err := victim.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed %s, the leader of %s", victim.Name, streamName)

	// Every node's events keep landing in the stream.
	c.WaitEvents(ctx, 200)
	t.Logf("200 more messages per node %v after the kill", time.Since(killed).Round(time.Millisecond))
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pollUntil(sctx, "a new stream leader", func() error {
		s, err := c.JS.Stream(sctx, streamName)
		if err != nil {
			return err
		}
		if l := s.CachedInfo().Cluster.Leader; l == "" || l == victim.Name {
			return errNoLeader
		}
		return nil
	}); err != nil {
		t.Error(err)
	}

	c.Quiesce(ctx)
	h := c.Verify(ctx)
	// Sessions may move: a replica that could not renew its leases for
	// TTL/2 while the lease bucket elected a leader gives its nodes up,
	// gracefully. Every session that ended must have said so, and the
	// nodes owned by the same replicas before and after are noted.
	after := c.OpenSessions()
	moved := 0
	for _, n := range c.Nodes {
		_, gapEvents, gaps, abrupt := h.Nodes[n].Totals()
		if abrupt != 0 {
			t.Errorf("%s: a session ended without session_end: %s", n, describe(h.Nodes[n]))
		}
		if after[n] != before[n] {
			moved++
		}
		if gaps > 0 {
			t.Logf("%s: %d gap markers for %d events", n, gaps, gapEvents)
		}
	}
	if moved > 0 {
		t.Logf("%d of %d nodes changed session during the NATS leader elections (lease renewals failed for TTL/2)", moved, len(c.Nodes))
	}
}
