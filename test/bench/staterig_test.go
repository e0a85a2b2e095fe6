package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/internal/state"
	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/publish"
)

// This file is the rig of the ami-state benchmarks: ami-state as a
// subprocess, a writer that stores messages in the event stream exactly as
// ami-ingest's publisher encodes them (pkg/publish's envelope), and a
// watcher of the state bucket. traffic_test.go generates what the writer
// stores.

// stateFlush is ami-state's flush interval in these benchmarks: its
// default, the one the targets are stated for.
const stateFlush = 50 * time.Millisecond

// seedLimit bounds the wait for the acknowledgements of a stream seeded
// with up to millions of messages.
const seedLimit = 10 * time.Minute

// startState runs ami-state on the NATS server at natsURL and returns once
// it reads the stream (its bucket exists). It reads every node of the
// stream (no state.ha); the one node of the file is there because the
// shared file format requires a node list. env is added to its
// environment.
func startState(b *testing.B, natsURL string, env ...string) *mainProc {
	b.Helper()
	p := startMain(b, "ami-state", env, fmt.Sprintf(`nats:
  url: %s
nodes:
  - {name: pbx1, address: '127.0.0.1:1', username: u, secret: s}
%sstate:
  flush_interval: %v
`, natsURL, procHTTP, stateFlush))
	p.WaitLine(`"msg":"state: running"`)
	return p
}

// envelopeWriter stores messages in the event stream as ami-ingest does:
// the payloads of pkg/publish's AppendEvent and AppendMeta on its
// subjects, published asynchronously (at most 4096 unacknowledged). It
// keeps each node's highest acknowledged stream sequence.
type envelopeWriter struct {
	js    jetstream.JetStream
	onAck func(node string, seq uint64, at time.Time) // optional, in the ack handler

	mu     sync.Mutex
	last   map[string]uint64 // node -> highest acknowledged stream sequence; one entry per node written
	failed int
	err    error // the first failure
}

// newEnvelopeWriter creates the event stream (file storage, as ami-ingest
// creates it) on nc; onAck, if set, sees every acknowledgement as it comes.
func newEnvelopeWriter(b *testing.B, nc *nats.Conn, onAck func(node string, seq uint64, at time.Time)) *envelopeWriter {
	b.Helper()
	w := &envelopeWriter{onAck: onAck, last: map[string]uint64{}}
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncAckHandler(w.acked), jetstream.WithPublishAsyncErrHandler(w.refused))
	if err != nil {
		b.Fatal(err)
	}
	w.js = js
	if _, err := publish.EnsureStream(ctxT(b), js, publish.StreamConfig{}); err != nil {
		b.Fatal(err)
	}
	return w
}

// nodeOf is the node token of a subject <prefix>.events.<node>.<token>.
func nodeOf(subject string) string {
	f := strings.Split(subject, ".")
	if len(f) < 4 {
		return ""
	}
	return f[len(f)-2]
}

func (w *envelopeWriter) acked(_ jetstream.JetStream, m *nats.Msg, a *jetstream.PubAck) {
	now := time.Now()
	node := nodeOf(m.Subject)
	w.mu.Lock()
	w.last[node] = max(w.last[node], a.Sequence)
	w.mu.Unlock()
	if w.onAck != nil {
		w.onAck(node, a.Sequence, now)
	}
}

func (w *envelopeWriter) refused(_ jetstream.JetStream, m *nats.Msg, err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failed++
	if w.err == nil {
		w.err = fmt.Errorf("%s: %w", m.Subject, err)
	}
}

// event stores one AMI event of node's session at session sequence seq.
func (w *envelopeWriter) event(b *testing.B, node, session string, seq uint64, t time.Time, m *amiwire.Message) {
	it := eventq.Item{Kind: eventq.KindEvent, Session: session, Seq: seq, Time: t, Msg: m}
	// A fresh buffer per message: nats.go keeps the message until its ack.
	w.publish(b, publish.EventSubject(publish.DefaultPrefix, node, m.Name()), publish.AppendEvent(nil, node, &it, nil))
}

// meta stores a session start, session end, gap or snapshot item of node.
func (w *envelopeWriter) meta(b *testing.B, node string, it *eventq.Item) {
	w.publish(b, publish.MetaSubject(publish.DefaultPrefix, node), publish.AppendMeta(nil, node, it, nil, publish.SnapshotLimits{}))
}

func (w *envelopeWriter) publish(b *testing.B, subject string, data []byte) {
	if _, err := w.js.PublishAsync(subject, data); err != nil {
		b.Fatal(err)
	}
}

// wait returns once every message is acknowledged, and fails the benchmark
// if one was refused; it answers each node's last stream sequence.
func (w *envelopeWriter) wait(b *testing.B) map[string]uint64 {
	b.Helper()
	select {
	case <-w.js.PublishAsyncComplete():
	case <-time.After(seedLimit):
		b.Fatalf("%d publishes still unacknowledged after %v", w.js.PublishAsyncPending(), seedLimit)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.failed > 0 {
		b.Fatalf("%d publishes refused, the first: %v", w.failed, w.err)
	}
	last := make(map[string]uint64, len(w.last))
	for n, s := range w.last {
		last[n] = s
	}
	return last
}

// stateWatch follows every key of the state bucket (a KV watcher in the
// benchmark, as a consumer of the bucket sees it), handing each update to
// its hooks and keeping each node's last status sequence.
type stateWatch struct {
	w        jetstream.KeyWatcher
	done     chan struct{}
	onStatus func(st state.Status, at time.Time) // in the watch goroutine
	onKey    func(key string, at time.Time)      // a channel, bridge or queue key put or deleted

	mu      sync.Mutex
	seqs    map[string]uint64 // node -> last status sequence; one entry per node of the bucket
	changed chan struct{}     // capacity 1: a status came
}

// statusSuffix ends every status key.
var statusSuffix = state.StatusKey("")

// watchState watches the bucket ami-state created on nc's server; the
// benchmark's cleanup stops the watcher and waits for its goroutine.
func watchState(b *testing.B, nc *nats.Conn, onStatus func(state.Status, time.Time), onKey func(string, time.Time)) *stateWatch {
	b.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	kv, err := js.KeyValue(ctxT(b), state.DefaultBucket)
	if err != nil {
		b.Fatal(err)
	}
	s := &stateWatch{done: make(chan struct{}), onStatus: onStatus, onKey: onKey, seqs: map[string]uint64{}, changed: make(chan struct{}, 1)}
	s.w, err = kv.WatchAll(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	go s.run()
	b.Cleanup(func() {
		_ = s.w.Stop()
		<-s.done
	})
	return s
}

func (s *stateWatch) run() {
	defer close(s.done)
	for e := range s.w.Updates() {
		if e == nil {
			continue // the end of the initial values
		}
		at := time.Now()
		if !strings.HasSuffix(e.Key(), statusSuffix) {
			if s.onKey != nil {
				s.onKey(e.Key(), at)
			}
			continue
		}
		var st state.Status
		if e.Operation() != jetstream.KeyValuePut || json.Unmarshal(e.Value(), &st) != nil {
			continue
		}
		if s.onStatus != nil {
			s.onStatus(st, at)
		}
		s.mu.Lock()
		s.seqs[st.Node] = max(s.seqs[st.Node], st.Seq)
		s.mu.Unlock()
		select {
		case s.changed <- struct{}{}:
		default:
		}
	}
}

// waitApplied returns once the status of every node of want is at or past
// its stream sequence there: ami-state has applied and flushed everything
// stored. diag describes ami-state when it has not within limit.
func (s *stateWatch) waitApplied(b *testing.B, want map[string]uint64, limit time.Duration, diag func() string) {
	b.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		behind := 0
		for n, seq := range want {
			if s.seqs[n] < seq {
				behind++
			}
		}
		s.mu.Unlock()
		if behind == 0 {
			return
		}
		select {
		case <-s.changed:
		case <-deadline.C:
			b.Fatalf("%d of %d nodes not applied after %v\n%s", behind, len(want), limit, diag())
		}
	}
}

// stateDiag is the accounting of ami-state from its /metrics and the end of
// its log, for a failure message.
func stateDiag(b *testing.B, p *mainProc) func() string {
	return func() string {
		text := p.metrics(b)
		return fmt.Sprintf("ami-state: applied %v, invalid %v, bad %v, kv writes %v (errors %v), lag %v messages\n%s",
			sumMetric(text, "ami_state_events_applied_total"), sumMetric(text, "ami_state_messages_invalid_total"),
			sumMetric(text, "ami_state_bad_events_total"), sumMetric(text, "ami_state_kv_writes_total"),
			sumMetric(text, "ami_state_kv_write_errors_total"), sumMetric(text, "ami_state_projection_lag_messages"), p.lastLines())
	}
}
