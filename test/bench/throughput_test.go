package bench

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/pkg/amisim"
	"github.com/amibus/amibus/pkg/publish"
)

// roundEvents is how many events one round sends through each side before
// it waits for them to be stored: small enough that the two sides take
// turns often and see the same load of this shared machine, large enough
// that a round's tail (the last acks) is a few percent of it. The
// pipeline's buffer (ingest defaults: 100,000 events, 64 MiB) holds a whole
// round, so a round never drops.
const roundEvents = 10000

// warmEvents is the warm-up: two calls of transcript 07 (85 events each),
// whose stored JSON becomes the direct side's payloads.
const warmEvents = 170

// directPrefix has the length of "ami", so that the direct side's subjects
// are as long as the pipeline's.
const directPrefix = "dir"

// BenchmarkIngestThroughput measures events per second stored in JetStream
// by the ami-ingest pipeline (amisim over TCP -> session reader -> eventq
// -> publisher -> a file-storage stream), against publishing the same JSON
// payloads, each with its Nats-Msg-Id, straight to a stream of the same
// configuration on the same server with nats.go async publish (same cap on
// pending acks as ingest.max_inflight). Both run in one process on one
// embedded nats-server, in alternating rounds, so that both see the same
// load on this shared machine. b.N is the number of events of each side; a
// round's clock stops when its last message is stored (an ordered
// consumer sees it). "ratio" is pipeline over direct; the target is >= 0.9.
// The CPU time of each side's rounds is reported too (per event, and as
// cores in use): the process holds simulator, ingest and server, so the
// per-event figures compare the two paths whatever the machine's load.
// The simulator's writetimeout is raised (floodWriteTimeout) so that a
// moment without CPU on this shared machine does not drop the session.
//
// AMIBUS_BENCH_SIDE=pipeline (or direct) runs one side only, for a CPU
// profile of that side (go test -cpuprofile).
func BenchmarkIngestThroughput(b *testing.B) {
	side := os.Getenv("AMIBUS_BENCH_SIDE")
	runPipe, runDirect := side != "direct", side != "pipeline"
	e := newThroughputEnv(b)
	// Warm both sides (file store blocks, buffers, connections).
	e.pipelineRound(b, 5000)
	e.directRound(b, 5000)
	b.ResetTimer()
	// Wall time and this process's CPU time (every component is in it:
	// simulator, ingest, nats-server) of each side's rounds.
	var tp, td, cp, cd time.Duration
	pipe := func(n int) {
		c0 := processCPU(b)
		tp += e.pipelineRound(b, n)
		cp += processCPU(b) - c0
	}
	direct := func(n int) {
		c0 := processCPU(b)
		td += e.directRound(b, n)
		cd += processCPU(b) - c0
	}
	for done, i := 0, 0; done < b.N; i++ {
		n := min(roundEvents, b.N-done)
		// Alternate which side goes first, so that neither always runs
		// right after the other's garbage.
		if i%2 == 0 {
			if runPipe {
				pipe(n)
			}
			if runDirect {
				direct(n)
			}
		} else {
			if runDirect {
				direct(n)
			}
			if runPipe {
				pipe(n)
			}
		}
		done += n
	}
	b.StopTimer()
	perEvent := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) / float64(b.N) }
	if runPipe {
		b.ReportMetric(float64(b.N)/tp.Seconds(), "pipeline-events/s")
		b.ReportMetric(perEvent(cp), "pipeline-cpu-us/event")
		b.ReportMetric(cp.Seconds()/tp.Seconds(), "pipeline-cores")
	}
	if runDirect {
		b.ReportMetric(float64(b.N)/td.Seconds(), "direct-events/s")
		b.ReportMetric(perEvent(cd), "direct-cpu-us/event")
		b.ReportMetric(cd.Seconds()/td.Seconds(), "direct-cores")
	}
	if runPipe && runDirect {
		b.ReportMetric(td.Seconds()/tp.Seconds(), "ratio")
	}
	b.ReportMetric(float64(e.jsonBytes)/float64(len(e.direct.data)), "B/event-json")
	e.check(b)
}

// processCPU is the user and system CPU time of this process so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// throughputEnv is the set-up of BenchmarkIngestThroughput.
type throughputEnv struct {
	*oneNode
	pipeMarks chan int
	round     int
	direct    *directSide
	jsonBytes int
}

func newThroughputEnv(b *testing.B) *throughputEnv {
	// The ami-ingest defaults: file storage, 100,000 events and 64 MiB of
	// buffer, 4096 unacknowledged publishes.
	e := &throughputEnv{oneNode: startOneNode(b, amisim.Config{WriteTimeout: floodWriteTimeout}), pipeMarks: make(chan int, 16)}
	js := e.js
	consumeMarks(b, js, e.ing.cfg.Stream.Name, "ami.events.pbx1.UserEvent", e.pipeMarks)
	e.pipelineRound(b, warmEvents)
	msgs := storedEvents(b, js, e.ing.cfg.Stream.Name, "ami.events.pbx1.>", warmEvents)

	// The direct side's stream: the pipeline's configuration, another name
	// and prefix.
	sc := publish.StreamConfig{
		Name:            "DIRECT",
		Prefix:          directPrefix,
		MaxAge:          e.ing.cfg.Stream.MaxAge,
		MaxBytes:        e.ing.cfg.Stream.MaxBytes,
		Storage:         jetstream.FileStorage,
		Replicas:        e.ing.cfg.Stream.Replicas,
		DuplicateWindow: e.ing.cfg.Stream.DuplicateWindow,
	}
	if _, err := publish.EnsureStream(ctxT(b), js, sc); err != nil {
		b.Fatal(err)
	}
	e.direct = newDirectSide(b, connect(b, e.url, "bench-direct"), e.ing.cfg.Ingest.MaxInflight, msgs)
	consumeMarks(b, js, sc.Name, e.direct.markSubject, e.direct.marks)
	for _, d := range e.direct.data {
		e.jsonBytes += len(d)
	}
	return e
}

// pipelineRound has the simulator send n events as fast as the ingest
// reads them, then a marker event, and returns when the marker is stored.
func (e *throughputEnv) pipelineRound(b *testing.B, n int) time.Duration {
	e.round++
	start := time.Now()
	e.sim.EmitEvents(n, 0)
	e.sim.Emit("UserEvent", [2]string{"UserEvent", "BenchRoundEnd"}, [2]string{"Round", strconv.Itoa(e.round)})
	waitMark(b, e.pipeMarks, e.round, e.sim)
	return time.Since(start)
}

// directRound publishes n payloads and a marker, and returns when the
// marker is stored.
func (e *throughputEnv) directRound(b *testing.B, n int) time.Duration {
	d := e.direct
	d.round++
	start := time.Now()
	for range n {
		k := int(d.seq % uint64(len(d.data)))
		d.seq++
		d.publish(b, &nats.Msg{Subject: d.subjects[k], Data: d.data[k],
			Header: nats.Header{jetstream.MsgIDHeader: {d.idPrefix + strconv.FormatUint(d.seq, 10)}}})
	}
	r := strconv.Itoa(d.round)
	d.publish(b, &nats.Msg{Subject: d.markSubject,
		Data:   []byte(`{"event":"UserEvent","fields":{"UserEvent":"BenchRoundEnd","Round":"` + r + `"}}`),
		Header: nats.Header{jetstream.MsgIDHeader: {d.idPrefix + "round-" + r}}})
	waitMark(b, d.marks, d.round, nil)
	return time.Since(start)
}

// check fails the benchmark if the pipeline lost anything: a drop or a
// reconnect would make its rate meaningless.
func (e *throughputEnv) check(b *testing.B) {
	e.ing.checkNoLoss(b, "pbx1")
	if n := e.direct.failed.Load(); n != 0 {
		b.Fatalf("direct side: %d publishes failed", n)
	}
}

// directSide publishes prepared payloads with nats.go's async publish.
type directSide struct {
	js          jetstream.JetStream
	subjects    []string
	data        [][]byte
	idPrefix    string
	seq         uint64
	round       int
	markSubject string
	marks       chan int
	failed      atomic.Int64
}

// newDirectSide takes the pipeline's stored events (subject, JSON,
// Nats-Msg-Id "<session>-<seq>") and publishes them again under the direct
// prefix, with ids of the same form.
func newDirectSide(b *testing.B, nc *nats.Conn, maxPending int, msgs []jetstream.Msg) *directSide {
	d := &directSide{markSubject: directPrefix + ".events.pbx1.UserEvent", marks: make(chan int, 16)}
	for _, m := range msgs {
		d.subjects = append(d.subjects, directPrefix+strings.TrimPrefix(m.Subject(), "ami"))
		d.data = append(d.data, m.Data())
		id := m.Headers().Get(jetstream.MsgIDHeader)
		if i := strings.LastIndexByte(id, '-'); i > 0 {
			d.idPrefix = id[:i+1]
		}
	}
	if d.idPrefix == "" {
		b.Fatal("stored events carry no Nats-Msg-Id")
	}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(maxPending),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { d.failed.Add(1) }))
	if err != nil {
		b.Fatal(err)
	}
	d.js = js
	b.Cleanup(js.CleanupPublisher)
	return d
}

// publish sends m, waiting while nats.go has maxPending acks outstanding.
func (d *directSide) publish(b *testing.B, m *nats.Msg) {
	for {
		_, err := d.js.PublishMsgAsync(m)
		if err == nil {
			return
		}
		if err != jetstream.ErrTooManyStalledMsgs {
			b.Fatal(err)
		}
	}
}

// consumeMarks delivers the Round of every marker stored on subject to
// marks. An ordered consumer is served only after the stream stored a
// message, so a marker seen means every message sent before it is stored.
func consumeMarks(b *testing.B, js jetstream.JetStream, stream, subject string, marks chan<- int) {
	b.Helper()
	c, err := js.OrderedConsumer(ctxT(b), stream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{subject},
		DeliverPolicy:  jetstream.DeliverNewPolicy,
	})
	if err != nil {
		b.Fatal(err)
	}
	cc, err := c.Consume(func(m jetstream.Msg) {
		if r, ok := roundOf(m.Data()); ok {
			select {
			case marks <- r:
			default: // nobody waits for an old round
			}
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		cc.Stop()
		<-cc.Closed()
	})
}

// roundOf finds "Round":"<n>" in an event's JSON.
func roundOf(data []byte) (int, bool) {
	key := []byte(`"Round":"`)
	i := bytes.Index(data, key)
	if i < 0 {
		return 0, false
	}
	rest := data[i+len(key):]
	j := bytes.IndexByte(rest, '"')
	if j < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(string(rest[:j]))
	return n, err == nil
}

// waitMark waits for the marker of round. sim, when set, explains a
// marker that never comes (the simulator dropped the ingest as too slow).
func waitMark(b *testing.B, marks <-chan int, round int, sim *amisim.Server) {
	b.Helper()
	t := time.NewTimer(waitLimit)
	defer t.Stop()
	for {
		select {
		case r := <-marks:
			if r == round {
				return
			}
		case <-t.C:
			if sim != nil {
				b.Fatalf("round %d not stored in %v; simulator stats %+v", round, waitLimit, sim.Stats())
			}
			b.Fatalf("round %d not stored in %v", round, waitLimit)
		}
	}
}

// storedEvents reads the first n AMI events stored on subject (markers and
// meta messages skipped).
func storedEvents(b *testing.B, js jetstream.JetStream, stream, subject string, n int) []jetstream.Msg {
	b.Helper()
	c, err := js.OrderedConsumer(ctxT(b), stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subject}})
	if err != nil {
		b.Fatal(err)
	}
	var out []jetstream.Msg
	for len(out) < n {
		batch, err := c.Fetch(n, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			b.Fatal(err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			s := m.Subject()
			if strings.HasSuffix(s, "."+publish.MetaToken) || strings.HasSuffix(s, ".UserEvent") {
				continue
			}
			if len(out) < n {
				out = append(out, m)
			}
		}
		if err := batch.Error(); err != nil && err != context.DeadlineExceeded {
			b.Fatal(err)
		}
		if got == 0 {
			b.Fatalf("%d of %d events found in the stream", len(out), n)
		}
	}
	return out
}
