package config

import (
	"fmt"
	"strings"
	"testing"
)

// TestUpperBounds: each upper bound is accepted at the limit and refused,
// naming its field, one past it.
func TestUpperBounds(t *testing.T) {
	const gib = 1 << 30 // amiwire.MaxBytesLimit
	cases := []struct {
		field string
		limit int64
		yaml  func(n int64) string // the configuration with the field at n
	}{
		{"stream.replicas", 5, func(n int64) string { return fmt.Sprintf("stream: {replicas: %d}\n", n) }},
		{"state.replicas", 5, func(n int64) string { return fmt.Sprintf("state: {replicas: %d}\n", n) }},
		{"actor.max_pending", 100000, func(n int64) string { return fmt.Sprintf("actor: {max_pending: %d}\n", n) }},
		// max_answer_bytes must be >= max_message_bytes: each is tested
		// with the other at the limit.
		{"session.max_message_bytes", gib, func(n int64) string {
			return fmt.Sprintf("session: {max_message_bytes: %d}\nactor: {max_answer_bytes: %d}\n", n, gib)
		}},
		{"actor.max_answer_bytes", gib, func(n int64) string {
			return fmt.Sprintf("session: {max_message_bytes: %d}\nactor: {max_answer_bytes: %d}\n", gib, n)
		}},
	}
	for _, c := range cases {
		t.Run(c.field, func(t *testing.T) {
			if _, err := Parse([]byte(validNodes+c.yaml(c.limit)), WithEnv(noEnv)); err != nil {
				t.Errorf("at the limit %d: %v", c.limit, err)
			}
			_, err := Parse([]byte(validNodes+c.yaml(c.limit+1)), WithEnv(noEnv))
			if err == nil {
				t.Fatalf("%d (limit + 1) accepted", c.limit+1)
			}
			if !strings.Contains(err.Error(), c.field+": ") {
				t.Errorf("%d (limit + 1): error does not name %s: %v", c.limit+1, c.field, err)
			}
		})
	}
}
