package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/ownership"
	"github.com/amibus/amibus/pkg/eventlog"
)

// DefaultLeaseBucket holds ami-state's node leases; it is not ami-ingest's
// bucket, whose leases say who reads a PBX, not who writes its state.
const DefaultLeaseBucket = "ami_state_owners"

// HA makes replicas share the nodes: each node's state is read and written
// by the one replica holding its lease (internal/ownership), so the bucket
// has exactly one writer per node.
type HA struct {
	// Leases is the JetStream context of the leases, on a NATS connection
	// of its own (a renewal must not wait behind state writes).
	Leases jetstream.JetStream
	// Instance names this replica in the leases.
	Instance string
	// Nodes are the nodes to share (the configured nodes at start-up;
	// Service.SetNodes replaces them).
	Nodes  []string
	Bucket string        // DefaultLeaseBucket
	TTL    time.Duration // ownership.DefaultTTL
	// Registerer receives the ownership metrics; nil: none.
	Registerer prometheus.Registerer
}

// nodeRunner applies one owned node's stream.
type nodeRunner struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// newManager builds the lease manager of h's nodes; New calls it, so that
// SetNodes may hand it a new list before Run or while it runs.
func (s *Service) newManager(h *HA) (*ownership.Manager, error) {
	opts := []ownership.Option{
		ownership.WithBucket(h.Bucket), ownership.WithLogger(s.log),
		ownership.WithAcquire(s.acquire), ownership.WithRelease(s.release),
	}
	if h.TTL > 0 {
		opts = append(opts, ownership.WithTTL(h.TTL))
	}
	if h.Registerer != nil {
		opts = append(opts, ownership.WithRegisterer(h.Registerer))
	}
	mgr, err := ownership.New(h.Leases, h.Instance, h.Nodes, opts...)
	if err != nil {
		return nil, fmt.Errorf("%w: ha: %w", ErrConfig, err)
	}
	return mgr, nil
}

// runHA shares the nodes through leases: an acquired node gets its keys
// loaded and a reader of its own from its checkpoint; a released node is
// stopped, flushed and forgotten before its lease goes.
func (s *Service) runHA(ctx context.Context) error {
	s.runCtx = ctx
	err := s.mgr.Run(ctx) // releases every node before it returns
	s.runnersMu.Lock()
	n := len(s.runners)
	s.runnersMu.Unlock()
	if n > 0 {
		s.log.Warn("state: nodes still running after the lease manager stopped", zap.Int("nodes", n))
	}
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// SetNodes replaces the nodes the replicas share (a live reload of the
// node list) and reports whether the list changed. It needs state.ha:
// without leases the service follows every node of the stream, whatever
// the list says, and SetNodes changes nothing. With leases the lease
// manager applies the difference on its own goroutine
// (ownership.Manager.SetNodes): a node added joins the competition for
// leases, and whichever replica that lists it and has room in its share
// loads its keys and applies its stream from its checkpoint; a node
// removed that this replica owns is released (its reader stops, what it
// applied is written, and it is forgotten) before its lease is deleted.
// A removed node's keys stay in the bucket: the stream still holds its
// events, and if it comes back its owner resumes from its checkpoint.
// Requests for it are answered unknown_node, as for any node no replica
// lists. Nothing changes when the list is refused (a name that is not a
// valid token, or none at all).
func (s *Service) SetNodes(nodes []string) (changed bool, err error) {
	if s.mgr == nil {
		s.log.Info("state: the node list is not used without state.ha: every node of the stream is followed")
		return false, nil
	}
	s.runnersMu.Lock()
	defer s.runnersMu.Unlock()
	next := make(map[string]struct{}, len(nodes))
	var added, removed []string
	for _, n := range nodes {
		next[n] = struct{}{}
		if _, ok := s.shared[n]; !ok {
			added = append(added, n)
		}
	}
	for n := range s.shared {
		if _, ok := next[n]; !ok {
			removed = append(removed, n)
		}
	}
	if len(added) == 0 && len(removed) == 0 {
		return false, nil
	}
	if err := s.mgr.SetNodes(nodes); err != nil {
		return false, err
	}
	s.shared = next
	slices.Sort(removed)
	s.log.Info("configuration reloaded", zap.Strings("added", added), zap.Strings("removed", removed))
	return true, nil
}

// configured tells whether node is one of the nodes HA shares.
func (s *Service) configured(node string) bool {
	s.runnersMu.Lock()
	defer s.runnersMu.Unlock()
	_, ok := s.shared[node]
	return ok
}

// owns tells whether this replica holds node (always true without HA).
func (s *Service) owns(node string) bool {
	if s.cfg.HA == nil {
		return true
	}
	s.runnersMu.Lock()
	defer s.runnersMu.Unlock()
	_, ok := s.runners[node]
	return ok
}

func (s *Service) acquire(node string) {
	ctx, cancel := context.WithCancel(s.runCtx)
	r := &nodeRunner{cancel: cancel, done: make(chan struct{})}
	s.runnersMu.Lock()
	s.runners[node] = r
	s.runnersMu.Unlock()
	s.log.Info("state: node acquired", zap.String("node", node))
	go func() {
		defer close(r.done)
		if err := s.runNode(ctx, node); err != nil && ctx.Err() == nil {
			s.log.Error("state: node stopped", zap.String("node", node), zap.Error(err))
		}
	}()
}

// release stops node's reader, writes what it applied, and forgets the
// node: once it returns this replica writes nothing of the node.
func (s *Service) release(ctx context.Context, node string) {
	s.runnersMu.Lock()
	r, ok := s.runners[node]
	delete(s.runners, node)
	s.runnersMu.Unlock()
	if !ok {
		return
	}
	r.cancel()
	<-r.done
	s.flushSerial.Lock()
	defer s.flushSerial.Unlock()
	if err := s.flushNodes(ctx, map[string]bool{node: true}, 0); err != nil {
		s.log.Warn("state: node released with writes not stored; its next owner repairs them from the checkpoint",
			zap.String("node", node), zap.Error(err))
	}
	s.mu.Lock()
	s.proj.Remove(node)
	s.mu.Unlock()
	// Its owner reports it from now on (or nobody, when it was removed).
	s.m.LiveChannels.DeleteLabelValues(node)
	s.log.Info("state: node released", zap.String("node", node))
}

// runNode loads node's keys and applies its stream from its checkpoint.
func (s *Service) runNode(ctx context.Context, node string) error {
	start, pos, err := s.loadNode(ctx, node)
	if err != nil {
		return err
	}
	opts := []eventlog.Option{eventlog.Stream(s.cfg.Stream), eventlog.Prefix(s.cfg.Prefix), eventlog.Nodes(node), eventlog.Buffer(readBuffer)}
	if pos != nil {
		opts = append(opts, pos)
	}
	r, err := s.open(ctx, opts, start)
	if err != nil {
		return err
	}
	defer func() { _ = r.Close(context.Background()) }()
	return s.read(ctx, r)
}

// loadNode reads node's keys from the bucket into a fresh node state.
func (s *Service) loadNode(ctx context.Context, node string) (uint64, eventlog.Option, error) {
	w, err := s.kv.Watch(ctx, node+".>", jetstream.IgnoreDeletes())
	if err != nil {
		return 0, nil, fmt.Errorf("state: read %s's keys: %w", node, err)
	}
	defer func() { _ = w.Stop() }()
	n := NewNode(node)
	n.onBad = func(r Reason) { s.proj.count(node, r) }
	for e := range w.Updates() {
		if e == nil {
			break
		}
		if _, v := decodeValue(e.Key(), e.Value(), s.log); v != nil {
			n.Load(v)
		}
	}
	st := n.Status()
	s.mu.Lock()
	s.proj.Put(n)
	s.mu.Unlock()
	var pos eventlog.Option
	if st.Session != "" {
		pos = eventlog.NodePosition(node, st.Session, st.SessionSeq)
	}
	return st.Seq, pos, nil
}

// decodeValue decodes one bucket value by its key's shape and returns the
// node the key belongs to; nil (logged) for a key of unknown shape or a
// value that does not decode.
func decodeValue(key string, data []byte, log *zap.Logger) (string, any) {
	node, kind, _, ok := ParseKey(key)
	var v any
	switch {
	case ok && kind == EntityChannel:
		v = new(Channel)
	case ok && kind == EntityBridge:
		v = new(Bridge)
	case ok && kind == EntityQueue:
		v = new(Queue)
	case !ok && len(key) > len(segStatus)+1 && key[len(key)-len(segStatus)-1:] == "."+segStatus:
		node, v = key[:len(key)-len(segStatus)-1], new(Status)
	default:
		log.Warn("state: key of unknown shape in the bucket, ignored", zap.String("key", key))
		return "", nil
	}
	if err := json.Unmarshal(data, v); err != nil {
		log.Warn("state: value that does not decode, ignored", zap.String("key", key), zap.Error(err))
		return "", nil
	}
	return node, v
}

// runnersState is the HA part of a Service.
type runnersState struct {
	mgr       *ownership.Manager // nil without HA
	runnersMu sync.Mutex
	runners   map[string]*nodeRunner
	runCtx    context.Context
	// shared is the node list the replicas share, as last set (New,
	// SetNodes); guarded by runnersMu. Cap: the configured nodes.
	shared map[string]struct{}
	// flushSerial makes a release's last flush wait for a flush in
	// progress: nothing of a released node is written after release.
	flushSerial sync.Mutex
}
