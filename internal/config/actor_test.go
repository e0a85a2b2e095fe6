package config

import (
	"strings"
	"testing"
	"time"
)

// TestActorSessionSettings: actor.sessions_per_node, extra_session_idle
// and body_form parse, and each range holds at its limits and fails one
// step past them with the field named.
func TestActorSessionSettings(t *testing.T) {
	ok := []struct {
		yaml string
		want func(Actor) bool
	}{
		{"actor: {sessions_per_node: 1}\n", func(a Actor) bool { return a.SessionsPerNode == 1 }},
		{"actor: {sessions_per_node: 16}\n", func(a Actor) bool { return a.SessionsPerNode == MaxSessionsPerNode }},
		{"actor: {extra_session_idle: 1s}\n", func(a Actor) bool { return a.ExtraSessionIdle == time.Second }},
		{"actor: {extra_session_idle: 1h}\n", func(a Actor) bool { return a.ExtraSessionIdle == time.Hour }},
		{"actor: {body_form: false}\n", func(a Actor) bool { return !a.BodyForm }},
	}
	for _, c := range ok {
		cfg, err := Parse([]byte(validNodes + c.yaml))
		if err != nil {
			t.Errorf("%q: %v", c.yaml, err)
			continue
		}
		if !c.want(cfg.Actor) {
			t.Errorf("%q: parsed %+v", c.yaml, cfg.Actor)
		}
	}
	bad := []struct{ yaml, want string }{
		{"actor: {sessions_per_node: 0}\n", "actor.sessions_per_node: must be between 1 and 16, got 0"},
		{"actor: {sessions_per_node: 17}\n", "actor.sessions_per_node: must be between 1 and 16, got 17"},
		{"actor: {extra_session_idle: 999ms}\n", "actor.extra_session_idle: must be between 1s and 1h0m0s, got 999ms"},
		{"actor: {extra_session_idle: 1h0m1s}\n", "actor.extra_session_idle: must be between 1s and 1h0m0s, got 1h0m1s"},
		{"actor: {body_form: sometimes}\n", "actor.body_form"},
	}
	for _, c := range bad {
		_, err := Parse([]byte(validNodes + c.yaml))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.yaml, err, c.want)
		}
	}
}
