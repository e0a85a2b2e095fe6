package integration

import (
	"fmt"
	"testing"
)

// TestSimultaneousStart starts every ingest replica at once on a fresh
// cluster, as a Deployment does, and checks that no session that read
// events is missing from the stream: the replica that creates the stream
// and the ones racing it must not lose what they read meanwhile.
func TestSimultaneousStart(t *testing.T) {
	c, ctx := StartLive(t, Spec{Simultaneous: true})
	c.Quiesce(ctx)

	conns, err := c.ingestConns(ctx)
	if err != nil {
		t.Fatal(err)
	}
	h := CheckStream(subjectPrefix, c.Nodes, c.Tail.Records())
	var missing []string
	for _, n := range c.Nodes {
		for _, cn := range conns[n] {
			sid, ok := sessionOfActionID(cn.ActionID)
			if ok && cn.Events > 0 && h.Nodes[n].Session(sid) == nil {
				missing = append(missing, fmt.Sprintf("%s (%d events)", sid, cn.Events))
			}
		}
	}
	if len(missing) > 0 {
		t.Errorf("sessions that read events and are not in the stream (leases taken before the stream existed?): %v", missing)
	}
	c.Verify(ctx)
}
