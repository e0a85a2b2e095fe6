package amiwire

import (
	"bytes"
	"strings"
)

// Kind is what a message is, decided by its first line only: real Asterisk
// sends events (OriginateResponse, ChallengeResponseFailed) that also carry a
// Response header, so the presence of a key proves nothing.
type Kind uint8

const (
	// KindOther is a message whose first line is neither Response nor Event
	// (the banner-less junk a broken peer may send, or an action echoed back).
	KindOther Kind = iota
	// KindResponse is an answer to an action ("Response: ..." first).
	KindResponse
	// KindEvent is an event ("Event: ..." first).
	KindEvent
)

// String returns the kind's name.
func (k Kind) String() string {
	switch k {
	case KindResponse:
		return "response"
	case KindEvent:
		return "event"
	}
	return "other"
}

// span locates one header in Message.buf. A line with no colon has
// keyEnd == keyStart (an empty key) and the whole line as its value.
type span struct {
	keyStart, keyEnd int32
	valStart, valEnd int32
}

// Message is one AMI message. Its headers keep wire order, repeated keys
// included. A Message may be reused across Reader.ReadMessage calls, which
// overwrite it without allocating once its buffers have grown; a caller that
// keeps a message past the next read must Clone it.
type Message struct {
	buf    []byte
	fields []span
	kind   Kind
	// follows marks an Asterisk 13 "Response: Follows" command answer whose
	// raw output lines are stored as key-less headers.
	follows bool
	size    int
}

// Reset empties m, keeping its buffers for reuse.
func (m *Message) Reset() {
	m.buf = m.buf[:0]
	m.fields = m.fields[:0]
	m.kind = KindOther
	m.follows = false
	m.size = 0
}

// Kind reports whether m is a response, an event or something else.
func (m *Message) Kind() Kind { return m.kind }

// Len returns the number of headers, key-less lines included.
func (m *Message) Len() int { return len(m.fields) }

// Size returns the number of wire bytes the message occupied, line endings
// and the terminating empty line included.
func (m *Message) Size() int { return m.size }

// Key returns the key of header i; it is empty for a line that had no colon.
// The slice aliases m and is valid until m is next modified.
func (m *Message) Key(i int) []byte {
	f := m.fields[i]
	return m.buf[f.keyStart:f.keyEnd]
}

// Value returns the value of header i, or the whole line for a line with no
// colon. The slice aliases m and is valid until m is next modified.
func (m *Message) Value(i int) []byte {
	f := m.fields[i]
	return m.buf[f.valStart:f.valEnd]
}

// Lookup returns the value of the first header whose key equals key, ignoring
// case as Asterisk does. The slice aliases m.
func (m *Message) Lookup(key string) ([]byte, bool) {
	for i := range m.fields {
		if EqualFold(m.Key(i), key) {
			return m.Value(i), true
		}
	}
	return nil, false
}

// Get returns the value of the first header named key as a string, or "".
func (m *Message) Get(key string) string {
	v, _ := m.Lookup(key)
	return string(v)
}

// Values returns every value of the headers named key, in order.
func (m *Message) Values(key string) []string {
	var out []string
	for i := range m.fields {
		if EqualFold(m.Key(i), key) {
			out = append(out, string(m.Value(i)))
		}
	}
	return out
}

// Name returns the value of the first header: the event name of an event, the
// status (Success, Error, Follows, Goodbye) of a response.
func (m *Message) Name() []byte {
	if len(m.fields) == 0 {
		return nil
	}
	return m.Value(0)
}

// IsFollows reports whether m is an Asterisk 13 style "Response: Follows"
// command answer.
func (m *Message) IsFollows() bool { return m.follows }

// ActionID returns the message's ActionID header, or "" if it has none.
func (m *Message) ActionID() []byte {
	v, _ := m.Lookup("ActionID")
	return v
}

// Clone returns a deep copy of m that shares nothing with it.
func (m *Message) Clone() *Message {
	c := &Message{
		buf:     bytes.Clone(m.buf),
		fields:  append([]span(nil), m.fields...),
		kind:    m.kind,
		follows: m.follows,
		size:    m.size,
	}
	if c.buf == nil {
		c.buf = []byte{}
	}
	return c
}

// CopyTo overwrites dst with the content of m, reusing dst's buffers.
func (m *Message) CopyTo(dst *Message) {
	dst.buf = append(dst.buf[:0], m.buf...)
	dst.fields = append(dst.fields[:0], m.fields...)
	dst.kind, dst.follows, dst.size = m.kind, m.follows, m.size
}

// Add appends a header; it is how tests and the encoder's callers build
// messages by hand. A message built by Add has KindOther until its first
// header is Response or Event.
func (m *Message) Add(key, value string) {
	ks := int32(len(m.buf))
	m.buf = append(m.buf, key...)
	ke := int32(len(m.buf))
	m.buf = append(m.buf, value...)
	m.fields = append(m.fields, span{keyStart: ks, keyEnd: ke, valStart: ke, valEnd: int32(len(m.buf))})
	if len(m.fields) == 1 {
		m.kind = kindOf([]byte(key))
	}
	m.size += len(key) + len(value) + 4
}

// String renders m in wire form with CRLF endings, for logs and tests.
func (m *Message) String() string {
	var b strings.Builder
	for i := range m.fields {
		if k := m.Key(i); len(k) > 0 {
			b.Write(k)
			b.WriteString(": ")
		}
		b.Write(m.Value(i))
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return b.String()
}

func kindOf(key []byte) Kind {
	switch {
	case EqualFold(key, "Response"):
		return KindResponse
	case EqualFold(key, "Event"):
		return KindEvent
	}
	return KindOther
}

// EqualFold reports whether b equals s ignoring ASCII case, as Asterisk
// compares header and action names. It does not allocate. It is the one
// case-fold of amibus.
func EqualFold[T ~[]byte | ~string](b T, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if x, y := b[i], s[i]; x != y && Lower(x) != Lower(y) {
			return false
		}
	}
	return true
}

// Header is one "Key: Value" pair of an action to encode.
type Header struct {
	Key   string
	Value string
}
