package ingest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// deleteStream loses the events stream as an operator deleting it does.
func deleteStream(t *testing.T, ns *testenv.NATS) {
	js, err := jetstream.New(connect(t, ns.ClientURL()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := js.DeleteStream(ctx, "AMI_EVENTS"); err != nil {
		t.Fatal(err)
	}
}

// restartNATS loses a stream in memory storage: the server comes back
// without it.
func restartNATS(_ *testing.T, ns *testenv.NATS) {
	ns.Stop()
	ns.Start()
}

// TestLostStreamRecreated: the events stream disappears while events flow
// (deleted by an operator; a NATS server back without its memory storage).
// The ingest recreates it with its configured settings, logs and counts
// that, and stores in order every event it had not stored yet: nothing it
// buffered meanwhile is lost.
func TestLostStreamRecreated(t *testing.T) {
	for _, tc := range []struct {
		name, storage string
		lose          func(t *testing.T, ns *testenv.NATS)
	}{
		{"deleted", "file", deleteStream},
		{"memory storage, NATS restarted", "memory", restartNATS},
	} {
		t.Run(tc.name, func(t *testing.T) {
			leakCheck(t)
			ns := testenv.StartNATS(t)
			sim := testenv.StartSim(t, amisim.Config{Node: "pbx1"})
			cfg := parseConfig(t, "nats: {url: "+ns.ClientURL()+"}\n"+testSession+nodesYAML([]*amisim.Server{sim}, nil)+
				"stream: {storage: "+tc.storage+", max_age: 1h}\n")
			nc := connect(t, ns.ClientURL())
			run, logs := startServiceLogged(t, cfg, nc)
			upAndSnapshot(newStreamReader(t, connect(t, ns.ClientURL()), "AMI_EVENTS"), "pbx1", 1)
			conn := loginConns(sim)[0]

			const total, rate = 1500, 1000
			base := sim.SentEventCount()
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				sim.EmitEvents(total, rate)
			}()
			testenv.WaitSim(t, sim, "the flow under way", func() bool { return sim.SentEventCount() >= base+300 })
			tc.lose(t, ns)
			// Every event the PBX wrote after this was read when the
			// stream was gone: all of them must be in the new stream.
			sentBefore := uint64(len(sentTo(sim, conn)))
			wg.Wait()
			sent := sentTo(sim, conn)
			lastSeq := uint64(len(sent))

			recs := newStreamReader(t, connect(t, ns.ClientURL()), "AMI_EVENTS").until("the last event in the new stream",
				func(recs []record) bool {
					for _, r := range recs {
						if !r.meta() && r.Seq == lastSeq {
							return true
						}
					}
					return false
				})
			var first, next uint64
			for _, r := range nodeRecords(recs, "pbx1") {
				if r.meta() {
					t.Fatalf("marker %v in the new stream (the session did not change, nothing was dropped)", r)
				}
				if first == 0 {
					first, next = r.Seq, r.Seq
				}
				if r.Seq != next {
					t.Fatalf("seq %d where %d expected: order broken or an event lost", r.Seq, next)
				}
				next++
			}
			if first == 0 || first > sentBefore+1 {
				t.Fatalf("new stream starts at seq %d; events from %d on were read after the stream was lost", first, sentBefore+1)
			}
			if n := testutil.ToFloat64(run.m.StreamRecreations); n != 1 {
				t.Fatalf("ami_stream_recreations_total %v, want 1", n)
			}
			if logs.FilterMessageSnippet("recreated with its configured settings").Len() != 1 {
				t.Fatal("no log line about the recreated stream")
			}
			s, err := jetstream.New(nc)
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
			defer cancel()
			st, err := s.Stream(ctx, "AMI_EVENTS")
			if err != nil {
				t.Fatal(err)
			}
			wantStorage := jetstream.FileStorage
			if tc.storage == "memory" {
				wantStorage = jetstream.MemoryStorage
			}
			if c := st.CachedInfo().Config; c.MaxAge != time.Hour || c.Storage != wantStorage {
				t.Fatalf("recreated stream config: max_age %v storage %v", c.MaxAge, c.Storage)
			}
			if err := run.stop(); err != nil {
				t.Fatal(err)
			}
			recv, pub := received(run.m, "pbx1"), published(run.m, "pbx1")
			var drop float64
			for _, r := range []string{metrics.ReasonBufferFull, metrics.ReasonPublishFailed, metrics.ReasonShutdown} {
				drop += float64(dropped(run.m, "pbx1", r))
			}
			if recv != pub || drop != 0 || recv < lastSeq {
				t.Fatalf("received %d, published %d, dropped %v (the PBX sent %d)", recv, pub, drop, lastSeq)
			}
		})
	}
}
