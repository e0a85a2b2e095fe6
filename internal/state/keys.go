package state

import (
	"errors"
	"strings"
)

// ErrBadNode is returned for a node name that is not a valid key token.
var ErrBadNode = errors.New("state: node name is not a valid key token ([A-Za-z0-9_-], 1 to 128 bytes)")

// maxNodeLen bounds a node name, as the stream's subject tokens are.
const maxNodeLen = 128

// ValidNode tells whether name can be the first token of a key (and is a
// valid subject token, as the stream's node names are).
func ValidNode(name string) bool {
	if name == "" || len(name) > maxNodeLen {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

const hexDigits = "0123456789ABCDEF"

// EncodeToken turns an id (Uniqueid, bridge id, queue name) into one KV key
// token: letters, digits and '-' stay, '.' (common in Uniqueids) becomes
// '_', and every other byte, '_' included, becomes '=' and two hex digits.
// The mapping is one to one, so DecodeToken gives the id back.
func EncodeToken(id string) string {
	plain := true
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			plain = false
			break
		}
	}
	if plain {
		return id
	}
	var b strings.Builder
	b.Grow(len(id) + 8)
	for i := 0; i < len(id); i++ {
		c := id[i]
		switch {
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-':
			b.WriteByte(c)
		case c == '.':
			b.WriteByte('_')
		default:
			b.WriteByte('=')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&15])
		}
	}
	return b.String()
}

// DecodeToken reverses EncodeToken; ok is false for a token EncodeToken
// cannot have made.
func DecodeToken(tok string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		switch {
		case c == '_':
			b.WriteByte('.')
		case c == '=':
			if i+2 >= len(tok) {
				return "", false
			}
			hi, lo := strings.IndexByte(hexDigits, tok[i+1]), strings.IndexByte(hexDigits, tok[i+2])
			if hi < 0 || lo < 0 {
				return "", false
			}
			b.WriteByte(byte(hi<<4 | lo))
			i += 2
		case c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-':
			b.WriteByte(c)
		default:
			return "", false
		}
	}
	return b.String(), true
}

// Key segment names.
const (
	segChannel = "channel"
	segBridge  = "bridge"
	segQueue   = "queue"
	segStatus  = "status"
)

// Key answers the KV key of an entity of node: <node>.channel.<uniqueid>,
// <node>.bridge.<id> or <node>.queue.<name>, the id encoded by EncodeToken.
func Key(node string, k EntityKind, id string) string {
	seg := segChannel
	switch k {
	case EntityBridge:
		seg = segBridge
	case EntityQueue:
		seg = segQueue
	}
	return node + "." + seg + "." + EncodeToken(id)
}

// StatusKey answers the key of node's status (and checkpoint): <node>.status.
func StatusKey(node string) string { return node + "." + segStatus }

// ParseKey splits a key made by Key; ok is false for the status key or a
// key of another shape.
func ParseKey(key string) (node string, k EntityKind, id string, ok bool) {
	parts := strings.SplitN(key, ".", 3)
	if len(parts) != 3 {
		return "", 0, "", false
	}
	switch parts[1] {
	case segChannel:
		k = EntityChannel
	case segBridge:
		k = EntityBridge
	case segQueue:
		k = EntityQueue
	default:
		return "", 0, "", false
	}
	id, ok = DecodeToken(parts[2])
	return parts[0], k, id, ok
}
