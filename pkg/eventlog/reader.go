package eventlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// pullExpiry is the life of one pull request of the consumer. Its idle
// heartbeat (half of it) bounds how long a pull lost on the way can hold up
// the reader.
const pullExpiry = 5 * time.Second

// handoffShare is the share (1/handoffShare) of Buffer that is the hand-off
// queue between nats.go's delivery goroutine and Next; the rest is what the
// consumer pulls ahead (PullMaxMessages), so that the two together hold at
// most Buffer messages.
const handoffShare = 4

// Stats counts what a Reader has delivered since Open.
type Stats struct {
	// Messages is the number of stored messages delivered (Events +
	// Markers + Invalid).
	Messages uint64
	// Events is the number of KindEvent entries.
	Events uint64
	// Markers is the number of stored session_start, session_end, gap and
	// snapshot markers.
	Markers uint64
	// Invalid is the number of KindInvalid entries.
	Invalid uint64
	// InferredGaps is the number of unmarked seq jumps reported.
	InferredGaps uint64
	// InferredSessions is the number of session changes with no
	// session_start reported.
	InferredSessions uint64
	// Late is the number of events delivered with Late set.
	Late uint64
	// Redelivered is the number of messages a durable consumer delivered
	// again (after its ack wait) that the reader had already delivered, and
	// therefore did not deliver twice.
	Redelivered uint64
	// Stalls is the number of times the consumer's pull went without a
	// heartbeat and nats.go pulled again (or, for the ordered consumer,
	// recreated it); each costs up to the pull expiry of 5 s.
	Stalls uint64
}

type counters struct {
	messages, events, markers, invalid   atomic.Uint64
	inferredGaps, inferredSessions, late atomic.Uint64
	redelivered, stalls                  atomic.Uint64
}

// Reader reads the event stream. Open one with Open, call Next until done,
// then Close.
type Reader struct {
	o    options
	cons jetstream.Consumer
	cc   jetstream.ConsumeContext

	// msgs hands the messages from nats.go's delivery goroutine (handle) to
	// Next; cap Buffer/handoffShare. stop, closed by Close, releases a
	// handle blocked on a full msgs.
	msgs chan jetstream.Msg
	stop chan struct{}
	// failed is closed, once, after failure is set: the consumer stopped
	// for good (see fail).
	failed   chan struct{}
	failOnce sync.Once
	failure  error

	dec decoder
	tr  tracker

	// out holds the entries made from the last message, inferred ones
	// first; at most 3 (session start, gap, message).
	out        [3]*Entry
	outN, outI int
	pre        [2]Entry
	msg        Entry

	closed  bool
	err     error         // final error of Next, returned again
	maxSeen uint64        // highest stream sequence delivered (durable)
	handed  jetstream.Msg // message of the entries last handed out (durable)
	ack     *acker
	pos     atomic.Uint64
	st      counters
}

// Open starts reading the stream through js with the options given: by
// default every node from the start of the stream, through an ordered
// consumer. It fails with ErrInvalidOption for a bad option,
// ErrPositionExpired when the start sequence asked for is no longer
// stored, ErrDurableMismatch for a durable consumer configured otherwise,
// or the jetstream error (e.g. jetstream.ErrStreamNotFound).
func Open(ctx context.Context, js jetstream.JetStream, opts ...Option) (*Reader, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if opt == nil {
			return nil, fmt.Errorf("%w: nil option", ErrInvalidOption)
		}
		if err := opt(&o); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
		}
	}
	if js == nil {
		return nil, fmt.Errorf("%w: nil jetstream", ErrInvalidOption)
	}
	stream, err := js.Stream(ctx, o.stream)
	if err != nil {
		return nil, fmt.Errorf("eventlog: stream %s: %w", o.stream, err)
	}
	if o.start == startSeq && o.startSeq > 1 {
		first := stream.CachedInfo().State.FirstSeq
		if o.startSeq < first {
			return nil, fmt.Errorf("%w: start at stream sequence %d, but the stream's first is %d (%d messages discarded)",
				ErrPositionExpired, o.startSeq, first, first-o.startSeq)
		}
	}
	r := &Reader{o: o, dec: newDecoder(o.prefix), tr: newTracker(o.maxNodes),
		msgs: make(chan jetstream.Msg, o.buffer/handoffShare), stop: make(chan struct{}), failed: make(chan struct{})}
	for _, k := range o.known {
		r.tr.seed(k)
	}
	if o.durable != "" {
		r.cons, err = openDurable(ctx, stream, &o)
		r.ack = newAcker(max(1, o.buffer/2))
	} else {
		r.cons, err = stream.OrderedConsumer(ctx, orderedConfig(&o))
	}
	if err != nil {
		return nil, fmt.Errorf("eventlog: consumer on %s: %w", o.stream, err)
	}
	// Consume rather than the Messages iterator: nats.go then delivers
	// from its own goroutine with one heartbeat timer per consumer, where
	// the iterator makes, resets and stops a timer on every Next (about
	// 0.5 µs of CPU per message in the read benchmark, an eighth of it).
	r.cc, err = r.cons.Consume(r.handle, jetstream.PullMaxMessages(o.buffer-o.buffer/handoffShare),
		jetstream.PullExpiry(pullExpiry), jetstream.ConsumeErrHandler(r.consumeError))
	if err != nil {
		return nil, fmt.Errorf("eventlog: consume %s: %w", o.stream, err)
	}
	return r, nil
}

func filterSubjects(o *options) []string {
	if len(o.nodes) == 0 {
		return []string{o.prefix + ".events.>"}
	}
	fs := make([]string, 0, len(o.nodes))
	for _, n := range o.nodes {
		s := o.prefix + ".events." + n + ".>"
		if !slices.Contains(fs, s) {
			fs = append(fs, s)
		}
	}
	return fs
}

func orderedConfig(o *options) jetstream.OrderedConsumerConfig {
	c := jetstream.OrderedConsumerConfig{FilterSubjects: filterSubjects(o)}
	c.DeliverPolicy, c.OptStartSeq, c.OptStartTime = deliverFrom(o, jetstream.DeliverNewPolicy, 0)
	return c
}

// deliverFrom is where a consumer starts for the start option; newPolicy
// and newSeq are what "new" means to the caller.
func deliverFrom(o *options, newPolicy jetstream.DeliverPolicy, newSeq uint64) (jetstream.DeliverPolicy, uint64, *time.Time) {
	switch o.start {
	case startSeq:
		if o.startSeq > 1 {
			return jetstream.DeliverByStartSequencePolicy, o.startSeq, nil
		}
	case startTime:
		t := o.startAt
		return jetstream.DeliverByStartTimePolicy, 0, &t
	case startNew:
		return newPolicy, newSeq, nil
	}
	return jetstream.DeliverAllPolicy, 0, nil
}

// Next returns the next entry in stream order, waiting for one until ctx is
// done. The entry and its slices are valid until the next call to Next or
// Close. It returns ErrClosed after Close and ctx's error when ctx is done
// (Next may be called again). Any other error is final, so that no message
// is passed over: ErrTooManyNodes past MaxNodes (the message that crossed it
// is not delivered; open a reader with a higher MaxNodes from Position), or
// the jetstream error if the consumer failed for good. Next returns that
// error again on every later call.
func (r *Reader) Next(ctx context.Context) (*Entry, error) {
	switch {
	case r.closed:
		return nil, ErrClosed
	case r.err != nil:
		return nil, r.err
	case r.outI < r.outN:
		return r.deliver(), nil
	}
	if r.handed != nil {
		// Everything made from the last message has been handled.
		r.ack.handled(r.handed)
		r.handed = nil
	}
	for {
		var m jetstream.Msg
		// A receive alone first: while messages are queued, as when
		// reading back history, it costs a fraction of the select below.
		select {
		case m = <-r.msgs:
		default:
			select {
			case m = <-r.msgs:
			case <-ctx.Done():
				return nil, ctx.Err()
			case <-r.failed:
				// What was handed over before the consumer stopped is
				// still delivered.
				select {
				case m = <-r.msgs:
				default:
					r.err = fmt.Errorf("eventlog: next: %w", r.failure)
					return nil, r.err
				}
			}
		}
		sseq, delivered := parseAckReply(m.Reply())
		if r.ack != nil {
			if delivered > 1 && sseq <= r.maxSeen {
				r.st.redelivered.Add(1)
				continue
			}
		}
		if err := r.take(sseq, m.Subject(), m.Data()); err != nil {
			r.err = err
			return nil, err
		}
		if r.ack != nil {
			r.maxSeen = max(r.maxSeen, sseq)
			r.handed = m
		}
		return r.deliver(), nil
	}
}

// handle is the consumer's message handler, called by nats.go's delivery
// goroutine one message at a time in delivery order. It waits while msgs is
// full: nats.go counts the message as pending until handle returns, so it
// pulls no more meanwhile, and it stops its heartbeat timer while a
// handler runs, so that a caller slow to call Next is no missed heartbeat.
func (r *Reader) handle(m jetstream.Msg) {
	select {
	case r.msgs <- m:
	case <-r.stop:
	}
}

// consumeError is the consumer's error handler. A missed heartbeat is a
// stall that nats.go recovers from itself; the errors after which nats.go
// stops consuming make the reader fail (fail); the rest (a warning of the
// server about a pull, a reconnect) need nothing of the reader.
func (r *Reader) consumeError(_ jetstream.ConsumeContext, err error) {
	switch {
	case errors.Is(err, jetstream.ErrNoHeartbeat):
		r.st.stalls.Add(1)
	case errors.Is(err, jetstream.ErrConnectionClosed):
		r.fail(err)
	case r.ack != nil && (errors.Is(err, jetstream.ErrConsumerDeleted) || errors.Is(err, jetstream.ErrBadRequest)):
		// Terminal for a pull consumer (nats.go stops it); the ordered
		// consumer recreates its consumer instead.
		r.fail(err)
	}
}

// fail records the error that stopped the consumer for Next to return, once
// the messages handed over before it are delivered.
func (r *Reader) fail(err error) {
	r.failOnce.Do(func() {
		r.failure = err
		close(r.failed)
	})
}

// take decodes one stored message into r.msg and the inferred entries
// before it into r.out.
func (r *Reader) take(sseq uint64, subject string, data []byte) error {
	e := &r.msg
	r.dec.decode(e, sseq, subject, data)
	r.outN, r.outI = 0, 0
	r.st.messages.Add(1)
	switch e.Kind {
	case KindInvalid:
		r.st.invalid.Add(1)
	case KindEvent:
		r.st.events.Add(1)
	default:
		r.st.markers.Add(1)
	}
	if e.Kind != KindInvalid {
		n, err := r.tr.apply(e, &r.pre)
		if err != nil {
			return err
		}
		for i := range n {
			r.out[r.outN] = &r.pre[i]
			r.outN++
			if r.pre[i].Kind == KindGap {
				r.st.inferredGaps.Add(1)
			} else {
				r.st.inferredSessions.Add(1)
			}
		}
		if e.Late {
			r.st.late.Add(1)
		}
	}
	r.out[r.outN] = e
	r.outN++
	return nil
}

func (r *Reader) deliver() *Entry {
	e := r.out[r.outI]
	r.outI++
	r.pos.Store(e.Position())
	return e
}

// Position returns the Position of the entry last returned by Next (0
// before the first): store it once that entry is handled, and resume with
// After.
func (r *Reader) Position() uint64 { return r.pos.Load() }

// Stats returns the counts since Open.
func (r *Reader) Stats() Stats {
	return Stats{
		Messages:         r.st.messages.Load(),
		Events:           r.st.events.Load(),
		Markers:          r.st.markers.Load(),
		Invalid:          r.st.invalid.Load(),
		InferredGaps:     r.st.inferredGaps.Load(),
		InferredSessions: r.st.inferredSessions.Load(),
		Late:             r.st.late.Load(),
		Redelivered:      r.st.redelivered.Load(),
		Stalls:           r.st.stalls.Load(),
	}
}

// Close stops the reader and the consumer's goroutines. With Durable, the
// entries returned so far count as handled: Close acknowledges them and
// waits for the server's confirmation until ctx is done. Closing twice is a
// no-op.
func (r *Reader) Close(ctx context.Context) error {
	if r.closed {
		return nil
	}
	r.closed = true
	var err error
	if r.ack != nil {
		last := r.ack.stop()
		if r.handed != nil {
			last = r.handed
			r.handed = nil
		}
		if last != nil {
			if aerr := last.DoubleAck(ctx); aerr != nil {
				err = fmt.Errorf("eventlog: acknowledge on close: %w", aerr)
			}
		}
	}
	r.cc.Stop()
	close(r.stop)
	return err
}
