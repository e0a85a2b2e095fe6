package command

import (
	"bytes"

	"github.com/amibus/amibus/internal/amijson"
)

// scanner reads JSON (RFC 8259) strictly, one value at a time, for the
// request decoder. encoding/json's Decoder.Token costs an allocation per
// token and rescans each value; a request needs only strings, numbers and
// the two brackets, read in one forward pass. Input must be valid UTF-8
// (DecodeRequest checks that first). Strings unescape as encoding/json
// unescapes them, lone surrogates becoming U+FFFD.
type scanner struct {
	data []byte
	pos  int
	buf  []byte // unescaping scratch
}

func (s *scanner) syntax(what string) error {
	if s.pos >= len(s.data) {
		return badRequest("body", "not valid JSON: unexpected end (%s)", what)
	}
	return badRequest("body", "not valid JSON at offset %d: %s", s.pos, what)
}

// ws skips JSON white space: space, tab, CR, LF and nothing else.
func (s *scanner) ws() { s.pos = amijson.SkipSpace(s.data, s.pos) }

// at reports whether the next byte is c.
func (s *scanner) at(c byte) bool { return s.pos < len(s.data) && s.data[s.pos] == c }

// kind names the value that starts at pos, for type errors, or returns ""
// when no JSON value starts there.
func (s *scanner) kind() string {
	if s.pos >= len(s.data) {
		return ""
	}
	rest := s.data[s.pos:]
	switch c := rest[0]; {
	case c == '"':
		return "a string"
	case c == '{':
		return "an object"
	case c == '[':
		return "an array"
	case c == '-' || '0' <= c && c <= '9':
		return "a number"
	case bytes.HasPrefix(rest, []byte("true")) || bytes.HasPrefix(rest, []byte("false")):
		return "a boolean"
	case bytes.HasPrefix(rest, []byte("null")):
		return "null"
	}
	return ""
}

// typeError refuses the value at pos: "field: must be ..., not an array",
// or a syntax error when no JSON value starts there.
func (s *scanner) typeError(field, must string) error {
	k := s.kind()
	if k == "" {
		return s.syntax("expected a value")
	}
	return badRequest(field, "%s, not %s", must, k)
}

// key reads an object key and the colon after it.
func (s *scanner) key() (string, error) {
	if !s.at('"') {
		return "", s.syntax("expected a string key")
	}
	k, err := s.str()
	if err != nil {
		return "", err
	}
	s.ws()
	if !s.at(':') {
		return "", s.syntax("expected ':' after a key")
	}
	s.pos++
	s.ws()
	return k, nil
}

// open reads the opening bracket at pos and reports whether a member or
// an element follows before the closing one.
func (s *scanner) open(closing byte) (more bool) {
	s.pos++
	s.ws()
	if s.at(closing) {
		s.pos++
		return false
	}
	return true
}

// next reads the ',' or the closing bracket after a member; it reports
// whether another member follows.
func (s *scanner) next(closing byte) (more bool, err error) {
	s.ws()
	switch {
	case s.at(','):
		s.pos++
		s.ws()
		return true, nil
	case s.at(closing):
		s.pos++
		return false, nil
	}
	return false, s.syntax("expected ',' or '" + string(closing) + "'")
}

// str reads the string that starts at pos (a '"').
func (s *scanner) str() (string, error) {
	start := s.pos + 1
	i := amijson.PlainEnd(s.data, start)
	if i < len(s.data) && s.data[i] == '"' {
		s.pos = i + 1
		return string(s.data[start:i]), nil
	}
	b, end, err := amijson.Unquote(append(s.buf[:0], s.data[start:i]...), s.data, i)
	s.buf = b[:0]
	s.pos = end
	if err != nil {
		return "", s.syntax(err.Error())
	}
	return string(b), nil
}

// number reads the number that starts at pos and returns its text:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func (s *scanner) number() (string, error) {
	d, start := s.data, s.pos
	i := start
	digits := func() bool {
		j := i
		for i < len(d) && '0' <= d[i] && d[i] <= '9' {
			i++
		}
		return i > j
	}
	if i < len(d) && d[i] == '-' {
		i++
	}
	switch {
	case i < len(d) && d[i] == '0':
		i++
		if i < len(d) && '0' <= d[i] && d[i] <= '9' {
			s.pos = i
			return "", s.syntax("bad number: leading zero")
		}
	case !digits():
		s.pos = i
		return "", s.syntax("bad number")
	}
	if i < len(d) && d[i] == '.' {
		i++
		if !digits() {
			s.pos = i
			return "", s.syntax("bad number")
		}
	}
	if i < len(d) && (d[i] == 'e' || d[i] == 'E') {
		i++
		if i < len(d) && (d[i] == '+' || d[i] == '-') {
			i++
		}
		if !digits() {
			s.pos = i
			return "", s.syntax("bad number")
		}
	}
	s.pos = i
	return string(d[start:i]), nil
}
