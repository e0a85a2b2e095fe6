package eventlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// ackDelay is how long a handled message may wait for its acknowledgement
// when fewer than the ack batch are pending: short against the ack wait, so
// that an idle reader's position is stored before anything is redelivered.
const ackDelay = 100 * time.Millisecond

// openDurable returns the durable consumer o.durable, creating it with the
// start position of o. One left with messages delivered but not
// acknowledged (a reader that stopped with messages pulled ahead) is
// recreated from its ack floor: the server would otherwise deliver newer
// messages first and the unacknowledged ones only after their ack wait, out
// of order.
func openDurable(ctx context.Context, stream jetstream.Stream, o *options) (jetstream.Consumer, error) {
	want := filterSubjects(o)
	cons, err := stream.Consumer(ctx, o.durable)
	switch {
	case errors.Is(err, jetstream.ErrConsumerNotFound):
		return stream.CreateConsumer(ctx, durableConfig(o, want, stream.CachedInfo().State.LastSeq))
	case err != nil:
		return nil, err
	}
	info := cons.CachedInfo()
	cfg := info.Config
	have := cfg.FilterSubjects
	if cfg.FilterSubject != "" {
		have = append(slices.Clone(have), cfg.FilterSubject)
	}
	if !sameSet(have, want) || cfg.AckPolicy != jetstream.AckAllPolicy {
		return nil, fmt.Errorf("%w: %s has subjects %v and ack policy %v, want %v and %v",
			ErrDurableMismatch, o.durable, have, cfg.AckPolicy, want, jetstream.AckAllPolicy)
	}
	if info.NumAckPending == 0 {
		return cons, nil
	}
	if err := stream.DeleteConsumer(ctx, o.durable); err != nil {
		return nil, err
	}
	// With nothing acknowledged yet, the consumer's own start position
	// (always replayable: durableConfig never asks for "new") is the
	// resume point.
	if info.AckFloor.Stream > 0 {
		cfg.DeliverPolicy = jetstream.DeliverByStartSequencePolicy
		cfg.OptStartSeq = info.AckFloor.Stream + 1
		cfg.OptStartTime = nil
	}
	return stream.CreateConsumer(ctx, cfg)
}

// durableConfig is the configuration of a new durable consumer. OnlyNew
// becomes the sequence after the stream's last (lastSeq), so that the
// consumer can be recreated at the same start.
func durableConfig(o *options, subjects []string, lastSeq uint64) jetstream.ConsumerConfig {
	c := jetstream.ConsumerConfig{
		Durable:        o.durable,
		Description:    "amibus eventlog reader",
		FilterSubjects: subjects,
		AckPolicy:      jetstream.AckAllPolicy,
		AckWait:        o.ackWait,
		// Pulled ahead (Buffer) plus handled and not yet acknowledged
		// (below Buffer/2) stay under it, so the server never stalls the
		// reader for want of acks.
		MaxAckPending: 2 * o.buffer,
		MaxDeliver:    -1,
	}
	c.DeliverPolicy, c.OptStartSeq, c.OptStartTime = deliverFrom(o, jetstream.DeliverByStartSequencePolicy, lastSeq+1)
	return c
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// acker acknowledges (AckAll) the last handled message of a durable
// consumer: at once when every batch handled messages are pending, else
// ackDelay after the first pending one, from a timer whose callback Close
// waits for.
type acker struct {
	batch int

	mu      sync.Mutex
	idle    *sync.Cond // signalled when a timer callback finishes
	last    jetstream.Msg
	pending int
	timer   *time.Timer
	armed   bool // a timer callback is scheduled or running
	stopped bool
}

func newAcker(batch int) *acker {
	a := &acker{batch: batch}
	a.idle = sync.NewCond(&a.mu)
	a.timer = time.AfterFunc(time.Hour, a.fire)
	a.timer.Stop()
	return a
}

// handled records m (and every message before it) as handled.
func (a *acker) handled(m jetstream.Msg) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.last = m
	a.pending++
	if a.pending >= a.batch {
		// The ack is a publish with no reply awaited; its failure leaves
		// the messages pending on the server, which the next ack covers.
		_ = m.Ack()
		a.last, a.pending = nil, 0
		return
	}
	if !a.armed {
		a.armed = true
		a.timer.Reset(ackDelay)
	}
}

func (a *acker) fire() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.stopped && a.last != nil {
		_ = a.last.Ack()
		a.last, a.pending = nil, 0
	}
	a.armed = false
	a.idle.Broadcast()
}

// stop stops the timer, waits for a callback in progress, and returns the
// last handled message not yet acknowledged, if any.
func (a *acker) stop() jetstream.Msg {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.stopped = true
	if a.timer.Stop() {
		a.armed = false
	}
	for a.armed {
		a.idle.Wait()
	}
	m := a.last
	a.last = nil
	return m
}
