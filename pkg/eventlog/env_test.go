package eventlog_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/publish"
)

// env is an embedded nats-server with JetStream, the events stream as
// ami-ingest creates it, and a writer that stores messages exactly as
// ami-ingest's publisher encodes them (publish.AppendEvent/AppendMeta,
// subjects, Nats-Msg-Id), so that a test can also store what ami-ingest
// never writes (an unmarked jump, a bad payload).
type env struct {
	t      testing.TB
	ns     *testenv.NATS
	nc     *nats.Conn
	js     jetstream.JetStream
	prefix string
	url    string
}

func startEnv(t testing.TB) *env {
	t.Helper()
	ns := testenv.StartNATS(t)
	e := &env{t: t, ns: ns, prefix: publish.DefaultPrefix, url: ns.ClientURL()}
	e.connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := publish.EnsureStream(ctx, e.js, publish.StreamConfig{Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	return e
}

// connect (again) to the server.
func (e *env) connect() {
	e.t.Helper()
	e.nc = testenv.Connect(e.t, e.url)
	e.js = testenv.JetStream(e.t, e.nc)
}

var t0 = time.Date(2026, 11, 23, 1, 41, 56, 154302117, time.UTC)

func msg(kv ...string) *amiwire.Message {
	m := &amiwire.Message{}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Add(kv[i], kv[i+1])
	}
	return m
}

// store publishes data on subj with Nats-Msg-Id id and returns its stream
// sequence.
func (e *env) store(subj, id string, data []byte) uint64 {
	e.t.Helper()
	m := nats.NewMsg(subj)
	m.Data = data
	if id != "" {
		m.Header.Set(jetstream.MsgIDHeader, id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := e.js.PublishMsg(ctx, m)
	if err != nil {
		e.t.Fatalf("publish %s: %v", subj, err)
	}
	if ack.Duplicate {
		e.t.Fatalf("publish %s: duplicate of %d", subj, ack.Sequence)
	}
	return ack.Sequence
}

// event stores an event of node's session with seq; kv are its fields
// after Event.
func (e *env) event(node, session string, seq uint64, name string, kv ...string) uint64 {
	m := msg(append([]string{"Event", name}, kv...)...)
	it := eventq.Item{Kind: eventq.KindEvent, Session: session, Seq: seq, Time: t0.Add(time.Duration(seq) * time.Millisecond), Msg: m}
	data := publish.AppendEvent(nil, node, &it, nil)
	return e.store(publish.EventSubject(e.prefix, node, m.Name()), session+"-"+strconv.FormatUint(seq, 10), data)
}

func (e *env) meta(node string, it eventq.Item) uint64 {
	if it.Time.IsZero() {
		it.Time = t0
	}
	data := publish.AppendMeta(nil, node, &it, nil, publish.SnapshotLimits{})
	return e.store(publish.MetaSubject(e.prefix, node), "", data)
}

func (e *env) start(node, session string) uint64 {
	return e.meta(node, eventq.Item{Kind: eventq.KindSessionStart, Session: session, Version: "5.0.2", Owner: "ingest-1"})
}

func (e *env) end(node, session, reason string, lastSeq uint64) uint64 {
	return e.meta(node, eventq.Item{Kind: eventq.KindSessionEnd, Session: session, Reason: reason, LastSeq: lastSeq})
}

func (e *env) gap(node, session string, first, last uint64, reason string) uint64 {
	return e.meta(node, eventq.Item{Kind: eventq.KindGap, Session: session, FirstSeq: first, LastSeq: last,
		Count: last - first + 1, Reason: reason})
}

func (e *env) snapshot(node, session, action string, items ...*amiwire.Message) uint64 {
	return e.meta(node, eventq.Item{Kind: eventq.KindSnapshot, Session: session, Action: action, Items: items, Total: len(items)})
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}
