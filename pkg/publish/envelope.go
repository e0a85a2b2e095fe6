package publish

import (
	"strconv"
	"time"

	"github.com/amibus/amibus/internal/amijson"
	"github.com/amibus/amibus/internal/eventq"
)

// RedactedValue replaces the value of every redacted field.
const RedactedValue = amijson.RedactedValue

// Meta message types ("type" of a message on <prefix>.events.<node>._meta).
const (
	MetaSessionStart = "session_start"
	MetaSessionEnd   = "session_end"
	MetaGap          = "gap"
	MetaSnapshot     = "snapshot"
)

// AppendEvent appends the JSON of an event item to dst and returns it:
//
//	{"node":..,"event":..,"session":..,"seq":..,"time":..,"fields":{..}}
//
// "event" is the value of the message's first header; "time" is RFC 3339
// with nanoseconds in UTC. "fields" holds every header in wire order of first
// appearance: a key that occurs once maps to its value, a key that repeats to
// the array of its values in order. A line with no colon (key-less) is kept
// under the key "" with the whole line as its value, and follows the same
// rule. Values of keys for which redact returns true are replaced by
// RedactedValue; redact may be nil. With a dst of enough capacity it does not
// allocate.
func AppendEvent(dst []byte, node string, it *eventq.Item, redact func(key []byte) bool) []byte {
	m := it.Msg
	dst = append(dst, `{"node":`...)
	dst = amijson.AppendString(dst, node)
	dst = append(dst, `,"event":`...)
	if m != nil {
		dst = amijson.AppendString(dst, m.Name())
	} else {
		dst = append(dst, `""`...)
	}
	dst = append(dst, `,"session":`...)
	dst = amijson.AppendString(dst, it.Session)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, it.Seq, 10)
	dst = appendTime(dst, it.Time)
	dst = append(dst, `,"fields":`...)
	dst = amijson.AppendFields(dst, m, nil, redact)
	return append(dst, '}')
}

// SnapshotLimits bounds one snapshot message: at most MaxItems list events
// and at most MaxBytes of JSON (the NATS max payload less header room). A
// snapshot cut short says so with "truncated":true and the "total" number of
// list events. Zero means no limit of that kind.
type SnapshotLimits struct {
	MaxItems int
	MaxBytes int
}

// AppendMeta appends the JSON of a lifecycle, gap or snapshot item:
//
//	session_start: {"node","type","time","session","version","owner"}
//	session_end:   {"node","type","time","session","reason","last_seq"}
//	gap:           {"node","type","time","session","first_seq","last_seq","count","reason"}
//	snapshot:      {"node","type","time","session","action","items":[{fields}..]
//	               [,"truncated":true,"total":N]}
//
// Snapshot items use the fields convention of AppendEvent, redaction
// included. A snapshot whose list was dropped by the buffer (Items empty,
// Total > 0) is encoded as truncated with no items.
func AppendMeta(dst []byte, node string, it *eventq.Item, redact func(key []byte) bool, lim SnapshotLimits) []byte {
	start := len(dst)
	dst = append(dst, `{"node":`...)
	dst = amijson.AppendString(dst, node)
	dst = append(dst, `,"type":"`...)
	dst = append(dst, it.Kind.String()...)
	dst = append(dst, '"')
	dst = appendTime(dst, it.Time)
	dst = append(dst, `,"session":`...)
	dst = amijson.AppendString(dst, it.Session)
	switch it.Kind {
	case eventq.KindSessionStart:
		dst = append(dst, `,"version":`...)
		dst = amijson.AppendString(dst, it.Version)
		dst = append(dst, `,"owner":`...)
		dst = amijson.AppendString(dst, it.Owner)
	case eventq.KindSessionEnd:
		dst = append(dst, `,"reason":`...)
		dst = amijson.AppendString(dst, it.Reason)
		dst = append(dst, `,"last_seq":`...)
		dst = strconv.AppendUint(dst, it.LastSeq, 10)
	case eventq.KindGap:
		dst = append(dst, `,"first_seq":`...)
		dst = strconv.AppendUint(dst, it.FirstSeq, 10)
		dst = append(dst, `,"last_seq":`...)
		dst = strconv.AppendUint(dst, it.LastSeq, 10)
		dst = append(dst, `,"count":`...)
		dst = strconv.AppendUint(dst, it.Count, 10)
		dst = append(dst, `,"reason":`...)
		dst = amijson.AppendString(dst, it.Reason)
	case eventq.KindSnapshot:
		dst = append(dst, `,"action":`...)
		dst = amijson.AppendString(dst, it.Action)
		dst = appendSnapshotItems(dst, start, it, redact, lim)
	}
	return append(dst, '}')
}

// snapshotTail is room kept for `],"truncated":true,"total":<n>}`.
const snapshotTail = 48

func appendSnapshotItems(dst []byte, start int, it *eventq.Item, redact func([]byte) bool, lim SnapshotLimits) []byte {
	dst = append(dst, `,"items":[`...)
	total := max(it.Total, len(it.Items))
	n := 0
	for _, m := range it.Items {
		if lim.MaxItems > 0 && n >= lim.MaxItems {
			break
		}
		mark := len(dst)
		if n > 0 {
			dst = append(dst, ',')
		}
		dst = amijson.AppendFields(dst, m, nil, redact)
		if lim.MaxBytes > 0 && len(dst)-start+snapshotTail > lim.MaxBytes {
			dst = dst[:mark]
			break
		}
		n++
	}
	dst = append(dst, ']')
	if n < total {
		dst = append(dst, `,"truncated":true,"total":`...)
		dst = strconv.AppendInt(dst, int64(total), 10)
	}
	return dst
}

func appendTime(dst []byte, t time.Time) []byte {
	dst = append(dst, `,"time":"`...)
	dst = t.UTC().AppendFormat(dst, time.RFC3339Nano)
	return append(dst, '"')
}
