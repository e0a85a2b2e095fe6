package publish

import (
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amiwire"
)

// benchRound is how many events a benchmark round publishes before it waits
// for them all to be acknowledged: it bounds the memory a benchmark holds
// without ever letting the queue drop.
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

// pipeRig is the ingest path: Queue.Event on the caller's goroutine (the AMI
// reader's place), the Publisher encoding and publishing asynchronously.
type pipeRig struct {
	b      *testing.B
	events []*amiwire.Message
	q      *eventq.Queue
	pub    *Publisher
	sub    *nats.Subscription
	round  int
}

func newPipeRig(b *testing.B, env *testenv.NATS, events []*amiwire.Message) *pipeRig {
	nc := connect(b, env)
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
	return &pipeRig{b: b, events: events, q: q, pub: pub, sub: sub}
}

// run pushes n events as one session and returns when all are stored.
func (r *pipeRig) run(n int) time.Duration {
	start := time.Now()
	id := "bench-" + strconv.Itoa(r.round)
	r.round++
	for i := 1; i <= n; i++ {
		r.q.Event(id, uint64(i), start, r.events[i%len(r.events)])
	}
	r.q.SessionEnded(id, start, "eof", uint64(n))
	for {
		m, err := r.sub.NextMsg(time.Minute)
		if err != nil {
			r.b.Fatalf("round %s not stored: %v", id, err)
		}
		if m.Header.Get(jetstream.MsgIDHeader) == id+"-end" {
			return time.Since(start)
		}
	}
}

func (r *pipeRig) close(want int) {
	if err := r.pub.Drain(ctxT(r.b, time.Minute)); err != nil {
		r.b.Fatal(err)
	}
	if s := r.q.Stats(); s.Published != uint64(want) || s.Dropped() != 0 {
		r.b.Fatalf("not all published: %+v", s)
	}
}

// directRig publishes the same payloads (the JSON of the same events, each
// with its own Nats-Msg-Id) straight to a stream of the same kind with
// nats.go async publish and the same cap on pending acks.
type directRig struct {
	b        *testing.B
	js       jetstream.JetStream
	payloads [][]byte
	subjects []string
	failed   atomic.Int64
	seq      int
	marker   string
	sub      *nats.Subscription
	round    int
}

func newDirectRig(b *testing.B, env *testenv.NATS, events []*amiwire.Message, prefix string) *directRig {
	nc := connect(b, env)
	r := &directRig{b: b, payloads: make([][]byte, len(events)), subjects: make([]string, len(events))}
	if prefix != "ami" {
		// Beside the pipeline's stream on the same server: same kind.
		ensureStream(b, nc, StreamConfig{Name: "DIRECT", Prefix: prefix})
	} else {
		ensureStream(b, nc, StreamConfig{})
	}
	for i, m := range events {
		it := eventq.Item{Kind: eventq.KindEvent, Session: "bench-0", Seq: uint64(i + 1), Time: time.Now(), Msg: m}
		r.payloads[i] = AppendEvent(nil, "bench", &it, nil)
		r.subjects[i] = EventSubject(prefix, "bench", m.Name())
	}
	// A round ends as the pipeline's does: when a last message published
	// after the round's events reaches a core subscriber.
	r.marker = MetaSubject(prefix, "bench")
	sub, err := nc.SubscribeSync(r.marker)
	if err != nil {
		b.Fatal(err)
	}
	r.sub = sub
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(DefaultMaxInflight),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { r.failed.Add(1) }))
	if err != nil {
		b.Fatal(err)
	}
	r.js = js
	return r
}

// run publishes n messages and a round marker, and returns when the marker
// is stored (as the pipeline's session_end ends its round).
func (r *directRig) run(n int) time.Duration {
	start := time.Now()
	publish := func(m *nats.Msg) {
		for {
			_, err := r.js.PublishMsgAsync(m)
			if err == nil {
				return
			}
			if err != jetstream.ErrTooManyStalledMsgs {
				r.b.Fatal(err)
			}
		}
	}
	for range n {
		r.seq++
		k := r.seq % len(r.payloads)
		m := &nats.Msg{Subject: r.subjects[k], Data: r.payloads[k], Header: nats.Header{}}
		m.Header.Set(jetstream.MsgIDHeader, "bench-0-"+strconv.Itoa(r.seq))
		publish(m)
	}
	id := "round-" + strconv.Itoa(r.round)
	r.round++
	publish(&nats.Msg{Subject: r.marker, Data: []byte(`{}`), Header: nats.Header{jetstream.MsgIDHeader: {id}}})
	for {
		m, err := r.sub.NextMsg(time.Minute)
		if err != nil {
			r.b.Fatalf("round %s not stored: %v", id, err)
		}
		if m.Header.Get(jetstream.MsgIDHeader) == id {
			break
		}
	}
	return time.Since(start)
}

// close waits for every ack and checks that none failed.
func (r *directRig) close() {
	select {
	case <-r.js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		r.b.Fatal("acks did not come")
	}
	if n := r.failed.Load(); n > 0 {
		r.b.Fatalf("%d publishes failed", n)
	}
	r.js.CleanupPublisher()
}

// BenchmarkPipeline: b.N events through eventq and the Publisher into a
// file-storage stream, every one acknowledged before the clock stops.
func BenchmarkPipeline(b *testing.B) {
	events := benchEvents(b)
	env := testenv.StartNATS(b)
	r := newPipeRig(b, env, events)
	measureRounds(b, r.run)
	r.close(b.N)
}

// BenchmarkDirectPublish: the same payloads published straight to the same
// kind of stream: the rate the pipeline is measured against.
func BenchmarkDirectPublish(b *testing.B) {
	events := benchEvents(b)
	env := testenv.StartNATS(b)
	r := newDirectRig(b, env, events, "ami")
	measureRounds(b, r.run)
	r.close()
}

// BenchmarkPipelineVsDirect alternates rounds of both on one server, each
// into its own file-storage stream, so both see the same machine load (this
// machine is shared): its "ratio" is pipeline events/s over direct events/s.
func BenchmarkPipelineVsDirect(b *testing.B) {
	const round = 5000
	events := benchEvents(b)
	env := testenv.StartNATS(b)
	pr := newPipeRig(b, env, events)
	dr := newDirectRig(b, env, events, "direct")
	b.ResetTimer()
	var tp, td time.Duration
	for done := 0; done < b.N; {
		n := min(round, b.N-done)
		tp += pr.run(n)
		td += dr.run(n)
		done += n
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/tp.Seconds(), "pipeline-events/s")
	b.ReportMetric(float64(b.N)/td.Seconds(), "direct-events/s")
	b.ReportMetric(td.Seconds()/tp.Seconds(), "ratio")
	pr.close(b.N)
	dr.close()
}

// measureRounds publishes b.N events in rounds of benchRound with run,
// which returns how long a round took, and reports the rate over the
// rounds' time only.
func measureRounds(b *testing.B, run func(n int) time.Duration) {
	b.ReportAllocs()
	b.ResetTimer()
	var elapsed time.Duration
	for done := 0; done < b.N; {
		n := min(benchRound, b.N-done)
		elapsed += run(n)
		done += n
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "events/s")
}
