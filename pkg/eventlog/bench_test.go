package eventlog_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/eventlog"
)

// benchStored is how many events the read benchmarks store and read back
// per round.
const benchStored = 200_000

// BenchmarkReadVsRaw stores benchStored real call events in a file stream
// on a nats-server in a process of its own, then reads them all, in alternating rounds (one
// round per b.N), with the package and with a bare nats.go ordered
// consumer. It reports both rates (events/s) and their ratio.
//
// With EVENTLOG_BENCH_NATS set to a nats CLI binary, each round also runs
// `nats bench js ordered` on the same stream and the median of its rate is
// reported (nats-cli-msgs/s).
//
//	go test -run '^$' -bench ReadVsRaw -benchtime 5x -count 3 ./pkg/eventlog/
func BenchmarkReadVsRaw(b *testing.B) {
	e := startServerProcess(b)
	size := fillStream(b, e, benchStored)
	b.Logf("stored %d events, %d bytes of payload each on average", benchStored, size)
	cli := os.Getenv("EVENTLOG_BENCH_NATS")
	var tPkg, tRaw, cPkg, cRaw time.Duration
	pkgRound := func() {
		c := cpuTime()
		tPkg += readEventlog(b, e.js, benchStored)
		cPkg += cpuTime() - c
	}
	rawRound := func() {
		c := cpuTime()
		tRaw += readRaw(b, e.js, benchStored)
		cRaw += cpuTime() - c
	}
	var cliRates []float64
	b.ResetTimer()
	for i := range b.N {
		if i%2 == 0 {
			pkgRound()
			rawRound()
		} else {
			rawRound()
			pkgRound()
		}
		if cli != "" {
			cliRates = append(cliRates, natsCLIRate(b, cli, e.url, benchStored+1))
		}
	}
	b.StopTimer()
	if len(cliRates) > 0 {
		slices.Sort(cliRates)
		b.ReportMetric(cliRates[len(cliRates)/2], "nats-cli-msgs/s")
	}
	n := float64(benchStored * b.N)
	pkg, raw := n/tPkg.Seconds(), n/tRaw.Seconds()
	b.ReportMetric(pkg, "eventlog-events/s")
	b.ReportMetric(raw, "raw-events/s")
	b.ReportMetric(pkg/raw, "ratio")
	// CPU of the reader's process (the server runs in another) per event:
	// on a shared machine, steadier than the rates.
	b.ReportMetric(float64(cPkg.Nanoseconds())/n, "eventlog-cpu-ns/event")
	b.ReportMetric(float64(cRaw.Nanoseconds())/n, "raw-cpu-ns/event")
	b.ReportMetric(0, "ns/op")
}

// callEvents are the events of a real call (the 07 transcript that
// pkg/publish's benchmarks use), about 370 bytes on the AMI wire each, read
// as ami-ingest reads them.
func callEvents(b *testing.B) []*amiwire.Message {
	b.Helper()
	f, err := os.Open("../publish/testdata/07-originate-events.server.raw")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	r := amiwire.NewReader(bufio.NewReader(f))
	if _, err := r.ReadBanner(); err != nil {
		b.Fatal(err)
	}
	var out []*amiwire.Message
	for {
		m := &amiwire.Message{}
		err := r.ReadMessage(m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			b.Fatal(err)
		}
		if m.Kind() == amiwire.KindEvent {
			out = append(out, m)
		}
	}
	if len(out) == 0 {
		b.Fatal("no events")
	}
	return out
}

// fillStream stores a session_start and n events of node pbx1 as the
// ingest encodes them, and returns the mean payload size.
func fillStream(b *testing.B, e *env, n int) int {
	b.Helper()
	events := callEvents(b)
	e.start("pbx1", "bench")
	total := 0
	const window = 2000 // under nats.go's 4000 async publishes in flight
	for i := 1; i <= n; i++ {
		s := eventlog.StoredEvent(e.prefix, "pbx1", "bench", uint64(i), time.Now(), events[i%len(events)])
		total += len(s.Data)
		if _, err := e.js.PublishMsgAsync(s.Msg()); err != nil {
			b.Fatal(err)
		}
		if i%window == 0 || i == n {
			select {
			case <-e.js.PublishAsyncComplete():
			case <-time.After(time.Minute):
				b.Fatal("publish did not complete")
			}
		}
	}
	return total / n
}

// readEventlog reads the stream's n+1 messages with the package, as a
// service does: every entry decoded, the fields looked at.
func readEventlog(b *testing.B, js jetstream.JetStream, n int) time.Duration {
	ctx := context.Background()
	start := time.Now()
	r, err := eventlog.Open(ctx, js)
	if err != nil {
		b.Fatal(err)
	}
	defer r.Close(ctx)
	var events int
	var seen int
	for events < n {
		e, err := r.Next(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if e.Kind == eventlog.KindEvent {
			events++
			seen += len(e.Event.Fields.Get("Uniqueid"))
		} else if e.Kind != eventlog.KindSessionStart {
			b.Fatalf("unexpected %v %v", e.Kind, e.Invalid.Err)
		}
	}
	if seen == 0 {
		b.Fatal("no Uniqueid seen")
	}
	return time.Since(start)
}

// readRaw reads the same messages with a bare nats.go ordered consumer,
// touching each payload and nothing more: the floor the package adds its
// decoding to.
func readRaw(b *testing.B, js jetstream.JetStream, n int) time.Duration {
	ctx := context.Background()
	start := time.Now()
	cons, err := js.OrderedConsumer(ctx, eventlog.DefaultStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"ami.events.>"}})
	if err != nil {
		b.Fatal(err)
	}
	it, err := cons.Messages(jetstream.PullMaxMessages(eventlog.DefaultBuffer))
	if err != nil {
		b.Fatal(err)
	}
	defer it.Stop()
	var bytes int
	for range n + 1 {
		m, err := it.Next()
		if err != nil {
			b.Fatal(err)
		}
		bytes += len(m.Data())
	}
	if bytes == 0 {
		b.Fatal("empty")
	}
	return time.Since(start)
}

// cpuTime is the CPU time (user and system) the process has used.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// natsCLIRate runs the nats CLI's ordered-consumer benchmark over the
// stream's n messages and returns the rate it prints.
func natsCLIRate(b *testing.B, cli, url string, n int) float64 {
	out, err := exec.Command(cli, "--server", url, "bench", "js", "ordered", "--stream", eventlog.DefaultStream,
		"--msgs", strconv.Itoa(n), "--batch", strconv.Itoa(eventlog.DefaultBuffer), "--no-progress").CombinedOutput()
	if err != nil {
		b.Fatalf("%s: %v\n%s", cli, err, out)
	}
	// "... stats: 301,234 msgs/sec ~ 148.6 MiB/sec ..."
	m := regexp.MustCompile(`stats: ([0-9,]+) msgs/sec`).FindSubmatch(out)
	if m == nil {
		b.Fatalf("no rate in the nats CLI's output:\n%s", out)
	}
	r, _ := strconv.ParseFloat(strings.ReplaceAll(string(m[1]), ",", ""), 64)
	return r
}

// startServerProcess runs a nats-server in a child process (this test
// binary, see TestMain) with the events stream, file storage, and returns
// an env connected to it. The child stops with the benchmark.
func startServerProcess(b *testing.B) *env {
	b.Helper()
	cmd := exec.Command(os.Args[0])
	cmd.Env = append(os.Environ(), "EVENTLOG_TEST_SERVER_DIR="+b.TempDir())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		stdin.Close()
		cmd.Wait()
	})
	url, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		b.Fatalf("server process: %v", err)
	}
	return dialEnv(b, strings.TrimSpace(url), jetstream.FileStorage)
}
