package daemon

import (
	"strings"
	"testing"
)

func TestRedactURL(t *testing.T) {
	cases := []struct{ in, secret, want string }{
		{"nats://alice:s3cretpw@host:4222", "s3cretpw", "nats://redacted@host:4222"},
		{"nats://tok3nvalue@host:4222", "tok3nvalue", "nats://redacted@host:4222"},
		{"nats://a:pw1@h1:4222, nats://a:pw1@h2:4222", "pw1", "nats://redacted@h1:4222,nats://redacted@h2:4222"},
		{"nats://127.0.0.1:4222", "", "nats://127.0.0.1:4222"},
	}
	for _, c := range cases {
		got := redactURL(c.in)
		if got != c.want {
			t.Errorf("redactURL(%q) = %q, want %q", c.in, got, c.want)
		}
		if c.secret != "" && strings.Contains(got, c.secret) {
			t.Errorf("redactURL(%q) leaks the secret: %q", c.in, got)
		}
	}
}
