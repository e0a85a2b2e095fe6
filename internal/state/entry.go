package state

import "github.com/amibus/amibus/pkg/eventlog"

// entryItems is Items over a snapshot's item list.
type entryItems []eventlog.Fields

func (l entryItems) Len() int          { return len(l) }
func (l entryItems) Item(i int) Fields { return &l[i] }

// FromEntry fills m from a reader entry without copying: m's fields point
// into e and are valid as long as e is. It answers false for an entry the
// projection has no use for (an undecodable message).
func FromEntry(e *eventlog.Entry, m *Message) bool {
	*m = Message{StreamSeq: e.StreamSeq, Inferred: e.Inferred, Node: e.Node, Session: e.Session, Seq: e.Seq, Time: e.Time}
	switch e.Kind {
	case eventlog.KindEvent:
		m.Kind, m.Event, m.Fields = KindEvent, e.Event.Name, &e.Event.Fields
	case eventlog.KindSessionStart:
		m.Kind = KindSessionStart
	case eventlog.KindSessionEnd:
		m.Kind = KindSessionEnd
	case eventlog.KindGap:
		m.Kind = KindGap
	case eventlog.KindSnapshot:
		m.Kind, m.Action, m.Items, m.Truncated = KindSnapshot, e.Snapshot.Action, entryItems(e.Snapshot.Items), e.Snapshot.Truncated
	default:
		return false
	}
	return true
}
