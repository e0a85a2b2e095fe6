package session

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestNewValidates(t *testing.T) {
	const secret = "s3cr3t-value"
	creds := WithCredentials("ami", secret)
	tests := []struct {
		name      string
		node      string
		addr      string
		opts      []Option
		wantInErr string // "" means New must succeed
	}{
		{"ok", "pbx1", "127.0.0.1:5038", []Option{creds}, ""},
		{"ok md5 and class mask", "pbx_1-a", "pbx.example:5038", []Option{creds, WithAuth(AuthMD5), WithEvents("system,call")}, ""},
		{"no credentials", "pbx1", "127.0.0.1:5038", nil, "credentials: missing"},
		{"node with dot", "pbx.1", "127.0.0.1:5038", []Option{creds}, `node "pbx.1"`},
		{"empty node", "", "127.0.0.1:5038", []Option{creds}, `node ""`},
		{"no port", "pbx1", "127.0.0.1", []Option{creds}, "address"},
		{"empty host", "pbx1", ":5038", []Option{creds}, "want host:port"},
		{"empty username", "pbx1", "h:1", []Option{WithCredentials("", secret)}, "username: empty"},
		{"secret with LF", "pbx1", "h:1", []Option{WithCredentials("ami", "a\nEvents: off")}, "secret: contains CR, LF or NUL"},
		{"secret too long", "pbx1", "h:1", []Option{WithCredentials("ami", strings.Repeat("x", 1100))}, "secret: too long"},
		{"empty secret", "pbx1", "h:1", []Option{WithCredentials("ami", "")}, "secret: empty"},
		{"bad events", "pbx1", "h:1", []Option{creds, WithEvents("on,")}, "events"},
		{"upper-case class", "pbx1", "h:1", []Option{creds, WithEvents("System")}, "events"},
		{"zero dial timeout", "pbx1", "h:1", []Option{creds, WithDialTimeout(0)}, "dial_timeout"},
		{"negative ping", "pbx1", "h:1", []Option{creds, WithKeepalive(-time.Second, time.Second)}, "ping_interval"},
		{"backoff max < initial", "pbx1", "h:1", []Option{creds, WithBackoff(time.Second, time.Millisecond)}, "backoff_max"},
		{"zero pending", "pbx1", "h:1", []Option{creds, WithMaxPending(0)}, "max_pending"},
		{"reader cap too big", "pbx1", "h:1", []Option{creds, WithReaderLimits(2<<30, 10)}, "max_message_bytes"},
		{"zero list events", "pbx1", "h:1", []Option{creds, WithAnswerLimits(1, 0)}, "max_list_events"},
		{"bad instance", "pbx1", "h:1", []Option{creds, WithInstance("a.b")}, "instance"},
		{"long instance", "pbx1", "h:1", []Option{creds, WithInstance(strings.Repeat("a", 17))}, "instance"},
		{"nil limiter", "pbx1", "h:1", []Option{creds, WithDialLimiter(nil)}, "dial limiter"},
		{"bad auth", "pbx1", "h:1", []Option{creds, WithAuth(7)}, "auth"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := New(tt.node, tt.addr, tt.opts...)
			if tt.wantInErr == "" {
				if err != nil {
					t.Fatalf("New: %v", err)
				}
				s.Close()
				return
			}
			if err == nil {
				s.Close()
				t.Fatalf("New succeeded, want an error containing %q", tt.wantInErr)
			}
			if !strings.Contains(err.Error(), tt.wantInErr) {
				t.Errorf("error %q does not contain %q", err, tt.wantInErr)
			}
			if strings.Contains(err.Error(), "s3cr3t") || strings.Contains(err.Error(), "Events: off") {
				t.Errorf("error %q quotes the secret", err)
			}
		})
	}
}

func TestConfigNeverPrintsTheSecret(t *testing.T) {
	const secret = "hunter2-do-not-print"
	s, err := New("pbx1", "127.0.0.1:5038", WithCredentials("ami", secret))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	cfg := s.Config()
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(verb, cfg); strings.Contains(out, secret) {
			t.Errorf("fmt %s of Config prints the secret: %s", verb, out)
		}
		if out := fmt.Sprintf(verb, &cfg); strings.Contains(out, secret) {
			t.Errorf("fmt %s of *Config prints the secret: %s", verb, out)
		}
	}
}

func TestSendBeforeStartAndAfterClose(t *testing.T) {
	s, err := New("pbx1", "127.0.0.1:5038", WithCredentials("ami", "x"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(t.Context(), Action{Name: "Ping"}); err != ErrNotConnected {
		t.Errorf("Send before Start: %v, want ErrNotConnected", err)
	}
	s.Close()
	if _, err := s.Send(t.Context(), Action{Name: "Ping"}); err != ErrClosed {
		t.Errorf("Send after Close: %v, want ErrClosed", err)
	}
	if err := s.Start(); err != ErrClosed {
		t.Errorf("Start after Close: %v, want ErrClosed", err)
	}
}
