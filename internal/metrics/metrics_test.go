package metrics

import (
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// gathered touches every node-labelled collector as the shared session
// code does, and returns the family names the registry exports.
func gathered(t *testing.T, m *Metrics) map[string]bool {
	t.Helper()
	m.SessionUp.WithLabelValues("pbx1").Inc()
	m.ActionsPending.WithLabelValues("pbx1")
	m.LateResponses.WithLabelValues("pbx1")
	m.ActionsOversized.WithLabelValues("pbx1")
	m.ExtraSessionsRefused.WithLabelValues("pbx1")
	m.Actions.WithLabelValues("pbx1", "Ping", "ok")
	m.EventsReceived.WithLabelValues("pbx1")
	m.BufferEvents.WithLabelValues("pbx1")
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := make(map[string]bool, len(mfs))
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	return names
}

// TestFamiliesPerBinary: ami-ingest exports no action family and ami-actor
// no event family, though the session code resolves action counters in
// both; both export the session and process families.
func TestFamiliesPerBinary(t *testing.T) {
	ingest := gathered(t, New(ForBinary("ami-ingest")))
	actor := gathered(t, New(ForBinary("ami-actor")))
	all := gathered(t, New())
	for name := range all {
		isAction := strings.HasPrefix(name, "ami_action") || strings.HasPrefix(name, "ami_actor_")
		isEvent := strings.HasPrefix(name, "ami_events_") || strings.HasPrefix(name, "ami_buffer_")
		if isAction && ingest[name] {
			t.Errorf("ami-ingest exports %s", name)
		}
		if isEvent && actor[name] {
			t.Errorf("ami-actor exports %s", name)
		}
	}
	for _, name := range []string{"ami_session_up", "ami_log_lines_dropped_total", "go_goroutines"} {
		if !ingest[name] || !actor[name] {
			t.Errorf("%s: ingest %v, actor %v; want both", name, ingest[name], actor[name])
		}
	}
	for _, name := range []string{"ami_actions_pending", "ami_action_late_responses_total", "ami_action_answers_oversized_total", "ami_actor_extra_sessions_refused_total"} {
		if !actor[name] {
			t.Errorf("ami-actor does not export %s", name)
		}
	}
	if !ingest["ami_events_received_total"] {
		t.Error("ami-ingest does not export ami_events_received_total")
	}
}
