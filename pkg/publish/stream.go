package publish

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Stream defaults.
const (
	DefaultStreamName      = "AMI_EVENTS"
	DefaultPrefix          = "ami"
	DefaultDuplicateWindow = 2 * time.Minute
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
		c.Replicas = 1
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
