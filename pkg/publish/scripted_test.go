package publish

import (
	"context"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap/zapcore"

	"github.com/amibus/amibus/internal/testenv"
)

// fate is what a scriptedJS does with one publish.
type fate int

const (
	pass    fate = iota // publish for real, real ack
	stall               // refuse with ErrTooManyStalledMsgs, send nothing
	loseAck             // store it, then report an ack timeout
	hold                // in flight: neither stored nor answered until release
	refuse              // a retryable error at once, nothing sent
	failNow             // nothing stored; the stream's "no responders" comes before PublishMsgAsync returns
)

// scriptedJS wraps the Publisher's JetStream so that a test chooses, per
// Nats-Msg-Id and attempt, what becomes of a publish: the errors and lost
// acks a real server gives only by chance. What it stores goes to the real
// stream, so JetStream's deduplication is the real one.
type scriptedJS struct {
	jetstream.JetStream
	p      *Publisher
	script map[string][]fate // per Msg-Id, the fate of each attempt; pass after the list

	mu    sync.Mutex
	sends []string    // the Msg-Id of every publish handed over, in order
	held  []*nats.Msg // in flight, in order
	// calls gets the Msg-Id of every publish handed over, for a test that
	// waits; its capacity is far above the publishes of a test, so the
	// node never blocks on it.
	calls chan string
}

func scripted(script map[string][]fate) (*scriptedJS, func(*Publisher)) {
	f := &scriptedJS{script: script, calls: make(chan string, 1024)}
	return f, func(p *Publisher) {
		f.p, f.JetStream = p, p.js
		p.js = f
	}
}

func (f *scriptedJS) PublishMsgAsync(m *nats.Msg, opts ...jetstream.PublishOpt) (jetstream.PubAckFuture, error) {
	id := m.Header.Get(jetstream.MsgIDHeader)
	f.mu.Lock()
	attempt := 0
	for _, s := range f.sends {
		if s == id {
			attempt++
		}
	}
	f.sends = append(f.sends, id)
	what := pass
	if fates := f.script[id]; attempt < len(fates) {
		what = fates[attempt]
	}
	if what == hold {
		f.held = append(f.held, m)
	}
	f.mu.Unlock()
	f.calls <- id
	switch what {
	case stall:
		return nil, fmt.Errorf("scripted: %w", jetstream.ErrTooManyStalledMsgs)
	case refuse:
		return nil, fmt.Errorf("scripted: %w", nats.ErrNoResponders)
	case loseAck:
		if _, err := f.JetStream.PublishMsg(context.Background(), m); err != nil {
			return nil, err
		}
		f.p.onErr(f, m, nats.ErrTimeout)
		return nil, nil
	case failNow:
		f.p.onErr(f, m, jetstream.ErrNoStreamResponse)
		return nil, nil
	case hold:
		return nil, nil
	}
	return f.JetStream.PublishMsgAsync(m, opts...)
}

// release stores the held publishes in order and delivers their acks.
func (f *scriptedJS) release(t *testing.T) {
	t.Helper()
	f.mu.Lock()
	held := f.held
	f.held = nil
	f.mu.Unlock()
	for _, m := range held {
		ack, err := f.JetStream.PublishMsg(context.Background(), m)
		if err != nil {
			t.Fatal(err)
		}
		f.p.onAck(f, m, ack)
	}
}

func (f *scriptedJS) sent() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.sends...)
}

// waitCall waits for the publish of id to be handed over.
func (f *scriptedJS) waitCall(t *testing.T, id string) {
	t.Helper()
	timeout := time.After(testenv.WaitLimit)
	for {
		select {
		case got := <-f.calls:
			if got == id {
				return
			}
		case <-timeout:
			t.Fatalf("%s never published; sent %v", id, f.sent())
		}
	}
}

// scriptedRun publishes a session of n events through a scriptedJS and
// drains; it returns the stored Msg-Ids and the pipeline. during runs
// after the session is queued, before the drain.
func scriptedRun(t *testing.T, n int, script map[string][]fate, during func(*scriptedJS), popts ...Option) ([]string, *pipeline, *scriptedJS) {
	t.Helper()
	_, nc, js := startStream(t, StreamConfig{})
	f, hook := scripted(script)
	pl := buildPipeline(t, nc, []string{"pbx1"}, nil, hook, append([]Option{WithRetryBackoff(time.Millisecond, 10*time.Millisecond)}, popts...)...)
	q := pl.qs["pbx1"]
	q.SessionStarted(sess, "9.0.0", t0)
	for i := 1; i <= n; i++ {
		q.Event(sess, uint64(i), t0, msg("Event", "Newchannel", "Channel", fmt.Sprintf("SIP/100-%d", i)))
	}
	q.SessionEnded(sess, t0, "eof", uint64(n))
	drained := false
	t.Cleanup(func() {
		if !drained { // during failed the test: stop the node goroutine
			_ = pl.pub.Drain(ctxT(t, time.Second))
		}
	})
	if during != nil {
		during(f)
	}
	drained = true
	if err := pl.pub.Drain(ctxT(t, 20*time.Second)); err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, s := range readStream(t, js, DefaultStreamName) {
		ids = append(ids, s.msgID)
	}
	return ids, pl, f
}

// wantIDs is the stored history of a session of n events, each once.
func wantIDs(n int) []string {
	ids := []string{sess + "-start"}
	for i := 1; i <= n; i++ {
		ids = append(ids, fmt.Sprintf("%s-%d", sess, i))
	}
	return append(ids, sess+"-end")
}

// checkStoredOnce fails the test unless the stream holds the session of n
// events whole, in order, each once, and pbx1's accounting agrees: all n
// published, none dropped.
func checkStoredOnce(t *testing.T, ids []string, pl *pipeline, n int) {
	t.Helper()
	if want := wantIDs(n); !reflect.DeepEqual(ids, want) {
		t.Fatalf("stored %v, want %v", ids, want)
	}
	if st := checkAccounting(t, pl, "pbx1"); st.Published != uint64(n) || st.Dropped() != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func count(ids []string, id string) int {
	n := 0
	for _, s := range ids {
		if s == id {
			n++
		}
	}
	return n
}

// TestStalledIsBackPressure: nats.go refusing a publish because too many
// are unacknowledged is back-pressure, not a failure: the publish is sent
// again at once, not counted as a retry, nothing is logged as failing, and
// the history is whole and in order.
func TestStalledIsBackPressure(t *testing.T) {
	logger, logs := observed(zapcore.WarnLevel)
	id2 := sess + "-2"
	ids, pl, f := scriptedRun(t, 5, map[string][]fate{id2: {stall, stall}}, nil, logger)
	if want := wantIDs(5); !reflect.DeepEqual(ids, want) {
		t.Fatalf("stored %v, want %v", ids, want)
	}
	if got := count(f.sent(), id2); got != 3 {
		t.Fatalf("%s handed over %d times, want 3 (two stalls, then stored)", id2, got)
	}
	st, err := pl.pub.Stats("pbx1")
	if err != nil {
		t.Fatal(err)
	}
	if st.Retries != 0 || counter(pl.reg.PublishRetries.WithLabelValues("pbx1")) != 0 {
		t.Fatalf("a stall counted as a retry: %d retries (metric %d)", st.Retries, counter(pl.reg.PublishRetries.WithLabelValues("pbx1")))
	}
	if n := logs.Len(); n != 0 {
		t.Fatalf("a stall was logged: %v", logs.All()[0].Message)
	}
	checkAccounting(t, pl, "pbx1")
}

// TestResendKeepsMsgID: a publish whose ack is lost was stored; it is sent
// again with the same Nats-Msg-Id, so JetStream stores it once.
func TestResendKeepsMsgID(t *testing.T) {
	id3 := sess + "-3"
	ids, pl, f := scriptedRun(t, 5, map[string][]fate{id3: {loseAck}}, nil)
	sent := f.sent()
	if got := count(sent, id3); got != 2 {
		t.Fatalf("%s handed over %d times, want 2 (lost ack, resend): %v", id3, got, sent)
	}
	for _, id := range sent {
		if count(wantIDs(5), id) != 1 {
			t.Fatalf("a publish with the unknown Msg-Id %q: %v", id, sent)
		}
	}
	checkStoredOnce(t, ids, pl, 5)
}

// TestNoResendWhileInFlight: after a failure the node sends nothing again
// until each of its publishes still in flight has an outcome, so that no
// resend overtakes one of them; then the history is whole.
func TestNoResendWhileInFlight(t *testing.T) {
	id1, id2, id3 := sess+"-1", sess+"-2", sess+"-3"
	ids, pl, f := scriptedRun(t, 5, map[string][]fate{id1: {hold}, id2: {hold}, id3: {refuse}}, func(f *scriptedJS) {
		f.waitCall(t, id3)
		// Nothing can signal that the node holds back: give a resend
		// (1 ms retry backoff) ample time to show, then let the acks come.
		select {
		case id := <-f.calls:
			t.Fatalf("%s handed over while %s and %s were in flight", id, id1, id2)
		case <-time.After(300 * time.Millisecond):
		}
		f.release(t)
	})
	checkStoredOnce(t, ids, pl, 5)
	if got := count(f.sent(), id3); got != 2 {
		t.Fatalf("%s handed over %d times, want 2", id3, got)
	}
}

// TestNothingSentBehindAKnownFailure: a publish whose failure is known
// (its answer came at once) while the node goes on sending holds back
// every later one until it is resent; else they would be stored first,
// as when another node recreates a lost stream between the two.
func TestNothingSentBehindAKnownFailure(t *testing.T) {
	id2 := sess + "-2"
	ids, pl, f := scriptedRun(t, 5, map[string][]fate{id2: {failNow}}, nil)
	checkStoredOnce(t, ids, pl, 5)
	if got := count(f.sent(), id2); got != 2 {
		t.Fatalf("%s handed over %d times, want 2", id2, got)
	}
	if got := counter(pl.reg.PublishRetries.WithLabelValues("pbx1")); got != 1 {
		t.Fatalf("%d retries counted, want 1: a held publish is not a retry", got)
	}
}
