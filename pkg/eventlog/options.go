package eventlog

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/amibus/amibus/internal/setting"
	"github.com/amibus/amibus/pkg/amiwire"
)

// Defaults of the options.
const (
	// DefaultStream is the stream ami-ingest writes (publish.DefaultStreamName).
	DefaultStream = "AMI_EVENTS"
	// DefaultPrefix is the subject prefix (publish.DefaultPrefix).
	DefaultPrefix = "ami"
	// DefaultBuffer is how many stored messages the reader pulls ahead:
	// about 2 MiB of ami-ingest's events (some 500 bytes each). Measured on
	// two cores, 4096 reads 215,000-230,000 events/s where 1024 read
	// 182,000-192,000 (fewer pull rounds, fewer GC cycles for nats.go's
	// per-message garbage); BENCHMARKS.md.
	DefaultBuffer = 4096
	// MinBuffer is the least Buffer: with fewer, each pull (three quarters
	// of Buffer, pulled again at half of that) brings a handful of messages
	// for a round trip to the server.
	MinBuffer = 16
	// MaxBuffer caps Buffer.
	MaxBuffer = 65536
	// DefaultMaxNodes caps the nodes whose session and seq the reader
	// tracks.
	DefaultMaxNodes = 10000
	// DefaultAckWait is a durable consumer's ack wait: a message pulled but
	// not acknowledged for this long is delivered again (and dropped by the
	// reader as already delivered, see Stats.Redelivered).
	DefaultAckWait = time.Minute
)

// Sentinel errors, for errors.Is.
var (
	// ErrInvalidOption reports an option value that cannot work; the error
	// names the option.
	ErrInvalidOption = errors.New("eventlog: invalid option")
	// ErrClosed is returned by Next after Close.
	ErrClosed = errors.New("eventlog: reader closed")
	// ErrInvalidMessage is wrapped by Invalid.Err: a stored message that is
	// not an amibus event or marker.
	ErrInvalidMessage = errors.New("eventlog: invalid message")
	// ErrPositionExpired is returned by Open when the start sequence asked
	// for is older than the stream's first stored message: the messages in
	// between were discarded by the stream's limits and cannot be read.
	ErrPositionExpired = errors.New("eventlog: position no longer in the stream")
	// ErrTooManyNodes is returned by Next when a message of one more node
	// than MaxNodes arrives.
	ErrTooManyNodes = errors.New("eventlog: too many nodes")
	// ErrDurableMismatch is returned by Open when the durable consumer
	// exists with other subjects or another ack policy than asked for.
	ErrDurableMismatch = errors.New("eventlog: durable consumer exists with another configuration")
)

// Option configures a Reader. Open reports a refused one wrapped in
// ErrInvalidOption.
type Option func(*options) error

type startKind uint8

const (
	startAll startKind = iota
	startSeq
	startTime
	startNew
)

type nodePos struct {
	node, session string
	seq           uint64
}

type options struct {
	stream   string
	prefix   string
	nodes    []string
	start    startKind
	startSeq uint64
	startAt  time.Time
	startSet bool
	durable  string
	buffer   int
	maxNodes int
	ackWait  time.Duration
	known    []nodePos
}

func defaultOptions() options {
	return options{
		stream:   DefaultStream,
		prefix:   DefaultPrefix,
		buffer:   DefaultBuffer,
		maxNodes: DefaultMaxNodes,
		ackWait:  DefaultAckWait,
	}
}

func (o *options) setStart(k startKind) error {
	if o.startSet {
		return errors.New("only one of FromStart, FromStreamSeq, After, FromTime and OnlyNew")
	}
	o.startSet, o.start = true, k
	return nil
}

// Stream names the stream to read; default DefaultStream.
func Stream(name string) Option {
	return func(o *options) error { o.stream = name; return setting.Token("stream", name) }
}

// Prefix sets the subject prefix of the stream's subjects
// ("<prefix>.events.<node>.<Event>"); default DefaultPrefix.
func Prefix(p string) Option {
	return func(o *options) error {
		if p == "" {
			return errors.New("prefix: empty")
		}
		for _, tok := range strings.Split(p, ".") {
			if !validToken(tok) {
				return fmt.Errorf("prefix %q: token %q must be [A-Za-z0-9_-]+", p, tok)
			}
		}
		o.prefix = p
		return nil
	}
}

// Nodes restricts the reader to these nodes' events and markers; by
// default it reads every node. May be given more than once.
func Nodes(names ...string) Option {
	return func(o *options) error {
		if len(names) == 0 {
			return errors.New("nodes: none given")
		}
		for _, n := range names {
			if err := setting.Token("node", n); err != nil {
				return err
			}
		}
		o.nodes = append(o.nodes, names...)
		return nil
	}
}

// FromStart reads from the first stored message (the default).
func FromStart() Option {
	return func(o *options) error { return o.setStart(startAll) }
}

// FromStreamSeq reads from the message with stream sequence seq (or the
// next one of the selected nodes). seq must be at least 1.
func FromStreamSeq(seq uint64) Option {
	return func(o *options) error {
		if seq == 0 {
			return errors.New("from stream seq: must be at least 1")
		}
		if err := o.setStart(startSeq); err != nil {
			return err
		}
		o.startSeq = seq
		return nil
	}
}

// After resumes after a stored Position: the first message read is the one
// after stream sequence pos. After(0) reads from the start.
func After(pos uint64) Option {
	return func(o *options) error {
		if err := o.setStart(startSeq); err != nil {
			return err
		}
		o.startSeq = pos + 1
		return nil
	}
}

// FromTime reads from the first message stored at or after t.
func FromTime(t time.Time) Option {
	return func(o *options) error {
		if t.IsZero() {
			return errors.New("from time: zero time")
		}
		if err := o.setStart(startTime); err != nil {
			return err
		}
		o.startAt = t
		return nil
	}
}

// OnlyNew reads only messages stored after the reader is opened.
func OnlyNew() Option {
	return func(o *options) error { return o.setStart(startNew) }
}

// Durable reads through the durable pull consumer name, created if it does
// not exist (with the start position of the other options) and resumed from
// its acknowledged position if it does (the start options are then
// ignored). The reader acknowledges what the caller has handled: an entry
// counts as handled when Next is called again or Close is. After a crash,
// what was handled but not yet acknowledged (at most Buffer/2 messages) is
// delivered again; after Close nothing is.
func Durable(name string) Option {
	return func(o *options) error { o.durable = name; return setting.Token("durable", name) }
}

// Buffer caps the stored messages held ahead of the caller: pulled by
// nats.go (PullMaxMessages, three quarters of it) and handed over to Next
// (the rest); MinBuffer to MaxBuffer, default DefaultBuffer.
func Buffer(n int) Option {
	return func(o *options) error { o.buffer = n; return setting.Between("buffer", n, MinBuffer, MaxBuffer) }
}

// MaxNodes caps the nodes the reader tracks (their last session and seq);
// default DefaultMaxNodes. At the cap, a message of a further node fails
// Next with ErrTooManyNodes.
func MaxNodes(n int) Option {
	return func(o *options) error { o.maxNodes = n; return setting.AtLeast("max nodes", n, 1) }
}

// AckWait sets the durable consumer's ack wait (only with Durable, at
// creation); default DefaultAckWait, at least one second.
func AckWait(d time.Duration) Option {
	return func(o *options) error { o.ackWait = d; return setting.AtLeast("ack wait", d, time.Second) }
}

// NodePosition tells the reader where a node stood before its start
// position (session and last seq, as a caller stored them with its own
// position), so that a seq jump or a session change across a resume is
// reported like one within the read.
func NodePosition(node, session string, seq uint64) Option {
	return func(o *options) error {
		if err := setting.Token("node position: node", node); err != nil {
			return err
		}
		if session == "" {
			return fmt.Errorf("node position %s: empty session", node)
		}
		o.known = append(o.known, nodePos{node: node, session: session, seq: seq})
		return nil
	}
}

// validToken is amibus's one token check: node, stream and durable names,
// like the ingest's, are non-empty runs of [A-Za-z0-9_-].
func validToken(s string) bool { return amiwire.ValidName(s) }
