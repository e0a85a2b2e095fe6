package session

import (
	"errors"
	"testing"
	"time"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
	"github.com/amibus/amibus/pkg/amiwire"
)

// TestConnectFailuresAreCoalesced: while the PBX resets every connection,
// the session logs the first failure and then nothing until LogInterval has
// passed; when it gets in, one line says how many attempts had failed.
func TestConnectFailuresAreCoalesced(t *testing.T) {
	leakCheck(t)
	srv := testenv.StartSim(t, amisim.Config{})
	srv.SetRefuse(true)
	logger, logs := observedLogger()
	_, rec, _ := startSession(t, srv.Addr(), WithLogger(logger), WithLogInterval(time.Hour),
		WithBackoff(time.Millisecond, 5*time.Millisecond))
	// A refused connection is not a change WaitUntil wakes on.
	eventually(t, "20 refused attempts", func() bool { return srv.Stats().Refused >= 20 })
	srv.SetRefuse(false)
	waitStarts(t, rec, 1)
	refused := srv.Stats().Refused

	if n := logs.FilterMessage("AMI connection attempt failed").Len(); n != 1 {
		t.Errorf("%d failure lines for %d failed attempts, want 1 within the log interval", n, refused)
	}
	up := logs.FilterMessage("AMI session up").All()
	if len(up) != 1 {
		t.Fatalf("%d session-up lines, want 1", len(up))
	}
	if got := up[0].ContextMap()["failed_attempts_before"]; got != refused {
		t.Errorf("session-up line reports %v failed attempts, the PBX refused %d", got, refused)
	}
}

// TestInjectionIsRefusedBeforeTheWire: an action that could smuggle a
// header, or that names its own ActionID, fails with ErrInvalidAction and
// nothing of it reaches the PBX.
func TestInjectionIsRefusedBeforeTheWire(t *testing.T) {
	leakCheck(t)
	srv, s, _ := upSession(t, amisim.Config{})
	tests := []struct {
		name  string
		a     Action
		cause error
	}{
		{"CRLF in a value", Action{Name: "Ping", Headers: []Header{{Key: "X", Value: "1\r\nAction: Logoff"}}}, amiwire.ErrInvalidValue},
		{"LF in a value", Action{Name: "Ping", Headers: []Header{{Key: "X", Value: "1\nAction: Logoff"}}}, amiwire.ErrInvalidValue},
		{"colon in a key", Action{Name: "Ping", Headers: []Header{{Key: "Action: Logoff", Value: "x"}}}, amiwire.ErrInvalidKey},
		{"caller's ActionID", Action{Name: "Ping", Headers: []Header{{Key: "ActionID", Value: "mine"}}}, amiwire.ErrInvalidKey},
		{"empty name", Action{}, amiwire.ErrEmptyAction},
		{"CR in the name", Action{Name: "Ping\r\nAction: Logoff"}, amiwire.ErrInvalidValue},
	}
	for _, tt := range tests {
		_, err := s.Send(ctxTimeout(t, waitLimit), tt.a)
		if !errors.Is(err, ErrInvalidAction) || !errors.Is(err, tt.cause) {
			t.Errorf("%s: %v, want ErrInvalidAction wrapping %v", tt.name, err, tt.cause)
		}
	}
	// Only what the session itself sent reached the PBX.
	if _, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "Ping"}); err != nil {
		t.Fatal(err)
	}
	for _, a := range srv.Received() {
		if a.Name != "Login" && a.Name != "Ping" || len(a.Headers) > 6 {
			t.Errorf("the PBX received %s %v", a.Name, a.Headers)
		}
	}
	if n := len(received(srv, "Ping")); n != 1 {
		t.Errorf("%d Pings reached the PBX, want only the valid one", n)
	}
}
