package ownership

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/lifecycle"
)

// Manager holds this replica's node leases. Create it with New and run it
// with Run; Owned and Owner may be called from any goroutine.
type Manager struct {
	js       jetstream.JetStream
	instance string
	nodes    []string // sorted, unique
	isNode   map[string]struct{}
	cfg      config
	met      *metrics
	log      *zap.Logger
	started  lifecycle.Once

	mu sync.Mutex
	// owned is the set behind Owned, changed one node at a time: a sorted
	// copy per change made taking 10,000 nodes quadratic (40 % of the CPU
	// in BenchmarkLeases10000), and Owned, which sorts, is rarely called.
	// Cap: one entry per configured node.
	owned map[string]struct{}
	// pending is the node list SetNodes asked for, not yet taken by Run
	// (guarded by mu); nodesSet signals it.
	pending  []string
	nodesSet chan struct{}

	// hookRebalance, set only by tests, is called on the Run goroutine with
	// the round number and the nodes a rebalance round gives up.
	hookRebalance func(round uint64, nodes []string)
}

// New returns a Manager for instance (this process's unique id, used in the
// liveness key, the node entries and the lifecycle markers) over the configured nodes. It
// checks its arguments and registers metrics; it does no I/O.
func New(js jetstream.JetStream, instance string, nodes []string, opts ...Option) (*Manager, error) {
	if js == nil {
		return nil, fmt.Errorf("%w: nil JetStream", ErrInvalidOption)
	}
	if err := checkName("instance", instance); err != nil {
		return nil, err
	}
	if len(nodes) == 0 {
		return nil, fmt.Errorf("%w: no nodes", ErrInvalidName)
	}
	isNode, err := nodeSet(nodes)
	if err != nil {
		return nil, err
	}
	cfg := defaults()
	for _, o := range opts {
		if o == nil {
			continue
		}
		if err := o(&cfg); err != nil {
			if errors.Is(err, ErrInvalidName) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %w", ErrInvalidOption, err)
		}
	}
	if err := cfg.finish(); err != nil {
		return nil, err
	}
	sorted := slices.Clone(nodes)
	slices.Sort(sorted)
	met, err := newMetrics(cfg.reg, sorted)
	if err != nil {
		return nil, fmt.Errorf("ownership: registering metrics: %w", err)
	}
	return &Manager{
		js:       js,
		instance: instance,
		nodes:    sorted,
		isNode:   isNode,
		cfg:      cfg,
		met:      met,
		log:      cfg.log.With(zap.String("instance", instance)),
		nodesSet: make(chan struct{}, 1),
		owned:    make(map[string]struct{}, len(sorted)),
	}, nil
}

// nodeSet checks a node list: valid names, none repeated, at least one.
func nodeSet(nodes []string) (map[string]struct{}, error) {
	if len(nodes) == 0 {
		return nil, fmt.Errorf("%w: no nodes", ErrInvalidName)
	}
	isNode := make(map[string]struct{}, len(nodes))
	for i, n := range nodes {
		if err := checkName(fmt.Sprintf("nodes[%d]", i), n); err != nil {
			return nil, err
		}
		if _, dup := isNode[n]; dup {
			return nil, fmt.Errorf("%w: nodes[%d] %q is repeated", ErrInvalidName, i, n)
		}
		isNode[n] = struct{}{}
	}
	return isNode, nil
}

// SetNodes replaces the configured nodes (a live reload). Run applies it
// on its own goroutine, through the lease protocol: a node removed that
// this replica owns is released (Release, then its lease is deleted) with
// reason "removed"; a node added is free to be taken by whichever replica
// has it configured and room in its share, the watch being restarted so
// that the view shows who may already hold it. Replicas that see a new
// list at different moments still never own one node twice: ownership is
// the lease key's, whatever the lists say.
func (m *Manager) SetNodes(nodes []string) error {
	if _, err := nodeSet(nodes); err != nil {
		return err
	}
	m.mu.Lock()
	m.pending = slices.Clone(nodes)
	m.mu.Unlock()
	select {
	case m.nodesSet <- struct{}{}:
	default:
	}
	return nil
}

// takeNodes returns the list SetNodes asked for, if any.
func (m *Manager) takeNodes() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := m.pending
	m.pending = nil
	return n
}

// Owner returns this replica's instance id, the first part of its node
// entries' value (instance/incarnation).
func (m *Manager) Owner() string { return m.instance }

// Owned returns the nodes this replica owns, sorted: those for which Acquire
// was called and Release has not yet returned.
func (m *Manager) Owned() []string {
	m.mu.Lock()
	out := make([]string, 0, len(m.owned))
	for n := range m.owned {
		out = append(out, n)
	}
	m.mu.Unlock()
	slices.Sort(out)
	return out
}

// setOwned adds node to the owned set (on) or removes it.
func (m *Manager) setOwned(node string, on bool) {
	m.mu.Lock()
	if on {
		m.owned[node] = struct{}{}
	} else {
		delete(m.owned, node)
	}
	n := len(m.owned)
	m.mu.Unlock()
	m.met.owned.Set(float64(n))
}

// clearOwned empties the owned set when Run ends.
func (m *Manager) clearOwned() {
	m.mu.Lock()
	clear(m.owned)
	m.mu.Unlock()
	m.met.owned.Set(0)
}

// Run binds (or creates) the bucket, announces this replica, takes and
// renews its share of leases, and follows the bucket until ctx is cancelled.
// Then it hands its nodes over: it deletes its presence, calls Release for
// every owned node, deletes each lease once its Release returned, and
// returns nil when all are released. It returns an error early only when the
// bucket cannot be used safely (ErrBucketConfig); NATS being unreachable is
// not an error: Run keeps trying and owns nothing meanwhile. Run may be
// called once.
func (m *Manager) Run(ctx context.Context) error {
	if err := m.started.Start("ownership"); err != nil {
		return err
	}
	s := newState(m, ctx)
	return s.run(ctx)
}

// bucketConfig is the bucket the Manager creates when it is missing.
func (m *Manager) bucketConfig() jetstream.KeyValueConfig {
	return jetstream.KeyValueConfig{
		Bucket:      m.cfg.bucket,
		Description: "amibus node ownership leases",
		History:     1,
		TTL:         m.cfg.ttl,
		// Markers make expiries visible to watchers; they need to live only
		// long enough to be delivered.
		LimitMarkerTTL: m.cfg.ttl,
		// File storage: a restarted NATS server must not forget leases that
		// live replicas still hold.
		Storage:  jetstream.FileStorage,
		Replicas: m.cfg.replicas,
	}
}

// bind returns the lease bucket, creating it if missing, and checks that its
// TTL and expiry markers are what the safety rule assumes.
func (m *Manager) bind(ctx context.Context) (jetstream.KeyValue, error) {
	kv, err := m.js.KeyValue(ctx, m.cfg.bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = m.js.CreateKeyValue(ctx, m.bucketConfig())
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = m.js.KeyValue(ctx, m.cfg.bucket) // another replica created it first
		}
	}
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		return nil, fmt.Errorf("%w: bucket %q: the NATS server does not support expiry markers (needs nats-server 2.11 or later): %v",
			ErrBucketConfig, m.cfg.bucket, err)
	}
	if err != nil {
		return nil, err
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return nil, err
	}
	if st.TTL() != m.cfg.ttl {
		return nil, fmt.Errorf("%w: bucket %q has ttl %v but this replica's lease ttl is %v; every replica must use the same ttl (delete the bucket to change it)",
			ErrBucketConfig, m.cfg.bucket, st.TTL(), m.cfg.ttl)
	}
	if st.LimitMarkerTTL() <= 0 {
		return nil, fmt.Errorf("%w: bucket %q has no limit marker ttl, so expiries would not be seen; recreate it (or let ami-ingest create it)",
			ErrBucketConfig, m.cfg.bucket)
	}
	return kv, nil
}

// opTimeout bounds one key-value call, so that a round with NATS
// unreachable ends well within a renew interval.
func (m *Manager) opTimeout() time.Duration { return m.cfg.renew / 2 }

func leaseKey(node string) string        { return "node." + node }
func presenceKey(instance string) string { return "presence." + instance }

const (
	leasePrefix    = "node."
	presencePrefix = "presence."
)

// isConflict reports a failed compare-and-set: the key exists (Create) or
// its revision moved (Update, Delete with LastRevision). Replicated buckets
// report it with another error code, and Create's second attempt (over a
// delete marker) returns the bare API error.
func isConflict(err error) bool {
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return true
	}
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) &&
		(apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
			apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}
