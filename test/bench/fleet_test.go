package bench

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// procHTTP lets an ami-ingest subprocess serve /metrics on a free port.
const procHTTP = "http:\n  listen: 127.0.0.1:0\n"

// BenchmarkIngestIdle200 measures what 200 connected, idle AMI sessions
// cost: ami-ingest (a subprocess) with 200 simulated PBXs that send no
// events, against an embedded nats-server in this process. Once every
// session is up and has published its snapshot (and /metrics shows
// ami_session_up summing to 200), the process's CPU time (utime+stime from
// /proc) is read over AMIBUS_BENCH_IDLE (default 30s, 10s under -short).
// Target: under 1% of one core. b.N is ignored (one window per run).
func BenchmarkIngestIdle200(b *testing.B) {
	const nodes = 200
	measure := window(b, "AMIBUS_BENCH_IDLE", 30*time.Second, 10*time.Second)
	raiseFileLimit(b, 4096)
	_, _, p := startFleetRig(b, nodes)
	if up := sumMetric(p.metrics(b), "ami_session_up"); up != nodes {
		b.Fatalf("ami_session_up sums to %v, want %d", up, nodes)
	}

	cpu, wall, mem, text := p.idleWindow(b, measure)
	if up := sumMetric(text, "ami_session_up"); up != nodes {
		b.Fatalf("after the window ami_session_up sums to %v, want %d", up, nodes)
	}
	if n := sumMetric(text, "ami_session_reconnects_total"); n != 0 {
		b.Fatalf("%v reconnects during the window", n)
	}
	pct := 100 * cpu.Seconds() / wall.Seconds()
	b.ReportMetric(pct, "%-of-one-core")
	b.ReportMetric(float64(cpu.Milliseconds()), "cpu-ms")
	b.ReportMetric(float64(mem.RSS)/mib, "RSS-MiB")
	verdict := "PASS"
	if pct >= 1 {
		verdict = "MISS"
	}
	b.Logf("%s: %d idle sessions used %v of CPU in %v: %.3f%% of one core (target < 1%%); RSS %.1f MiB",
		verdict, nodes, cpu, wall.Round(time.Millisecond), pct, float64(mem.RSS)/mib)
}

// BenchmarkIngestScale1000 runs ami-ingest (a subprocess) with 1000
// simulated PBXs sending 10 events/s each (10,000 events/s in all, node
// starts spread over 100 ms) for AMIBUS_BENCH_SCALE (default 30s, 10s
// under -short), into an embedded nats-server in this process. It reports
// the process's peak RSS (target under 256 MiB) and CPU use, and fails if
// an event was lost. b.N is ignored (one window per run).
func BenchmarkIngestScale1000(b *testing.B) {
	const nodes, rate = 1000, 10
	measure := window(b, "AMIBUS_BENCH_SCALE", 30*time.Second, 10*time.Second)
	// 1000 listeners and their 1000 accepted sockets here, 1000 AMI
	// sockets in ami-ingest, which inherits the limit.
	raiseFileLimit(b, 8192)
	sims, obs, p := startFleetRig(b, nodes)
	perNode := int(rate * measure.Seconds())
	// Subscribed after every snapshot: the events of the logins
	// (FullyBooted) were published before them and are not counted.
	counted := countEvents(b, obs, "ami", nodes*perNode)
	startMem, err := readProcMem(p.Pid())
	if err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	rss := sampleRSS(p.Pid(), 500*time.Millisecond)
	c0, t0 := mustCPU(b, p.Pid()), time.Now()
	var wg sync.WaitGroup
	for i, s := range sims {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Spread the nodes' 100 ms ticks instead of 1000 events at once.
			<-time.After(time.Duration(i) * time.Second / rate / nodes)
			s.EmitEvents(perNode, rate)
		}()
	}
	wg.Wait()
	c1, t1 := mustCPU(b, p.Pid()), time.Now()
	counted.wait(b, func() string { return scaleDiag(p.metrics(b), sims) })
	b.StopTimer()
	maxSampled, mem, text := p.finishMemory(b, rss)
	received := sumMetric(text, "ami_events_received_total")
	dropped := sumMetric(text, "ami_events_dropped_total")
	if want := float64(nodes * perNode); received < want || dropped != 0 {
		b.Fatalf("received %v events (want %v), dropped %v", received, want, dropped)
	}
	pct := 100 * (c1 - c0).Seconds() / t1.Sub(t0).Seconds()
	b.ReportMetric(float64(mem.HWM)/mib, "peak-RSS-MiB")
	b.ReportMetric(float64(maxSampled)/mib, "max-sampled-RSS-MiB")
	b.ReportMetric(float64(startMem.RSS)/mib, "RSS-before-traffic-MiB")
	b.ReportMetric(pct, "%-of-one-core")
	b.ReportMetric(float64(nodes*perNode)/t1.Sub(t0).Seconds(), "events/s")
	b.ReportMetric(sumMetric(text, "ami_events_published_total"), "published")
	verdict := "PASS"
	if mem.HWM >= 256*mib {
		verdict = "MISS"
	}
	b.Logf("%s: %d nodes, %d events in %v; peak RSS %.1f MiB (target < 256 MiB), CPU %.1f%% of one core",
		verdict, nodes, nodes*perNode, t1.Sub(t0).Round(time.Millisecond), float64(mem.HWM)/mib, pct)
}

func mustCPU(b *testing.B, pid int) time.Duration {
	b.Helper()
	d, err := cpuTime(pid)
	if err != nil {
		b.Fatal(err)
	}
	return d
}

// scaleDiag sums the ingest's event accounting and the simulators' drops
// and connections, for a failure message.
func scaleDiag(metrics string, sims []*amisim.Server) string {
	var st amisim.Stats
	for _, s := range sims {
		x := s.Stats()
		st.Accepted += x.Accepted
		st.SlowClientDrops += x.SlowClientDrops
		st.QueueFullDrops += x.QueueFullDrops
		st.EventsBroadcast += x.EventsBroadcast
	}
	return fmt.Sprintf("ingest: received %v published %v dropped %v retries %v reconnects %v buffered %v; "+
		"simulators: accepted %d connections for %d nodes, slow-client drops %d, queue-full drops %d, events broadcast %d",
		sumMetric(metrics, "ami_events_received_total"), sumMetric(metrics, "ami_events_published_total"),
		sumMetric(metrics, "ami_events_dropped_total"), sumMetric(metrics, "ami_publish_retries_total"),
		sumMetric(metrics, "ami_session_reconnects_total"), sumMetric(metrics, "ami_buffer_events"),
		st.Accepted, len(sims), st.SlowClientDrops, st.QueueFullDrops, st.EventsBroadcast)
}

// startFleetRig starts NATS, n simulated PBXs, an observer connection and
// ami-ingest as a subprocess; it returns once every node's snapshot is
// stored (every session up).
func startFleetRig(b *testing.B, n int) ([]*amisim.Server, *nats.Conn, *mainProc) {
	b.Helper()
	emb := testenv.StartNATS(b)
	sims := startFleet(b, n)
	obs := connect(b, emb.ClientURL(), "bench-observer")
	metas := watchMeta(b, obs, "ami")
	p := startIngestProc(b, configYAML(emb.ClientURL(), sims, procHTTP))
	metas.waitSnapshots(b, n, waitLimit)
	return sims, obs, p
}
