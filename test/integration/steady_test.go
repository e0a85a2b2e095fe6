package integration

import (
	"context"
	"strings"
	"testing"
	"time"
)

// TestSteadyState is scenario 1: a three-server NATS cluster with an R3
// stream, 3 ingest and 2 actor replicas, 12 simulated PBXs with live calls.
// Every event arrives, each node is owned by exactly one replica (4 each),
// and actions are answered, each run once on the PBX.
func TestSteadyState(t *testing.T) {
	c := StartCluster(t, Spec{})
	ctx := context.Background()
	// The replicas that started first took more than their share and
	// handed nodes over as the others joined; from here on nothing moves.
	settled := c.OpenSessions()

	// Live traffic for a while: ~42 events/s per node.
	c.WaitEvents(ctx, 300)

	owners := c.Owners()
	perOwner := map[string][]string{}
	for n, o := range owners {
		perOwner[o] = append(perOwner[o], n)
	}
	for _, b := range c.Ingest {
		if got := len(perOwner[b.Instance()]); got != 4 {
			t.Errorf("%s (instance %s) owns %d nodes in the stream, want 4 of 12: %v", b.Name, b.Instance(), got, perOwner)
		}
	}
	if len(perOwner) != 3 {
		t.Errorf("owners in the stream: %v, want the 3 replicas", keys(perOwner))
	}
	// The replicas' own view agrees: 4 leases each, and each node's
	// session is up in exactly one replica.
	up := map[string]float64{}
	for _, b := range c.Ingest {
		m, err := b.Metrics(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got := m.Sum("ami_ownership_nodes_owned"); got != 4 {
			t.Errorf("%s: ami_ownership_nodes_owned = %v, want 4", b.Name, got)
		}
		for _, n := range c.Nodes {
			up[n] += m.Sum("ami_session_up", "node", n)
		}
	}
	for _, n := range c.Nodes {
		if up[n] != 1 {
			t.Errorf("%s: ami_session_up summed over the replicas = %v, want 1", n, up[n])
		}
	}

	// Actions through NATS and either actor replica, on every node.
	for _, n := range c.Nodes {
		r, err := c.Request(ctx, n, "Ping", 5000, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: Ping: %v", n, err)
		}
		if !r.OK || r.Response != "Success" || r.Node != n || r.ActionID == "" {
			t.Errorf("%s: Ping reply %+v", n, r)
		}
		r, err = c.Request(ctx, n, "CoreShowChannels", 5000, 10*time.Second)
		if err != nil {
			t.Fatalf("%s: CoreShowChannels: %v", n, err)
		}
		if !r.OK || len(r.Events) == 0 || r.Events[len(r.Events)-1].Fields["EventList"] != "Complete" {
			t.Errorf("%s: CoreShowChannels reply: ok=%v error=%+v, %d events", n, r.OK, r.Error, len(r.Events))
		}
		// The PBX got each action once, from the actor's own user.
		acts, err := c.Ctl.Actions(ctx, n, "")
		if err != nil {
			t.Fatal(err)
		}
		got := 0
		for _, a := range acts {
			if a.ActionID == r.ActionID {
				got++
			}
		}
		if got != 1 {
			t.Errorf("%s: amisim received action %s %d times, want 1", n, r.ActionID, got)
		}
	}

	c.Quiesce(ctx)
	h := c.Verify(ctx)
	for _, n := range c.Nodes {
		nh := h.Nodes[n]
		_, gapEvents, gaps, abrupt := nh.Totals()
		s := nh.Current()
		if s == nil || s.ID != settled[n] || !s.Open() || gaps != 0 || abrupt != 0 {
			t.Errorf("%s: want session %s open throughout, no gap, every earlier session ended with session_end; got %d gap markers (%d events), %d abrupt: %s",
				n, settled[n], gaps, gapEvents, abrupt, describe(nh))
			continue
		}
		for _, s := range nh.Sessions {
			if s.Snapshots == 0 {
				t.Errorf("%s: session %s has no snapshot", n, s.ID)
			}
		}
		if s.Snapshots == 0 {
			t.Errorf("%s: session %s has no snapshot", n, s.ID)
		}
		if !strings.HasPrefix(s.ID, s.Owner+"-"+n+"-") {
			t.Errorf("%s: session id %q does not start with owner %q and the node", n, s.ID, s.Owner)
		}
	}
}
