package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/amibus/amibus/pkg/command"
	"github.com/amibus/amibus/pkg/eventlog"
)

// atQueueGroup shares time-travel requests among replicas.
const atQueueGroup = "ami-state"

// replayTimeout bounds one time-travel request.
const replayTimeout = 30 * time.Second

// Request errors, each mapped to the reply code ami-actor uses for the same
// kind of failure (pkg/command).
var (
	ErrUnknownNode = errors.New("state: unknown node")
	ErrBadRequest  = errors.New("state: bad request")
	ErrTooLarge    = errors.New("state: too large")
	// ErrCatchingUp: the node's keys were loaded ahead of its checkpoint
	// (a take-over or a restart) and its replay has not reached them yet,
	// so no answer would describe one moment; ask again shortly.
	ErrCatchingUp = errors.New("state: node catching up from its checkpoint")
)

func codeOf(err error) command.Code {
	switch {
	case errors.Is(err, ErrUnknownNode):
		return command.CodeUnknownNode
	case errors.Is(err, ErrBadRequest):
		return command.CodeBadRequest
	case errors.Is(err, ErrTooLarge):
		return command.CodeTooLarge
	case errors.Is(err, ErrCatchingUp):
		return command.CodeUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return command.CodeTimeout
	}
	return command.CodeInternal
}

type answer struct {
	OK bool `json:"ok"`
	Snapshot
	ElapsedMS float64 `json:"elapsed_ms"`
}

type failure struct {
	OK        bool      `json:"ok"`
	Node      string    `json:"node,omitempty"`
	Error     errorBody `json:"error"`
	ElapsedMS float64   `json:"elapsed_ms"`
}

type errorBody struct {
	Code    command.Code `json:"code"`
	Message string       `json:"message"`
}

// AtRequest is the body of ami.state.<node>.at: exactly one of Time and Seq.
type AtRequest struct {
	Time *time.Time `json:"time,omitempty"`
	Seq  uint64     `json:"seq,omitempty"`
}

func (s *Service) subscribe() ([]*nats.Subscription, error) {
	base := s.cfg.Prefix + ".state."
	whole, err := s.nc.Subscribe(base+"*", func(m *nats.Msg) { s.serve(m, false) })
	if err != nil {
		return nil, fmt.Errorf("state: subscribe: %w", err)
	}
	// Any replica can replay: one of them answers.
	at, err := s.nc.QueueSubscribe(base+"*.at", atQueueGroup, func(m *nats.Msg) { s.serve(m, true) })
	if err != nil {
		_ = whole.Unsubscribe()
		return nil, fmt.Errorf("state: subscribe: %w", err)
	}
	return []*nats.Subscription{whole, at}, nil
}

func (s *Service) serve(m *nats.Msg, at bool) {
	if m.Reply == "" {
		return
	}
	start := time.Now()
	node := strings.TrimPrefix(m.Subject, s.cfg.Prefix+".state.")
	kind := "state"
	if at {
		node, kind = strings.TrimSuffix(node, ".at"), "at"
	} else if s.cfg.HA != nil && !s.owns(node) && s.configured(node) {
		return // its owner answers
	}
	snap, err := s.answer(node, at, m.Data)
	var body []byte
	elapsed := float64(time.Since(start).Microseconds()) / 1000
	if err != nil {
		code := codeOf(err)
		s.m.Requests.WithLabelValues(kind, string(code)).Inc()
		f := failure{Error: errorBody{Code: code, Message: err.Error()}, ElapsedMS: elapsed}
		if ValidNode(node) {
			f.Node = node
		}
		body, _ = json.Marshal(f)
	} else {
		s.m.Requests.WithLabelValues(kind, "ok").Inc()
		body, err = json.Marshal(answer{OK: true, Snapshot: snap, ElapsedMS: elapsed})
		if err != nil {
			body, _ = json.Marshal(failure{Node: node, Error: errorBody{command.CodeInternal, err.Error()}, ElapsedMS: elapsed})
		}
	}
	if max := s.nc.MaxPayload(); int64(len(body)) > max {
		s.m.Requests.WithLabelValues(kind, string(command.CodeTooLarge)).Inc()
		body, _ = json.Marshal(failure{Node: node, Error: errorBody{command.CodeTooLarge,
			fmt.Sprintf("the state is %d bytes, over the NATS max payload %d; read the bucket instead", len(body), max)}, ElapsedMS: elapsed})
	}
	if err := m.Respond(body); err != nil {
		s.log.Debug("state: reply not sent", zap.Error(err))
	}
}

func (s *Service) answer(node string, at bool, data []byte) (Snapshot, error) {
	if !ValidNode(node) {
		return Snapshot{}, fmt.Errorf("%w: node %q is not a valid token", ErrBadRequest, node)
	}
	if len(data) > s.cfg.MaxRequestBytes {
		return Snapshot{}, fmt.Errorf("%w: request of %d bytes, over %d", ErrTooLarge, len(data), s.cfg.MaxRequestBytes)
	}
	if !at {
		return s.Current(node)
	}
	var req AtRequest
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return Snapshot{}, fmt.Errorf("%w: body must be {\"time\": \"<RFC 3339>\"} or {\"seq\": N}: %v", ErrBadRequest, err)
	}
	if (req.Time == nil) == (req.Seq == 0) {
		return Snapshot{}, fmt.Errorf("%w: give exactly one of time and seq (seq at least 1)", ErrBadRequest)
	}
	ctx, cancel := context.WithTimeout(context.Background(), replayTimeout)
	defer cancel()
	var t time.Time
	if req.Time != nil {
		t = *req.Time
	}
	return s.StateAt(ctx, node, req.Seq, t)
}

// Current answers node's live state.
func (s *Service) Current(node string) (Snapshot, error) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n, ok := s.proj.Lookup(node)
	if !ok {
		return Snapshot{}, fmt.Errorf("%w: %s", ErrUnknownNode, node)
	}
	if to, ok := n.CatchingUp(); ok {
		return Snapshot{}, fmt.Errorf("%w: %s applied up to stream sequence %d, its stored keys up to %d", ErrCatchingUp, node, n.Status().Seq, to)
	}
	return n.Snapshot(), nil
}

// StateAt answers node's state just after stream sequence seq, or, when seq
// is 0, at time t (after every message of the node stored at or before t).
// It replays the node's messages from the last CoreShowChannels snapshot
// (with the snapshots taken with it) at or before that point.
func (s *Service) StateAt(ctx context.Context, node string, seq uint64, t time.Time) (Snapshot, error) {
	return Replay(ctx, s.js, ReplayConfig{Stream: s.cfg.Stream, Prefix: s.cfg.Prefix, MaxEvents: s.cfg.MaxReplayEvents}, node, seq, t)
}

// ReplayConfig says where Replay reads.
type ReplayConfig struct {
	Stream, Prefix string
	MaxEvents      int // 0: DefaultMaxReplayEvents
}

// Replay rebuilds node's state from the stream alone (see Service.StateAt);
// seq 0 and a zero t mean the node's latest stored message.
func Replay(ctx context.Context, js jetstream.JetStream, c ReplayConfig, node string, seq uint64, t time.Time) (Snapshot, error) {
	if c.MaxEvents == 0 {
		c.MaxEvents = DefaultMaxReplayEvents
	}
	if !ValidNode(node) {
		return Snapshot{}, fmt.Errorf("%w: node %q is not a valid token", ErrBadRequest, node)
	}
	stream, err := js.Stream(ctx, c.Stream)
	if err != nil {
		return Snapshot{}, fmt.Errorf("state: stream %s: %w", c.Stream, err)
	}
	last, err := stream.GetLastMsgForSubject(ctx, c.Prefix+".events."+node+".>")
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return Snapshot{}, fmt.Errorf("%w: %s has no message in the stream", ErrUnknownNode, node)
	}
	if err != nil {
		return Snapshot{}, fmt.Errorf("state: last message of %s: %w", node, err)
	}
	target := last.Sequence
	if seq != 0 && seq < target {
		target = seq
	}
	from, err := snapshotBefore(ctx, js, stream, c, node, target, t)
	if err != nil {
		return Snapshot{}, err
	}
	opts := []eventlog.Option{eventlog.Stream(c.Stream), eventlog.Prefix(c.Prefix), eventlog.Nodes(node), eventlog.Buffer(readBuffer)}
	if from > 0 {
		opts = append(opts, eventlog.FromStreamSeq(from))
	}
	r, err := eventlog.Open(ctx, js, opts...)
	if err != nil {
		return Snapshot{}, fmt.Errorf("state: replay %s: %w", node, err)
	}
	defer func() { _ = r.Close(context.Background()) }()
	n := NewNode(node)
	var m Message
	for count := 0; ; count++ {
		if count > c.MaxEvents {
			return Snapshot{}, fmt.Errorf("%w: more than %d messages to replay from the last snapshot", ErrTooLarge, c.MaxEvents)
		}
		e, err := r.Next(ctx)
		if err != nil {
			return Snapshot{}, fmt.Errorf("state: replay %s: %w", node, err)
		}
		if e.StreamSeq > target || (!t.IsZero() && e.Time.After(t)) {
			break
		}
		if FromEntry(e, &m) {
			n.Apply(&m)
		}
		if e.StreamSeq == target && !e.Inferred {
			break
		}
	}
	return n.Snapshot(), nil
}

// snapshotBefore answers the stream sequence to replay node from: the first
// snapshot marker of the group holding the last CoreShowChannels snapshot
// at or before target (and t), or an earlier one so that the last snapshot
// of every other action (QueueStatus, BridgeList) is replayed too; 0 (the
// start) if there is none. It reads
// the node's markers headers only: the Nats-Msg-Id of a snapshot is
// <session>-snap-<action>-<seq>, and the markers of one group share session
// and seq.
func snapshotBefore(ctx context.Context, js jetstream.JetStream, stream jetstream.Stream, c ReplayConfig, node string, target uint64, t time.Time) (uint64, error) {
	subj := c.Prefix + ".events." + node + "._meta"
	lastMeta, err := stream.GetLastMsgForSubject(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("state: markers of %s: %w", node, err)
	}
	cons, err := stream.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{FilterSubjects: []string{subj}, HeadersOnly: true})
	if err != nil {
		return 0, fmt.Errorf("state: markers of %s: %w", node, err)
	}
	it, err := cons.Messages()
	if err != nil {
		return 0, fmt.Errorf("state: markers of %s: %w", node, err)
	}
	defer it.Stop()
	// For each snapshot action, the start of the CoreShowChannels group
	// at or before its last snapshot: replaying from the earliest of them
	// covers channels, bridges and queues alike with a snapshot.
	cover := map[string]uint64{}
	var groupStart, lastCSC uint64
	haveCSC := false
	prevGroup := ""
	for {
		msg, err := it.Next(jetstream.NextContext(ctx))
		if err != nil {
			return 0, fmt.Errorf("state: markers of %s: %w", node, err)
		}
		md, err := msg.Metadata()
		if err != nil {
			return 0, err
		}
		sseq := md.Sequence.Stream
		if sseq > target || (!t.IsZero() && md.Timestamp.After(t)) {
			break
		}
		id := msg.Headers().Get(jetstream.MsgIDHeader)
		group, action := "", ""
		if i := strings.LastIndex(id, "-snap-"); i >= 0 {
			rest := id[i+len("-snap-"):]
			if j := strings.LastIndexByte(rest, '-'); j >= 0 {
				group, action = id[:i]+"/"+rest[j+1:], strings.ToLower(rest[:j])
			}
		}
		if group == "" {
			prevGroup = ""
		} else {
			if group != prevGroup {
				groupStart = sseq
			}
			prevGroup = group
			if action == strings.ToLower(actCoreShowChannels) {
				lastCSC, haveCSC = groupStart, true
			}
			if haveCSC {
				cover[action] = lastCSC
			} else {
				cover[action] = 0
			}
		}
		if sseq >= lastMeta.Sequence {
			break
		}
	}
	if !haveCSC {
		return 0, nil
	}
	chosen := lastCSC
	for _, at := range cover {
		chosen = min(chosen, at)
	}
	return chosen, nil
}
