package testenv

import (
	"context"
	"net"
	"testing"

	"github.com/amibus/amibus/pkg/amisim"
)

// StartSim starts one simulated PBX over real TCP; the test's cleanup
// closes it (after the cleanups registered later, such as the sessions').
func StartSim(t testing.TB, cfg amisim.Config) *amisim.Server {
	t.Helper()
	s, err := amisim.Start(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// StartFleet starts n simulated PBXs pbx1..pbxn from base.
func StartFleet(t testing.TB, n int, base amisim.Config) []*amisim.Server {
	t.Helper()
	f, err := amisim.StartFleet(n, base)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	return f.Servers()
}

// WaitSim waits until cond holds on s (checked whenever the simulator's
// state changes), failing the test at WaitLimit.
func WaitSim(t testing.TB, s *amisim.Server, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), WaitLimit)
	defer cancel()
	if err := s.WaitUntil(ctx, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

// DeadAddr is a loopback address nothing listens on right now: connecting
// to it is refused at once, the quickest kind of PBX that is down.
func DeadAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}
