package ingest

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// upAndSnapshot waits until node's session k (1-based) has started and its
// snapshot is stored, and returns the session id.
func upAndSnapshot(r *streamReader, node string, k int) string {
	var id string
	r.until(fmt.Sprintf("%s session %d and its snapshot", node, k), func(recs []record) bool {
		n := 0
		for _, x := range recs {
			if x.Node != node || !x.meta() {
				continue
			}
			if x.Type == "session_start" {
				n++
				id = x.Session
			}
			if n == k && x.Type == "snapshot" && x.Session == id {
				return true
			}
		}
		return false
	})
	return id
}

// TestLosslessContent: every event the PBX wrote reaches the stream with
// every value byte for byte, repeated keys as arrays in order, on
// ami.events.<node>.<Event>, with Nats-Msg-Id <session>-<seq>; the service
// creates the stream itself.
func TestLosslessContent(t *testing.T) {
	leakCheck(t)
	ns := testenv.StartNATS(t)
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx1"})
	cfg := parseConfig(t, "nats: {url: "+ns.ClientURL()+"}\n"+testSession+nodesYAML([]*amisim.Server{sim}, nil))
	nc := connect(t, ns.ClientURL())
	reader := newStreamReader(t, nc, "AMI_EVENTS")
	run := startService(t, cfg, nc, nil)

	session := upAndSnapshot(reader, "pbx1", 1)
	if err := run.svc.Ready(); err != nil {
		t.Fatalf("Ready after the first stored message: %v", err)
	}
	base := sim.SentEventCount()
	// Values a careless encoder or reader would damage: repeated keys,
	// colons, an empty value, trailing and inner spaces, JSON
	// metacharacters, non-ASCII text.
	tricky := [][2]string{
		{"Channel", "PJSIP/100-0000002a"},
		{"ChanVariable", "AMIBUS_TAG=a:b:c"},
		{"ChanVariable", "DIALSTATUS="},
		{"ChanVariable", `QUOTE="x" \ y`},
		{"CallerIDName", "Zoë Ångström 日本"},
		{"AccountCode", ""},
		{"Padded", "  two  spaces  "},
		{"Tab", "a\tb"},
		{"Variable", "one"},
		{"Uniqueid", "pbx1-1795398116.4"},
		{"Variable", "two"},
	}
	sim.Emit("VarSet", tricky...)
	sim.Emit("UserEvent", [2]string{"UserEvent", "x"}, [2]string{"Data", "k: v"}, [2]string{"Data", ""})
	const mix = 1500
	sim.EmitEvents(mix, 0)
	testenv.WaitSim(t, sim, "every event written", func() bool { return sim.SentEventCount() == base+mix+2 })

	conns := loginConns(sim)
	if len(conns) != 1 {
		t.Fatalf("logins on the PBX: %v, want one", conns)
	}
	sent := sentTo(sim, conns[0])
	recs := reader.until("the last event", func(recs []record) bool {
		return reached(recs, "pbx1", 1, uint64(len(sent)))
	})
	n := checkSessionEvents(t, recs, "pbx1", session, sent)
	if n < mix+2 {
		t.Fatalf("compared %d events, emitted more", n)
	}
	// The tricky event, checked by hand too, so a shared mistake in the
	// expectation helper cannot hide a loss.
	var tr *record
	for i := range recs {
		if recs[i].Event == "VarSet" && fieldValue(recs[i].Fields, "Channel") == "PJSIP/100-0000002a" {
			tr = &recs[i]
		}
	}
	if tr == nil {
		t.Fatal("the tricky VarSet is not in the stream")
	}
	wantJSON := `"ChanVariable":["AMIBUS_TAG=a:b:c","DIALSTATUS=","QUOTE=\"x\" \\ y"]`
	if !strings.Contains(string(tr.Data), wantJSON) {
		t.Fatalf("repeated key not an ordered array: %s", tr.Data)
	}
	if !strings.Contains(string(tr.Data), `"Variable":["one","two"]`) {
		t.Fatalf("repeated non-adjacent key not one array: %s", tr.Data)
	}

	checkHistory(t, recs, "pbx1")
	start := recs[0]
	if start.Type != "session_start" || start.Version != "9.0.0" || start.Owner != run.svc.Instance() || start.Session != session {
		t.Fatalf("first message %+v: want session_start, version 9.0.0, owner %s", start, run.svc.Instance())
	}

	if err := run.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	recs = reader.all()
	end := recs[len(recs)-1]
	if end.Type != "session_end" || end.Reason != "closed" || end.LastSeq != uint64(len(sent)) || end.MsgID != session+"-end" {
		t.Fatalf("last message %v (%s): want session_end closed last_seq %d", end, end.MsgID, len(sent))
	}
	if r, p := received(run.m, "pbx1"), published(run.m, "pbx1"); r != uint64(len(sent)) || p != r {
		t.Fatalf("received %d published %d, the PBX sent %d", r, p, len(sent))
	}

	// The stream as the configuration describes it.
	js, _ := jetstream.New(nc)
	st, err := js.Stream(context.Background(), "AMI_EVENTS")
	if err != nil {
		t.Fatal(err)
	}
	c := st.CachedInfo().Config
	if len(c.Subjects) != 1 || c.Subjects[0] != "ami.events.>" || c.Storage != jetstream.FileStorage ||
		c.Duplicates != cfg.Stream.DuplicateWindow || c.MaxAge != cfg.Stream.MaxAge {
		t.Fatalf("stream config %+v", c)
	}
}

// TestOrderThreeNodes: three PBXs flooding at once; each node's history is
// complete, in order and numbered 1..N, with what each PBX sent.
func TestOrderThreeNodes(t *testing.T) {
	leakCheck(t)
	sims := testenv.StartFleet(t, 3, amisim.Config{})
	_, cfg, nc, reader := startRig(t, sims, "")
	run := startService(t, cfg, nc, nil)

	base := make([]int, len(sims))
	for i, s := range sims {
		upAndSnapshot(reader, s.Node(), 1)
		base[i] = s.SentEventCount()
	}
	const perNode = 3000
	var wg sync.WaitGroup
	for _, s := range sims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.EmitEvents(perNode, 0)
		}()
	}
	wg.Wait()
	sent := make([][]amisim.SentEvent, len(sims))
	for i, s := range sims {
		testenv.WaitSim(t, s, "every event written", func() bool { return s.SentEventCount() == base[i]+perNode })
		sent[i] = sentTo(s, loginConns(s)[0])
	}
	recs := reader.until("every node's last event", allReached(sims, sent))
	for i, s := range sims {
		node := s.Node()
		sessions, events, gapped := checkHistory(t, recs, node)
		if len(sessions) != 1 || gapped[sessions[0]] != 0 {
			t.Fatalf("%s: sessions %v, gaps %v", node, sessions, gapped)
		}
		checkSessionEvents(t, recs, node, sessions[0], sent[i])
		if events[sessions[0]] != uint64(len(sent[i])) {
			t.Fatalf("%s: %d events", node, events[sessions[0]])
		}
		// Interleaving across nodes is free; within a node, stream order
		// is seq order (checked above) and the stream holds nothing twice.
		waitPublished(t, run.m, node, uint64(len(sent[i])))
		if r, p := received(run.m, node), published(run.m, node); r != p || r != uint64(len(sent[i])) {
			t.Fatalf("%s: received %d published %d sent %d", node, r, p, len(sent[i]))
		}
		if d := dropped(run.m, node, metrics.ReasonBufferFull); d != 0 {
			t.Fatalf("%s: %d dropped", node, d)
		}
	}
}
