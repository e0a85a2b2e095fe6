package bench

import (
	"context"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/state"
	"github.com/amibus/amibus/internal/testenv"
)

// BenchmarkStateMemory100kInProcess is BenchmarkStateMemory100k with the
// service (state.Service, as cmd/ami-state runs it) in the benchmark's
// process, where its heap can be profiled: AMIBUS_BENCH_HEAPPROF=<file>
// writes a heap profile once everything is flushed, after a GC (run with
// -memprofilerate 8192 for a finer one). The heap figure it reports
// includes the embedded nats-server's growth; the profile tells them apart
// (go tool pprof -sample_index=inuse_space -top -focus 'amibus|nats%2ego').
// The RSS target is measured on the binary, not here.
func BenchmarkStateMemory100kInProcess(b *testing.B) {
	emb := testenv.StartNATS(b)
	last := seedMemory100k(b, emb.ClientURL())
	var top uint64
	for _, s := range last {
		top = max(top, s)
	}
	js, err := jetstream.New(connect(b, emb.ClientURL(), "bench-state"))
	if err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	var m0 runtime.MemStats
	runtime.ReadMemStats(&m0)
	b.ResetTimer()
	svc, err := state.New(js.Conn(), js, state.Config{FlushInterval: stateFlush, Storage: jetstream.FileStorage})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}()
	deadline := time.After(5 * waitLimit)
	for {
		ch, at := svc.Flushed()
		if at >= top {
			break
		}
		select {
		case <-ch:
		case <-deadline:
			b.Fatalf("flushed to %d of %d", at, top)
		}
	}
	b.StopTimer()
	runtime.GC()
	var m1 runtime.MemStats
	runtime.ReadMemStats(&m1)
	b.ReportMetric(float64(int64(m1.HeapAlloc)-int64(m0.HeapAlloc))/mib, "heap-growth-MiB")
	if path := os.Getenv("AMIBUS_BENCH_HEAPPROF"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			b.Fatal(err)
		}
		defer func() { _ = f.Close() }()
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			b.Fatal(err)
		}
	}
}
