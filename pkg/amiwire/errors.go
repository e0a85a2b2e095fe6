package amiwire

import (
	"errors"
	"fmt"
	"io"
)

// Sentinel errors; check them with errors.Is. The typed errors below wrap
// them and carry what a caller needs to log or count the failure.
var (
	// ErrMessageTooLarge: a message exceeded the reader's byte cap.
	ErrMessageTooLarge = errors.New("amiwire: message too large")
	// ErrTooManyHeaders: a message exceeded the reader's header cap, or an
	// action would exceed the 128 lines Asterisk accepts.
	ErrTooManyHeaders = errors.New("amiwire: too many headers")
	// ErrProtocol: the peer sent something that is not AMI.
	ErrProtocol = errors.New("amiwire: protocol error")
	// ErrInvalidKey: an action header key is empty, contains a colon, a space
	// or a control character, or is Action/ActionID (which AppendAction owns).
	ErrInvalidKey = errors.New("amiwire: invalid header key")
	// ErrInvalidValue: an action name or value contains CR, LF or NUL, or the
	// action name is not a valid key.
	ErrInvalidValue = errors.New("amiwire: invalid header value")
	// ErrEmptyAction: the action name is empty.
	ErrEmptyAction = errors.New("amiwire: empty action name")
	// ErrLineTooLong: an action line would exceed MaxActionLine bytes.
	ErrLineTooLong = errors.New("amiwire: action line too long")
)

// excerptMax bounds how much peer data an error string quotes.
const excerptMax = 64

// excerpt returns at most excerptMax bytes of b, for %q in error strings.
func excerpt(b []byte) string {
	if len(b) > excerptMax {
		b = b[:excerptMax]
	}
	return string(b)
}

// LimitError reports a message that crossed a cap of the Reader. The message
// was read to its terminating empty line without being buffered, and the
// next ReadMessage returns the message after it.
type LimitError struct {
	// Err is ErrMessageTooLarge or ErrTooManyHeaders.
	Err error
	// Kind is the message's kind, from its first line (KindOther when that
	// line alone crossed the byte cap).
	Kind Kind
	// Name is the first header's value (event name or response status),
	// set only for events and responses: the first line of anything else
	// is arbitrary peer data.
	Name string
	// ActionID is the message's ActionID if it came before the cap.
	ActionID string
	// Size is the number of wire bytes the whole message occupied.
	Size int
	// Limit is the cap that was crossed (bytes or headers).
	Limit int
}

// Error describes the skipped message without quoting its content.
func (e *LimitError) Error() string {
	what := "bytes"
	if errors.Is(e.Err, ErrTooManyHeaders) {
		what = "headers"
	}
	s := fmt.Sprintf("%v: %s", e.Err, describe(e.Kind, e.Name))
	if e.ActionID != "" {
		s += fmt.Sprintf(" (ActionID %q)", e.ActionID)
	}
	return s + fmt.Sprintf(" over the cap of %d %s; %d bytes skipped", e.Limit, what, e.Size)
}

// Unwrap returns Err.
func (e *LimitError) Unwrap() error { return e.Err }

// TruncatedError reports a stream that ended inside the banner or a message,
// as when Asterisk drops a slow reader mid-event. The partial message is
// discarded. It matches io.ErrUnexpectedEOF.
type TruncatedError struct {
	// Kind is the partial message's kind (KindOther inside the banner).
	Kind Kind
	// Name is the first header's value for an event or response, else "".
	Name string
	// Size is the number of bytes of the partial message that were read.
	Size int
}

// Error describes the partial message.
func (e *TruncatedError) Error() string {
	return fmt.Sprintf("amiwire: stream ended %d bytes into %s: %v", e.Size, describe(e.Kind, e.Name), io.ErrUnexpectedEOF)
}

// describe names a message in an error string: `event "Hangup"`.
func describe(k Kind, name string) string {
	switch {
	case k == KindOther:
		return "a message"
	case name != "":
		return fmt.Sprintf("%s %q", k, name)
	case k == KindEvent:
		return "an event"
	}
	return "a response"
}

// Unwrap returns io.ErrUnexpectedEOF.
func (e *TruncatedError) Unwrap() error { return io.ErrUnexpectedEOF }

// ProtocolError reports input that is not AMI: a wrong banner, or a legacy
// Command answer whose "--END COMMAND--" line is not followed by the empty
// line. It matches ErrProtocol.
type ProtocolError struct {
	// Reason says what was wrong.
	Reason string
	// Excerpt is at most 64 bytes of the offending line.
	Excerpt string
}

// Error describes the offending input with a bounded excerpt.
func (e *ProtocolError) Error() string {
	return fmt.Sprintf("%v: %s: %q", ErrProtocol, e.Reason, e.Excerpt)
}

// Unwrap returns ErrProtocol.
func (e *ProtocolError) Unwrap() error { return ErrProtocol }

// EncodeError reports an action AppendAction refused; nothing was written.
// It never quotes a value, which may be a secret.
type EncodeError struct {
	// Err is ErrInvalidKey, ErrInvalidValue, ErrEmptyAction, ErrLineTooLong
	// or ErrTooManyHeaders.
	Err error
	// Field names what was refused: "Action", "ActionID", or the key of the
	// offending header (at most 64 bytes of it).
	Field string
	// Index is the offending header's index in the headers argument, or -1
	// for the action name, the ActionID and the whole action.
	Index int
	// Reason says what was wrong.
	Reason string
}

// Error describes the refused field, never its value.
func (e *EncodeError) Error() string {
	if e.Index >= 0 {
		return fmt.Sprintf("%v: header %d %q: %s", e.Err, e.Index, e.Field, e.Reason)
	}
	if e.Field != "" {
		return fmt.Sprintf("%v: %s: %s", e.Err, e.Field, e.Reason)
	}
	return fmt.Sprintf("%v: %s", e.Err, e.Reason)
}

// Unwrap returns Err.
func (e *EncodeError) Unwrap() error { return e.Err }
