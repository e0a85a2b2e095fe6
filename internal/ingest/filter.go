package ingest

import (
	"strings"

	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/session"
)

// filter decides which events a node publishes. Names match exactly, as
// Asterisk spells them (Newchannel, VarSet); the map lookup with a []byte
// key converted in place does not allocate.
type filter struct {
	include map[string]struct{} // empty: everything not excluded
	exclude map[string]struct{}
}

func newFilter(include, exclude []string) *filter {
	f := &filter{include: set(include), exclude: set(exclude)}
	return f
}

func set(names []string) map[string]struct{} {
	m := make(map[string]struct{}, len(names))
	for _, n := range names {
		m[n] = struct{}{}
	}
	return m
}

// accept is the session's Accept hook; it runs on the reader goroutine
// before sequence numbers are assigned, so filtered events leave no hole.
func (f *filter) accept(name []byte) bool {
	if _, ok := f.exclude[string(name)]; ok {
		return false
	}
	if len(f.include) == 0 {
		return true
	}
	_, ok := f.include[string(name)]
	return ok
}

// active reports whether the filter leaves anything out.
func (f *filter) active() bool { return len(f.include)+len(f.exclude) > 0 }

// maxFilterRegex keeps each Filter header well under Asterisk's 1024-byte
// line limit (amiwire.MaxActionLine), leaving room for "Filter: " and CRLF.
const maxFilterRegex = amiwire.MaxActionLine - 64

// pbxFilters returns the AMI Filter actions that make the PBX itself leave
// out what the filter would drop, so it never crosses the wire. Asterisk
// matches a filter regex against the whole event text, which starts with
// "Event: <Name>\r\n"; anchoring at ^ and ending the name with [[:space:]]
// keeps Hangup from matching HangupRequest. Include filters OR together and
// excludes ("!") apply after them, as the ingest filter does.
func pbxFilters(include, exclude []string) []session.Action {
	var out []session.Action
	add := func(names []string, neg string) {
		for len(names) > 0 {
			re, rest := filterRegex(neg, names)
			names = rest
			out = append(out, session.Action{Name: "Filter", Headers: []session.Header{
				{Key: "Operation", Value: "Add"},
				{Key: "Filter", Value: re},
			}})
		}
	}
	add(include, "")
	add(exclude, "!")
	return out
}

// filterRegex builds one alternation from as many names as fit and returns
// the names left over.
func filterRegex(neg string, names []string) (string, []string) {
	var b strings.Builder
	b.WriteString(neg + "^Event: (")
	n := 0
	for _, name := range names {
		if n > 0 && b.Len()+len(name)+len("|)[[:space:]]") > maxFilterRegex {
			break
		}
		if n > 0 {
			b.WriteByte('|')
		}
		b.WriteString(name) // names are validated as [A-Za-z0-9_-]+: no regex metacharacters
		n++
	}
	b.WriteString(")[[:space:]]")
	return b.String(), names[n:]
}
