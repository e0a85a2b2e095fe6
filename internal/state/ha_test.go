package state

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/testenv"
)

// waitStatuses waits until every node's status key in the bucket says its
// stream position is at least want[node].
func waitStatuses(t *testing.T, e *env, want map[string]uint64) {
	t.Helper()
	kv := e.kv(DefaultBucket)
	w, err := kv.Watch(context.Background(), "*.status")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	got := map[string]uint64{}
	done := func() bool {
		for n, seq := range want {
			if got[n] < seq {
				return false
			}
		}
		return true
	}
	deadline := time.After(30 * time.Second)
	for !done() {
		select {
		case u := <-w.Updates():
			if u == nil {
				continue
			}
			var st Status
			if err := json.Unmarshal(u.Value(), &st); err == nil {
				got[st.Node] = st.Seq
			}
		case <-deadline:
			t.Fatalf("statuses %v, want %v", got, want)
		}
	}
}

// TestHAOneWriterPerNodeAndTakeOver: two replicas share four nodes through
// leases, each node owned by exactly one; when one replica stops, the other
// takes its nodes over from their checkpoints, and every node's keys equal
// a rebuild from the stream.
func TestHAOneWriterPerNodeAndTakeOver(t *testing.T) {
	e := newEnv(t)
	nodes := []string{"pbx1", "pbx2", "pbx3", "pbx4"}
	pbxs := map[string]*pbx{}
	traffic := func(round int) map[string]uint64 {
		want := map[string]uint64{}
		for _, n := range nodes {
			p := pbxs[n]
			if p == nil {
				p = e.pbx(n)
				pbxs[n] = p
				p.start()
				p.snapshot("CoreShowChannels")
			}
			for i := 0; i < 3; i++ {
				p.newchannel(fmt.Sprintf("%d.%d", round, i))
			}
			p.ev("Hangup", "Uniqueid", fmt.Sprintf("%d.0", round))
			want[n] = p.last
		}
		return want
	}
	replica := func(name string) *running {
		return e.run(Config{HA: &HA{Leases: e.ownJetStream(), Instance: name, Nodes: nodes, TTL: 2 * time.Second}})
	}
	r1, r2 := replica("r1"), replica("r2")
	r1.waitFlushed(t, 0) // the bucket exists
	waitStatuses(t, e, traffic(1))
	owned := func(r *running) []string {
		var out []string
		for _, n := range nodes {
			if r.s.owns(n) {
				out = append(out, n)
			}
		}
		return out
	}
	o1, o2 := owned(r1), owned(r2)
	for _, n := range nodes {
		if r1.s.owns(n) == r2.s.owns(n) {
			t.Fatalf("node %s: owned by both or neither (r1 %v, r2 %v)", n, o1, o2)
		}
	}
	// A whole-state request is answered by the owner only.
	for _, n := range nodes {
		m, err := e.nc.Request("ami.state."+n, nil, 5*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		var x map[string]any
		_ = json.Unmarshal(m.Data, &x)
		if x["ok"] != true {
			t.Fatalf("%s: %s", n, m.Data)
		}
	}
	r1.stop(t)
	want := traffic(2)
	waitStatuses(t, e, want)
	if got := owned(r2); !slices.Equal(got, nodes) {
		t.Fatalf("after r1 stopped, r2 owns %v", got)
	}
	for _, n := range nodes {
		rebuilt, err := Replay(context.Background(), e.js, ReplayConfig{Stream: "AMI_EVENTS", Prefix: "ami"}, n, 0, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		got := withoutStatus(e.bucketState(DefaultBucket, n), n)
		if d := diffSnap(got, snapshotKeys(rebuilt)); d != "" {
			t.Errorf("node %s (r1 had %v) after take-over differs from a rebuild:\n%s", n, o1, d)
		}
	}
}

// TestHASetNodes: a reload of the node list under HA. The node added is
// taken and projected from the stream (its events written before the
// reload included); the node removed is released, its lease deleted, and
// requests for it are answered unknown_node, while its keys stay in the
// bucket; the node kept goes on. A list the leases refuse, and the same
// list again, change nothing.
func TestHASetNodes(t *testing.T) {
	e := newEnv(t)
	r := e.run(Config{HA: &HA{Leases: e.ownJetStream(), Instance: "r1", Nodes: []string{"pbx1", "pbx2"}, TTL: 2 * time.Second}})
	pbxs := map[string]*pbx{}
	for _, n := range []string{"pbx1", "pbx2", "pbx3"} {
		p := e.pbx(n)
		pbxs[n] = p
		p.start()
		p.snapshot("CoreShowChannels")
		p.newchannel(n + ".1")
	}
	p1, p2, p3 := pbxs["pbx1"], pbxs["pbx2"], pbxs["pbx3"]
	r.waitFlushed(t, 0) // the bucket exists
	waitStatuses(t, e, map[string]uint64{"pbx1": p1.last, "pbx2": p2.last})
	if r.s.owns("pbx3") {
		t.Fatal("pbx3 owned before it is configured")
	}
	if code := testenv.Outcome(t, e.nc, "ami.state."+"pbx3", nil); code != "unknown_node" {
		t.Fatalf("pbx3 before the reload: %s, want unknown_node", code)
	}

	// The lease of pbx1 is deleted once its release has returned.
	w := e.watch(DefaultLeaseBucket, "node.pbx1")
	changed, err := r.s.SetNodes([]string{"pbx2", "pbx3"})
	if err != nil || !changed {
		t.Fatalf("SetNodes: changed %v, %v", changed, err)
	}
	deadline := time.After(30 * time.Second)
	for released := false; !released; {
		select {
		case u := <-w.Updates():
			released = u != nil && u.Operation() != jetstream.KeyValuePut
		case <-deadline:
			t.Fatal("pbx1's lease never deleted")
		}
	}
	p2.newchannel("pbx2.2")
	p3.newchannel("pbx3.2")
	waitStatuses(t, e, map[string]uint64{"pbx2": p2.last, "pbx3": p3.last})
	if r.s.owns("pbx1") || !r.s.owns("pbx2") || !r.s.owns("pbx3") {
		t.Fatalf("owns pbx1 %v, pbx2 %v, pbx3 %v; want false, true, true", r.s.owns("pbx1"), r.s.owns("pbx2"), r.s.owns("pbx3"))
	}
	for _, n := range []string{"pbx2", "pbx3"} {
		if got := channelKeys(e.bucketState(DefaultBucket, n)); got != 2 {
			t.Errorf("%s: %d channel keys, want 2", n, got)
		}
	}
	if code := testenv.Outcome(t, e.nc, "ami.state."+"pbx1", nil); code != "unknown_node" {
		t.Fatalf("pbx1 after its removal: %s, want unknown_node", code)
	}
	if got := channelKeys(e.bucketState(DefaultBucket, "pbx1")); got != 1 {
		t.Fatalf("pbx1's keys after its removal: %d channels, want its 1 kept", got)
	}

	if changed, err := r.s.SetNodes(nil); err == nil || changed {
		t.Fatalf("an empty list: changed %v, %v; want refused", changed, err)
	}
	if changed, err := r.s.SetNodes([]string{"pbx3", "pbx2"}); err != nil || changed {
		t.Fatalf("the same list: changed %v, %v; want unchanged", changed, err)
	}
	if !r.s.owns("pbx2") || !r.s.owns("pbx3") || !r.s.configured("pbx2") || !r.s.configured("pbx3") {
		t.Fatal("a refused or unchanged list changed the nodes")
	}
}

// TestSetNodesWithoutHA: without leases the node list is not used; a new
// one changes nothing.
func TestSetNodesWithoutHA(t *testing.T) {
	e := newEnv(t)
	r := e.run(Config{})
	if changed, err := r.s.SetNodes([]string{"pbx9"}); err != nil || changed {
		t.Fatalf("changed %v, %v; want nothing changed", changed, err)
	}
}

// channelKeys counts the channel keys of a bucketState.
func channelKeys(keys map[string]any) int {
	n := 0
	for k := range keys {
		if _, kind, _, ok := ParseKey(k); ok && kind == EntityChannel {
			n++
		}
	}
	return n
}
