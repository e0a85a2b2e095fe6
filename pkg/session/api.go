package session

import (
	"errors"
	"time"

	"github.com/amibus/amibus/internal/lifecycle"
	"github.com/amibus/amibus/pkg/amiwire"
)

// Sentinel errors returned by Send and the session; check them with errors.Is.
var (
	// ErrDisconnected: the session dropped while the action was pending, or
	// before it was written. The action was never and will never be resent.
	ErrDisconnected = errors.New("session: disconnected")
	// ErrTimeout: the context deadline passed before a complete answer came.
	// A late answer is discarded and counted.
	ErrTimeout = errors.New("session: timeout")
	// ErrOverloaded: the cap on pending actions per session is reached.
	ErrOverloaded = errors.New("session: too many pending actions")
	// ErrNotConnected: no AMI session is up right now; returned at once.
	ErrNotConnected = errors.New("session: not connected")
	// ErrAuth: the PBX refused the credentials ("Authentication failed").
	ErrAuth = errors.New("session: authentication failed")
	// ErrTooLarge: the answer exceeded the configured cap on one answer;
	// it was read to its end and discarded, and the session stays up.
	ErrTooLarge = errors.New("session: answer too large")
	// ErrClosed: the session was closed by its owner.
	ErrClosed = errors.New("session: closed")
	// ErrInvalidAction: the action cannot be encoded safely (CR/LF in a
	// value, a colon in a key ...); nothing was written.
	ErrInvalidAction = errors.New("session: invalid action")
	// ErrStarted: Start was called a second time. It is the one error of
	// a second start in amibus (publish.ErrStarted, command.ErrStarted).
	ErrStarted = lifecycle.ErrStarted
)

// Header is one action header; a key may repeat (Variable).
type Header = amiwire.Header

// Action is a request to the PBX. The session assigns the ActionID; a caller
// supplied ActionID header is refused as invalid.
type Action struct {
	Name    string
	Headers []Header
	// OnAnswer, when set, receives the complete answer on the connection's
	// reader goroutine at its place in the wire order: after the Handler
	// has had every event read before the answer's last message (the
	// response, or a list's completion event) and before it gets any event
	// read after it. Asterisk holds events back while it writes an answer,
	// so that place is the moment the answer describes. It is called only
	// when Send gets the answer (not on a timeout, a disconnect or
	// ErrTooLarge), possibly just after Send has returned, with the Result
	// Send returns. It must not block.
	OnAnswer func(*Result)
}

// Result is the PBX's complete answer to one action. Nothing in it is
// invented: it exists only when the PBX answered.
type Result struct {
	// ActionID is the ID the session assigned and the PBX echoed.
	ActionID string
	// Response is the response message (Response: Success|Error|Follows|Goodbye).
	Response *amiwire.Message
	// Events holds, for event-list actions, every list event in order,
	// the completion event ("EventList: Complete") included.
	Events []*amiwire.Message
	// Output holds Command output lines, from either Asterisk format.
	Output []string
	// Size is the wire size in bytes of the response and its events.
	Size int
}

// Handler receives a session's events and lifecycle, in order and never
// concurrently: SessionStarted on the session's supervisor before the
// connection's reader starts, Event on the reader goroutine, SessionEnded on
// the supervisor after the reader has ended. Implementations must never
// block and must not retain m after Event returns (copy it).
type Handler interface {
	// SessionStarted is called after a successful login, before any event
	// of the new session. id is unique across processes and reconnects.
	SessionStarted(id, version string, t time.Time)
	// Event delivers one event with its per-session sequence number
	// (1, 2, 3 ... with no holes) and the time it was read.
	Event(id string, seq uint64, t time.Time, m *amiwire.Message)
	// SessionEnded is called once when a started session ends, with the
	// last sequence number it delivered (0 if none).
	SessionEnded(id string, t time.Time, reason string, lastSeq uint64)
}

// OversizedHandler is an optional extension of Handler. When the Handler
// implements it, an event the reader skipped for crossing MaxMessageBytes or
// MaxHeaders (and that Accept lets through) takes the next sequence number
// and is reported here instead of being lost silently, so that the consumer
// can mark the hole. Without it such an event takes no number and is only
// counted (ami_messages_oversized_total).
type OversizedHandler interface {
	// EventOversized reports the skipped event's name and wire size.
	EventOversized(id string, seq uint64, t time.Time, name string, size int)
}
