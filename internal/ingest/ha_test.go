package ingest

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// TestHASingleReplica: with ingest.ha enabled and one replica, the lease
// manager gives this process every node: each gets a session (owner = this
// instance) publishing its events, each lease names the instance, and a
// graceful stop ends every session and hands every lease back.
func TestHASingleReplica(t *testing.T) {
	leakCheck(t)
	sims := testenv.StartFleet(t, 3, amisim.Config{})
	_, cfg, nc, reader := startRig(t, sims, "ingest: {ha: {enabled: true, bucket: test_owners, ttl: 2s}}\n")
	run := startService(t, cfg, nc, nil)

	base := map[string]int{}
	for _, s := range sims {
		upAndSnapshot(reader, s.Node(), 1)
		base[s.Node()] = s.SentEventCount()
		s.Emit("UserEvent", [2]string{"UserEvent", "ha-" + s.Node()})
	}
	ctx, kv := ownersBucket(t, nc)
	for _, s := range sims {
		e, err := kv.Get(ctx, "node."+s.Node())
		if err != nil {
			t.Fatalf("lease of %s: %v", s.Node(), err)
		}
		// Node entries hold instance/incarnation (internal/ownership).
		if !strings.HasPrefix(string(e.Value()), run.svc.Instance()+"/") {
			t.Fatalf("lease of %s held by %q, want %q's", s.Node(), e.Value(), run.svc.Instance())
		}
		testenv.WaitSim(t, s, "one ingest session", func() bool { return s.ActiveSessions("ami") == 1 })
	}
	reader.until("every node's UserEvent", everyNodeHas(sims, "UserEvent"))
	if err := run.stop(); err != nil {
		t.Fatal(err)
	}
	recs := reader.all()
	for _, s := range sims {
		node := s.Node()
		sessions, _, _ := checkHistory(t, recs, node)
		if len(sessions) != 1 {
			t.Fatalf("%s: sessions %v", node, sessions)
		}
		for _, r := range nodeRecords(recs, node) {
			if r.Type == "session_start" && r.Owner != run.svc.Instance() {
				t.Fatalf("%s: owner %q", node, r.Owner)
			}
		}
		hist := nodeRecords(recs, node)
		if end := hist[len(hist)-1]; end.Type != "session_end" || end.Reason != "closed" {
			t.Fatalf("%s: history ends with %v", node, end)
		}
		checkSessionEvents(t, recs, node, sessions[0], sentTo(s, loginConns(s)[0]))
		if _, err := kv.Get(ctx, "node."+node); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatalf("lease of %s after a graceful stop: %v, want it deleted", node, err)
		}
	}
}

// TestHAReload: under HA a reload goes through the lease protocol: the
// node removed is released (its session ends with reason removed, its
// lease is deleted), the node added is acquired, the node kept is
// untouched.
func TestHAReload(t *testing.T) {
	leakCheck(t)
	ns := testenv.StartNATS(t)
	sims := testenv.StartFleet(t, 3, amisim.Config{})
	head := "nats: {url: " + ns.ClientURL() + "}\n" + testSession + "ingest: {ha: {enabled: true, bucket: test_owners, ttl: 2s}}\n"
	cfg := parseConfig(t, head+nodesYAML(sims[:2], nil))
	nc := connect(t, ns.ClientURL())
	preCreateStream(t, nc, cfg)
	reader := newStreamReader(t, nc, "AMI_EVENTS")
	run := startService(t, cfg, nc, nil)
	for _, s := range sims[:2] {
		upAndSnapshot(reader, s.Node(), 1)
	}
	kept, removed, added := sims[0], sims[1], sims[2]
	if _, err := run.svc.Reload(context.Background(), parseConfig(t, head+nodesYAML([]*amisim.Server{kept, added}, nil))); err != nil {
		t.Fatal(err)
	}
	upAndSnapshot(reader, added.Node(), 1)
	recs := reader.until("the removed node's session_end", func(recs []record) bool {
		for _, r := range nodeRecords(recs, removed.Node()) {
			if r.Type == "session_end" {
				return true
			}
		}
		return false
	})
	hist := nodeRecords(recs, removed.Node())
	if end := hist[len(hist)-1]; end.Type != "session_end" || end.Reason != "removed" {
		t.Fatalf("removed node ends with %v", end)
	}
	if ids, _ := sessionsOf(recs, kept.Node()); len(ids) != 1 || kept.Logins() != 1 {
		t.Fatalf("kept node: sessions %v, %d logins", ids, kept.Logins())
	}
	ctx, kv := ownersBucket(t, nc)
	e, err := kv.Get(ctx, "node."+added.Node())
	if err != nil || !strings.HasPrefix(string(e.Value()), run.svc.Instance()+"/") {
		t.Fatalf("lease of the added node: %v %v", e, err)
	}
	testenv.WaitSim(t, removed, "the removed node's session closed", func() bool { return removed.ActiveSessions("ami") == 0 })
}

// ownersBucket opens the tests' lease bucket (test_owners) and returns it
// with a context that ends at waitLimit or with the test.
func ownersBucket(t *testing.T, nc *nats.Conn) (context.Context, jetstream.KeyValue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, "test_owners")
	if err != nil {
		t.Fatal(err)
	}
	return ctx, kv
}
