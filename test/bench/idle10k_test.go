package bench

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amibus/amibus/internal/testenv"
)

// Sizes of BenchmarkIngestIdle10000: two amisim processes of 5,000 nodes
// each, as in the measurement.
const (
	idleSims    = 2
	idlePerSim  = 5000
	idleNodes   = idleSims * idlePerSim
	idleMaxDial = 16 // session.max_concurrent_dials: the default, written out
	// idleUpWait bounds the waits for 10,000 sessions (targets: 15 s to
	// start, 30 s after the mass drop); reaching it fails the run.
	idleUpWait = 300 * time.Second
)

// BenchmarkIngestIdle10000 measures one ami-ingest replica (a subprocess,
// log.level warn) holding 10,000 idle AMI sessions to two amisim
// subprocesses of 5,000 nodes each (two processes, because one process
// holding 10,000 listeners and their 10,000 accepted sockets would need more
// file descriptors than the hard limit of this machine).
//
// It reports:
//   - start-to-up-s: from starting ami-ingest to every node's login snapshot
//     seen on NATS (target < 15 s);
//   - over an idle window of AMIBUS_BENCH_IDLE10K (default 30 s, 10 s under
//     -short): %-of-one-core (target < 3 %), then RSS-MiB (target < 512
//     MiB), heap-inuse-MiB, stack-inuse-MiB and goroutines from /proc and
//     the process's own /metrics;
//   - the mass drop: both simulators are stopped (every connection closed)
//     and started again on the same ports, as when the PBX side restarts;
//     back-up-s is from the stop to every node's new snapshot seen (target
//     < 30 s), dials-in-progress-max the most connection attempts seen
//     running at once (sampled every 250 ms; must not exceed
//     session.max_concurrent_dials), dial-attempts-per-node how many
//     attempts the reconnect took. Nothing may be lost: no event dropped,
//     and every node published its session_end and a new session_start.
//
// b.N is ignored (one run per iteration of -count).
func BenchmarkIngestIdle10000(b *testing.B) {
	measure := window(b, "AMIBUS_BENCH_IDLE10K", 30*time.Second, 10*time.Second)
	// Per amisim process: 5,000 listeners and 5,000 accepted sockets; in
	// ami-ingest 10,000 AMI sockets. Children inherit the limit.
	raiseFileLimit(b, 2*idlePerSim+1024)
	emb := testenv.StartNATS(b)
	obs := connect(b, emb.ClientURL(), "bench-observer")
	sims := startSimProcs(b)
	var addrs []simNode
	for _, s := range sims {
		addrs = append(addrs, s.nodes()...)
	}
	metas := watchMeta(b, obs, "ami")
	httpAddr := testenv.DeadAddr(b) // free a moment ago
	cfg := idleConfigYAML(emb.ClientURL(), httpAddr, addrs)

	t0 := time.Now()
	p := startQuietIngest(b, cfg, httpAddr)
	metas.waitSnapshots(b, idleNodes, idleUpWait, p.diag)
	startUp := time.Since(t0)
	text := p.metricsNamed(b, "ami_session_up")
	if up := sumMetric(text, "ami_session_up"); up != idleNodes {
		b.Fatalf("ami_session_up sums to %v, want %d", up, idleNodes)
	}
	// The window starts right after start-up: an idle process collects
	// start-up garbage only at its forced GC, every 2 minutes (a window of
	// AMIBUS_BENCH_IDLE10K=240s includes two).
	cpu, wall, mem := measureWindow(b, p.Pid(), measure)
	text = p.metricsNamed(b, "go_memstats_heap_inuse_bytes", "go_memstats_stack_inuse_bytes", "go_goroutines",
		"ami_session_reconnects_total", "ami_session_up", "ami_dial_attempts_total")
	if n := sumMetric(text, "ami_session_reconnects_total"); n != 0 {
		b.Fatalf("%v reconnects during the idle window", n)
	}
	pct := 100 * cpu.Seconds() / wall.Seconds()
	heap := sumMetric(text, "go_memstats_heap_inuse_bytes")
	stack := sumMetric(text, "go_memstats_stack_inuse_bytes")
	goroutines := sumMetric(text, "go_goroutines")
	attempts0 := sumMetric(text, "ami_dial_attempts_total")

	// The PBX side restarts: every connection closes at once, the ports
	// refuse connections until the simulators listen again.
	metas.reset()
	td := time.Now()
	peak := p.sampleMetric("ami_dials_in_progress", 250*time.Millisecond)
	for _, s := range sims {
		s.stop(b)
	}
	for _, s := range sims {
		s.start(b)
	}
	metas.waitSnapshots(b, idleNodes, idleUpWait, p.diag)
	backUp := time.Since(td)
	maxDials, _ := peak.finish()
	text = p.metricsNamed(b, "ami_session_up", "ami_events_dropped_total", "ami_dial_attempts_total",
		"ami_meta_published_total", "ami_session_reconnects_total")
	if up := sumMetric(text, "ami_session_up"); up != idleNodes {
		b.Fatalf("after the mass drop ami_session_up sums to %v, want %d", up, idleNodes)
	}
	if n := sumMetric(text, "ami_events_dropped_total"); n != 0 {
		b.Fatalf("%v events dropped", n)
	}
	if n := metas.count("session_end"); n != idleNodes {
		b.Fatalf("%d session_end markers after the mass drop, want %d", n, idleNodes)
	}
	if n := metas.count("session_start"); n != idleNodes {
		b.Fatalf("%d session_start markers after the mass drop, want %d", n, idleNodes)
	}
	if maxDials > idleMaxDial {
		b.Fatalf("%v connection attempts at once, limit %d", maxDials, idleMaxDial)
	}
	attempts := sumMetric(text, "ami_dial_attempts_total") - attempts0

	b.ReportMetric(startUp.Seconds(), "start-to-up-s")
	b.ReportMetric(pct, "%-of-one-core")
	b.ReportMetric(float64(mem.RSS)/mib, "RSS-MiB")
	b.ReportMetric(heap/mib, "heap-inuse-MiB")
	b.ReportMetric(stack/mib, "stack-inuse-MiB")
	b.ReportMetric(goroutines, "goroutines")
	b.ReportMetric(backUp.Seconds(), "back-up-s")
	b.ReportMetric(maxDials, "dials-in-progress-max")
	b.ReportMetric(attempts/idleNodes, "dial-attempts-per-node")
	var miss []string
	if startUp >= 15*time.Second {
		miss = append(miss, "start")
	}
	if pct >= 3 {
		miss = append(miss, "cpu")
	}
	if mem.RSS >= 512*mib {
		miss = append(miss, "rss")
	}
	if backUp >= 30*time.Second {
		miss = append(miss, "back-up")
	}
	verdict := "PASS"
	if len(miss) > 0 {
		verdict = "MISS " + strings.Join(miss, ",")
	}
	b.Logf("%s: %d idle nodes: up %.1fs after start (target < 15 s); idle CPU %.2f%% of one core (< 3 %%); "+
		"RSS %.0f MiB (< 512 MiB), heap in use %.0f MiB, stacks %.0f MiB, %v goroutines; "+
		"after the mass drop up again in %.1fs (< 30 s), at most %v attempts at once (limit %d), %.2f attempts per node",
		verdict, idleNodes, startUp.Seconds(), pct, float64(mem.RSS)/mib, heap/mib, stack/mib, goroutines,
		backUp.Seconds(), maxDials, idleMaxDial, attempts/idleNodes)
}

// idleConfigYAML is the ami-ingest configuration of the 10,000-node
// benchmark: log.level warn (a line per session start at info would be
// 10,000 lines), the default dial limit written out.
func idleConfigYAML(natsURL, httpAddr string, nodes []simNode) string {
	var b strings.Builder
	fmt.Fprintf(&b, "nats:\n  url: %s\n", natsURL)
	fmt.Fprintf(&b, "log:\n  level: warn\nsession:\n  max_concurrent_dials: %d\n", idleMaxDial)
	fmt.Fprintf(&b, "http:\n  listen: %s\n", httpAddr)
	b.WriteString("nodes:\n")
	for _, n := range nodes {
		fmt.Fprintf(&b, "  - name: %s\n    address: %s\n    username: ami\n    secret: amisecret\n", n.name, n.addr)
	}
	return b.String()
}

// startQuietIngest runs ami-ingest (runMain: AMIBUS_BENCH_INGEST_BIN names
// another build, to compare two in one run) on yaml, whose http.listen is
// httpAddr. At log.level warn it logs no "started" line to wait for: it
// returns once /healthz answers.
func startQuietIngest(b *testing.B, yaml, httpAddr string) *mainProc {
	b.Helper()
	dir := b.TempDir()
	path := filepath.Join(dir, "ami-ingest.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	var env []string
	if v := os.Getenv("AMIBUS_BENCH_INGEST_GOMEMLIMIT"); v != "" {
		// The soft memory limit docs/operations.md recommends, for
		// ami-ingest only (not this process's NATS server).
		env = append(env, "GOMEMLIMIT="+v)
	}
	p := runMain(b, "ami-ingest", env, "--config", path, "--data-dir", filepath.Join(dir, "data"))
	p.http = httpAddr
	if err := p.waitReady("answering /healthz", 20*time.Millisecond, func() bool {
		_, err := p.fetch("/healthz")
		return err == nil
	}); err != nil {
		b.Fatal(err)
	}
	return p
}

// diag describes the sessions' state for a failure message.
func (p *mainProc) diag() string {
	names := []string{"ami_session_up", "ami_dials_waiting", "ami_dials_in_progress", "ami_dial_attempts_total",
		"ami_session_login_failures_total", "ami_events_dropped_total"}
	text, err := p.fetch("/metrics?" + nameQuery(names...))
	if err != nil {
		return err.Error() + "\n" + p.lastLines()
	}
	var d []string
	for _, n := range names {
		d = append(d, fmt.Sprintf("%s %v", n, sumMetric(text, n)))
	}
	return strings.Join(d, "; ") + "\n" + p.lastLines()
}

// metricsNamed returns /metrics limited to the named families (promhttp's
// name[] filter): the whole text of 10,000 nodes is about 10 MB.
func (p *mainProc) metricsNamed(b *testing.B, names ...string) string {
	b.Helper()
	text, err := p.fetch("/metrics?" + nameQuery(names...))
	if err != nil {
		b.Fatal(err)
	}
	return text
}

func nameQuery(names ...string) string {
	q := make([]string, 0, len(names))
	for _, n := range names {
		q = append(q, "name[]="+n)
	}
	return strings.Join(q, "&")
}

// sampleMetric samples the process-wide metric name (sampleMax); a
// failed fetch is a sample missed, not an error.
func (p *mainProc) sampleMetric(name string, every time.Duration) *sampler {
	return sampleMax(every, func() (float64, error) {
		text, err := p.fetch("/metrics?" + nameQuery(name))
		if err != nil {
			return 0, nil
		}
		return sumMetric(text, name), nil
	})
}

// simNode is one simulated PBX of a simProc.
type simNode struct{ name, addr string }

// simProc is an amisim subprocess serving n nodes on consecutive ports.
type simProc struct {
	prefix string
	base   int
	n      int
	proc   *mainProc // the last one started
}

// startSimProcs starts idleSims amisim processes of idlePerSim nodes on
// consecutive ports below the ephemeral range (so that no outgoing
// connection holds one of them when a simulator listens again), trying
// another range if one is in use.
func startSimProcs(b *testing.B) []*simProc {
	b.Helper()
	var sims []*simProc
	for i := range idleSims {
		var last error
		for range 10 {
			s := &simProc{prefix: string(rune('a' + i)), base: freeRange(sims), n: idlePerSim}
			if last = s.tryStart(b); last == nil {
				sims = append(sims, s)
				break
			}
		}
		if last != nil {
			b.Fatal(last)
		}
	}
	return sims
}

// freeRange draws the first port of a simulator's range, below the
// ephemeral range and apart from the ranges of sims. Overlapping ranges
// broke runs: the second simulator exited on a port the first held, yet
// its last port answered (the first simulator's), so it seemed ready.
func freeRange(sims []*simProc) int {
	for {
		base := 10000 + rand.IntN(22000-idlePerSim)
		apart := true
		for _, o := range sims {
			if base < o.base+o.n && o.base < base+idlePerSim {
				apart = false
			}
		}
		if apart {
			return base
		}
	}
}

func (s *simProc) nodes() []simNode {
	out := make([]simNode, s.n)
	for i := range s.n {
		out[i] = simNode{name: s.prefix + strconv.Itoa(i+1), addr: "127.0.0.1:" + strconv.Itoa(s.base+i)}
	}
	return out
}

// start starts the simulator again on its ports; it fails the benchmark
// if it cannot.
func (s *simProc) start(b *testing.B) {
	b.Helper()
	if err := s.tryStart(b); err != nil {
		b.Fatal(err)
	}
}

func (s *simProc) tryStart(b *testing.B) error {
	s.proc = runMain(b, "amisim", nil, "--listen", "127.0.0.1:"+strconv.Itoa(s.base), "--nodes", strconv.Itoa(s.n),
		"--node-prefix", s.prefix, "--log-level", "warn")
	// "amisim ready" is logged at info, under --log-level warn not at all:
	// readiness is the last node accepting.
	return s.proc.waitReady(fmt.Sprintf("listening on ports %d..", s.base), 50*time.Millisecond, s.listening)
}

// listening reports whether the last node's port accepts connections (the
// fleet listens in order, so then every node does).
func (s *simProc) listening() bool {
	c, err := netDial("127.0.0.1:" + strconv.Itoa(s.base+s.n-1))
	if err != nil {
		return false
	}
	_ = c.Close()
	return true
}

// stop ends the simulator (SIGTERM: every connection closed) and waits.
func (s *simProc) stop(b *testing.B) { s.proc.stop(b) }

func netDial(addr string) (net.Conn, error) { return net.DialTimeout("tcp", addr, time.Second) }
