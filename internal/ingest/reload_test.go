package ingest

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// sessionsOf returns node's session ids in stream order, and for each the
// types of its markers.
func sessionsOf(recs []record, node string) (ids []string, markers map[string][]string) {
	markers = map[string][]string{}
	for _, r := range nodeRecords(recs, node) {
		if !r.meta() {
			continue
		}
		if r.Type == "session_start" {
			ids = append(ids, r.Session)
		}
		m := r.Type
		if r.Type == "session_end" {
			m += ":" + r.Reason
		}
		markers[r.Session] = append(markers[r.Session], m)
	}
	return ids, markers
}

// TestReloadAppliesOnlyTheDifference: a reload that adds d, removes c and
// changes b's settings starts d, ends c (reason removed) after every event
// it read is stored, restarts b alone (reason reconfigured), and leaves a
// untouched: same session, no new marker, no new snapshot, no new login.
func TestReloadAppliesOnlyTheDifference(t *testing.T) {
	leakCheck(t)
	sims := testenv.StartFleet(t, 4, amisim.Config{})
	a, b, c, d := sims[0], sims[1], sims[2], sims[3]
	ns, cfg, nc := startNATSFor(t, sims[:3], "")
	head := natsHead(ns)
	run := startService(t, cfg, nc, nil)
	rd := newStreamReader(t, connect(t, ns.ClientURL()), "AMI_EVENTS")
	for _, s := range sims[:3] {
		upAndSnapshot(rd, s.Node(), 1)
	}
	aLogins := a.Logins()

	// c has events in flight when it is removed.
	const burst = 300
	c.EmitEvents(burst, 0)
	next := parseConfig(t, head+nodesYAML([]*amisim.Server{a, b, d}, func(i int) string {
		if i == 1 {
			return "    exclude: [RTCPSent]\n" // b's own settings change
		}
		return ""
	}))
	ch, err := run.svc.Reload(context.Background(), next)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(ch.Added, []string{d.Node()}) || !slices.Equal(ch.Removed, []string{c.Node()}) || !slices.Equal(ch.Changed, []string{b.Node()}) {
		t.Fatalf("changes %+v", ch)
	}
	upAndSnapshot(rd, d.Node(), 1)
	upAndSnapshot(rd, b.Node(), 2)
	// a emits after the reload: its events land in its first session.
	a.Emit("UserEvent", [2]string{"UserEvent", "after-reload"})
	recs := rd.until("a's event after the reload and c's session_end", func(recs []record) bool {
		var aOK, cOK bool
		for _, r := range recs {
			aOK = aOK || r.Node == a.Node() && r.Event == "UserEvent"
			cOK = cOK || r.Node == c.Node() && r.Type == "session_end"
		}
		return aOK && cOK
	})

	aIDs, aMarkers := sessionsOf(recs, a.Node())
	// One snapshot per snapshot action at login, none after the reload.
	if want := append([]string{"session_start"}, slices.Repeat([]string{"snapshot"}, len(cfg.Ingest.SnapshotActions))...); len(aIDs) != 1 ||
		!slices.Equal(aMarkers[aIDs[0]], want) {
		t.Fatalf("a: sessions %v markers %v; want one session untouched", aIDs, aMarkers)
	}
	for _, r := range nodeRecords(recs, a.Node()) {
		if r.Event == "UserEvent" && r.Session != aIDs[0] {
			t.Fatalf("a's event in session %s, not %s", r.Session, aIDs[0])
		}
	}
	if a.Logins() != aLogins {
		t.Fatalf("a logged in %d times, %d before the reload", a.Logins(), aLogins)
	}
	bIDs, bMarkers := sessionsOf(recs, b.Node())
	if len(bIDs) != 2 || !slices.Contains(bMarkers[bIDs[0]], "session_end:reconfigured") {
		t.Fatalf("b: sessions %v markers %v; want it restarted (reconfigured)", bIDs, bMarkers)
	}
	// c: every event it sent is stored, then its session_end (removed).
	cIDs, _ := sessionsOf(recs, c.Node())
	_, events, gapped := checkHistory(t, recs, c.Node())
	cRecs := nodeRecords(recs, c.Node())
	end := cRecs[len(cRecs)-1]
	sent := uint64(len(sentTo(c, loginConns(c)[0])))
	if len(cIDs) != 1 || end.Type != "session_end" || end.Reason != "removed" || end.LastSeq != sent ||
		events[cIDs[0]] != sent || gapped[cIDs[0]] != 0 {
		t.Fatalf("c: last %v; %d events stored, %d gapped, the PBX sent %d", end, events[cIDs[0]], gapped[cIDs[0]], sent)
	}
	if sent < burst {
		t.Fatalf("c sent %d events, want at least %d", sent, burst)
	}
	if len(c.Received()) == 0 || !strings.EqualFold(c.Received()[len(c.Received())-1].Name, "Logoff") {
		t.Fatal("c's session did not log off")
	}
}

// TestReloadRefusedChangesNothing: a file that changes a setting the
// running process cannot apply is refused as a whole, naming the field;
// the nodes it would add or remove are not touched.
func TestReloadRefusedChangesNothing(t *testing.T) {
	leakCheck(t)
	sims := testenv.StartFleet(t, 2, amisim.Config{})
	ns, cfg, nc := startNATSFor(t, sims[:1], "")
	head := natsHead(ns)
	run := startService(t, cfg, nc, nil)
	rd := newStreamReader(t, connect(t, ns.ClientURL()), "AMI_EVENTS")
	upAndSnapshot(rd, sims[0].Node(), 1)

	for field, extra := range map[string]string{
		"http.listen":       "http: {listen: \"127.0.0.1:1\"}\n",
		"stream.storage":    "stream: {storage: memory}\n",
		"ingest.ha.enabled": "ingest: {ha: {enabled: true}}\n",
	} {
		_, err := run.svc.Reload(context.Background(), parseConfig(t, head+extra+nodesYAML(sims[1:], nil)))
		if !errors.Is(err, ErrReloadRefused) || !strings.Contains(err.Error(), field) {
			t.Fatalf("%s: %v", field, err)
		}
	}
	running := run.svc.pool.Nodes()
	if !slices.Equal(running, []string{sims[0].Node()}) || sims[1].Logins() != 0 || sims[0].Logins() != 1 {
		t.Fatalf("running %v; logins %d and %d", running, sims[0].Logins(), sims[1].Logins())
	}
	if fixed := config.Fixed(cfg, cfg, config.BinaryIngest); len(fixed) != 0 {
		t.Fatal(fixed)
	}
}

// TestReloadBeforeRun: the reloader starts before Run (a SIGHUP or a
// ConfigMap swap at start-up). A reload applied then changes the list Run
// starts, and starts or stops nothing itself: Run starts the added node
// once, and neither fails nor logs the node in twice; the removed one,
// never started, is not reported as handed over with events lost.
func TestReloadBeforeRun(t *testing.T) {
	leakCheck(t)
	sims := testenv.StartFleet(t, 3, amisim.Config{})
	ns, cfg, nc := startNATSFor(t, []*amisim.Server{sims[0], sims[2]}, "")
	head := natsHead(ns)
	next := parseConfig(t, head+nodesYAML(sims[:2], nil))
	run, logs := startServiceLogged(t, cfg, nc, func(svc *Service) {
		ch, err := svc.Reload(context.Background(), next)
		if err != nil || !slices.Equal(ch.Added, []string{sims[1].Node()}) || !slices.Equal(ch.Removed, []string{sims[2].Node()}) {
			t.Fatalf("reload before Run: %+v, %v", ch, err)
		}
	})
	rd := newStreamReader(t, connect(t, ns.ClientURL()), "AMI_EVENTS")
	for _, s := range sims[:2] {
		upAndSnapshot(rd, s.Node(), 1)
	}
	if err := run.stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	if n := sims[1].Logins(); n != 1 {
		t.Fatalf("the added node logged in %d times, want 1", n)
	}
	if n := sims[2].Logins(); n != 0 {
		t.Fatalf("the removed node logged in %d times", n)
	}
	if l := logs.FilterMessageSnippet("handed over").All(); len(l) != 0 {
		t.Fatalf("a node that never ran reported: %v", l[0].ContextMap())
	}
}
