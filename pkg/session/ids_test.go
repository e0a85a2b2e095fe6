package session

import (
	"strings"
	"testing"

	"github.com/amibus/amibus/pkg/amiwire"
)

func TestActionIDFitsAndIsUnique(t *testing.T) {
	long := strings.Repeat("n", 200)
	tests := []struct {
		name, instance, node string
		shortened            bool
	}{
		{"short node", "abcd1234", "pbx1", false},
		{"max instance", strings.Repeat("i", maxInstanceLen), "pbx-frankfurt-01", false},
		{"long node", "abcd1234", long, true},
		{"long node, max instance", strings.Repeat("i", maxInstanceLen), long, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, b := newIDs(tt.instance, tt.node), newIDs(tt.instance, tt.node)
			if a.session == b.session {
				t.Fatalf("two connections share session id %q", a.session)
			}
			if want := tt.instance + "-" + tt.node + "-"; !strings.HasPrefix(a.session, want) {
				t.Errorf("session id %q does not start with %q", a.session, want)
			}
			a.counter.Store(^uint64(0) - 1) // the widest counter there is
			id := a.next()
			if len(id) > maxActionIDLen {
				t.Errorf("ActionID %q is %d chars, over %d", id, len(id), maxActionIDLen)
			}
			if got := strings.Contains(id, "."+tt.node+"."); got == tt.shortened {
				t.Errorf("ActionID %q: node kept whole = %v, want %v", id, got, !tt.shortened)
			}
			if !strings.HasPrefix(id, tt.instance+".") {
				t.Errorf("ActionID %q does not start with the instance", id)
			}
			if a.next() == id {
				t.Error("counter did not advance")
			}
		})
	}
}

func TestLongNodesSharingAPrefixGetDistinctIDs(t *testing.T) {
	base := strings.Repeat("x", 100)
	a, b := newIDs("inst", base+"a"), newIDs("inst", base+"b")
	pa := a.prefix[:strings.LastIndexByte(a.prefix[:len(a.prefix)-1], '.')]
	pb := b.prefix[:strings.LastIndexByte(b.prefix[:len(b.prefix)-1], '.')]
	if pa == pb {
		t.Fatalf("nodes differing only past the cut share the ActionID node part %q", pa)
	}
}

func TestProcessInstanceIsAToken(t *testing.T) {
	id := ProcessInstance()
	if len(id) == 0 || len(id) > maxInstanceLen || !amiwire.ValidName(id) {
		t.Fatalf("ProcessInstance() = %q, want 1..%d of [A-Za-z0-9_-]", id, maxInstanceLen)
	}
}
