package state

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/daemon"
	"github.com/amibus/amibus/internal/ingest"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
	"github.com/amibus/amibus/pkg/publish"
)

// runIngest runs an ingest on the configuration file text yaml until the
// test ends, connected as ami-ingest connects (its options and handlers),
// and returns its metrics.
func runIngest(t *testing.T, name, yaml string) *metrics.Metrics {
	t.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	nc, err := daemon.ConnectNATS(cfg.NATS.URL, config.NATS{}, name, zap.NewNop(), nats.ReconnectBufSize(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close) // after the ingest's Run returned
	im := metrics.New()
	ing, err := ingest.New(cfg, nc, im, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	testenv.Go(t, "the ingest's Run", ing.Run)
	return im
}

// outageEvents is how many events every PBX writes while NATS is down: far
// over the ingest's buffer_events of the tests (50), so each node's buffer
// overflows and the stream gets a gap marker.
const outageEvents = 200

// natsOutage stops NATS while the PBXs go on writing, until each has
// written outageEvents, then starts it again; the ingest must have dropped
// events of every node (a gap).
func natsOutage(t *testing.T, seed uint64, ns *testenv.NATS, sims []*amisim.Server, im *metrics.Metrics) {
	t.Helper()
	base := make([]int, len(sims))
	drops := make([]float64, len(sims))
	for i, s := range sims {
		base[i] = s.SentEventCount()
		drops[i] = testutil.ToFloat64(im.EventsDropped.WithLabelValues(s.Node(), metrics.ReasonBufferFull))
	}
	ns.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for i, s := range sims {
		if err := s.WaitUntil(ctx, func() bool { return s.SentEventCount() >= base[i]+outageEvents }); err != nil {
			t.Fatalf("seed %d: %s wrote %d events during the outage: %v", seed, s.Node(), s.SentEventCount()-base[i], err)
		}
	}
	ns.Start()
	for i, s := range sims {
		if d := testutil.ToFloat64(im.EventsDropped.WithLabelValues(s.Node(), metrics.ReasonBufferFull)); d <= drops[i] {
			t.Fatalf("seed %d: %s: no event dropped during the outage: no gap", seed, s.Node())
		}
	}
}

// TestTruthOutage: the truth run with a NATS outage that makes a gap on
// every node, a replica killed (no last flush, no lease released) and an
// ami-state restart, beside the AMI disconnects and the PBX restart; once
// traffic stops and a snapshot interval has passed, the bucket equals
// amisim's truth key by key and every node is fresh.
func TestTruthOutage(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	for _, seed := range []uint64{6, 7, 8} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { truthRun(t, seed, truthOpts{ha: true, outage: true}) })
	}
}

// TestGapHealingOutage: NATS stops while the PBX sets up calls and floods
// events, so the ingest's small buffer drops the calls' events. When NATS
// is back, the node's status says stale (a gap); within the snapshot
// interval (by the events' own clock) it is fresh again, and the bucket
// holds the calls the lost events set up, equal to amisim's truth.
func TestGapHealingOutage(t *testing.T) {
	e, ns := newRestartableEnv(t)
	// Calls that last 10 minutes: once set up, the PBX's state stays put
	// for 100 s (a call's next event, a Newexten, comes at 0.504/3.007 of
	// its duration).
	sim, err := amisim.Start(amisim.Config{Node: "pbx1", CallDuration: 10 * time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sim.Close() }()
	const interval = time.Second
	im := runIngest(t, "gap-ingest", fmt.Sprintf("nats: {url: %q}\nstream: {storage: file}\n"+
		"session: {backoff_initial: 10ms, backoff_max: 200ms}\n"+
		"ingest: {buffer_events: 20, snapshot_interval: %s, snapshot_actions: [CoreShowChannels, BridgeList, QueueStatus]}\n"+
		"nodes:\n  - {name: pbx1, address: %q, username: ami, secret: amisecret}\n", e.nc.ConnectedUrl(), interval, sim.Addr()))
	// A status history, so that a watch opened after the outage sees the
	// stale status written while it was not yet open.
	r := e.run(Config{History: 64})
	r.waitFlushed(t, 0) // the bucket exists

	kv := e.kv(DefaultBucket)
	var w jetstream.KeyWatcher
	watch := func() {
		t.Helper()
		if w != nil {
			_ = w.Stop()
		}
		if w, err = kv.Watch(context.Background(), StatusKey("pbx1"), jetstream.IncludeHistory()); err != nil {
			t.Fatal(err)
		}
	}
	watch()
	defer func() { _ = w.Stop() }()
	next := func(what string, cond func(Status) bool) Status {
		t.Helper()
		deadline := time.After(30 * time.Second)
		for {
			select {
			case u := <-w.Updates():
				if u == nil || u.Operation() != jetstream.KeyValuePut {
					continue
				}
				var st Status
				if err := json.Unmarshal(u.Value(), &st); err != nil {
					t.Fatal(err)
				}
				if cond(st) {
					return st
				}
			case <-deadline:
				snap, err := r.s.Current("pbx1")
				t.Fatalf("no status: %s (service has %+v, %v)", what, snap.Status, err)
			}
		}
	}
	next("fresh after the login", func(st Status) bool { return !st.Stale && st.Session != "" })

	ns.Stop()
	sim.StartTraffic(50)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := sim.WaitUntil(ctx, func() bool { return sim.LiveCalls() >= 3 }); err != nil {
		t.Fatal(err)
	}
	sim.StopTraffic()
	if err := sim.WaitUntil(ctx, func() bool { return sim.LiveCalls() > 0 && len(sim.LiveChannels()) == 4*sim.LiveCalls() }); err != nil {
		t.Fatal(err)
	}
	base := sim.SentEventCount()
	sim.EmitEvents(200, 2000)
	if err := sim.WaitUntil(ctx, func() bool { return sim.SentEventCount() >= base+200 }); err != nil {
		t.Fatal(err)
	}
	want := truthKeys(sim.Truth())
	// The snapshot after the gap follows it at once; a slow answer keeps
	// the node stale for longer than a flush interval, so that the stale
	// status is written, not coalesced away.
	sim.SetAnswerDelay("CoreShowChannels", 300*time.Millisecond)
	ns.Start()
	watch() // a watch does not outlive the server's restart

	stale := next("stale after the gap", func(st Status) bool { return st.Stale })
	if stale.StaleReason != "gap" {
		t.Fatalf("stale for %q, want gap", stale.StaleReason)
	}
	fresh := next("fresh after the snapshot", func(st Status) bool { return !st.Stale })
	if d := fresh.Time.Sub(stale.Time); d > interval+time.Second {
		t.Fatalf("fresh %v after the gap (event times), snapshot interval %v", d, interval)
	}
	// The first fresh status need not be the last word: the ingest may still
	// hold events read after that snapshot (amisim's untracked flood among
	// them) and drop some, a gap whose own snapshot comes an interval later.
	// What must hold is the end: once the ingest holds nothing and ami-state
	// has applied the node's last message, the node is fresh and its bucket
	// is the PBX's truth.
	stream, err := e.js.Stream(context.Background(), publish.DefaultStreamName)
	if err != nil {
		t.Fatal(err)
	}
	settle := time.NewTimer(30 * time.Second)
	defer settle.Stop()
	tick := time.NewTicker(200 * time.Millisecond) // the ingest's counters have no signal
	defer tick.Stop()
	for {
		if ingestSettled(im, "pbx1") {
			m, err := stream.GetLastMsgForSubject(context.Background(), "ami.events.pbx1.>")
			if err != nil {
				t.Fatal(err)
			}
			r.waitFlushed(t, m.Sequence)
			if snap, err := r.s.Current("pbx1"); err == nil && !snap.Status.Stale && snap.Status.Seq == m.Sequence {
				break
			}
		}
		select {
		case <-w.Updates():
		case <-tick.C:
		case <-settle.C:
			snap, err := r.s.Current("pbx1")
			t.Fatalf("the node never settled fresh (service has %+v, %v)", snap.Status, err)
		}
	}
	if got := truthKeys(sim.Truth()); diffKeys(got, want) != "" {
		t.Fatalf("the PBX's state moved during the test:\n%s", diffKeys(got, want))
	}
	if len(want) < 3 {
		t.Fatalf("truth %v: too few calls to show anything", want)
	}
	if d := diffKeys(bucketKeys(e.bucketState(DefaultBucket, "pbx1")), want); d != "" {
		t.Fatalf("bucket after healing differs from amisim's truth:\n%s", d)
	}
}
