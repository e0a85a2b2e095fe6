package publish

import (
	"errors"
	"fmt"
	"strings"

	"github.com/amibus/amibus/pkg/amiwire"
)

// MetaToken is the last subject token of lifecycle, gap and snapshot
// messages. Tokens starting with '_' are reserved for amibus and are never
// the token of an event name, so they cannot clash with one.
const MetaToken = "_meta"

// badTokenPrefix starts the subject token of an event name that is not a
// valid token by itself; see EventToken.
const badTokenPrefix = "_bad_"

// maxEventToken caps the event part of a subject: the NATS control line that
// carries the subject is limited (4 KiB by default) and a longer one would
// cost the connection.
const maxEventToken = 128

// ErrInvalidSubject reports a prefix or node name that is not a valid NATS
// subject token sequence.
var ErrInvalidSubject = errors.New("publish: invalid subject token")

// EventToken returns the subject token for an event name. A name made only
// of ASCII letters, digits, '-' and '_', not starting with '_', and at most
// 128 bytes long (every Asterisk event name) is its own token. Any other name
// (empty, with '.', '*', '>', spaces, control or non-ASCII bytes, a leading
// '_', or too long) maps to "_bad_" followed by its first 128 bytes with each
// byte outside [A-Za-z0-9_-] replaced by '_'. The mapping is deterministic;
// two bad names may share a token, and the event is published all the same,
// with its exact name in the payload's "event".
func EventToken(name []byte) string {
	if validEventToken(name) {
		return string(name)
	}
	return string(appendBadToken(nil, name))
}

func validEventToken(name []byte) bool {
	if len(name) == 0 || len(name) > maxEventToken || name[0] == '_' {
		return false
	}
	for _, c := range name {
		if !amiwire.NameByte(c) {
			return false
		}
	}
	return true
}

func appendBadToken(dst, name []byte) []byte {
	dst = append(dst, badTokenPrefix...)
	if len(name) > maxEventToken {
		name = name[:maxEventToken]
	}
	for _, c := range name {
		if !amiwire.NameByte(c) {
			c = '_'
		}
		dst = append(dst, c)
	}
	return dst
}

// ValidToken reports whether s is usable as one subject token for a node
// name: non-empty, only [A-Za-z0-9_-] (amiwire.ValidName).
func ValidToken(s string) bool { return amiwire.ValidName(s) }

// validPrefix checks a subject prefix: one or more dot-separated tokens.
func validPrefix(p string) error {
	if p == "" {
		return fmt.Errorf("%w: empty subject prefix", ErrInvalidSubject)
	}
	for _, tok := range strings.Split(p, ".") {
		if !ValidToken(tok) {
			return fmt.Errorf("%w: subject prefix %q: token %q must be [A-Za-z0-9_-]+", ErrInvalidSubject, p, tok)
		}
	}
	return nil
}

// EventSubject returns "<prefix>.events.<node>.<EventToken(event)>".
func EventSubject(prefix, node string, event []byte) string {
	return prefix + ".events." + node + "." + EventToken(event)
}

// MetaSubject returns "<prefix>.events.<node>._meta".
func MetaSubject(prefix, node string) string {
	return prefix + ".events." + node + "." + MetaToken
}

// StreamSubjects returns the stream's subject filter "<prefix>.events.>".
func StreamSubjects(prefix string) string { return prefix + ".events.>" }
