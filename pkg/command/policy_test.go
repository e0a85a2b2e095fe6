package command

import (
	"strings"
	"testing"
)

func TestPolicy(t *testing.T) {
	tests := []struct {
		name        string
		allow, deny []string
		allowed     []string
		denied      []string
	}{
		{
			name:    "default: everything but the default deny list, in any case",
			allowed: []string{"Ping", "ping", "Originate", "CoreShowChannels", "SomeModuleAction"},
			denied:  []string{"Login", "login", "LOGIN", "Logoff", "logoff", "LOGOFF", "LogOff", "Challenge", "challenge", "Events", "EVENTS", "Filter", "filter"},
		},
		{
			name:    "deny list adds to the default",
			deny:    []string{"Command", "hangup"},
			allowed: []string{"Ping", "Originate"},
			denied:  []string{"command", "COMMAND", "Hangup", "Logoff"},
		},
		{
			name:    "allow list: only those, case-insensitively",
			allow:   []string{"Ping", "coreshowchannels"},
			allowed: []string{"ping", "PING", "CoreShowChannels"},
			denied:  []string{"Originate", "Command"},
		},
		{
			name:    "deny wins over allow, the default deny list included",
			allow:   []string{"Ping", "Logoff", "Command"},
			deny:    []string{"command"},
			allowed: []string{"Ping"},
			denied:  []string{"Logoff", "logoff", "Command"},
		},
		{
			name:   "invalid names are never allowed",
			denied: []string{"", "Ping:", "Ping\r\n", strings.Repeat("A", 65)},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := NewPolicy(tt.allow, tt.deny)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range tt.allowed {
				if !p.Allowed(a) {
					t.Errorf("%q denied, want allowed", a)
				}
			}
			for _, a := range tt.denied {
				if p.Allowed(a) {
					t.Errorf("%q allowed, want denied", a)
				}
			}
		})
	}
}

func TestNewPolicyRefusesBadNames(t *testing.T) {
	for _, tc := range []struct {
		allow, deny []string
		want        string
	}{
		{[]string{"Ping", "Bad Name"}, nil, "allow[1]"},
		{nil, []string{""}, "deny[0]"},
		{nil, []string{"Ping\r\n"}, "deny[0]"},
	} {
		_, err := NewPolicy(tc.allow, tc.deny)
		if err == nil || !strings.HasPrefix(err.Error(), tc.want+":") {
			t.Errorf("NewPolicy(%q, %q) = %v, want an error naming %s", tc.allow, tc.deny, err, tc.want)
		}
	}
}

// TestPolicyLabelIsBounded: the metric label of an action is its configured
// or well-known spelling, whatever case the requester used, and "other" for
// anything else, so requesters cannot grow the label set.
func TestPolicyLabelIsBounded(t *testing.T) {
	p, err := NewPolicy([]string{"MyCustomAction"}, []string{"Command"})
	if err != nil {
		t.Fatal(err)
	}
	for in, want := range map[string]string{
		"ping":           "Ping",
		"PING":           "Ping",
		"mycustomaction": "MyCustomAction",
		"command":        "Command",
		"LOGOFF":         "Logoff",
		"Random12345":    "other",
		"":               "other",
		"Ping:x":         "other",
	} {
		if got := p.label(in); got != want {
			t.Errorf("label(%q) = %q, want %q", in, got, want)
		}
	}
	if d := DefaultDeny(); len(d) != 5 {
		t.Fatalf("DefaultDeny() = %v", d)
	}
	DefaultDeny()[0] = "Ping" // a caller's copy cannot change the policy
	if q, _ := NewPolicy(nil, nil); q.Allowed("Login") || !q.Allowed("Ping") {
		t.Fatal("DefaultDeny returned the package's own slice")
	}
}
