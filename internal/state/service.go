package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/logging"
	"github.com/amibus/amibus/pkg/eventlog"
)

// Defaults of Config.
const (
	DefaultBucket          = "ami_state"
	DefaultFlushInterval   = 50 * time.Millisecond
	DefaultMaxRequestBytes = 4096
	DefaultMaxReplayEvents = 2_000_000
	// writeChunk bounds the KV writes in flight at once: a flush of more
	// keys waits for each chunk's acknowledgements before the next.
	writeChunk = 1024
	// writeTimeout bounds the wait for one chunk's acknowledgements.
	writeTimeout = 10 * time.Second
	// flushBudget bounds the keys one interval's flush drains: after a
	// burst (a catch-up, snapshots of many nodes at once) the encoded
	// values of every dirty key would otherwise be held at once, tens of
	// MiB for 100,000 channels. Whole nodes are drained until the budget
	// is spent; the others keep their changes, and their checkpoint, for
	// the next interval (ami_state_flush_deferred_total). Steady traffic
	// (10,000 events/s make some 500 changed keys per 50 ms) never reaches
	// it. The last flush at stop and a release's flush have no budget.
	flushBudget = 8192
)

// ErrConfig reports an invalid Config field.
var ErrConfig = errors.New("state: invalid config")

// Config configures a Service. Zero values take the defaults.
type Config struct {
	Stream          string // event stream, eventlog.DefaultStream
	Prefix          string // subject prefix, eventlog.DefaultPrefix
	Bucket          string // KV bucket, DefaultBucket
	Replicas        int    // bucket replicas, 1
	Storage         jetstream.StorageType
	History         int           // values kept per key, 1
	FlushInterval   time.Duration // DefaultFlushInterval
	MaxRequestBytes int           // DefaultMaxRequestBytes
	MaxReplayEvents int           // DefaultMaxReplayEvents
	Logger          *zap.Logger
	Metrics         *Metrics // nil: a private, unregistered set
	// HA, when set, shares the nodes among replicas through leases;
	// otherwise this process reads and writes every node of the stream.
	HA *HA
}

func (c *Config) fill() error {
	if c.Stream == "" {
		c.Stream = eventlog.DefaultStream
	}
	if c.Prefix == "" {
		c.Prefix = eventlog.DefaultPrefix
	}
	if c.Bucket == "" {
		c.Bucket = DefaultBucket
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	if c.History == 0 {
		c.History = 1
	}
	if c.FlushInterval == 0 {
		c.FlushInterval = DefaultFlushInterval
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if c.MaxReplayEvents == 0 {
		c.MaxReplayEvents = DefaultMaxReplayEvents
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if c.Metrics == nil {
		c.Metrics = NewMetrics(nil)
	}
	if c.HA != nil {
		if c.HA.Leases == nil || c.HA.Instance == "" || len(c.HA.Nodes) == 0 {
			return fmt.Errorf("%w: ha needs a lease JetStream, an instance and nodes", ErrConfig)
		}
		if c.HA.Bucket == "" {
			c.HA.Bucket = DefaultLeaseBucket
		}
	}
	switch {
	case c.Replicas < 1 || c.Replicas > 5:
		return fmt.Errorf("%w: replicas %d: must be 1 to 5", ErrConfig, c.Replicas)
	case c.History < 1 || c.History > 64:
		return fmt.Errorf("%w: history %d: must be 1 to 64", ErrConfig, c.History)
	case c.FlushInterval < time.Millisecond:
		return fmt.Errorf("%w: flush interval %v: must be at least 1ms", ErrConfig, c.FlushInterval)
	case c.MaxRequestBytes < 0 || c.MaxReplayEvents < 0:
		return fmt.Errorf("%w: negative cap", ErrConfig)
	}
	return nil
}

// Service keeps the projection of the event stream in a KV bucket and
// answers state requests. Run it once.
type Service struct {
	cfg Config
	nc  *nats.Conn
	js  jetstream.JetStream
	kv  jetstream.KeyValue
	log *zap.Logger
	m   *Metrics
	bad [numReasons]*logging.Coalescer

	mu   sync.RWMutex // guards proj
	proj *Projection

	ready atomic.Bool
	// flushed is closed and replaced after every completed flush, for
	// callers waiting for the bucket to catch up.
	flushMu sync.Mutex
	flushed chan struct{}
	lastPos atomic.Uint64 // highest stream sequence whose effects are flushed
	applied uint64        // highest stream sequence applied; guarded by mu
	// internResets is the projection's InternResets already counted in the
	// metric; guarded by flushSerial.
	internResets uint64

	runnersState
}

// New checks cfg and returns a service that is not yet running.
func New(nc *nats.Conn, js jetstream.JetStream, cfg Config) (*Service, error) {
	if err := cfg.fill(); err != nil {
		return nil, err
	}
	s := &Service{cfg: cfg, nc: nc, js: js, log: cfg.Logger, m: cfg.Metrics,
		proj: NewProjection(), flushed: make(chan struct{})}
	s.runners = make(map[string]*nodeRunner)
	if cfg.HA != nil {
		mgr, err := s.newManager(cfg.HA)
		if err != nil {
			return nil, err
		}
		s.mgr = mgr
		s.shared = make(map[string]struct{}, len(cfg.HA.Nodes))
		for _, n := range cfg.HA.Nodes {
			s.shared[n] = struct{}{}
		}
	}
	for r := range s.bad {
		s.bad[r] = logging.NewCoalescer(s.log, "state: input the projection could not apply", time.Minute,
			zap.String("reason", Reason(r).String()))
	}
	s.proj.OnBad = func(_ string, r Reason) {
		s.m.BadEvents.WithLabelValues(r.String()).Inc()
		s.bad[r].Add(1)
	}
	return s, nil
}

// Ready tells whether the service has loaded the bucket and is reading.
func (s *Service) Ready() error {
	if !s.ready.Load() {
		return errors.New("state: not ready")
	}
	return nil
}

// Flushed answers a channel closed after the next completed flush, and the
// stream position flushed so far: the effects of every message up to it are
// in the bucket.
func (s *Service) Flushed() (<-chan struct{}, uint64) {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	return s.flushed, s.lastPos.Load()
}

// Run creates or updates the bucket, loads what it holds, reads the stream
// from the oldest node checkpoint, applies and flushes until ctx ends, then
// flushes once more. It answers requests while it runs.
func (s *Service) Run(ctx context.Context) error {
	defer func() {
		for _, c := range s.bad {
			c.Stop()
		}
	}()
	kv, err := s.js.CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: s.cfg.Bucket, History: uint8(s.cfg.History), Storage: s.cfg.Storage, Replicas: s.cfg.Replicas,
		Description: "ami-state: live state of every node (docs/state.md)",
	})
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("state: bucket %s: %w", s.cfg.Bucket, err)
	}
	s.kv = kv
	var r *eventlog.Reader
	if s.cfg.HA != nil {
		// Ready once the stream exists, as without leases.
		if err := s.waitStream(ctx); err != nil {
			return nil
		}
	} else {
		// A shutdown during start-up is no failure, whichever call it
		// interrupts.
		start, positions, err := s.load(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		opts := []eventlog.Option{eventlog.Stream(s.cfg.Stream), eventlog.Prefix(s.cfg.Prefix), eventlog.Buffer(readBuffer)}
		opts = append(opts, positions...)
		r, err = s.open(ctx, opts, start)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	subs, err := s.subscribe()
	if err != nil {
		if r != nil {
			_ = r.Close(context.Background())
		}
		return err
	}
	s.ready.Store(true)
	s.log.Info("state: running", zap.String("bucket", s.cfg.Bucket), zap.Bool("ha", s.cfg.HA != nil))

	var wg sync.WaitGroup
	flushCtx, stopFlush := context.WithCancel(context.Background())
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.flushLoop(flushCtx)
	}()
	if r != nil {
		err = s.read(ctx, r)
	} else {
		err = s.runHA(ctx)
	}
	s.ready.Store(false)
	for _, sub := range subs {
		_ = sub.Unsubscribe()
	}
	stopFlush()
	wg.Wait()
	closeCtx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	defer cancel()
	if ferr := s.flush(closeCtx); ferr != nil {
		s.log.Warn("state: last flush failed; the next start repairs it from the checkpoint", zap.Error(ferr))
	}
	if r != nil {
		_ = r.Close(closeCtx)
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		return nil
	}
	return err
}

// streamWait is how long Run waits between looks for a stream that does
// not exist yet (ami-ingest creates it).
const streamWait = 2 * time.Second

// waitStream returns once the event stream exists, or ctx's error.
func (s *Service) waitStream(ctx context.Context) error {
	warned := false
	for {
		_, err := s.js.Stream(ctx, s.cfg.Stream)
		if err == nil {
			return nil
		}
		if !warned {
			s.log.Warn("state: stream not found; waiting for ami-ingest to create it", zap.String("stream", s.cfg.Stream), zap.Error(err))
			warned = true
		}
		t := time.NewTimer(streamWait)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}

// readBuffer is the Buffer of ami-state's stream readers, below
// eventlog's default: the messages held ahead count in ami-state's memory,
// and a catch-up over snapshots (up to the max payload each) would hold
// four times as many with the default. The 100k-channel memory figure in
// BENCHMARKS.md is measured with it.
const readBuffer = 1024

// open opens the reader after start, from the stream's start when start is
// no longer stored, waiting for the stream to exist.
func (s *Service) open(ctx context.Context, opts []eventlog.Option, start uint64) (*eventlog.Reader, error) {
	warned := false
	for {
		r, err := eventlog.Open(ctx, s.js, append(opts, eventlog.After(start))...)
		if errors.Is(err, eventlog.ErrPositionExpired) {
			s.log.Warn("state: checkpoint older than the stream; reading from its start", zap.Uint64("checkpoint", start))
			r, err = eventlog.Open(ctx, s.js, append(opts, eventlog.FromStart())...)
		}
		if !errors.Is(err, jetstream.ErrStreamNotFound) {
			if err != nil {
				return nil, fmt.Errorf("state: open stream: %w", err)
			}
			return r, nil
		}
		if !warned {
			s.log.Warn("state: stream not found; waiting for ami-ingest to create it", zap.String("stream", s.cfg.Stream))
			warned = true
		}
		t := time.NewTimer(streamWait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, context.Canceled
		case <-t.C:
		}
	}
}

// load reads every key of the bucket into the projection and answers the
// stream position to read after (the oldest node checkpoint) and each
// node's session position for the reader.
func (s *Service) load(ctx context.Context) (uint64, []eventlog.Option, error) {
	w, err := s.kv.WatchAll(ctx, jetstream.IgnoreDeletes())
	if err != nil {
		return 0, nil, fmt.Errorf("state: read bucket: %w", err)
	}
	defer func() { _ = w.Stop() }()
	s.mu.Lock()
	defer s.mu.Unlock()
	loaded := 0
	for e := range w.Updates() {
		if e == nil {
			break
		}
		node, v := decodeValue(e.Key(), e.Value(), s.log)
		if v == nil {
			continue
		}
		n, err := s.proj.Node(node)
		if err != nil {
			continue
		}
		n.Load(v)
		loaded++
	}
	var start uint64
	first := true
	var positions []eventlog.Option
	s.proj.Nodes(func(n *Node) {
		st := n.Status()
		if first || st.Seq < start {
			start, first = st.Seq, false
		}
		if st.Session != "" {
			positions = append(positions, eventlog.NodePosition(n.Name(), st.Session, st.SessionSeq))
		}
	})
	s.applied = start
	s.lastPos.Store(start)
	s.log.Info("state: bucket loaded", zap.Int("keys", loaded), zap.Uint64("checkpoint", start))
	return start, positions, nil
}

// read applies the stream until ctx ends or the reader fails.
func (s *Service) read(ctx context.Context, r *eventlog.Reader) error {
	var m Message
	for {
		e, err := r.Next(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return context.Canceled
			}
			return fmt.Errorf("state: read stream: %w", err)
		}
		if !FromEntry(e, &m) {
			s.m.Invalid.Inc()
			continue
		}
		s.mu.Lock()
		err = s.proj.Apply(&m)
		if !m.Inferred && m.StreamSeq > s.applied {
			s.applied = m.StreamSeq
		}
		s.mu.Unlock()
		if err == nil {
			s.m.Applied.Inc()
		}
	}
}

// lagSample is how often the lag in stream messages is sampled (one
// stream info request each time).
const lagSample = time.Second

func (s *Service) flushLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.FlushInterval)
	defer t.Stop()
	lag := time.NewTicker(lagSample)
	defer lag.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-lag.C:
			s.sampleLag(ctx)
		case <-t.C:
			if err := s.flushSome(ctx, flushBudget); err != nil && ctx.Err() == nil {
				s.m.WriteErrors.Inc()
				s.log.Warn("state: flush failed; retried next interval", zap.Error(err))
			}
		}
	}
}

// sampleLag sets the lag in messages: the stream's last sequence minus the
// last applied one.
func (s *Service) sampleLag(ctx context.Context) {
	stream, err := s.js.Stream(ctx, s.cfg.Stream)
	if err != nil {
		return
	}
	info := stream.CachedInfo()
	if info == nil {
		return
	}
	s.mu.RLock()
	applied := s.applied
	s.mu.RUnlock()
	if last := info.State.LastSeq; last > applied {
		s.m.LagMessages.Set(float64(last - applied))
	} else {
		s.m.LagMessages.Set(0)
	}
}

type kvWrite struct {
	node string
	kind EntityKind
	id   string
	key  string
	val  []byte // nil: delete
}

// flush writes every dirty key with its current value, then each node's
// status (its checkpoint) once all of that node's keys are acknowledged.
func (s *Service) flush(ctx context.Context) error { return s.flushSome(ctx, 0) }

// flushSome is flush with a budget of keys (0: none; see flushBudget).
func (s *Service) flushSome(ctx context.Context, budget int) error {
	s.flushSerial.Lock()
	defer s.flushSerial.Unlock()
	return s.flushNodes(ctx, nil, budget)
}

// flushNodes is flush for the nodes in only (all when nil), draining whole
// nodes while fewer than budget keys are drained (0: no budget); the
// caller holds flushSerial.
func (s *Service) flushNodes(ctx context.Context, only map[string]bool, budget int) error {
	var writes []kvWrite
	type nodeStatus struct {
		val  []byte
		seq  uint64
		last time.Time
	}
	statuses := map[string]nodeStatus{}
	deferred := 0
	s.mu.Lock()
	applied := s.applied
	s.proj.Nodes(func(n *Node) {
		name := n.Name()
		if only != nil && !only[name] {
			return
		}
		if n.StatusDirty() {
			if budget > 0 && len(writes) > 0 && len(writes)+n.Dirty() > budget {
				deferred++
				return
			}
			n.Drain(func(k EntityKind, id string, v any) {
				w := kvWrite{node: name, kind: k, id: id, key: Key(name, k, id)}
				if v != nil {
					w.val, _ = json.Marshal(v)
				}
				writes = append(writes, w)
			})
			st := n.Status()
			b, _ := json.Marshal(st)
			statuses[name] = nodeStatus{b, st.Seq, st.Time}
			s.m.LiveChannels.WithLabelValues(name).Set(float64(st.Channels))
		}
	})
	stale := 0
	s.proj.Nodes(func(n *Node) {
		if n.status.Stale {
			stale++
		}
	})
	s.mu.Unlock()
	s.m.StaleNodes.Set(float64(stale))
	s.m.FlushDeferred.Add(float64(deferred))
	if r := s.proj.InternResets(); r > s.internResets {
		s.m.InternResets.Add(float64(r - s.internResets))
		s.internResets = r
	}
	if len(statuses) == 0 {
		if deferred == 0 {
			s.signalFlushed(applied)
		}
		return nil
	}
	failed := map[string]bool{}
	var firstErr error
	// onFail records a key write that failed and marks it, through undo, to
	// be written again at the next flush.
	onFail := func(undo func(*Node, kvWrite)) func(kvWrite, error) {
		return func(w kvWrite, err error) {
			failed[w.node] = true
			if firstErr == nil {
				firstErr = err
			}
			s.mu.Lock()
			if n, ok := s.proj.Lookup(w.node); ok {
				undo(n, w)
			}
			s.mu.Unlock()
		}
	}
	if err := s.write(ctx, writes, onFail(func(n *Node, w kvWrite) { n.Undrain(w.kind, w.id) })); err != nil {
		return err
	}
	var sw []kvWrite
	for node, st := range statuses {
		if !failed[node] {
			sw = append(sw, kvWrite{node: node, key: StatusKey(node), val: st.val})
		}
	}
	if err := s.write(ctx, sw, onFail(func(n *Node, _ kvWrite) { n.statusDirty = true })); err != nil {
		return err
	}
	now := time.Now()
	for node, st := range statuses {
		if !failed[node] && !st.last.IsZero() {
			s.m.Lag.Observe(now.Sub(st.last).Seconds())
		}
	}
	if firstErr != nil {
		return firstErr
	}
	if deferred == 0 {
		// Only then is every change up to applied in the bucket.
		s.signalFlushed(applied)
	}
	return nil
}

func (s *Service) signalFlushed(pos uint64) {
	s.flushMu.Lock()
	s.lastPos.Store(pos)
	close(s.flushed)
	s.flushed = make(chan struct{})
	s.flushMu.Unlock()
}

// write publishes writes to the bucket's subjects, writeChunk at a time,
// and reports each one that failed. Deletes are KV delete markers
// (KV-Operation: DEL), which watchers see as deletes.
func (s *Service) write(ctx context.Context, writes []kvWrite, failed func(kvWrite, error)) error {
	subjPrefix := "$KV." + s.cfg.Bucket + "."
	for len(writes) > 0 {
		chunk := writes
		if len(chunk) > writeChunk {
			chunk = chunk[:writeChunk]
		}
		writes = writes[len(chunk):]
		futs := make([]jetstream.PubAckFuture, len(chunk))
		for i, w := range chunk {
			msg := &nats.Msg{Subject: subjPrefix + w.key, Data: w.val}
			if w.val == nil {
				msg.Header = nats.Header{"KV-Operation": []string{"DEL"}}
				s.m.Writes.WithLabelValues("delete").Inc()
			} else {
				s.m.Writes.WithLabelValues("put").Inc()
			}
			f, err := s.js.PublishMsgAsync(msg)
			if err != nil {
				failed(w, err)
				continue
			}
			futs[i] = f
		}
		wctx, cancel := context.WithTimeout(ctx, writeTimeout)
		for i, f := range futs {
			if f == nil {
				continue
			}
			select {
			case <-f.Ok():
			case err := <-f.Err():
				failed(chunk[i], err)
			case <-wctx.Done():
				failed(chunk[i], wctx.Err())
			}
		}
		cancel()
	}
	return nil
}
