package state

import "time"

// Kind tells what a Message is: an AMI event or one of the four markers.
type Kind uint8

// Message kinds, matching the stream's event payload and meta types.
const (
	KindEvent Kind = iota
	KindSessionStart
	KindSessionEnd
	KindGap
	KindSnapshot
)

// Fields reads an event's fields by name. A key that repeats answers its
// first value; a missing key answers ok false. Implementations over the
// decoded stream payload need not copy anything, which keeps Apply free of
// allocations.
type Fields interface {
	Lookup(name string) (value string, ok bool)
}

// Items is a snapshot's list of item events.
type Items interface {
	Len() int
	Item(i int) Fields
}

// Message is one stream message as Apply needs it. An adapter from the
// consumer package's decoded message fills it field by field.
type Message struct {
	StreamSeq uint64 // JetStream stream sequence; 0 when not from a stream
	// Inferred marks a report the reader made itself (a gap or session
	// start it deduced); StreamSeq is then that of the message revealing
	// it, which comes next and must still apply.
	Inferred bool
	Node     string    // node name (must be a valid key token)
	Session  string    // AMI session id
	Seq      uint64    // per-session event sequence (events only)
	Time     time.Time // when the event was read, or the marker's time
	Kind     Kind
	Event    string // AMI event name (KindEvent)
	Fields   Fields // AMI fields (KindEvent)

	// Snapshot markers only.
	Action    string // the list action, e.g. CoreShowChannels
	Items     Items
	Truncated bool
}

// MapFields is Fields over a plain map, for tests and simple callers.
type MapFields map[string]string

// Lookup answers the value of name.
func (m MapFields) Lookup(name string) (string, bool) {
	v, ok := m[name]
	return v, ok
}

// AnyFields is Fields over the stream payload's decoded "fields" object:
// each value a string or, for a repeated key, a []string or []any.
type AnyFields map[string]any

// Lookup answers the value of name, the first one for a repeated key.
func (m AnyFields) Lookup(name string) (string, bool) {
	switch v := m[name].(type) {
	case string:
		return v, true
	case []string:
		if len(v) > 0 {
			return v[0], true
		}
	case []any:
		if len(v) > 0 {
			s, ok := v[0].(string)
			return s, ok
		}
	}
	return "", false
}

// ItemList is Items over a slice.
type ItemList []Fields

// Len is the number of items.
func (l ItemList) Len() int { return len(l) }

// Item answers item i.
func (l ItemList) Item(i int) Fields { return l[i] }
