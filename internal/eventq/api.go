// Package eventq is the bounded buffer between an AMI session's reader and
// the publisher: per node, capped in events, with a byte budget shared by the
// whole process. It never blocks the producer: what does not fit is dropped,
// counted, and recorded as a gap item placed exactly where the events were
// lost, so the consumer can publish the hole in order.
package eventq

import (
	"time"

	"github.com/amibus/amibus/pkg/amiwire"
)

// Kind tells what an Item carries.
type Kind uint8

// String returns the kind's name as used in meta messages' "type".
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
	}
	return "unknown"
}

const (
	// KindEvent is one AMI event.
	KindEvent Kind = iota + 1
	// KindSessionStart marks a new AMI session (after login).
	KindSessionStart
	// KindSessionEnd marks the end of a session.
	KindSessionEnd
	// KindGap records events that were lost: FirstSeq..LastSeq, Count, Reason.
	KindGap
	// KindSnapshot carries the answer of an event-list action run after login.
	KindSnapshot
)

// Item is one entry of a Queue, in the order the reader produced it.
type Item struct {
	Kind    Kind
	Session string
	Time    time.Time

	// KindEvent: Seq is the per-session sequence number; Msg is owned by the
	// queue and must be handed back with Queue.Release after use.
	Seq uint64
	Msg *amiwire.Message

	// KindSessionStart: the AMI version from the banner, and the process
	// instance (Queue owner) that read the session.
	Version string
	Owner   string

	// KindSessionEnd and KindGap: why; KindSessionEnd also sets LastSeq.
	Reason string
	// KindGap: the lost range and its size. KindSessionEnd: LastSeq.
	// KindSnapshot: Count numbers the snapshots of the same action and
	// session that stand at the same Seq before this one (a retry on a
	// quiet PBX); almost always 0. It keeps Nats-Msg-Ids unique.
	FirstSeq, LastSeq, Count uint64

	// KindSnapshot: the action run and its list events (completion excluded).
	// Seq is the last event sequence number the queue had received for the
	// session when the snapshot was pushed. Total is the number of list
	// events the action returned: it exceeds len(Items) when the snapshot did
	// not fit the byte budget and its items were dropped.
	Action string
	Items  []*amiwire.Message
	Total  int
	// Size is the bytes the item holds against the budget.
	Size int
}
