package ingest

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// snapshotOf returns the snapshot record of session.
func snapshotOf(t *testing.T, recs []record, node, session string) record {
	t.Helper()
	for _, r := range recs {
		if r.Node == node && r.Session == session && r.Type == "snapshot" {
			return r
		}
	}
	t.Fatalf("%s: no snapshot for session %s", node, session)
	return record{}
}

// snapshotChannels returns the Channel of every item of a snapshot, sorted,
// after checking each item is a CoreShowChannel list event.
func snapshotChannels(t *testing.T, snap record) []string {
	t.Helper()
	if snap.Action != "CoreShowChannels" || snap.Truncated {
		t.Fatalf("snapshot %s: action %q truncated %v", snap.Session, snap.Action, snap.Truncated)
	}
	var out []string
	for _, raw := range snap.Items {
		var item map[string]any
		if err := json.Unmarshal(raw, &item); err != nil {
			t.Fatal(err)
		}
		if item["Event"] != "CoreShowChannel" {
			t.Fatalf("snapshot item %s", raw)
		}
		ch, _ := item["Channel"].(string)
		out = append(out, ch)
	}
	slices.Sort(out)
	return out
}

// TestAMIReconnect: the PBX drops the connection, then restarts. Each time
// the stream shows session_end (with why, and the last number), then a
// session_start with a new session id and this process as owner, numbers
// starting again at 1, and a CoreShowChannels snapshot of the calls live at
// that moment.
func TestAMIReconnect(t *testing.T) {
	leakCheck(t)
	// Calls that last a minute: after their first burst of events, the
	// channel table stays put for seconds, so the snapshot has a known
	// content.
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx1", CallDuration: time.Minute, BootDelay: 10 * time.Millisecond})
	_, cfg, nc, reader := startRig(t, []*amisim.Server{sim}, "")
	run := startService(t, cfg, nc, nil)

	s1 := upAndSnapshot(reader, "pbx1", 1)
	if ch := snapshotChannels(t, snapshotOf(t, reader.recs, "pbx1", s1)); len(ch) != 0 {
		t.Fatalf("first snapshot lists %v before any call", ch)
	}

	threeCalls(t, sim)
	live := sim.LiveChannels()
	slices.Sort(live)

	sim.DropConnections()
	s2 := upAndSnapshot(reader, "pbx1", 2)
	if got := snapshotChannels(t, snapshotOf(t, reader.recs, "pbx1", s2)); !slices.Equal(got, live) {
		t.Fatalf("snapshot after reconnect lists %v, live channels %v", got, live)
	}

	sim.Restart(50 * time.Millisecond)
	s3 := upAndSnapshot(reader, "pbx1", 3)
	// A restarted PBX has no calls.
	if ch := snapshotChannels(t, snapshotOf(t, reader.recs, "pbx1", s3)); len(ch) != 0 {
		t.Fatalf("snapshot after a PBX restart lists %v", ch)
	}
	sim.Emit("UserEvent", [2]string{"UserEvent", "after-restart"})
	recs := reader.until("an event of the third session", func(recs []record) bool {
		for _, r := range recs {
			if r.Session == s3 && r.Event == "UserEvent" {
				return true
			}
		}
		return false
	})
	if err := run.stop(); err != nil {
		t.Fatal(err)
	}
	recs = reader.all()

	sessions, events, _ := checkHistory(t, recs, "pbx1")
	if !slices.Equal(sessions, []string{s1, s2, s3}) {
		t.Fatalf("sessions %v, want %v", sessions, []string{s1, s2, s3})
	}
	conns := loginConns(sim)
	if len(conns) != 3 {
		t.Fatalf("logins on conns %v, want 3", conns)
	}
	var ends []record
	for i, id := range sessions {
		if !strings.HasPrefix(id, run.svc.Instance()+"-pbx1-") || strings.Count(id, "-") != 2 {
			t.Fatalf("session id %q: want <instance>-<node>-<epoch>", id)
		}
		for _, r := range nodeRecords(recs, "pbx1") {
			switch {
			case r.Session != id:
			case r.Type == "session_start" && (r.Owner != run.svc.Instance() || r.Version != "9.0.0"):
				t.Fatalf("%v: owner %q version %q", r, r.Owner, r.Version)
			case r.Type == "session_end":
				ends = append(ends, r)
			}
		}
		// Numbers start at 1 in every session and hold exactly what the
		// PBX sent on that connection.
		checkSessionEvents(t, recs, "pbx1", id, sentTo(sim, conns[i]))
		if events[id] == 0 {
			t.Fatalf("session %s has no event", id)
		}
	}
	if len(ends) != 3 {
		t.Fatalf("session_end markers %v", ends)
	}
	if r := ends[0].Reason; r != "eof" && r != "read_error" {
		t.Fatalf("dropped connection ended with reason %q", r)
	}
	if ends[1].Reason != "shutdown" || ends[2].Reason != "closed" {
		t.Fatalf("reasons %q, %q: want shutdown (PBX restart), closed (our stop)", ends[1].Reason, ends[2].Reason)
	}
	// The snapshot follows its session_start, before any later session.
	for _, id := range sessions {
		var start, snap int
		for i, r := range nodeRecords(recs, "pbx1") {
			if r.Session == id && r.Type == "session_start" {
				start = i
			}
			if r.Session == id && r.Type == "snapshot" {
				snap = i
			}
		}
		if snap <= start {
			t.Fatalf("session %s: snapshot at %d, session_start at %d", id, snap, start)
		}
	}
	if n := nodeMetrics(run.m, "pbx1").reconnects; n != 2 {
		t.Fatalf("ami_session_reconnects_total %v, want 2", n)
	}
}

// TestSnapshotActionNeverAnswered: a PBX that never answers one snapshot
// action costs that snapshot only: the action times out, the next
// configured snapshot is taken, and events flow meanwhile.
func TestSnapshotActionNeverAnswered(t *testing.T) {
	leakCheck(t)
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx1"})
	sim.SetNeverAnswer("CoreShowChannels", true)
	_, cfg, nc, reader := startRig(t, []*amisim.Server{sim}, "ingest: {snapshot_actions: [CoreShowChannels, QueueStatus]}\n")
	startService(t, cfg, nc, nil, func(s *Service) { s.actionTimeout = 300 * time.Millisecond })

	testenv.WaitSim(t, sim, "the ingest logged in", func() bool { return sim.ActiveSessions("ami") == 1 })
	sim.Emit("UserEvent", [2]string{"UserEvent", "while-waiting"})
	recs := reader.until("the UserEvent and the QueueStatus snapshot", func(recs []record) bool {
		var ev, snap bool
		for _, r := range recs {
			ev = ev || r.Event == "UserEvent"
			snap = snap || r.Type == "snapshot"
		}
		return ev && snap
	})
	var snaps []string
	for _, r := range recs {
		if r.Type == "snapshot" {
			snaps = append(snaps, r.Action)
		}
	}
	if !slices.Equal(snaps, []string{"QueueStatus"}) {
		t.Fatalf("snapshots %v, want only QueueStatus (CoreShowChannels is never answered)", snaps)
	}
	if sim.Logins() != 1 {
		t.Fatalf("%d logins: the session was not kept", sim.Logins())
	}
}
