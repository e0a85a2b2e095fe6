package publish

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// connect dials as the ingest must: no reconnect buffer, reconnecting
// forever; async errors (an outage) are expected and not printed.
func connect(t testing.TB, env *testenv.NATS) *nats.Conn {
	t.Helper()
	return testenv.Connect(t, env.ClientURL(), nats.ReconnectBufSize(-1),
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func ensureStream(t testing.TB, nc *nats.Conn, cfg StreamConfig) jetstream.JetStream {
	t.Helper()
	js := testenv.JetStream(t, nc)
	if _, err := EnsureStream(ctxT(t, 10*time.Second), js, cfg); err != nil {
		t.Fatal(err)
	}
	return js
}

// startStream starts a NATS server with the events stream made from cfg,
// and connects to it as the ingest does.
func startStream(t testing.TB, cfg StreamConfig) (*testenv.NATS, *nats.Conn, jetstream.JetStream) {
	t.Helper()
	env := testenv.StartNATS(t)
	nc := connect(t, env)
	return env, nc, ensureStream(t, nc, cfg)
}

// observed is a logger option keeping what is logged at level and above,
// for a test to look for (or rule out) a line.
func observed(level zapcore.Level) (Option, *observer.ObservedLogs) {
	core, logs := observer.New(level)
	return WithLogger(zap.New(core)), logs
}

// pipeline is one Publisher with its node queues and metrics.
type pipeline struct {
	pub *Publisher
	reg *metrics.Metrics
	qs  map[string]*eventq.Queue
}

func newPipeline(t testing.TB, nc *nats.Conn, nodes []string, qopts []eventq.Option, popts ...Option) *pipeline {
	t.Helper()
	return buildPipeline(t, nc, nodes, qopts, nil, popts...)
}

// buildPipeline is newPipeline with a hook that may wrap the Publisher's
// JetStream (a scriptedJS) before it starts.
func buildPipeline(t testing.TB, nc *nats.Conn, nodes []string, qopts []eventq.Option, hook func(*Publisher), popts ...Option) *pipeline {
	t.Helper()
	reg := metrics.New()
	pub, err := NewPublisher(nc, append([]Option{WithMetrics(reg)}, popts...)...)
	if err != nil {
		t.Fatal(err)
	}
	if hook != nil {
		hook(pub)
	}
	pl := &pipeline{pub: pub, reg: reg, qs: map[string]*eventq.Queue{}}
	budget := eventq.NewBudget(eventq.DefaultMaxBytes)
	for _, n := range nodes {
		q, err := eventq.New(n, append([]eventq.Option{eventq.WithMetrics(reg), eventq.WithBudget(budget), eventq.WithOwner("inst1")}, qopts...)...)
		if err != nil {
			t.Fatal(err)
		}
		if err := pub.Add(n, q); err != nil {
			t.Fatal(err)
		}
		pl.qs[n] = q
	}
	if err := pub.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return pl
}

// stored is one message read back from the stream.
type stored struct {
	subject string
	msgID   string
	data    []byte
	event   eventJSON      // for events
	meta    map[string]any // for markers
}

func (s stored) isMeta() bool { return strings.HasSuffix(s.subject, "."+MetaToken) }

func (s stored) metaType() string { t, _ := s.meta["type"].(string); return t }

func (s stored) num(k string) uint64 { f, _ := s.meta[k].(float64); return uint64(f) }

// readStream returns every message of the stream in stream order, decoded
// and validated against the schemas.
func readStream(t testing.TB, js jetstream.JetStream, name string) []stored {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	s, err := js.Stream(ctx, name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var out []stored
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatalf("get %d: %v", seq, err)
		}
		st := stored{subject: m.Subject, msgID: m.Header.Get(jetstream.MsgIDHeader), data: m.Data}
		last := st.subject[strings.LastIndexByte(st.subject, '.')+1:]
		validate(t, last, m.Data)
		if st.isMeta() {
			if err := json.Unmarshal(m.Data, &st.meta); err != nil {
				t.Fatal(err)
			}
		} else {
			st.event = decodeEvent(t, m.Data)
		}
		out = append(out, st)
	}
	return out
}

// checkAccounting asserts received = published + dropped + buffered for the
// queue, with nothing left buffered, and that the published counter agrees
// with the metric.
func checkAccounting(t testing.TB, pl *pipeline, node string) eventq.Stats {
	t.Helper()
	s := pl.qs[node].Stats()
	if s.Received != s.Published+s.Dropped()+s.Buffered {
		t.Fatalf("%s: received %d != published %d + dropped %d + buffered %d", node, s.Received, s.Published, s.Dropped(), s.Buffered)
	}
	if s.Buffered != 0 || s.Bytes != 0 || s.Waiting != 0 {
		t.Fatalf("%s: left in buffer: %+v", node, s)
	}
	if got := counter(pl.reg.EventsPublished.WithLabelValues(node)); got != s.Published {
		t.Fatalf("%s: published metric %d, stats %d", node, got, s.Published)
	}
	return s
}

func counter(c prometheus.Collector) uint64 { return uint64(testutil.ToFloat64(c)) }
