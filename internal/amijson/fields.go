package amijson

import (
	"encoding/binary"
	"sort"
	"sync"
	"unicode/utf8"

	"github.com/amibus/amibus/pkg/amiwire"
)

// RedactedValue replaces the value of a redacted field.
const RedactedValue = "[redacted]"

// FieldFilter picks headers by key; a nil FieldFilter picks none.
type FieldFilter func(key []byte) bool

// smallFields is the header count up to which grouping uses fixed arrays on
// the stack; larger messages (long Command outputs, a PBX's bug) take a
// pooled scratch and an O(n log n) sort, so a message with thousands of
// headers costs no quadratic time.
const smallFields = 64

// AppendFields appends m's headers as one JSON object, the "fields" of
// events and replies: keys in order of first appearance; a key that repeats
// maps to the array of its values in wire order, any other key to its value.
// A key-less line (Asterisk 13 command output) has the key "". Keys that
// would be the same JSON string (after invalid UTF-8 becomes U+FFFD) are one
// key, so the object never holds a key twice. Headers whose key skip picks
// are left out; values of keys redact picks are written as RedactedValue.
// It does not allocate for messages of up to 64 headers.
func AppendFields(dst []byte, m *amiwire.Message, skip, redact FieldFilter) []byte {
	if m == nil || m.Len() == 0 {
		return append(dst, '{', '}')
	}
	n := m.Len()
	if n > smallFields {
		g := groupPool.Get().(*grouping)
		g.build(m, skip)
		dst = emitFields(dst, m, g.next, g.dup, redact)
		g.m = nil
		groupPool.Put(g)
		return dst
	}
	// next[i] is the index of the next header with the same key as i, or
	// -1; dup[i] marks a header emitted within an earlier array (or
	// skipped). Groups are found with a small open-addressing table on the
	// stack: a slot holds 1 + the first index of a key, last[first] the
	// group's tail.
	var next [smallFields]int32
	var dup [smallFields]bool
	var last [smallFields]int8
	var sigs [smallFields]uint32
	var table [2 * smallFields]int8
	for i := 0; i < n; i++ {
		next[i] = -1
		k := m.Key(i)
		if skip != nil && skip(k) {
			dup[i] = true
			continue
		}
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

func emitFields(dst []byte, m *amiwire.Message, next []int32, dup []bool, redact FieldFilter) []byte {
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
		dst = AppendString(dst, k)
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
	return AppendString(dst, v)
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

func (g *grouping) build(m *amiwire.Message, skip FieldFilter) {
	n := m.Len()
	g.m = m
	g.idx, g.next, g.dup = g.idx[:0], g.next[:0], g.dup[:0]
	for i := 0; i < n; i++ {
		g.next = append(g.next, -1)
		skipped := skip != nil && skip(m.Key(i))
		g.dup = append(g.dup, skipped)
		if !skipped {
			g.idx = append(g.idx, int32(i))
		}
	}
	sort.Sort(g)
	// Equal keys are now adjacent, in wire order: chain them.
	for k := 1; k < len(g.idx); k++ {
		a, b := g.idx[k-1], g.idx[k]
		if compareKeys(m.Key(int(a)), m.Key(int(b))) == 0 {
			g.next[a] = b
			g.dup[b] = true
		}
	}
}
