package bench

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
	"github.com/amibus/amibus/pkg/publish"
)

// latencyRate is the steady event rate of the latency benchmark (issue 9).
const latencyRate = 10000

// latencyInbox is the inbox prefix of the in-process ingest's NATS
// connection: its JetStream acks arrive on it, where the benchmark sees
// them too (a core subscription gets a copy of every message).
const latencyInbox = "_BENCHACK"

// BenchmarkIngestLatency measures the time from the simulator emitting an
// event (amisim Emit, stamped just before) to the arrival of its JetStream
// ack at the ingest's connection, at a steady 10,000 events/s of 393-byte
// events. The first second is warm-up and not counted. Everything runs in
// this process: amisim, the ingest Service, one embedded nats-server with a
// file-storage stream. The measuring window is AMIBUS_BENCH_LATENCY
// (default 10s, 3s under -short); b.N is ignored (one window per run).
func BenchmarkIngestLatency(b *testing.B) {
	measure := window(b, "AMIBUS_BENCH_LATENCY", 10*time.Second, 3*time.Second)
	r := startOneNode(b, amisim.Config{}, nats.CustomInboxPrefix(latencyInbox))
	sim, obs, js, ing := r.sim, r.obs, r.js, r.ing
	stream, err := js.Stream(ctxT(b), ing.cfg.Stream.Name)
	if err != nil {
		b.Fatal(err)
	}
	base := storedMarker(b, js, ing.cfg.Stream.Name, sim)

	warm := latencyRate // one second
	n := warm + int(measure.Seconds()*latencyRate)
	acks := newAckLog(base, n)
	sub, err := obs.Subscribe(latencyInbox+".>", acks.record)
	if err != nil {
		b.Fatal(err)
	}
	// A burst of acks must not be dropped as a slow consumer: room for
	// every ack of the run.
	if err := sub.SetPendingLimits(n+1000, -1); err != nil {
		b.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := obs.Flush(); err != nil {
		b.Fatal(err)
	}

	b.ResetTimer()
	sent := emitSteady(sim, n, latencyRate)
	acks.wait(b)
	b.StopTimer()

	checkStoredOrder(b, stream, base, n)
	ing.checkNoLoss(b, "pbx1")
	lat := make([]time.Duration, 0, n-warm)
	for k := warm; k < n; k++ {
		lat = append(lat, acks.at[k].Sub(sent[k]))
	}
	reportLatency(b, lat)
	b.ReportMetric(float64(len(lat)), "events")
	b.ReportMetric(ing.retries("pbx1"), "retries")
	slowest := warm
	for k := warm; k < n; k++ {
		if acks.at[k].Sub(sent[k]) > acks.at[slowest].Sub(sent[slowest]) {
			slowest = k
		}
	}
	b.Logf("slowest: event %d emitted %v after the start, acked after %v", slowest, sent[slowest].Sub(sent[0]), acks.at[slowest].Sub(sent[slowest]))
	b.ReportMetric(float64(wireSize("Newstate", "call,all", append(slices.Clone(latencyHeaders),
		[2]string{"BenchSeq", "12345"}, [2]string{"BenchSent", "1795398116123456789"}))), "B/event-wire")
}

// storedMarker has sim emit a marker event and returns its stream sequence
// once it is stored: from there on only the benchmark's events are
// published, so the k-th event emitted (from 0) is stored at base+1+k.
func storedMarker(b *testing.B, js jetstream.JetStream, stream string, sim *amisim.Server) uint64 {
	b.Helper()
	s, err := js.Stream(ctxT(b), stream)
	if err != nil {
		b.Fatal(err)
	}
	info, err := s.Info(ctxT(b))
	if err != nil {
		b.Fatal(err)
	}
	// The marker is stored after everything stored now: look from there
	// (the ordered consumer is created on the first Next, after the Emit).
	c, err := s.OrderedConsumer(ctxT(b), jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{"ami.events.pbx1.UserEvent"},
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    info.State.LastSeq + 1,
	})
	if err != nil {
		b.Fatal(err)
	}
	sim.Emit("UserEvent", [2]string{"UserEvent", "BenchStart"})
	m, err := c.Next(jetstream.FetchMaxWait(waitLimit))
	if err != nil {
		b.Fatalf("start marker not stored: %v", err)
	}
	meta, err := m.Metadata()
	if err != nil {
		b.Fatal(err)
	}
	return meta.Sequence.Stream
}

// wireSize is the size of an AMI event as amisim writes it.
func wireSize(event, privilege string, headers [][2]string) int {
	n := len("Event: \r\n") + len(event) + len("Privilege: \r\n") + len(privilege) + len("\r\n")
	for _, h := range headers {
		n += len(h[0]) + len(": \r\n") + len(h[1])
	}
	return n
}

// percentile is the nearest-rank p-th percentile of sorted.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// countBelow is how many of sorted are under d.
func countBelow(sorted []time.Duration, d time.Duration) int {
	i, _ := slices.BinarySearch(sorted, d)
	return i
}

// latencyHeaders make an event of about 380 bytes on the wire, shaped like
// a Newstate of transcript 07; BenchSeq and BenchSent come after them.
var latencyHeaders = [][2]string{
	{"Channel", "Local/200@demo-00000001;1"}, {"ChannelState", "6"}, {"ChannelStateDesc", "Up"},
	{"CallerIDNum", "200"}, {"CallerIDName", "<unknown>"}, {"ConnectedLineNum", "<unknown>"},
	{"ConnectedLineName", "<unknown>"}, {"Language", "en"}, {"AccountCode", ""}, {"Context", "demo"},
	{"Exten", "200"}, {"Priority", "1"}, {"Uniqueid", "pbx1-1795398116.4"}, {"Linkedid", "pbx1-1795398116.3"},
}

// emitSteady emits n events at rate per second from sim, and returns when
// each was emitted.
func emitSteady(sim *amisim.Server, n int, rate float64) []time.Time {
	sent := make([]time.Time, n)
	hdr := append(slices.Clone(latencyHeaders), [2]string{"BenchSeq", ""}, [2]string{"BenchSent", ""})
	pace(n, rate, func(k int) {
		now := time.Now()
		hdr[len(hdr)-2][1] = strconv.Itoa(k)
		hdr[len(hdr)-1][1] = strconv.FormatInt(now.UnixNano(), 10)
		sent[k] = now
		sim.Emit("Newstate", hdr...)
	})
	return sent
}

// pace calls send(k) for k = 0..n-1 at rate per second, on a 1 ms ticker:
// each tick sends what is due by then.
func pace(n int, rate float64, send func(k int)) {
	t := time.NewTicker(time.Millisecond)
	defer t.Stop()
	start := time.Now()
	for k := 0; k < n; {
		due := min(n, int(time.Since(start).Seconds()*rate)+1)
		for ; k < due; k++ {
			send(k)
		}
		if k < n {
			<-t.C
		}
	}
}

// ackLog records when the ack of each stream sequence arrived.
type ackLog struct {
	base uint64
	at   []time.Time
	mu   sync.Mutex
	got  int
	done chan struct{}
}

func newAckLog(base uint64, n int) *ackLog {
	return &ackLog{base: base, at: make([]time.Time, n), done: make(chan struct{})}
}

// record takes a message on the ingest's inbox: a publish ack
// {"stream":..,"seq":N} or another reply (stream info), which it ignores.
func (a *ackLog) record(m *nats.Msg) {
	now := time.Now()
	var ack struct {
		Stream    string `json:"stream"`
		Seq       uint64 `json:"seq"`
		Duplicate bool   `json:"duplicate"`
	}
	if json.Unmarshal(m.Data, &ack) != nil || ack.Stream == "" || ack.Seq <= a.base || ack.Duplicate {
		return
	}
	k := int(ack.Seq - a.base - 1)
	if k >= len(a.at) {
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.at[k].IsZero() {
		a.at[k] = now
		a.got++
		if a.got == len(a.at) {
			close(a.done)
		}
	}
}

func (a *ackLog) wait(b *testing.B) {
	b.Helper()
	select {
	case <-a.done:
	case <-time.After(waitLimit):
		a.mu.Lock()
		defer a.mu.Unlock()
		b.Fatalf("%d of %d acks seen", a.got, len(a.at))
	}
}

// checkStoredOrder checks the premise of the ack mapping: the k-th event
// emitted is stored at base+1+k (first, last and 100 at random).
func checkStoredOrder(b *testing.B, stream jetstream.Stream, base uint64, n int) {
	b.Helper()
	ks := []int{0, n - 1}
	for range 100 {
		ks = append(ks, rand.IntN(n))
	}
	for _, k := range ks {
		m, err := stream.GetMsg(ctxT(b), base+1+uint64(k))
		if err != nil {
			b.Fatal(err)
		}
		var ev struct {
			Event  string            `json:"event"`
			Fields map[string]string `json:"fields"`
		}
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			b.Fatalf("stream seq %d: %v", m.Sequence, err)
		}
		if ev.Event != "Newstate" || ev.Fields["BenchSeq"] != strconv.Itoa(k) {
			b.Fatalf("stream seq %d holds %s BenchSeq %q, want Newstate %d", m.Sequence, ev.Event, ev.Fields["BenchSeq"], k)
		}
	}
}

// BenchmarkDirectLatency is the floor under BenchmarkIngestLatency: the
// same rate of messages of the pipeline's JSON size, each with its
// Nats-Msg-Id, published by nats.go async publish straight to a
// file-storage stream of the same configuration on the same kind of
// embedded server, from publish call to ack. It shows what of the ingest's
// latency is JetStream's and this machine's.
func BenchmarkDirectLatency(b *testing.B) {
	measure := window(b, "AMIBUS_BENCH_LATENCY", 10*time.Second, 3*time.Second)
	emb := testenv.StartNATS(b)
	nc := connect(b, emb.ClientURL(), "bench-direct")
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := publish.EnsureStream(ctxT(b), js, publish.StreamConfig{MaxAge: 72 * time.Hour}); err != nil {
		b.Fatal(err)
	}
	warm := latencyRate
	n := warm + int(measure.Seconds()*latencyRate)
	sent, acked := make([]time.Time, n), make([]time.Time, n)
	var (
		mu     sync.Mutex
		got    int
		failed int
		done   = make(chan struct{})
	)
	outcome := func(m *nats.Msg, err error) {
		now := time.Now()
		k, perr := strconv.Atoi(m.Header.Get("Bench-Seq"))
		mu.Lock()
		defer mu.Unlock()
		if err != nil || perr != nil {
			failed++
		} else {
			acked[k] = now
		}
		if got++; got == n {
			close(done)
		}
	}
	pjs, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncAckHandler(func(_ jetstream.JetStream, m *nats.Msg, _ *jetstream.PubAck) { outcome(m, nil) }),
		jetstream.WithPublishAsyncErrHandler(func(_ jetstream.JetStream, m *nats.Msg, err error) { outcome(m, err) }))
	if err != nil {
		b.Fatal(err)
	}
	defer pjs.CleanupPublisher()
	// The JSON of a Newstate event as the ingest writes it (~560 bytes).
	payload := []byte(`{"node":"pbx1","event":"Newstate","session":"k3x9q-pbx1-1795398116","seq":123456,"time":"2026-11-23T19:31:46.123456789Z","fields":{"Privilege":"call,all","Channel":"Local/200@demo-00000001;1","ChannelState":"6","ChannelStateDesc":"Up","CallerIDNum":"200","CallerIDName":"<unknown>","ConnectedLineNum":"<unknown>","ConnectedLineName":"<unknown>","Language":"en","AccountCode":"","Context":"demo","Exten":"200","Priority":"1","Uniqueid":"pbx1-1795398116.4","Linkedid":"pbx1-1795398116.3","BenchSeq":"12345","BenchSent":"1795398116123456789"}}`)

	b.ResetTimer()
	pace(n, latencyRate, func(k int) {
		ks := strconv.Itoa(k)
		m := &nats.Msg{Subject: "ami.events.pbx1.Newstate", Data: payload,
			Header: nats.Header{jetstream.MsgIDHeader: {"k3x9q-pbx1-1795398116-" + ks}, "Bench-Seq": {ks}}}
		sent[k] = time.Now()
		if _, err := pjs.PublishMsgAsync(m); err != nil {
			b.Fatal(err)
		}
	})
	select {
	case <-done:
	case <-time.After(waitLimit):
		b.Fatal("acks missing")
	}
	b.StopTimer()
	if failed > 0 {
		b.Fatalf("%d publishes failed", failed)
	}
	lat := make([]time.Duration, 0, n-warm)
	for k := warm; k < n; k++ {
		lat = append(lat, acked[k].Sub(sent[k]))
	}
	reportLatency(b, lat)
	b.ReportMetric(float64(len(payload)), "B/event-json")
	slowest := warm
	for k := warm; k < n; k++ {
		if acked[k].Sub(sent[k]) > acked[slowest].Sub(sent[slowest]) {
			slowest = k
		}
	}
	b.Logf("slowest: message %d published %v after the start, acked after %v", slowest, sent[slowest].Sub(sent[0]), acked[slowest].Sub(sent[slowest]))
}

// reportLatency sorts lat and reports its percentiles, its maximum and how
// many events took over 5 ms.
func reportLatency(b *testing.B, lat []time.Duration) {
	slices.Sort(lat)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	b.ReportMetric(us(percentile(lat, 50)), "p50-us")
	b.ReportMetric(us(percentile(lat, 90)), "p90-us")
	b.ReportMetric(us(percentile(lat, 99)), "p99-us")
	b.ReportMetric(us(lat[len(lat)-1]), "max-us")
	b.ReportMetric(float64(len(lat)-countBelow(lat, 5*time.Millisecond)), "events-over-5ms")
}
