package session

import (
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amiwire"
)

// waitLimit bounds every wait in these tests; a wait that reaches it fails
// the test (it is a hang, not a slow machine).
const waitLimit = 15 * time.Second

// leakCheck registers goleak first, so that it runs after every other
// cleanup (sessions, simulators, peers) has stopped its goroutines.
func leakCheck(t *testing.T) {
	t.Helper()
	t.Cleanup(func() { goleak.VerifyNone(t) })
}

// eventually waits for cond where nothing signals the change (a gauge), by
// checking it every few milliseconds until waitLimit.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

// recorder is a Handler that keeps everything it is given, in order, and
// wakes the test at every change.
type recorder struct{ testenv.Log[call] }

// call is one Handler call.
type call struct {
	kind    string // start, event, end, oversized
	id      string
	seq     uint64
	name    string // event name; version for start; reason for end
	t       time.Time
	msg     *amiwire.Message
	lastSeq uint64
}

func newRecorder() *recorder { return new(recorder) }

func (r *recorder) add(x call) { r.Add(x) }

func (r *recorder) SessionStarted(id, version string, t time.Time) {
	r.add(call{kind: "start", id: id, name: version, t: t})
}

func (r *recorder) Event(id string, seq uint64, t time.Time, m *amiwire.Message) {
	r.add(call{kind: "event", id: id, seq: seq, name: string(m.Name()), t: t, msg: m.Clone()})
}

func (r *recorder) SessionEnded(id string, t time.Time, reason string, lastSeq uint64) {
	r.add(call{kind: "end", id: id, name: reason, t: t, lastSeq: lastSeq})
}

// snapshot returns a copy of what was recorded.
func (r *recorder) snapshot() []call { return r.All() }

// waitFor blocks until cond holds on the recording, woken by each change.
func (r *recorder) waitFor(t *testing.T, what string, cond func([]call) bool) []call {
	t.Helper()
	return r.WaitFor(t, what, cond)
}

// count returns how many records of kind there are.
func count(log []call, kind string) int {
	n := 0
	for _, x := range log {
		if x.kind == kind {
			n++
		}
	}
	return n
}

// countName returns how many events named name there are.
func countName(log []call, name string) int {
	n := 0
	for _, x := range log {
		if x.kind == "event" && x.name == name {
			n++
		}
	}
	return n
}
