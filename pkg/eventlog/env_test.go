package eventlog_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/eventlog"
	"github.com/amibus/amibus/pkg/publish"
)

// env is a nats-server with JetStream, the events stream as ami-ingest
// creates it, and a writer that stores messages as ami-ingest does (see
// eventlog.Stored).
type env struct {
	t      testing.TB
	js     jetstream.JetStream
	prefix string
	url    string
}

// startEnv starts an embedded server with the stream in memory.
func startEnv(t testing.TB) *env {
	t.Helper()
	return dialEnv(t, testenv.StartNATS(t).ClientURL(), jetstream.MemoryStorage)
}

// dialEnv connects to the server at url and creates the events stream
// there with storage.
func dialEnv(t testing.TB, url string, storage jetstream.StorageType) *env {
	t.Helper()
	e := &env{t: t, prefix: publish.DefaultPrefix, url: url}
	e.connect()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := publish.EnsureStream(ctx, e.js, publish.StreamConfig{Storage: storage}); err != nil {
		t.Fatal(err)
	}
	return e
}

// connect (again) to the server.
func (e *env) connect() {
	e.t.Helper()
	e.js = testenv.JetStream(e.t, testenv.Connect(e.t, e.url))
}

// store publishes s and returns its stream sequence.
func (e *env) store(s eventlog.Stored) uint64 {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ack, err := e.js.PublishMsg(ctx, s.Msg())
	if err != nil {
		e.t.Fatalf("publish %s: %v", s.Subject, err)
	}
	if ack.Duplicate {
		e.t.Fatalf("publish %s: duplicate of %d", s.Subject, ack.Sequence)
	}
	return ack.Sequence
}

// event stores an event of node's session with seq; kv are its fields
// after Event.
func (e *env) event(node, session string, seq uint64, name string, kv ...string) uint64 {
	m := eventlog.AMIMessage(append([]string{"Event", name}, kv...)...)
	return e.store(eventlog.StoredEvent(e.prefix, node, session, seq, eventlog.T0.Add(time.Duration(seq)*time.Millisecond), m))
}

func (e *env) meta(node string, it eventq.Item) uint64 {
	return e.store(eventlog.StoredMeta(e.prefix, node, it))
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
