package state

// The Service's test harness: a server with the events stream, PBXs
// writing to it as ami-ingest does, and Services run on it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/publish"
)

type env struct {
	t  *testing.T
	nc *nats.Conn
	js jetstream.JetStream
	// file: the stream and the bucket on disk (a server restarted in the
	// test keeps them); otherwise in memory.
	file bool
}

// newEnv is a server with the events stream in memory.
func newEnv(t *testing.T) *env {
	t.Helper()
	e, _ := startEnv(t, false)
	return e
}

// newRestartableEnv is newEnv on a server the test can stop and restart,
// with the stream and the bucket on disk and clients that reconnect
// forever.
func newRestartableEnv(t *testing.T) (*env, *testenv.NATS) {
	t.Helper()
	return startEnv(t, true)
}

func startEnv(t *testing.T, file bool) (*env, *testenv.NATS) {
	t.Helper()
	ns := testenv.StartNATS(t)
	nc := testenv.Connect(t, ns.ClientURL())
	js := testenv.JetStream(t, nc)
	storage := jetstream.MemoryStorage
	if file {
		storage = jetstream.FileStorage
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := publish.EnsureStream(ctx, js, publish.StreamConfig{Storage: storage}); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, nc: nc, js: js, file: file}, ns
}

// newStartedPBX is newEnv with node pbx1 whose session has started: what
// most service tests begin with.
func newStartedPBX(t *testing.T) (*env, *pbx) {
	t.Helper()
	e := newEnv(t)
	p := e.pbx("pbx1")
	p.start()
	return e, p
}

// pbx writes one node's messages to the stream as ami-ingest does.
type pbx struct {
	e       *env
	node    string
	session string
	seq     uint64
	last    uint64 // stream sequence of the last message written
	clock   time.Time
}

func (e *env) pbx(node string) *pbx {
	return &pbx{e: e, node: node, session: "sess-" + node + "-1", clock: time.Now().UTC().Add(-time.Hour)}
}

func (p *pbx) publish(subject, id string, v any) {
	p.e.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		p.e.t.Fatal(err)
	}
	msg := &nats.Msg{Subject: subject, Data: b, Header: nats.Header{jetstream.MsgIDHeader: []string{id}}}
	ack, err := p.e.js.PublishMsg(context.Background(), msg)
	if err != nil {
		p.e.t.Fatal(err)
	}
	p.last = ack.Sequence
}

func (p *pbx) tick() string {
	p.clock = p.clock.Add(time.Millisecond)
	return p.clock.Format(time.RFC3339Nano)
}

func (p *pbx) ev(name string, kv ...string) {
	p.seq++
	fields := map[string]any{"Event": name}
	for i := 0; i+1 < len(kv); i += 2 {
		fields[kv[i]] = kv[i+1]
	}
	p.publish("ami.events."+p.node+"."+name, fmt.Sprintf("%s-%d", p.session, p.seq), map[string]any{
		"node": p.node, "event": name, "session": p.session, "seq": p.seq, "time": p.tick(), "fields": fields})
}

func (p *pbx) start() {
	p.seq = 0
	p.publish("ami.events."+p.node+"._meta", p.session+"-start", map[string]any{
		"node": p.node, "type": "session_start", "session": p.session, "time": p.tick(), "version": "9.0.0", "owner": "test"})
}

func (p *pbx) gap(n uint64) {
	first := p.seq + 1
	p.seq += n
	p.publish("ami.events."+p.node+"._meta", fmt.Sprintf("%s-gap-%d", p.session, first), map[string]any{
		"node": p.node, "type": "gap", "session": p.session, "time": p.tick(), "first_seq": first, "last_seq": p.seq, "count": n, "reason": "buffer_full"})
}

func (p *pbx) snapshot(action string, items ...map[string]string) {
	its := make([]map[string]any, len(items))
	for i, it := range items {
		its[i] = map[string]any{}
		for k, v := range it {
			its[i][k] = v
		}
	}
	p.publish("ami.events."+p.node+"._meta", fmt.Sprintf("%s-snap-%s-%d", p.session, action, p.seq), map[string]any{
		"node": p.node, "type": "snapshot", "session": p.session, "time": p.tick(), "action": action, "items": its})
}

func (p *pbx) newchannel(uid string) { p.ev("Newchannel", chanBlock(uid, "PJSIP/"+uid, 0)...) }

// running is a Service run by a test.
type running struct {
	s      *Service
	cancel context.CancelFunc
	done   chan error
}

func (e *env) run(cfg Config) *running { return e.runOn(e.nc, e.js, cfg) }

// runOn is run on a NATS connection of the caller's.
func (e *env) runOn(nc *nats.Conn, js jetstream.JetStream, cfg Config) *running {
	e.t.Helper()
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = 10 * time.Millisecond
	}
	cfg.Storage = jetstream.MemoryStorage
	if e.file {
		cfg.Storage = jetstream.FileStorage
	}
	s, err := New(nc, js, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{s: s, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	e.t.Cleanup(func() { r.stop(e.t) })
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	r.done <- nil // a second stop returns at once
}

// waitFlushed waits until the bucket holds every node's state up to stream
// sequence pos.
func (r *running) waitFlushed(t *testing.T, pos uint64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		ch, at := r.s.Flushed()
		if at >= pos && r.s.Ready() == nil {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("bucket not flushed to %d (at %d)", pos, at)
		}
	}
}

// ownJetStream is JetStream on a connection of its own, as each replica
// has for its leases.
func (e *env) ownJetStream() jetstream.JetStream {
	return testenv.JetStream(e.t, testenv.Connect(e.t, e.nc.ConnectedUrl()))
}

func (e *env) kv(bucket string) jetstream.KeyValue {
	kv, err := e.js.KeyValue(context.Background(), bucket)
	if err != nil {
		e.t.Fatal(err)
	}
	return kv
}

// watch watches key of bucket for the updates to come, until the test
// ends.
func (e *env) watch(bucket, key string) jetstream.KeyWatcher {
	e.t.Helper()
	w, err := e.kv(bucket).Watch(context.Background(), key, jetstream.UpdatesOnly())
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { _ = w.Stop() })
	return w
}

// bucketState reads the bucket's live keys of node as key -> decoded value.
func (e *env) bucketState(bucket, node string) map[string]any {
	e.t.Helper()
	kv := e.kv(bucket)
	out := map[string]any{}
	keys, err := kv.ListKeysFiltered(context.Background(), node+".>")
	if err != nil {
		e.t.Fatal(err)
	}
	for k := range keys.Keys() {
		v, err := kv.Get(context.Background(), k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			e.t.Fatal(err)
		}
		var x any
		if err := json.Unmarshal(v.Value(), &x); err != nil {
			e.t.Fatal(err)
		}
		out[k] = x
	}
	return out
}

// snapshotKeys renders a whole-state answer as the keys it stands for.
func snapshotKeys(s Snapshot) map[string]any {
	out := map[string]any{}
	add := func(k string, v any) {
		b, _ := json.Marshal(v)
		var x any
		_ = json.Unmarshal(b, &x)
		out[k] = x
	}
	for _, c := range s.Channels {
		add(Key(s.Node, EntityChannel, c.Uniqueid), c)
	}
	for _, b := range s.Bridges {
		add(Key(s.Node, EntityBridge, b.ID), b)
	}
	for _, q := range s.Queues {
		add(Key(s.Node, EntityQueue, q.Name), q)
	}
	return out
}

func withoutStatus(m map[string]any, node string) map[string]any {
	delete(m, StatusKey(node))
	return m
}
