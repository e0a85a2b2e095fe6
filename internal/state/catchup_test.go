package state

import (
	"fmt"
	"testing"

	"github.com/amibus/amibus/pkg/command"
)

// A replica that takes a node over loads keys the previous owner wrote
// after its last checkpoint; until its replay reaches them, the node's
// keys and status describe no single moment, and a whole-state answer
// must not be given (seen in TestTruthOutage: status seq 368 with channels
// at 446).
func TestLoadedAheadOfCheckpointIsCatchingUp(t *testing.T) {
	n := NewNode("pbx1")
	n.Load(&Status{Seq: 368})
	n.Load(&Channel{Uniqueid: "1.1", Seq: 446})
	n.Load(&Queue{Name: "support", Seq: 441})
	if to, ok := n.CatchingUp(); !ok || to != 446 {
		t.Fatalf("CatchingUp = %d, %v; want 446, true", to, ok)
	}
	n.Load(&Status{Seq: 446})
	if _, ok := n.CatchingUp(); ok {
		t.Fatal("still catching up once the status reached the loaded keys")
	}
	if got := codeOf(fmt.Errorf("%w: pbx1", ErrCatchingUp)); got != command.CodeUnavailable {
		t.Fatalf("code %q, want %q", got, command.CodeUnavailable)
	}
}
