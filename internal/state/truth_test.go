package state

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
	"github.com/amibus/amibus/pkg/eventlog"
)

// truthKeys renders amisim's truth of one node as the keys ami-state must
// hold, each value reduced to the fields the truth knows (as strings).
func truthKeys(tr amisim.Truth) map[string]map[string]string {
	out := map[string]map[string]string{}
	for _, c := range tr.Channels {
		out[Key(tr.Node, EntityChannel, c.Uniqueid)] = map[string]string{
			"uniqueid": c.Uniqueid, "channel": c.Channel, "state": strconv.Itoa(c.State), "state_desc": c.StateDesc,
			"caller_id_num": c.CallerIDNum, "caller_id_name": c.CallerIDName, "connected_line_num": c.ConnectedLineNum,
			"connected_line_name": c.ConnectedLineName, "linkedid": c.Linkedid, "bridge": c.Bridge,
			"on_hold": strconv.FormatBool(c.OnHold)}
	}
	for _, b := range tr.Bridges {
		out[Key(tr.Node, EntityBridge, b.ID)] = map[string]string{"id": b.ID, "members": strings.Join(b.Members, ",")}
	}
	for _, q := range tr.Queues {
		v := map[string]string{"name": q.Name}
		for _, m := range q.Members {
			v["member "+m.Interface] = fmt.Sprintf("status=%d paused=%v in_call=%v", m.Status, m.Paused, m.InCall)
		}
		for _, c := range q.Callers {
			v["caller "+c.Uniqueid] = fmt.Sprintf("channel=%s position=%d", c.Channel, c.Position)
		}
		out[Key(tr.Node, EntityQueue, q.Name)] = v
	}
	return out
}

// bucketKeys reduces the bucket's keys of node to the same fields.
func bucketKeys(bucket map[string]any) map[string]map[string]string {
	out := map[string]map[string]string{}
	for key, raw := range bucket {
		b, _ := json.Marshal(raw)
		_, kind, _, ok := ParseKey(key)
		if !ok {
			continue
		}
		switch kind {
		case EntityChannel:
			var c Channel
			_ = json.Unmarshal(b, &c)
			out[key] = map[string]string{
				"uniqueid": c.Uniqueid, "channel": c.Channel, "state": strconv.Itoa(c.State), "state_desc": c.StateDesc,
				"caller_id_num": c.CallerIDNum, "caller_id_name": c.CallerIDName, "connected_line_num": c.ConnectedLineNum,
				"connected_line_name": c.ConnectedLineName, "linkedid": c.Linkedid, "bridge": c.Bridge,
				"on_hold": strconv.FormatBool(c.OnHold)}
		case EntityBridge:
			var br Bridge
			_ = json.Unmarshal(b, &br)
			out[key] = map[string]string{"id": br.ID, "members": strings.Join(br.Members, ",")}
		case EntityQueue:
			var q Queue
			_ = json.Unmarshal(b, &q)
			v := map[string]string{"name": q.Name}
			for _, m := range q.Members {
				v["member "+m.Interface] = fmt.Sprintf("status=%s paused=%v in_call=%v", m.Status, m.Paused, m.InCall)
			}
			for _, c := range q.Callers {
				v["caller "+c.Uniqueid] = fmt.Sprintf("channel=%s position=%d", c.Channel, c.Position)
			}
			out[key] = v
		}
	}
	return out
}

// TestTruth: amisim's seeded mix of hard calls (transfers, Local channels,
// masquerades, hold, queues, pauses) on several nodes through a real
// ami-ingest into ami-state, with AMI disconnects, a PBX restart and an
// ami-state restart in the middle; once traffic stops, the bucket equals
// amisim's truth key by key.
// The comparison is made once the calls in progress have ended: what must
// be gone is gone (no key left by a restart, a hang-up or a sweep), and the
// queues match.
func TestTruth(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	for _, seed := range []uint64{1, 2, 3} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { truthRun(t, seed, truthOpts{}) })
	}
}

// TestTruthReplicas: the same with two ami-state replicas sharing the nodes
// through leases; one stops in the middle and its nodes are taken over, and
// a third joins later.
func TestTruthReplicas(t *testing.T) {
	if testing.Short() {
		t.Skip("end to end")
	}
	for _, seed := range []uint64{4, 5} {
		t.Run(fmt.Sprint(seed), func(t *testing.T) { truthRun(t, seed, truthOpts{ha: true}) })
	}
}

// truthOpts chooses a truth run's faults beyond disconnects and restarts.
type truthOpts struct {
	ha bool // two replicas sharing the nodes by leases
	// outage: a NATS outage long enough to make gaps, and a replica killed
	// (its connections cut, no last flush, no lease released) rather than
	// stopped; implies ha.
	outage bool
}

// replicaSet runs one ami-state, or HA replicas, and finds a node's owner.
type replicaSet struct {
	t       *testing.T
	e       *env
	url     string
	nodes   []string // nil: no HA
	live    []*running
	conns   map[*running][]*nats.Conn // HA: each replica's own connections
	history int                       // the bucket's values per key (0: 1)
	next    int
}

func (rs *replicaSet) start() {
	rs.t.Helper()
	if rs.nodes == nil {
		rs.live = append(rs.live, rs.e.run(Config{}))
		return
	}
	// Each replica on connections of its own, as separate processes are:
	// one for the state, one for the leases.
	var conns []*nats.Conn
	var jss []jetstream.JetStream
	for range 2 {
		c, err := nats.Connect(rs.url, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
		if err != nil {
			rs.t.Fatal(err)
		}
		rs.t.Cleanup(c.Close)
		js, _ := jetstream.New(c)
		conns, jss = append(conns, c), append(jss, js)
	}
	rs.next++
	r := rs.e.runOn(conns[0], jss[0], Config{History: rs.history,
		HA: &HA{Leases: jss[1], Instance: fmt.Sprintf("r%d", rs.next), Nodes: rs.nodes, TTL: 2 * time.Second}})
	if rs.conns == nil {
		rs.conns = map[*running][]*nats.Conn{}
	}
	rs.conns[r] = conns
	rs.live = append(rs.live, r)
}

// killOne kills the oldest running replica as SIGKILL would: its
// connections are cut first, so its last flush and its lease releases
// never reach NATS; what it wrote stays as it was, its leases expire.
func (rs *replicaSet) killOne() {
	r := rs.live[0]
	for _, c := range rs.conns[r] {
		c.Close()
	}
	r.cancel()
	<-r.done      // whatever Run says: its connection is gone
	r.done <- nil // the cleanup's stop returns at once
	rs.live = rs.live[1:]
}

// stopOne stops the oldest running replica.
func (rs *replicaSet) stopOne() {
	rs.live[0].stop(rs.t)
	rs.live = rs.live[1:]
}

func (rs *replicaSet) current(node string) (Snapshot, error) {
	var err error
	for _, r := range rs.live {
		var s Snapshot
		if s, err = r.s.Current(node); err == nil {
			return s, nil
		}
	}
	return Snapshot{}, err
}

func truthRun(t *testing.T, seed uint64, o truthOpts) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("seed %d failed (opts %+v)", seed, o)
		}
	})
	ha := o.ha || o.outage
	r := rand.New(rand.NewPCG(seed, 99))
	var e *env
	var ns *testenv.NATS
	storage, ingestTuning := "memory", ""
	if o.outage {
		e, ns = newRestartableEnv(t)
		// A small buffer overflows during the outage (gaps); snapshots
		// after gaps at most once a second.
		storage, ingestTuning = "file", ", buffer_events: 50, snapshot_interval: 1s"
	} else {
		e = newEnv(t)
	}
	url := e.nc.ConnectedUrl()
	fleet, err := amisim.StartFleet(3, amisim.Config{CallDuration: time.Duration(2+r.IntN(4)) * time.Second, BootDelay: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer fleet.Close()
	sims := fleet.Servers()
	var y strings.Builder
	fmt.Fprintf(&y, "nats: {url: %q}\nstream: {storage: %s}\nsession: {backoff_initial: 10ms, backoff_max: 200ms}\n", url, storage)
	fmt.Fprintf(&y, "ingest: {snapshot_actions: [CoreShowChannels, BridgeList, QueueStatus]%s}\nnodes:\n", ingestTuning)
	for _, s := range sims {
		fmt.Fprintf(&y, "  - {name: %s, address: %q, username: ami, secret: amisecret}\n", s.Node(), s.Addr())
	}
	im := runIngest(t, "truth-ingest", y.String())

	rs := &replicaSet{t: t, e: e, url: url}
	afterOutage := map[string]float64{} // events the ingest published, per node, when NATS came back
	if o.outage {
		rs.history = 64 // the status keys' history, shown on failure
	}
	if ha {
		for _, s := range sims {
			rs.nodes = append(rs.nodes, s.Node())
		}
	}
	rs.start()
	if ha {
		rs.start()
	}
	for i, s := range sims {
		if err := s.StartMixedTraffic(amisim.Traffic{CallsPerSecond: float64(5 + r.IntN(10)), Seed: seed*100 + uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Duration(300+r.IntN(700)) * time.Millisecond) // traffic runs: a duration, not a synchronisation
	sims[r.IntN(len(sims))].DropConnections()                     // an AMI disconnect: session_end, new session, snapshot
	if o.outage {
		rs.killOne()
	} else {
		rs.stopOne()
	}
	victim := sims[r.IntN(len(sims))]
	victim.Restart(100 * time.Millisecond)
	rs.start()
	time.Sleep(time.Duration(100+r.IntN(300)) * time.Millisecond) // traffic runs
	if o.outage {
		natsOutage(t, seed, ns, sims, im)
		for _, s := range sims {
			afterOutage[s.Node()] = testutil.ToFloat64(im.EventsPublished.WithLabelValues(s.Node()))
		}
		rs.stopOne() // and an ami-state restart after it
		rs.start()
	}
	sims[r.IntN(len(sims))].DropConnections()
	// Record live states at a few moments, for time travel to answer later.
	var recorded []Snapshot
	for i := 0; i < 4; i++ {
		time.Sleep(time.Duration(100+r.IntN(200)) * time.Millisecond) // more traffic after the restarts
		for _, s := range sims {
			if snap, err := rs.current(s.Node()); err == nil {
				if d := beyondStatus(snap); d != "" {
					t.Errorf("seed %d node %s: the live answer at seq %d holds what later messages did:\n%s", seed, s.Node(), snap.Status.Seq, d)
				}
				recorded = append(recorded, snap)
			}
		}
	}
	for _, s := range sims {
		s.StopTraffic()
	}
	if o.outage {
		// The snapshot after the last gap may be held back by the ingest's
		// snapshot interval: one interval passes before the end is sought.
		time.Sleep(time.Second)
	}
	// Quiet: no new call starts; the calls in progress keep their events
	// going until they end. Wait for the last of them, then for the stream
	// to stop growing and ami-state to have flushed it all.
	wctx, wcancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer wcancel()
	for _, s := range sims {
		if err := s.WaitUntil(wctx, func() bool { return s.LiveCalls() == 0 }); err != nil {
			t.Fatalf("seed %d: calls never ended: %v", seed, err)
		}
	}
	stream, err := e.js.Stream(context.Background(), "AMI_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	// Quiet means the ingest holds nothing (every event it read is
	// published or counted dropped, its buffers are empty) and the stream
	// stopped growing. The stream alone is not enough: after the outage the
	// ingest may wait out an ack timeout before it publishes again.
	settled := func() bool {
		for _, s := range sims {
			if !ingestSettled(im, s.Node()) {
				return false
			}
		}
		return true
	}
	var last uint64
	for {
		time.Sleep(300 * time.Millisecond) // the stream's growth has no signal either
		info, err := stream.Info(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		if info.State.LastSeq == last && settled() {
			break
		}
		if wctx.Err() != nil {
			t.Fatalf("seed %d: the ingest never settled (stream at %d)", seed, info.State.LastSeq)
		}
		last = info.State.LastSeq
	}
	want := map[string]uint64{}
	for _, s := range sims {
		m, err := stream.GetLastMsgForSubject(context.Background(), "ami.events."+s.Node()+".>")
		if err != nil {
			t.Fatal(err)
		}
		want[s.Node()] = m.Sequence
	}
	waitStatuses(t, e, want)
	// The ingest went on after the outage: else the stream (and so the
	// bucket) ends where the outage began, whatever ami-state does.
	for n, before := range afterOutage {
		if after := testutil.ToFloat64(im.EventsPublished.WithLabelValues(n)); after <= before {
			t.Errorf("seed %d node %s: the ingest published nothing after the NATS outage (%v events before it; stream ends at %d)", seed, n, before, want[n])
			for _, s := range sims {
				if s.Node() == n {
					acts := s.Received()
					t.Logf("  %s: %d connections, %d logins, %d events sent; last actions: %v", n, s.Connections(), s.Logins(),
						s.SentEventCount(), acts[max(0, len(acts)-6):])
				}
			}
		}
	}
	ctx := context.Background()
	for _, rec := range recorded {
		at, err := rs.live[0].s.StateAt(ctx, rec.Node, rec.Status.Seq, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if d := diffSnap(snapshotKeys(at), snapshotKeys(rec)); d != "" {
			t.Errorf("seed %d node %s: time travel to %d differs from the live state then:\n%s", seed, rec.Node, rec.Status.Seq, d)
		}
	}
	for _, s := range sims {
		live, err := rs.current(s.Node())
		if err != nil {
			t.Fatal(err)
		}
		scratch := rebuildFromStart(t, e, s.Node(), live.Status.Seq)
		if d := diffSnap(snapshotKeys(scratch), snapshotKeys(live)); d != "" {
			t.Errorf("seed %d node %s: rebuilt from scratch differs from live at %d:\n%s", seed, s.Node(), live.Status.Seq, d)
		}
		want := truthKeys(s.Truth())
		if len(want) == 0 {
			t.Fatalf("seed %d node %s: empty truth", seed, s.Node())
		}
		raw := e.bucketState(DefaultBucket, s.Node())
		got := bucketKeys(raw)
		if d := diffKeys(got, want); d != "" {
			t.Errorf("seed %d node %s: bucket differs from amisim's truth:\n%s", seed, s.Node(), d)
			t.Logf("seed %d node %s: live state against the truth:\n%s", seed, s.Node(), diffKeys(bucketKeys(snapshotKeys(live)), want))
		}
		if st, _ := raw[StatusKey(s.Node())].(map[string]any); st == nil || st["stale"] != false {
			t.Errorf("seed %d node %s: status at the end %v, want fresh", seed, s.Node(), st)
		}
		if t.Failed() && o.outage {
			t.Logf("seed %d node %s: status history:\n%s", seed, s.Node(), statusHistory(e, s.Node()))
		}
	}
}

// statusHistory lists the writes of node's status key kept by the
// bucket: revision, time, stream seq, stale.
func statusHistory(e *env, node string) string {
	h, err := e.kv(DefaultBucket).History(context.Background(), StatusKey(node))
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, en := range h {
		var st Status
		_ = json.Unmarshal(en.Value(), &st)
		fmt.Fprintf(&b, "  rev %d at %s: seq %d stale %v %s session %s\n", en.Revision(), en.Created().Format("15:04:05.000"),
			st.Seq, st.Stale, st.StaleReason, st.Session)
	}
	return b.String()
}

// beyondStatus lists the keys of a whole-state answer last changed by a
// message after the answer's status seq: the answer says it is the state
// at that seq, so none may be there.
func beyondStatus(s Snapshot) string {
	var b strings.Builder
	for _, c := range s.Channels {
		if c.Seq > s.Status.Seq {
			fmt.Fprintf(&b, "  channel %s at %d\n", c.Uniqueid, c.Seq)
		}
	}
	for _, br := range s.Bridges {
		if br.Seq > s.Status.Seq {
			fmt.Fprintf(&b, "  bridge %s at %d\n", br.ID, br.Seq)
		}
	}
	for _, q := range s.Queues {
		if q.Seq > s.Status.Seq {
			fmt.Fprintf(&b, "  queue %s at %d\n", q.Name, q.Seq)
		}
	}
	return b.String()
}

// rebuildFromStart applies node's whole history up to stream sequence upTo
// to an empty state.
func rebuildFromStart(t *testing.T, e *env, node string, upTo uint64) Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rd, err := eventlog.Open(ctx, e.js, eventlog.Nodes(node))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rd.Close(context.Background()) }()
	n := NewNode(node)
	var m Message
	for n.status.Seq < upTo {
		en, err := rd.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if FromEntry(en, &m) {
			n.Apply(&m)
		}
	}
	return n.Snapshot()
}

// TestConfigDefaultsAreTheServices: the state: defaults of the file format
// are this package's (config cannot import it: this package's tests import
// config).
func TestConfigDefaultsAreTheServices(t *testing.T) {
	d := config.Default().State
	if d.Bucket != DefaultBucket || d.FlushInterval != DefaultFlushInterval || d.MaxRequestBytes != DefaultMaxRequestBytes ||
		d.MaxReplayEvents != DefaultMaxReplayEvents || d.Replicas != 1 || d.History != 1 || d.HA.Bucket != DefaultLeaseBucket {
		t.Fatalf("config.Default().State = %+v", d)
	}
}

// ingestSettled says whether the ingest holds nothing of node: every event
// it read is published or counted dropped, and its buffer is empty.
func ingestSettled(im *metrics.Metrics, node string) bool {
	out := testutil.ToFloat64(im.EventsPublished.WithLabelValues(node))
	for _, r := range []string{metrics.ReasonBufferFull, metrics.ReasonPublishFailed, metrics.ReasonShutdown, metrics.ReasonOversized} {
		out += testutil.ToFloat64(im.EventsDropped.WithLabelValues(node, r))
	}
	return testutil.ToFloat64(im.EventsReceived.WithLabelValues(node)) == out &&
		testutil.ToFloat64(im.BufferEvents.WithLabelValues(node)) == 0
}

// diffKeys lists the keys whose values differ, the bucket against the truth.
func diffKeys[V any](got, want map[string]V) string {
	return testenv.DiffMaps(got, want, "bucket", "truth")
}

// diffSnap lists the keys whose values differ between two snapshots.
func diffSnap(got, want map[string]any) string { return testenv.DiffMaps(got, want, "got", "want") }
