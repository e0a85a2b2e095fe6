package bench

import (
	"math"
	"sync"
	"testing"
	"time"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// floodBufferBytes is ingest.buffer_bytes in the memory benchmark, the
// issue's example of 64 MiB; the target is RSS <= it + 64 MiB.
const floodBufferBytes = 64 * mib

// BenchmarkIngestMemoryNATSDown floods ami-ingest (a subprocess) with
// events from one simulated PBX, as fast as it reads them, while its NATS
// server is down, for AMIBUS_BENCH_FLOOD (default 60s, 10s under -short),
// and reports the process's peak RSS (VmHWM) against buffer_bytes + 64
// MiB. buffer_events is set high (1,000,000) so that the byte budget is the
// cap that binds, and the simulator's writetimeout is raised
// (floodWriteTimeout) so that the flood never pauses for a reconnect. b.N
// is ignored (one flood per run).
func BenchmarkIngestMemoryNATSDown(b *testing.B) {
	flood := window(b, "AMIBUS_BENCH_FLOOD", 60*time.Second, 10*time.Second)
	sim := startFleetConfig(b, 1, amisim.Config{WriteTimeout: floodWriteTimeout})[0]
	p := startIngestProc(b, configYAML(downNATS(b), []*amisim.Server{sim}, `http:
  listen: 127.0.0.1:0
ingest:
  buffer_bytes: 67108864
  buffer_events: 1000000
  drain_timeout: 1s
`))
	if err := sim.WaitUntil(ctxT(b), func() bool { return sim.ActiveSessions("ami") == 1 }); err != nil {
		b.Fatalf("ami-ingest did not log in: %v\n%s", err, p.lastLines())
	}
	before := sumMetric(p.metrics(b), "ami_events_received_total")

	b.ResetTimer()
	rss := sampleRSS(p.Pid(), 250*time.Millisecond)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		// Returns when the simulator closes, after the window.
		sim.EmitEvents(math.MaxInt, 0)
	}()
	<-time.After(flood)
	maxSampled, mem, text := p.finishMemory(b, rss)
	b.StopTimer()
	// The flood ends with the simulator (EmitEvents returns when it closes).
	_ = sim.Close()
	wg.Wait()

	received := sumMetric(text, "ami_events_received_total") - before
	dropped := sumMetric(text, "ami_events_dropped_total", `reason="buffer_full"`)
	buffered := sumMetric(text, "ami_buffer_bytes")
	if dropped == 0 || buffered < floodBufferBytes/2 {
		b.Fatalf("the flood did not fill the buffer (received %v, dropped %v, buffer %v bytes): nothing measured", received, dropped, buffered)
	}
	limit := float64(floodBufferBytes + 64*mib)
	b.ReportMetric(float64(mem.HWM)/mib, "peak-RSS-MiB")
	b.ReportMetric(float64(maxSampled)/mib, "max-sampled-RSS-MiB")
	b.ReportMetric(limit/mib, "limit-MiB")
	b.ReportMetric(buffered/mib, "buffer-MiB")
	b.ReportMetric(received/flood.Seconds(), "events/s-read")
	b.ReportMetric(dropped/received, "dropped-fraction")
	verdict := "PASS"
	if float64(mem.HWM) > limit {
		verdict = "MISS"
	}
	b.Logf("%s: peak RSS %.1f MiB, limit %.0f MiB (buffer_bytes 64 MiB + 64 MiB); %.0f events read in %v, %.0f dropped (buffer_full)",
		verdict, float64(mem.HWM)/mib, limit/mib, received, flood, dropped)
}

// downNATS is the URL of a NATS server that is not there: a port that was
// free a moment ago, on which connections are refused.
func downNATS(b *testing.B) string {
	b.Helper()
	return "nats://" + testenv.DeadAddr(b)
}
