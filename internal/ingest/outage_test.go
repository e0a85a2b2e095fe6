package ingest

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// checkStoredEvents asserts that every event record of node's session is the
// event the PBX sent with that number (sent[seq-1]), byte for byte.
func checkStoredEvents(t *testing.T, recs []record, node, session string, sent []amisim.SentEvent) {
	t.Helper()
	for _, r := range recs {
		if r.Node != node || r.Session != session || r.meta() {
			continue
		}
		if r.Seq < 1 || r.Seq > uint64(len(sent)) {
			t.Fatalf("%s: seq %d, the PBX sent %d events", node, r.Seq, len(sent))
		}
		want := expectedFields(sent[r.Seq-1].Headers)
		if !fieldsEqual(r.Fields, want) || r.MsgID != fmt.Sprintf("%s-%d", session, r.Seq) {
			t.Fatalf("%s seq %d (%s): not what the PBX sent\n got: %v\nwant: %v", node, r.Seq, r.MsgID, r.Fields, want)
		}
	}
}

// TestNATSOutage: NATS goes away in the middle of a flood and comes back on
// the same port and storage. The AMI side keeps reading (one session
// throughout), the small buffer overflows, and when NATS is back the buffer
// drains in order: every number of every node is either stored once, in
// order, or inside exactly one buffer_full gap marker, and received =
// published + dropped holds exactly per node in the metrics and in the
// stream.
func TestNATSOutage(t *testing.T) {
	leakCheck(t)
	ns := testenv.StartNATS(t)
	sims := testenv.StartFleet(t, 2, amisim.Config{})
	const bufferEvents = 300
	cfg := parseConfig(t, "nats: {url: "+ns.ClientURL()+"}\n"+testSession+nodesYAML(sims, nil)+
		fmt.Sprintf("ingest: {buffer_events: %d}\n", bufferEvents))
	nc := connect(t, ns.ClientURL())
	preCreateStream(t, nc, cfg)
	run := startService(t, cfg, nc, nil)
	{
		rd := newStreamReader(t, connect(t, ns.ClientURL()), "AMI_EVENTS")
		for _, s := range sims {
			upAndSnapshot(rd, s.Node(), 1)
		}
	}

	// The rate is one the race-enabled pipeline sustains with NATS up, so
	// that the drops come from the outage and the tail of the flood, read
	// after NATS is back, is stored (a gap marker is written when the
	// next event is accepted).
	const total, rate, beforeOutage, duringOutage = 4000, 600, 1000, 1200
	base := make([]int, len(sims))
	for i, s := range sims {
		base[i] = s.SentEventCount()
	}
	var wg sync.WaitGroup
	for _, s := range sims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.EmitEvents(total, rate)
		}()
	}
	for i, s := range sims {
		testenv.WaitSim(t, s, "the flood under way", func() bool { return s.SentEventCount() >= base[i]+beforeOutage })
	}
	ns.Stop()
	// The PBXs go on writing, and the ingest must go on reading: a PBX
	// drops a manager client that stops reading.
	for i, s := range sims {
		testenv.WaitSim(t, s, "events written during the outage", func() bool {
			return s.SentEventCount() >= base[i]+beforeOutage+duringOutage
		})
	}
	ns.Start()
	wg.Wait()
	reader := newStreamReader(t, connect(t, ns.ClientURL()), "AMI_EVENTS")
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("stream as read:\n%s", summarize(reader.recs))
			for _, s := range sims {
				n := s.Node()
				t.Logf("%s: received %d published %d dropped %d, buffered %v", n, received(run.m, n), published(run.m, n),
					dropped(run.m, n, metrics.ReasonBufferFull), testutil.ToFloat64(run.m.BufferEvents.WithLabelValues(n)))
			}
		}
	})

	// On a loaded machine the end of the flood may be dropped too, and the
	// queue writes a gap marker only when it next accepts an event (see
	// the report on eventq). A trickle of marked events, slow enough to be
	// accepted once the backlog is stored, closes the history.
	trickle := make(chan struct{})
	var tw sync.WaitGroup
	tails := make([]int, len(sims)) // each written by its goroutine, read after tw.Wait
	for i, s := range sims {
		tw.Add(1)
		go func() {
			defer tw.Done()
			tick := time.NewTicker(20 * time.Millisecond) // load generation, not a wait
			defer tick.Stop()
			for {
				select {
				case <-trickle:
					return
				case <-tick.C:
					s.Emit("UserEvent", [2]string{"UserEvent", "tail"})
					tails[i]++
				}
			}
		}()
	}
	reader.until("a tail event stored for every node", everyNodeHas(sims, "UserEvent"))
	close(trickle)
	tw.Wait()

	sent := make([][]amisim.SentEvent, len(sims))
	for i, s := range sims {
		testenv.WaitSim(t, s, "every event written", func() bool { return s.SentEventCount() == base[i]+total+tails[i] })
		if s.Logins() != 1 {
			t.Fatalf("%s: %d logins: the AMI session did not survive the NATS outage", s.Node(), s.Logins())
		}
		sent[i] = sentTo(s, loginConns(s)[0])
	}
	recs := reader.until("every node's last event after the outage", allReached(sims, sent))

	if err := run.stop(); err != nil {
		t.Fatal(err)
	}
	recs = reader.all()
	var retried float64
	for i, s := range sims {
		node := s.Node()
		sessions, events, gapped := checkHistory(t, recs, node)
		if len(sessions) != 1 {
			t.Fatalf("%s: sessions %v", node, sessions)
		}
		id := sessions[0]
		n := uint64(len(sent[i]))
		checkStoredEvents(t, recs, node, id, sent[i])
		var gaps int
		for _, r := range nodeRecords(recs, node) {
			if r.Type == "gap" {
				gaps++
				if r.Reason != metrics.ReasonBufferFull {
					t.Fatalf("%s: %v: reason %q, want buffer_full", node, r, r.Reason)
				}
			}
		}
		// The outage outlasted the buffer many times over.
		if gaps == 0 || gapped[id] < duringOutage-bufferEvents {
			t.Fatalf("%s: %d gap markers covering %d events; %d events came while NATS was down with room for %d",
				node, gaps, gapped[id], duringOutage, bufferEvents)
		}
		if events[id]+gapped[id] != n {
			t.Fatalf("%s: %d stored + %d in gaps != %d sent", node, events[id], gapped[id], n)
		}
		// The stream ends the session after everything it read.
		if end := nodeRecords(recs, node); end[len(end)-1].Type != "session_end" || end[len(end)-1].LastSeq != n {
			t.Fatalf("%s: history ends with %v", node, end[len(end)-1])
		}

		rcv, pub := received(run.m, node), published(run.m, node)
		full := dropped(run.m, node, metrics.ReasonBufferFull)
		failed := dropped(run.m, node, metrics.ReasonPublishFailed)
		shut := dropped(run.m, node, metrics.ReasonShutdown)
		if rcv != n || pub != events[id] || full != gapped[id] || failed != 0 || shut != 0 || rcv != pub+full {
			t.Fatalf("%s: metrics received %d published %d dropped buffer_full %d publish_failed %d shutdown %d; "+
				"stream: %d sent, %d stored, %d in gaps", node, rcv, pub, full, failed, shut, n, events[id], gapped[id])
		}
		retried += testutil.ToFloat64(run.m.PublishRetries.WithLabelValues(node))
		if b := testutil.ToFloat64(run.m.BufferEvents.WithLabelValues(node)); b != 0 {
			t.Fatalf("%s: buffer gauge %v after the drain", node, b)
		}
	}
	// Publishes failed during the outage and were sent again with their
	// ids; the histories above hold each number once. Counted over the
	// nodes, not per node: a JetStream that answers "no responders" while it
	// shuts down makes the publisher hold every node's sends during its
	// stream check, and a send held before it ever failed is not a retry,
	// so a node can cross the outage with none (seen once in CI).
	if retried == 0 {
		t.Fatal("no publish was retried across the outage")
	}
}

// summarize shows a history as runs of consecutive events, for failures.
func summarize(recs []record) string {
	var b []byte
	var prev record
	runStart := -1
	for i, r := range recs {
		cont := i > 0 && !r.meta() && !prev.meta() && r.Node == prev.Node && r.Seq == prev.Seq+1
		if !cont {
			if runStart >= 0 && i-1 > runStart {
				b = fmt.Appendf(b, " .. %v\n", recs[i-1])
			} else if runStart >= 0 {
				b = append(b, '\n')
			}
			b = fmt.Appendf(b, "%s %v", r.Node, r)
			runStart = i
		}
		prev = r
	}
	return string(b)
}
