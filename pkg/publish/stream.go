package publish

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/amibus/amibus/internal/logging"
)

// Stream defaults.
const (
	DefaultStreamName      = "AMI_EVENTS"
	DefaultPrefix          = "ami"
	DefaultDuplicateWindow = 2 * time.Minute
	DefaultReplicas        = 1
)

// ErrInvalidStreamConfig reports a stream setting that cannot work; the error
// names the setting.
var ErrInvalidStreamConfig = errors.New("publish: invalid stream config")

// StreamConfig is the part of the JetStream stream amibus decides. Zero
// values take the defaults.
type StreamConfig struct {
	// Name of the stream; default AMI_EVENTS.
	Name string
	// Prefix of the subjects; the stream takes "<Prefix>.events.>". Default "ami".
	Prefix string
	// MaxAge of stored messages; 0 keeps them forever.
	MaxAge time.Duration
	// MaxBytes of the stream; 0 is unlimited. Oldest messages go first.
	MaxBytes int64
	// Storage is jetstream.FileStorage (the zero value) or MemoryStorage.
	Storage jetstream.StorageType
	// Replicas; default 1 (3 in a cluster).
	Replicas int
	// DuplicateWindow in which a repeated Nats-Msg-Id is stored once;
	// default 2m. A publish retried later than this after its first attempt
	// could be stored twice.
	DuplicateWindow time.Duration
}

func (c StreamConfig) withDefaults() (StreamConfig, error) {
	if c.Name == "" {
		c.Name = DefaultStreamName
	}
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.Replicas == 0 {
		c.Replicas = DefaultReplicas
	}
	if c.DuplicateWindow == 0 {
		c.DuplicateWindow = DefaultDuplicateWindow
	}
	switch {
	case !ValidToken(c.Name):
		return c, fmt.Errorf("%w: name %q: must be [A-Za-z0-9_-]+", ErrInvalidStreamConfig, c.Name)
	case c.MaxAge < 0:
		return c, fmt.Errorf("%w: max_age %v: must not be negative", ErrInvalidStreamConfig, c.MaxAge)
	case c.MaxBytes < 0:
		return c, fmt.Errorf("%w: max_bytes %d: must not be negative", ErrInvalidStreamConfig, c.MaxBytes)
	case c.Storage != jetstream.FileStorage && c.Storage != jetstream.MemoryStorage:
		return c, fmt.Errorf("%w: storage %v: must be file or memory", ErrInvalidStreamConfig, c.Storage)
	case c.Replicas < 1 || c.Replicas > 5:
		return c, fmt.Errorf("%w: replicas %d: must be 1 to 5", ErrInvalidStreamConfig, c.Replicas)
	case c.DuplicateWindow < 0:
		return c, fmt.Errorf("%w: duplicate_window %v: must not be negative", ErrInvalidStreamConfig, c.DuplicateWindow)
	case c.MaxAge > 0 && c.DuplicateWindow > c.MaxAge:
		return c, fmt.Errorf("%w: duplicate_window %v: must not exceed max_age %v", ErrInvalidStreamConfig, c.DuplicateWindow, c.MaxAge)
	}
	if err := validPrefix(c.Prefix); err != nil {
		return c, fmt.Errorf("%w: %w", ErrInvalidStreamConfig, err)
	}
	return c, nil
}

// EnsureStream creates the events stream, or updates it to cfg if it exists,
// and returns it. Limits discard the oldest messages, never new ones: the
// ingest must not be refused by a full stream.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	maxBytes := c.MaxBytes
	if maxBytes == 0 {
		maxBytes = -1
	}
	s, err := js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        c.Name,
		Description: "AMI events and their lifecycle, gap and snapshot markers (amibus)",
		Subjects:    []string{StreamSubjects(c.Prefix)},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		MaxAge:      c.MaxAge,
		MaxBytes:    maxBytes,
		MaxMsgs:     -1,
		Storage:     c.Storage,
		Replicas:    c.Replicas,
		Duplicates:  c.DuplicateWindow,
	})
	if err != nil {
		return nil, fmt.Errorf("publish: ensure stream %s: %w", c.Name, err)
	}
	return s, nil
}

// streamCheckPause is the shortest time between two checks of a stream
// that publishes did not find: while NATS comes back, each node's retries
// would otherwise ask again and again.
const streamCheckPause = time.Second

// streamCheckTimeout bounds one look-up or creation of the stream.
const streamCheckTimeout = 10 * time.Second

// errStreamCheck marks a publish held back while the stream is checked.
var errStreamCheck = errors.New("publish: held back while the stream is checked")

// errBehindFailure marks a publish held back because an earlier one of its
// node failed and is not resent yet.
var errBehindFailure = errors.New("publish: held back behind a failed publish")

// isNoStream tells whether a publish failed because no stream took its
// subject.
func isNoStream(err error) bool {
	return errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders)
}

// noteIdleLocked wakes watchStream when, with sending held back, the last
// publish in flight has its outcome. Call with amu held.
func (p *Publisher) noteIdleLocked() {
	if p.gate != nil && len(p.inflight) == 0 {
		select {
		case p.idle <- struct{}{}:
		default:
		}
	}
}

// watchStream recreates the stream when publishes find none. Each round
// holds every new publish back and waits until those in flight have their
// outcome: the stream must not appear between a node's failed publish and
// its successor already sent, or the successor would be stored first.
func (p *Publisher) watchStream(ctx context.Context) {
	defer close(p.watchDone)
	pause := time.NewTimer(streamCheckPause)
	pause.Stop()
	defer pause.Stop()
	logs := newStreamCheckLogs(p.o.log, p.o.logInterval)
	defer logs.stop()
	for {
		select {
		case <-p.lost:
		case <-ctx.Done():
			return
		}
		p.amu.Lock()
		p.gate = make(chan struct{})
		select {
		case <-p.idle: // a stale wake-up
		default:
		}
		idle := len(p.inflight) == 0
		p.amu.Unlock()
		if !idle {
			select {
			case <-p.idle:
			case <-ctx.Done():
			}
		}
		if ctx.Err() == nil {
			p.checkStream(ctx, logs)
		}
		p.amu.Lock()
		close(p.gate)
		p.gate = nil
		p.amu.Unlock()
		pause.Reset(streamCheckPause)
		select {
		case <-pause.C:
		case <-ctx.Done():
			return
		}
	}
}

// streamCheckLogs coalesces the failures of checkStream: while JetStream
// is unavailable every publish finds no stream and a check fails about
// once per streamCheckPause, which would otherwise be a line a second.
type streamCheckLogs struct {
	lookup, create *logging.Coalescer
}

func newStreamCheckLogs(log *zap.Logger, every time.Duration) streamCheckLogs {
	return streamCheckLogs{
		lookup: logging.NewCoalescer(log, "publishes found no stream, and looking it up failed; retrying", every),
		create: logging.NewCoalescerWith(log, "stream lost and not recreated; retrying", every,
			logging.CoalescerOptions{Level: zapcore.ErrorLevel}),
	}
}

func (l streamCheckLogs) stop() {
	l.lookup.Stop()
	l.create.Stop()
}

// checkStream recreates the stream if it does not exist. Any other answer
// (it exists: a leader election; JetStream not ready yet) lets the nodes
// retry, and their next "no responders" brings the next check.
func (p *Publisher) checkStream(ctx context.Context, logs streamCheckLogs) {
	c := *p.o.stream
	ctx, cancel := context.WithTimeout(ctx, streamCheckTimeout)
	defer cancel()
	_, err := p.js.Stream(ctx, c.Name)
	if err == nil {
		return
	}
	if !errors.Is(err, jetstream.ErrStreamNotFound) {
		logs.lookup.AddWith(1, zap.String("stream", c.Name), zap.Error(err))
		return
	}
	if _, err := EnsureStream(ctx, p.js, c); err != nil {
		logs.create.AddWith(1, zap.String("stream", c.Name), zap.Error(err))
		return
	}
	if p.o.metrics != nil {
		p.o.metrics.StreamRecreations.Inc()
	}
	p.o.log.Warn("stream lost (deleted, or NATS came back without its storage): recreated with its configured settings; "+
		"what it held before is unknown here, what the buffers hold is published now",
		zap.String("stream", c.Name), zap.String("storage", c.Storage.String()))
}
