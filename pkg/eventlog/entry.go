package eventlog

import (
	"time"
)

// Kind tells which typed value of an Entry is set.
type Kind uint8

// Kinds of entries.
const (
	// KindEvent is one AMI event (Entry.Event).
	KindEvent Kind = iota + 1
	// KindSessionStart is a new AMI session of the node (Entry.Start).
	KindSessionStart
	// KindSessionEnd is the end of a session (Entry.End).
	KindSessionEnd
	// KindGap is a run of the session's events that is not in the stream
	// (Entry.Gap).
	KindGap
	// KindSnapshot is the answer of an event-list action, e.g.
	// CoreShowChannels, taken at this place of the node's stream
	// (Entry.Snapshot).
	KindSnapshot
	// KindInvalid is a stored message that cannot be decoded (Entry.Invalid).
	KindInvalid
)

// String returns the kind's name as the schemas spell it ("event",
// "session_start", "session_end", "gap", "snapshot", "invalid").
func (k Kind) String() string {
	switch k {
	case KindEvent:
		return "event"
	case KindSessionStart:
		return "session_start"
	case KindSessionEnd:
		return "session_end"
	case KindGap:
		return "gap"
	case KindSnapshot:
		return "snapshot"
	case KindInvalid:
		return "invalid"
	}
	return "unknown"
}

// Gap reasons. The first three are written by ami-ingest in gap markers
// (schemas/README.md); ReasonUnmarked is the reader's own, for a jump in seq
// that no marker accounts for.
const (
	ReasonBufferFull    = "buffer_full"
	ReasonPublishFailed = "publish_failed"
	ReasonOversized     = "oversized"
	ReasonUnmarked      = "unmarked"
)

// ReasonClosed is the session_end reason when ami-ingest stopped publishing
// the node (shutdown or hand-over) while the session was up. Other reasons
// ("eof", "read_error", "keepalive_timeout", ...) say why the AMI connection
// ended.
const ReasonClosed = "closed"

// Entry is one thing the reader reports, in stream order. Kind says which of
// Event, Start, End, Gap, Snapshot and Invalid is set; the others are zero. See the package
// documentation for how long an Entry and its slices stay valid.
type Entry struct {
	// Kind of the entry.
	Kind Kind
	// StreamSeq is the stream sequence of the stored message. For an
	// Inferred entry it is that of the message that revealed it, which
	// Next returns right after.
	StreamSeq uint64
	// Inferred is true for a report the reader made itself (an unmarked seq
	// jump, or a session change with no session_start), which is no stored
	// message.
	Inferred bool
	// Node is the node (PBX) name.
	Node string
	// Session is the AMI session id.
	Session string
	// Seq is the session's position once this entry is applied: an event's
	// own seq; a gap's LastSeq; a session_end's last_seq; 0 for a
	// session_start; for a snapshot, the seq of the session's last event or
	// gap before it. A Late event keeps its own seq.
	Seq uint64
	// Time is when ami-ingest read the event or wrote the marker (the
	// payload's "time"). An Inferred entry has the time of the message that
	// revealed it.
	Time time.Time
	// Late is set on an event whose seq is not above the last seq already
	// seen for its session: a publish retried after later ones were stored,
	// or a duplicate stored outside JetStream's duplicate window.
	Late bool

	// Event is set for KindEvent.
	Event Event
	// Start is set for KindSessionStart.
	Start SessionStart
	// End is set for KindSessionEnd.
	End SessionEnd
	// Gap is set for KindGap.
	Gap Gap
	// Snapshot is set for KindSnapshot.
	Snapshot Snapshot
	// Invalid is set for KindInvalid.
	Invalid Invalid
}

// Position returns the stream sequence up to which everything has been
// delivered once this entry is handled: StreamSeq, or StreamSeq-1 for an
// Inferred entry, whose message comes next. Resume with After(Position()).
func (e *Entry) Position() uint64 {
	if e.Inferred {
		return e.StreamSeq - 1
	}
	return e.StreamSeq
}

// Clone returns a deep copy of e that stays valid after the next call to
// Next.
func (e *Entry) Clone() *Entry {
	c := *e
	c.Event.Fields = e.Event.Fields.Clone()
	if e.Snapshot.Items != nil {
		c.Snapshot.Items = make([]Fields, len(e.Snapshot.Items))
		for i, it := range e.Snapshot.Items {
			c.Snapshot.Items[i] = it.Clone()
		}
	}
	if e.Invalid.Data != nil {
		c.Invalid.Data = append([]byte(nil), e.Invalid.Data...)
	}
	return &c
}

// Event is one AMI event.
type Event struct {
	// Name is the event name exactly as the PBX sent it (the payload's
	// "event"; the subject token may differ for names that are not valid
	// tokens).
	Name string
	// Fields holds every header of the AMI message in wire order of first
	// appearance, the Event header included.
	Fields Fields
}

// SessionStart is a session_start marker, or an inferred one.
type SessionStart struct {
	// Version is the AMI version from the banner; empty when Inferred.
	Version string
	// Owner is the ami-ingest process instance that read the session;
	// empty when Inferred.
	Owner string
	// Previous is the node's previous session seen by this reader, "" if
	// none.
	Previous string
	// PreviousEnded tells whether a session_end of Previous was seen. A
	// session with no session_end was cut by a crash of the ingest (or a
	// shutdown whose drain deadline passed).
	PreviousEnded bool
}

// SessionEnd is a session_end marker.
type SessionEnd struct {
	// Reason the session ended, e.g. ReasonClosed or "eof".
	Reason string
	// LastSeq is the last seq read in the session, 0 if none.
	LastSeq uint64
}

// Gap is a run of a session's events, FirstSeq..LastSeq, that was read from
// the PBX but is not in the stream.
type Gap struct {
	// FirstSeq and LastSeq bound the missing seqs, both included.
	FirstSeq, LastSeq uint64
	// Count is the number of missing events, LastSeq-FirstSeq+1.
	Count uint64
	// Reason is ReasonBufferFull, ReasonPublishFailed or ReasonOversized
	// for a gap marker, ReasonUnmarked for an Inferred gap.
	Reason string
}

// Snapshot is the list answer of an event-list action (CoreShowChannels,
// ...), completion event excluded. It describes the node at its place in the
// stream: state = the snapshot, then the events after it.
type Snapshot struct {
	// Action that was run.
	Action string
	// Items are the list events, each with the fields convention of Event.
	Items []Fields
	// Truncated is true when Items holds fewer than the PBX returned.
	Truncated bool
	// Total is the number of list events returned when Truncated, else
	// len(Items).
	Total int
}

// Invalid is a stored message the reader cannot decode.
type Invalid struct {
	// Subject of the message.
	Subject string
	// Data is the payload as stored; read it, do not modify it.
	Data []byte
	// Err says what is wrong; errors.Is(Err, ErrInvalidMessage).
	Err error
}

// Field is one AMI header key with its value or values.
type Field struct {
	// Key as sent; keys are compared exactly ("Variable" and "variable"
	// are two keys). A line with no colon has the key "".
	Key string
	// Value is the value, or the first value of a key that repeated.
	Value string
	// Values holds every value in wire order: one for a key that occurred
	// once, several for a repeated key (Variable, ChanVariable, Output).
	Values []string
}

// Fields are the headers of one AMI message, in wire order of first
// appearance.
type Fields []Field

// Get returns the (first) value of key, or "" if key is absent.
func (f Fields) Get(key string) string {
	v, _ := f.Lookup(key)
	return v
}

// Lookup returns the (first) value of key and whether key is present.
func (f Fields) Lookup(key string) (string, bool) {
	for i := range f {
		if f[i].Key == key {
			return f[i].Value, true
		}
	}
	return "", false
}

// Values returns every value of key in wire order, nil if key is absent.
func (f Fields) Values(key string) []string {
	for i := range f {
		if f[i].Key == key {
			return f[i].Values
		}
	}
	return nil
}

// Clone returns a copy of f that does not share the reader's storage.
func (f Fields) Clone() Fields {
	if f == nil {
		return nil
	}
	c := make(Fields, len(f))
	n := 0
	for i := range f {
		n += len(f[i].Values)
	}
	vals := make([]string, 0, n)
	for i := range f {
		c[i] = f[i]
		start := len(vals)
		vals = append(vals, f[i].Values...)
		c[i].Values = vals[start:len(vals):len(vals)]
	}
	return c
}
