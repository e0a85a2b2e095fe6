package state

import (
	"strings"
	"sync/atomic"
)

// The state keeps no string of the stream payloads it applies. The reader
// hands out substrings of each message's payload (pkg/eventlog), and one
// such string held by a channel pins the whole message (about 1 KiB with
// its nats.go buffer): a channel created by one event and changed by
// another pinned both, 100,000 channels some 75 MiB of payloads for 10 MiB
// of values. So every value is copied when it enters the state: a value
// that repeats across channels and nodes (state descriptions, contexts,
// extensions, applications, caller ids) through a shared table of
// copies, which costs no allocation once the value is known; an identity
// (Uniqueid, channel name, bridge id), unique per entity, as a copy of its
// own. An unchanged value keeps the copy already held.

// internCap bounds the distinct values in the table. At the cap the table
// is emptied and starts again: values already held stay valid (each is
// its own copy), only later ones are copied anew. Resets are counted
// (ami_state_intern_resets_total).
const internCap = 16384

// internMaxLen is the longest value kept in the table; a longer one is
// copied for its holder alone (long values rarely repeat).
const internMaxLen = 64

// strTable is the table of shared copies. Not safe for concurrent use: it
// belongs to one Projection (or one Node outside of one) and is used under
// its owner's lock.
type strTable struct {
	m      map[string]string
	resets atomic.Uint64 // read by the service's flush without the owner's lock
}

func newStrTable() *strTable { return &strTable{m: make(map[string]string)} }

// intern answers a copy of s that shares no memory with s, from the table
// if s is known.
func (t *strTable) intern(s string) string {
	if s == "" {
		return ""
	}
	if v, ok := t.m[s]; ok {
		return v
	}
	c := strings.Clone(s)
	if len(c) > internMaxLen {
		return c
	}
	if len(t.m) >= internCap {
		clear(t.m)
		t.resets.Add(1)
	}
	t.m[c] = c
	return c
}

// keep sets *dst to a shared copy of v unless it already holds v.
func (n *Node) keep(dst *string, v string) {
	if *dst != v {
		*dst = n.strs.intern(v)
	}
}

// set updates *dst from field name when present and different (see keep).
func (n *Node) set(dst *string, f Fields, name string) {
	if v, ok := f.Lookup(name); ok {
		n.keep(dst, v)
	}
}

// ownID sets *dst to a copy of its own of identity v unless it already
// holds v.
func ownID(dst *string, v string) {
	if *dst != v {
		*dst = strings.Clone(v)
	}
}
