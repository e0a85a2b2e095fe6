// Package command runs AMI actions on behalf of NATS requesters: it decodes
// and checks each request, applies the action policy, hands the action to the
// node's session and sends exactly one reply per request by its deadline.
package command

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/session"
)

// Limits of one request. They exist so that a request the PBX would refuse,
// or could misread, is refused here with a precise message instead.
const (
	// MaxFieldValues caps the header values of one request: Asterisk refuses
	// a message of more than 128 lines (AST_MAX_MANHEADERS) and the Action
	// and ActionID lines take two of them.
	MaxFieldValues = 126
	// MaxLineBytes caps one "Key: Value" line without its CRLF: Asterisk
	// reads a client line into 1024 bytes, CRLF included, and discards a
	// longer one.
	MaxLineBytes = 1022
	// MaxActionNameBytes caps an action name; real ones are under 40.
	MaxActionNameBytes = 64
	// DefaultMaxRequestBytes is the default cap on a request body
	// (actor.max_request_bytes).
	DefaultMaxRequestBytes = 1 << 20
)

// Request is a decoded and checked action request.
type Request struct {
	// Action is the action name as the caller spelt it (subject or body).
	Action string
	// Headers are the fields in body order; an array field becomes one
	// header per element, in order.
	Headers []session.Header
	// Timeout is timeout_ms as given; 0 when the body has none.
	Timeout time.Duration
}

// RequestError reports why a request was refused; the server answers it
// with code bad_request. Field names the offending part ("fields.Channel",
// "timeout_ms", "body").
type RequestError struct {
	Field string
	Msg   string
}

// Error returns "field: message".
func (e *RequestError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

func badRequest(field, format string, args ...any) *RequestError {
	return &RequestError{Field: field, Msg: fmt.Sprintf(format, args...)}
}

// DecodeRequest decodes and checks a request body. subjectAction is the
// action named by the subject (<prefix>.action.<node>.<Action>) or "";
// when both name one they must match, ignoring case, and the subject's
// spelling is kept. An empty body is an empty object. maxBytes <= 0 means
// DefaultMaxRequestBytes. Every refusal is a *RequestError. The cost is
// linear in the body and the walk stops at the first fault, so neither a
// huge nor a deeply nested body costs more than one pass.
func DecodeRequest(body []byte, subjectAction string, maxBytes int) (Request, error) {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxRequestBytes
	}
	if len(body) > maxBytes {
		return Request{}, badRequest("body", "%d bytes is over the limit of %d bytes", len(body), maxBytes)
	}
	if subjectAction != "" {
		if err := checkActionName("subject", subjectAction); err != nil {
			return Request{}, err
		}
	}
	if !utf8.Valid(body) {
		return Request{}, badRequest("body", "not valid UTF-8 (first bad byte at offset %d)", firstInvalidUTF8(body))
	}
	var req Request
	if !isJSONSpace(body) {
		if err := decodeBody(body, &req); err != nil {
			return Request{}, err
		}
	}
	switch {
	case subjectAction != "" && req.Action != "" && !amiwire.EqualFold(subjectAction, req.Action):
		return Request{}, badRequest("action", "%q does not match the action %q named by the subject", req.Action, subjectAction)
	case subjectAction != "":
		req.Action = subjectAction
	case req.Action == "":
		return Request{}, badRequest("action", "missing (name it in the body or in the subject <prefix>.action.<node>.<Action>)")
	}
	return req, nil
}

func decodeBody(body []byte, req *Request) error {
	s := scanner{data: body}
	s.ws()
	if !s.at('{') {
		return s.typeError("body", "must be a JSON object")
	}
	more := s.open('}')
	var seenAction, seenFields, seenTimeout bool
	for more {
		key, err := s.key()
		if err != nil {
			return err
		}
		switch key {
		case "action":
			if seenAction {
				return badRequest("action", "given twice")
			}
			seenAction = true
			if !s.at('"') {
				return s.typeError("action", "must be a string")
			}
			name, err := s.str()
			if err != nil {
				return err
			}
			if err := checkActionName("action", name); err != nil {
				return err
			}
			req.Action = name
		case "fields":
			if seenFields {
				return badRequest("fields", "given twice")
			}
			seenFields = true
			if err := decodeFields(&s, req); err != nil {
				return err
			}
		case "timeout_ms":
			if seenTimeout {
				return badRequest("timeout_ms", "given twice")
			}
			seenTimeout = true
			if s.kind() != "a number" {
				return s.typeError("timeout_ms", "must be a positive integer (milliseconds)")
			}
			num, err := s.number()
			if err != nil {
				return err
			}
			if req.Timeout, err = parseTimeout(num); err != nil {
				return err
			}
		default:
			return badRequest(fieldPath("", key), "unknown key (known: action, fields, timeout_ms)")
		}
		if more, err = s.next('}'); err != nil {
			return err
		}
	}
	s.ws()
	if s.pos != len(s.data) {
		return badRequest("body", "data after the JSON object at offset %d", s.pos)
	}
	return nil
}

// decodeFields reads the fields object. A value of the wrong type is
// refused at its first byte, so nothing below it is ever walked.
func decodeFields(s *scanner, req *Request) error {
	if !s.at('{') {
		return s.typeError("fields", "must be an object of strings or arrays of strings")
	}
	more := s.open('}')
	var hs []session.Header
	var keys []string // capped like the values: an empty array adds a key but no value
	for more {
		key, err := s.key()
		if err != nil {
			return err
		}
		if err := checkFieldKey(key); err != nil {
			return err
		}
		if len(keys) == MaxFieldValues {
			return tooManyValues()
		}
		// A repeated key, in any case, would be two headers Asterisk reads
		// as one: only an array says that on purpose. len(keys) is capped,
		// so this scan is bounded.
		for _, k := range keys {
			if amiwire.EqualFold(k, key) {
				return badRequest(fieldPath("fields", key), "given twice (an array of strings sends a repeated header)")
			}
		}
		keys = append(keys, key)
		switch {
		case s.at('"'):
			if hs, err = appendValue(s, hs, key, -1); err != nil {
				return err
			}
		case s.at('['):
			for i, elems := 0, s.open(']'); elems; i++ {
				if !s.at('"') {
					return s.typeError(elemPath(key, i), "must be a string")
				}
				if hs, err = appendValue(s, hs, key, i); err != nil {
					return err
				}
				if elems, err = s.next(']'); err != nil {
					return err
				}
			}
		default:
			return s.typeError(fieldPath("fields", key), "must be a string or an array of strings")
		}
		if more, err = s.next('}'); err != nil {
			return err
		}
	}
	req.Headers = hs
	return nil
}

// appendValue reads one string value of key (element i of its array, or
// -1) and appends it as a header.
func appendValue(s *scanner, hs []session.Header, key string, i int) ([]session.Header, error) {
	if len(hs) == MaxFieldValues {
		return nil, tooManyValues()
	}
	v, err := s.str()
	if err != nil {
		return nil, err
	}
	if err := checkFieldValue(key, i, v); err != nil {
		return nil, err
	}
	return append(hs, session.Header{Key: key, Value: v}), nil
}

func tooManyValues() error {
	return badRequest("fields", "more than %d fields or values (Asterisk refuses a message of more than 128 lines, Action and ActionID included)", MaxFieldValues)
}

// parseTimeout accepts a positive JSON integer; 5000.0 and 5e3 are integers
// too, as JSON Schema counts them. A value too large for a Duration is
// clamped: the server lowers it to its cap anyway.
func parseTimeout(n string) (time.Duration, error) {
	const maxMS = math.MaxInt64 / int64(time.Millisecond)
	if i, err := strconv.ParseInt(n, 10, 64); err == nil {
		if i <= 0 {
			return 0, badRequest("timeout_ms", "must be a positive integer (milliseconds), got %d", i)
		}
		return time.Duration(min(i, maxMS)) * time.Millisecond, nil
	}
	f, err := strconv.ParseFloat(n, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, badRequest("timeout_ms", "must be a positive integer (milliseconds)")
	}
	if f < 1 || f != math.Trunc(f) {
		return 0, badRequest("timeout_ms", "must be a positive integer (milliseconds), got %s", n)
	}
	if f >= float64(maxMS) {
		return time.Duration(maxMS) * time.Millisecond, nil
	}
	return time.Duration(f) * time.Millisecond, nil
}

// checkActionName keeps action names to what Asterisk's own names use
// ([A-Za-z0-9_-]), which rules out CR, LF, colons, spaces and NATS subject
// syntax at once.
func checkActionName(field, name string) error {
	if name == "" {
		return badRequest(field, "empty action name")
	}
	if len(name) > MaxActionNameBytes {
		return badRequest(field, "action name longer than %d bytes", MaxActionNameBytes)
	}
	for i := 0; i < len(name); i++ {
		if !amiwire.NameByte(name[i]) {
			return badRequest(field, "action name %q has the character %q at %d (allowed: letters, digits, '_' and '-')", name, name[i], i)
		}
	}
	return nil
}

// checkFieldKey allows printable ASCII but for space and colon: a header
// key with CR, LF, a colon or a space would let a caller forge headers.
// Action and ActionID are the actor's: a second Action header could smuggle
// another action, and the session owns ActionIDs to route answers.
func checkFieldKey(key string) error {
	if key == "" {
		return badRequest("fields", "empty key")
	}
	for i := 0; i < len(key); i++ {
		if c := key[i]; c <= ' ' || c >= 0x7f || c == ':' {
			return badRequest(fieldPath("fields", key), "key has the character %q at %d (allowed: printable ASCII except space and ':')", c, i)
		}
	}
	if amiwire.EqualFold(key, "ActionID") {
		return badRequest(fieldPath("fields", key), "the actor assigns ActionIDs; remove this field")
	}
	if amiwire.EqualFold(key, "Action") {
		return badRequest(fieldPath("fields", key), "name the action in \"action\" or in the subject, not in fields")
	}
	return nil
}

// checkFieldValue refuses CR and LF (they would end the header and start
// another), NUL (Asterisk reads C strings) and lines Asterisk would discard.
func checkFieldValue(key string, i int, v string) error {
	if j := strings.IndexAny(v, "\r\n\x00"); j >= 0 {
		return badRequest(elemPath(key, i), "value has the character %q at %d (CR, LF and NUL are not allowed)", v[j], j)
	}
	if n := len(key) + 2 + len(v); n > MaxLineBytes {
		return badRequest(elemPath(key, i), "the line \"Key: Value\" would be %d bytes; Asterisk discards lines over %d", n, MaxLineBytes)
	}
	return nil
}

// elemPath names element i of field key's array, or the field for i < 0;
// built only for an error message.
func elemPath(key string, i int) string {
	if i < 0 {
		return fieldPath("fields", key)
	}
	return fieldPath("fields", key) + "[" + strconv.Itoa(i) + "]"
}

// fieldPath names a key in an error message: as is when it is short and
// plain, else quoted and cut, so that an error never echoes a megabyte key
// or control characters.
func fieldPath(parent, key string) string {
	const maxShown = 64
	plain := len(key) <= maxShown && key != ""
	for i := 0; plain && i < len(key); i++ {
		if c := key[i]; c <= ' ' || c >= 0x7f || c == '"' || c == '.' || c == '[' {
			plain = false
		}
	}
	if plain {
		if parent == "" {
			return key
		}
		return parent + "." + key
	}
	if len(key) > maxShown {
		cut := maxShown
		for cut > 0 && !utf8.RuneStart(key[cut]) {
			cut--
		}
		key = key[:cut] + "..."
	}
	return parent + "[" + strconv.Quote(key) + "]"
}

func firstInvalidUTF8(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return -1
}

// isJSONSpace reports whether b holds nothing but JSON white space.
func isJSONSpace(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}
