package session

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
	"github.com/amibus/amibus/pkg/amiwire"
)

// countingHandler counts events and signals when want have arrived.
type countingHandler struct {
	n, want atomic.Int64
	started chan struct{}
	reached chan struct{}
}

func (h *countingHandler) SessionStarted(string, string, time.Time)       { close(h.started) }
func (h *countingHandler) SessionEnded(string, time.Time, string, uint64) {}
func (h *countingHandler) Event(_ string, _ uint64, _ time.Time, _ *amiwire.Message) {
	if h.n.Add(1) == h.want.Load() {
		close(h.reached)
	}
}

// startCounted starts a simulator that records nothing and a session to it
// whose Handler counts up to want events; it returns once the session is
// up. The benchmark's cleanup closes both.
func startCounted(b *testing.B, want int64, opts ...Option) (*amisim.Server, *Session, *countingHandler) {
	b.Helper()
	srv := testenv.StartSim(b, amisim.Config{RecordLimit: -1})
	h := &countingHandler{started: make(chan struct{}), reached: make(chan struct{})}
	h.want.Store(want)
	s, err := New("pbx1", srv.Addr(), append([]Option{WithCredentials("ami", "amisecret"), WithHandler(h)}, opts...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if err := s.Start(); err != nil {
		b.Fatal(err)
	}
	<-h.started
	return srv, s, h
}

// BenchmarkSessionEvents measures events from amisim over loopback TCP
// through the session's reader to a Handler that only counts them.
func BenchmarkSessionEvents(b *testing.B) {
	// FullyBooted and SuccessfulAuth come first.
	srv, _, h := startCounted(b, int64(b.N)+2)
	b.ResetTimer()
	start := time.Now()
	go srv.EmitEvents(b.N, 0)
	select {
	case <-h.reached:
	case <-time.After(5 * time.Minute):
		b.Fatalf("only %d of %d events arrived", h.n.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "events/s")
}

// BenchmarkSessionPing measures one action's round trip through Send.
func BenchmarkSessionPing(b *testing.B) {
	_, s, _ := startCounted(b, 0, WithEvents("off"))
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Send(ctx, Action{Name: "Ping"}); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
