package publish

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/eventq"
)

// benchRound is how many events the pipeline benchmark's reader pushes
// before it waits for them to be stored: it bounds the memory a benchmark
// holds without ever letting the queue drop.
const benchRound = 50000

// benchEvents are real events from a call (the 07 transcript, built with
// Message.Add), about 370 bytes on the wire each, as the 380.
func benchEvents(b *testing.B) []*amiwire.Message {
	b.Helper()
	ev := loadEvents(b, "07-originate-events.server.raw")
	var size int
	for _, m := range ev {
		size += m.Size()
	}
	b.SetBytes(int64(size / len(ev)))
	return ev
}

// BenchmarkPipeline: the AMI reader side (Queue.Event) on one goroutine,
// the Publisher encoding and publishing asynchronously into a file-storage
// stream, every event acknowledged before the clock stops.
func BenchmarkPipeline(b *testing.B) {
	events := benchEvents(b)
	env := startNATS(b, 0)
	nc := env.connect(b)
	ensureStream(b, nc, StreamConfig{})
	// The signal that a round is stored: its session_end, seen on a core
	// subscription to the meta subject only (one message per round).
	sub, err := nc.SubscribeSync("ami.events.bench." + MetaToken)
	if err != nil {
		b.Fatal(err)
	}
	// A round is stored when its session_end is, but its last events may
	// not be released yet when the next round starts: room for two rounds.
	q, err := eventq.New("bench", eventq.WithMaxEvents(2*benchRound+10), eventq.WithBudget(eventq.NewBudget(1<<30)))
	if err != nil {
		b.Fatal(err)
	}
	pub, err := NewPublisher(nc)
	if err != nil {
		b.Fatal(err)
	}
	if err := pub.Add("bench", q); err != nil {
		b.Fatal(err)
	}
	if err := pub.Start(ctxT(b, time.Hour)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for round, done := 0, 0; done < b.N; round++ {
		id := "bench-" + strconv.Itoa(round)
		n := min(benchRound, b.N-done)
		t := time.Now()
		for i := 1; i <= n; i++ {
			q.Event(id, uint64(i), t, events[i%len(events)])
		}
		q.SessionEnded(id, t, "eof", uint64(n))
		for {
			m, err := sub.NextMsg(time.Minute)
			if err != nil {
				b.Fatalf("round %d not stored: %v", round, err)
			}
			if m.Header.Get(jetstream.MsgIDHeader) == id+"-end" {
				break
			}
		}
		done += n
	}
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	if err := pub.Drain(ctxT(b, time.Minute)); err != nil {
		b.Fatal(err)
	}
	if ns, _ := pub.Stats("bench"); ns.Retries > 0 {
		b.Logf("%d retries", ns.Retries)
	}
	if s := q.Stats(); s.Published != uint64(b.N) || s.Dropped() != 0 {
		b.Fatalf("not all published: %+v", s)
	}
}

// BenchmarkDirectPublish publishes the same payloads (the JSON of the same
// events, each with its own Nats-Msg-Id) straight to the same kind of stream
// with nats.go async publish and the same cap on pending acks: the rate the
// pipeline is measured against.
func BenchmarkDirectPublish(b *testing.B) {
	events := benchEvents(b)
	env := startNATS(b, 0)
	nc := env.connect(b)
	ensureStream(b, nc, StreamConfig{})
	payloads := make([][]byte, len(events))
	subjects := make([]string, len(events))
	for i, m := range events {
		it := eventq.Item{Kind: eventq.KindEvent, Session: "bench-0", Seq: uint64(i + 1), Time: time.Now(), Msg: m}
		payloads[i] = AppendEvent(nil, "bench", &it, nil)
		subjects[i] = EventSubject("ami", "bench", m.Name())
	}
	var failed atomic.Int64
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(DefaultMaxInflight),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { failed.Add(1) }))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for i := 1; i <= b.N; i++ {
		k := i % len(events)
		m := &nats.Msg{Subject: subjects[k], Data: payloads[k], Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, "bench-0-"+strconv.Itoa(i))
		for {
			_, err := js.PublishMsgAsync(m)
			if err == nil {
				break
			}
			if err != jetstream.ErrTooManyStalledMsgs {
				b.Fatal(err)
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("acks did not come")
	}
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d publishes failed", n)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
	js.CleanupPublisher()
}
