package ingest

import (
	"context"
	"errors"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/pkg/amisim"
)

// TestHASingleReplica: with ingest.ha enabled and one replica, the lease
// manager gives this process every node: each gets a session (owner = this
// instance) publishing its events, each lease names the instance, and a
// graceful stop ends every session and hands every lease back.
func TestHASingleReplica(t *testing.T) {
	leakCheck(t)
	ns := startNATS(t)
	sims := startFleet(t, 3, amisim.Config{})
	cfg := parseConfig(t, "nats: {url: "+ns.url()+"}\n"+testSession+nodesYAML(sims, nil)+
		"ingest: {ha: {enabled: true, bucket: test_owners, ttl: 2s}}\n")
	nc := connect(t, ns.url())
	preCreateStream(t, nc, cfg)
	reader := newStreamReader(t, nc, "AMI_EVENTS")
	run := startService(t, cfg, nc, nil)

	base := map[string]int{}
	for _, s := range sims {
		upAndSnapshot(reader, s.Node(), 1)
		base[s.Node()] = s.SentEventCount()
		s.Emit("UserEvent", [2]string{"UserEvent", "ha-" + s.Node()})
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	js, _ := jetstream.New(nc)
	kv, err := js.KeyValue(ctx, "test_owners")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sims {
		e, err := kv.Get(ctx, "node."+s.Node())
		if err != nil {
			t.Fatalf("lease of %s: %v", s.Node(), err)
		}
		if string(e.Value()) != run.svc.Instance() {
			t.Fatalf("lease of %s held by %q, want %q", s.Node(), e.Value(), run.svc.Instance())
		}
		waitSim(t, s, "one ingest session", func() bool { return s.ActiveSessions("ami") == 1 })
	}
	reader.until("every node's UserEvent", func(recs []record) bool {
		for _, s := range sims {
			ok := false
			for _, r := range nodeRecords(recs, s.Node()) {
				ok = ok || r.Event == "UserEvent"
			}
			if !ok {
				return false
			}
		}
		return true
	})
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
