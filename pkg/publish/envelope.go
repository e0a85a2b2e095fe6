package publish

import (
	"encoding/binary"
	"sort"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/eventq"
)

// RedactedValue replaces the value of every redacted field.
const RedactedValue = "[redacted]"

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
	dst = appendString(dst, node)
	dst = append(dst, `,"event":`...)
	if m != nil {
		dst = appendString(dst, m.Name())
	} else {
		dst = append(dst, `""`...)
	}
	dst = append(dst, `,"session":`...)
	dst = appendString(dst, it.Session)
	dst = append(dst, `,"seq":`...)
	dst = strconv.AppendUint(dst, it.Seq, 10)
	dst = appendTime(dst, it.Time)
	dst = append(dst, `,"fields":`...)
	dst = appendFields(dst, m, redact)
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
	dst = appendString(dst, node)
	dst = append(dst, `,"type":"`...)
	dst = append(dst, it.Kind.String()...)
	dst = append(dst, '"')
	dst = appendTime(dst, it.Time)
	dst = append(dst, `,"session":`...)
	dst = appendString(dst, it.Session)
	switch it.Kind {
	case eventq.KindSessionStart:
		dst = append(dst, `,"version":`...)
		dst = appendString(dst, it.Version)
		dst = append(dst, `,"owner":`...)
		dst = appendString(dst, it.Owner)
	case eventq.KindSessionEnd:
		dst = append(dst, `,"reason":`...)
		dst = appendString(dst, it.Reason)
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
		dst = appendString(dst, it.Reason)
	case eventq.KindSnapshot:
		dst = append(dst, `,"action":`...)
		dst = appendString(dst, it.Action)
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
		dst = appendFields(dst, m, redact)
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

// smallFields is the header count up to which grouping uses fixed arrays on
// the stack; larger messages (rare: long Command-like lists, a PBX's bug)
// take a pooled scratch and an O(n log n) sort, so a message with thousands
// of headers costs no quadratic time.
const smallFields = 64

// appendFields appends m's headers as one JSON object; see AppendEvent.
func appendFields(dst []byte, m *amiwire.Message, redact func([]byte) bool) []byte {
	if m == nil || m.Len() == 0 {
		return append(dst, '{', '}')
	}
	n := m.Len()
	if n > smallFields {
		g := groupPool.Get().(*grouping)
		g.build(m)
		dst = emitFields(dst, m, g.next, g.dup, redact)
		g.m = nil
		groupPool.Put(g)
		return dst
	}
	// next[i] is the index of the next header with the same key as i, or
	// -1; dup[i] marks a header already emitted within an earlier array.
	// Groups are found with a small open-addressing table on the stack:
	// slot holds 1 + the first index of a key, last[first] the group's tail.
	var next [smallFields]int32
	var dup [smallFields]bool
	var last [smallFields]int8
	var sigs [smallFields]uint32
	var table [2 * smallFields]int8
	for i := 0; i < n; i++ {
		next[i] = -1
		k := m.Key(i)
		sig := keySig(k)
		sigs[i] = sig
		h := (sig * 0x9E3779B1) >> (32 - 7)
		for {
			f := table[h]
			if f == 0 {
				table[h] = int8(i + 1)
				last[i] = int8(i)
				break
			}
			first := int(f - 1)
			if sigs[first] == sig && compareKeys(m.Key(first), k) == 0 {
				next[last[first]] = int32(i)
				last[first] = int8(i)
				dup[i] = true
				break
			}
			h = (h + 1) & (2*smallFields - 1)
		}
	}
	return emitFields(dst, m, next[:n], dup[:n], redact)
}

func emitFields(dst []byte, m *amiwire.Message, next []int32, dup []bool, redact func([]byte) bool) []byte {
	dst = append(dst, '{')
	first := true
	for i := range next {
		if dup[i] {
			continue
		}
		if !first {
			dst = append(dst, ',')
		}
		first = false
		k := m.Key(i)
		dst = appendString(dst, k)
		dst = append(dst, ':')
		red := redact != nil && redact(k)
		if next[i] < 0 {
			dst = appendValue(dst, m.Value(i), red)
			continue
		}
		dst = append(dst, '[')
		for j := int32(i); j >= 0; j = next[j] {
			if j != int32(i) {
				dst = append(dst, ',')
			}
			dst = appendValue(dst, m.Value(int(j)), red)
		}
		dst = append(dst, ']')
	}
	return append(dst, '}')
}

func appendValue(dst, v []byte, redacted bool) []byte {
	if redacted {
		return append(dst, `"`+RedactedValue+`"`...)
	}
	return appendString(dst, v)
}

// keySig is a cheap filter before comparing two keys: equal for equal ASCII
// keys, and one shared value for every non-ASCII key, whose equality must be
// decided on the JSON form (compareKeys).
func keySig(k []byte) uint32 {
	if len(k) == 0 {
		return 0
	}
	i := 0
	for ; i+8 <= len(k); i += 8 {
		if binary.LittleEndian.Uint64(k[i:])&msb != 0 {
			return 1
		}
	}
	for ; i < len(k); i++ {
		if k[i] >= utf8.RuneSelf {
			return 1
		}
	}
	return uint32(len(k))<<16 | uint32(k[0])<<8 | uint32(k[len(k)-1])
}

// grouping is the scratch for messages with more than smallFields headers.
type grouping struct {
	m    *amiwire.Message
	idx  []int32
	next []int32
	dup  []bool
}

var groupPool = sync.Pool{New: func() any { return new(grouping) }}

func (g *grouping) Len() int { return len(g.idx) }
func (g *grouping) Swap(i, j int) {
	g.idx[i], g.idx[j] = g.idx[j], g.idx[i]
}
func (g *grouping) Less(i, j int) bool {
	a, b := g.idx[i], g.idx[j]
	if c := compareKeys(g.m.Key(int(a)), g.m.Key(int(b))); c != 0 {
		return c < 0
	}
	return a < b
}

func (g *grouping) build(m *amiwire.Message) {
	n := m.Len()
	g.m = m
	g.idx, g.next, g.dup = g.idx[:0], g.next[:0], g.dup[:0]
	for i := 0; i < n; i++ {
		g.idx = append(g.idx, int32(i))
		g.next = append(g.next, -1)
		g.dup = append(g.dup, false)
	}
	sort.Sort(g)
	// Equal keys are now adjacent, in wire order: chain them.
	for k := 1; k < n; k++ {
		a, b := g.idx[k-1], g.idx[k]
		if compareKeys(m.Key(int(a)), m.Key(int(b))) == 0 {
			g.next[a] = b
			g.dup[b] = true
		}
	}
}
