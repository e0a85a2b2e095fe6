package ingest

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/pkg/amisim"
)

// streamReader reads the events stream in order with an ordered consumer,
// which pushes messages as they are stored: waiting for one never polls.
type streamReader struct {
	t       *testing.T
	js      jetstream.JetStream
	name    string
	filters []string
	cons    jetstream.Consumer
	created *nats.Subscription // stream-created advisories, until the stream exists

	mu      sync.Mutex
	pending []record      // decoded by the consumer's goroutine, not yet taken
	bad     error         // a message that would not decode
	wake    chan struct{} // capacity 1: something was added to pending
	recs    []record      // owned by the test goroutine
}

func newStreamReader(t *testing.T, nc *nats.Conn, stream string, filters ...string) *streamReader {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	// Subscribed before looking, so a stream created in between is seen.
	sub, err := nc.SubscribeSync("$JS.EVENT.ADVISORY.STREAM.CREATED." + stream)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil { // the server has the subscription
		t.Fatal(err)
	}
	return &streamReader{t: t, js: js, name: stream, filters: filters, created: sub, wake: make(chan struct{}, 1)}
}

func (r *streamReader) consumer(ctx context.Context) error {
	if r.cons != nil {
		return nil
	}
	announced, wait := false, 5*time.Millisecond
	for {
		c, err := r.js.OrderedConsumer(ctx, r.name, jetstream.OrderedConsumerConfig{FilterSubjects: r.filters})
		if err == nil {
			cc, err := c.Consume(r.handle)
			if err != nil {
				return err
			}
			r.cons = c
			r.t.Cleanup(func() {
				cc.Stop()
				<-cc.Closed()
			})
			return nil
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			return err
		}
		if !announced {
			if _, err := r.created.NextMsgWithContext(ctx); err != nil {
				return fmt.Errorf("stream %s not created: %w", r.name, err)
			}
			announced = true
			continue
		}
		// The server announces a new stream a moment before its API
		// finds it: retry shortly, now that it is known to be coming.
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("stream %s announced but not found: %w", r.name, ctx.Err())
		case <-t.C:
		}
		wait = min(2*wait, 500*time.Millisecond)
	}
}

// handle runs on the consumer's goroutine: it must not call t.Fatal.
func (r *streamReader) handle(msg jetstream.Msg) {
	md, err := msg.Metadata()
	var rec record
	if err == nil {
		rec, err = decodeRecord(msg.Subject(), msg.Headers(), msg.Data(), md.Sequence.Stream)
	}
	r.mu.Lock()
	if err != nil && r.bad == nil {
		r.bad = err
	}
	r.pending = append(r.pending, rec)
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// until reads on until cond holds for everything read so far, and returns
// the records. It fails the test at waitLimit.
func (r *streamReader) until(what string, cond func(recs []record) bool) []record {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	if err := r.consumer(ctx); err != nil {
		r.t.Fatalf("waiting for %s: %v", what, err)
	}
	for {
		r.mu.Lock()
		r.recs = append(r.recs, r.pending...)
		r.pending = r.pending[:0]
		bad := r.bad
		r.mu.Unlock()
		if bad != nil {
			r.t.Fatal(bad)
		}
		if cond(r.recs) {
			return r.recs
		}
		select {
		case <-r.wake:
		case <-ctx.Done():
			r.t.Fatalf("timed out waiting for %s; read %d messages, last: %v", what, len(r.recs), last(r.recs, 5))
		}
	}
}

// all reads what the stream holds now (its last sequence at the call).
func (r *streamReader) all() []record {
	r.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	s, err := r.js.Stream(ctx, r.name)
	if err != nil {
		r.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	lastSeq := info.State.LastSeq
	return r.until("the whole stream", func(recs []record) bool {
		return len(recs) > 0 && recs[len(recs)-1].StreamSeq >= lastSeq || lastSeq == 0
	})
}

func last(recs []record, n int) []record {
	return recs[max(0, len(recs)-n):]
}

// everyNodeHas is a reader condition: each of sims has an event named
// name stored.
func everyNodeHas(sims []*amisim.Server, name string) func([]record) bool {
	return func(recs []record) bool {
		for _, s := range sims {
			if !slices.ContainsFunc(nodeRecords(recs, s.Node()), func(r record) bool { return r.Event == name }) {
				return false
			}
		}
		return true
	}
}

// allReached is a reader condition: each of sims has its events stored up
// to the last one sent (sent[i] for sims[i]), from seq 1.
func allReached(sims []*amisim.Server, sent [][]amisim.SentEvent) func([]record) bool {
	return func(recs []record) bool {
		for i, s := range sims {
			if !reached(recs, s.Node(), 1, uint64(len(sent[i]))) {
				return false
			}
		}
		return true
	}
}

// nodeRecords keeps node's records (subjects <prefix>.events.<node>.*).
func nodeRecords(recs []record, node string) []record {
	var out []record
	for _, r := range recs {
		if r.Node == node {
			out = append(out, r)
		}
	}
	return out
}

// lastSeqSeen reports whether recs hold node's event seq (or a gap reaching
// it) for the session of conn order k (0-based) — used to wait until a
// known number of events has landed.
func reached(recs []record, node string, sessions int, seq uint64) bool {
	var sess []string
	for _, r := range recs {
		if r.Node != node {
			continue
		}
		if r.meta() && r.Type == "session_start" {
			sess = append(sess, r.Session)
		}
		if len(sess) != sessions || r.Session != sess[sessions-1] {
			continue
		}
		if !r.meta() && r.Seq >= seq || r.meta() && r.Type == "gap" && r.LastSeq >= seq {
			return true
		}
	}
	return false
}
