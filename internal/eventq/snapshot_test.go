package eventq

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/pkg/amiwire"
)

// wanted reports whether the queue has asked for a snapshot, taking the
// signal.
func wanted(q *Queue) bool {
	select {
	case <-q.SnapshotWanted():
		return true
	default:
		return false
	}
}

var snapActions = []string{"CoreShowChannels", "BridgeList"}

func pushSnaps(q *Queue, session string) {
	for _, a := range snapActions {
		q.PushSnapshot(session, a, []*amiwire.Message{event("X", "A", a)}, t0)
	}
}

// TestSnapshotWantedAfterGapWithRoom: drops into a full buffer ask for
// nothing while it stays full; the gap marker written with the next
// accepted event asks for a snapshot, and a snapshot taken after that
// covers the loss.
func TestSnapshotWantedAfterGapWithRoom(t *testing.T) {
	// The gap is written with the next accepted event, not by time (the
	// drops are stamped now).
	q := newQ(t, WithMaxEvents(2), WithGapDelay(time.Hour))
	q.SessionStarted("s", "9.0.0", t0)
	pushSnaps(q, "s")
	if wanted(q) || q.SnapshotNeeded("s", snapActions) {
		t.Fatal("snapshot wanted before any loss")
	}
	for seq := uint64(1); seq <= 5; seq++ { // 3..5 dropped
		q.Event("s", seq, time.Now(), event("E"))
	}
	if wanted(q) {
		t.Fatal("snapshot asked for while the buffer is still full")
	}
	if !q.SnapshotNeeded("s", snapActions) {
		t.Fatal("loss after the snapshots not reported as needing one")
	}
	drain(t, q) // room again; the gap is still open
	if wanted(q) {
		t.Fatal("snapshot asked for before the gap marker was written")
	}
	q.Event("s", 6, t0, event("E")) // writes the gap marker
	if !wanted(q) {
		t.Fatal("no snapshot asked for after the gap marker")
	}
	if wanted(q) {
		t.Fatal("a second signal for the same loss")
	}
	// A snapshot whose list completed after the loss covers it, action by
	// action.
	q.PushSnapshot("s", "CoreShowChannels", nil, t0)
	if !q.SnapshotNeeded("s", snapActions) {
		t.Fatal("BridgeList's snapshot predates the loss, yet none needed")
	}
	q.PushSnapshot("s", "BridgeList", nil, t0)
	if q.SnapshotNeeded("s", snapActions) {
		t.Fatal("needed after both snapshots followed the loss")
	}
	want := []string{"gap s 3-5/3 buffer_full", "ev s/6", "snap s CoreShowChannels 0/0 after 6", "snap s BridgeList 0/0 after 6"}
	if got := drain(t, q); strings.Join(got, "|") != strings.Join(want, "|") {
		t.Fatalf("items %q, want %q", got, want)
	}
}

// TestSnapshotNeededByLossKind: an oversized event, an event JetStream
// refused, and a snapshot the budget dropped each call for a snapshot; a
// new session starts clean, and another session's losses do not count.
func TestSnapshotNeededByLossKind(t *testing.T) {
	t.Run("oversized", func(t *testing.T) {
		q := newQ(t)
		q.SessionStarted("s", "9.0.0", t0)
		pushSnaps(q, "s")
		q.EventOversized("s", 1, t0, "Big", 1<<21)
		q.Event("s", 2, t0, event("E"))
		if !wanted(q) || !q.SnapshotNeeded("s", snapActions) {
			t.Fatal("oversized event: no snapshot wanted")
		}
	})
	t.Run("publish_failed", func(t *testing.T) {
		q := newQ(t)
		q.SessionStarted("s", "9.0.0", t0)
		pushSnaps(q, "s")
		q.Event("s", 1, t0, event("E"))
		items, _ := q.TryPop(make([]Item, 0, 8))
		for i := range items {
			if items[i].Kind == KindEvent {
				q.Drop(&items[i], metrics.ReasonPublishFailed)
			} else {
				q.Release(&items[i])
			}
		}
		if !wanted(q) || !q.SnapshotNeeded("s", snapActions) {
			t.Fatal("event refused by JetStream: no snapshot wanted")
		}
	})
	t.Run("snapshot over budget", func(t *testing.T) {
		q := newQ(t, WithBudget(NewBudget(1)))
		q.SessionStarted("s", "9.0.0", t0)
		q.PushSnapshot("s", "CoreShowChannels", []*amiwire.Message{event("CoreShowChannel")}, t0)
		drain(t, q)
		if !wanted(q) || !q.SnapshotNeeded("s", snapActions[:1]) {
			t.Fatal("snapshot dropped by the budget: none wanted")
		}
	})
	t.Run("sessions", func(t *testing.T) {
		q := newQ(t)
		q.SessionStarted("s1", "9.0.0", t0)
		q.EventOversized("s1", 1, t0, "Big", 1<<21)
		q.Event("s1", 2, t0, event("E"))
		if !q.SnapshotNeeded("s1", snapActions) || q.SnapshotNeeded("other", snapActions) {
			t.Fatal("need not tied to the session")
		}
		q.SessionEnded("s1", t0, "eof", 2)
		if q.SnapshotNeeded("s1", snapActions) {
			t.Fatal("an ended session still needs a snapshot")
		}
		q.SessionStarted("s2", "9.0.0", t0)
		if q.SnapshotNeeded("s2", snapActions) {
			t.Fatal("a new session inherits the last one's losses")
		}
		q.Event("s1", 3, t0, event("E")) // a late event of s1
		q.Close()
		drain(t, q)
		if q.SnapshotNeeded("s2", snapActions) {
			t.Fatal("closed queue needs a snapshot")
		}
	})
}

// TestSnapshotRepeatNumbered: a second snapshot of an action at the same
// place (a retry with no event read since) is numbered, so its Nats-Msg-Id
// differs from the first's; after an event the numbering starts again.
func TestSnapshotRepeatNumbered(t *testing.T) {
	q := newQ(t)
	q.SessionStarted("s", "9.0.0", t0)
	q.Event("s", 1, t0, event("E"))
	q.PushSnapshot("s", "CoreShowChannels", nil, t0)
	q.PushSnapshot("s", "BridgeList", nil, t0)
	q.PushSnapshot("s", "CoreShowChannels", nil, t0)
	q.PushSnapshot("s", "CoreShowChannels", nil, t0)
	q.Event("s", 2, t0, event("E"))
	q.PushSnapshot("s", "CoreShowChannels", nil, t0)
	items, err := q.TryPop(make([]Item, 0, 16))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for i := range items {
		if items[i].Kind == KindSnapshot {
			got = append(got, fmt.Sprintf("%s@%d#%d", items[i].Action, items[i].Seq, items[i].Count))
		}
		q.Release(&items[i])
	}
	want := "CoreShowChannels@1#0 BridgeList@1#0 CoreShowChannels@1#1 CoreShowChannels@1#2 CoreShowChannels@2#0"
	if strings.Join(got, " ") != want {
		t.Fatalf("snapshots %q, want %q", strings.Join(got, " "), want)
	}
}
