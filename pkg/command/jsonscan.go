package command

import (
	"bytes"
	"unicode"
	"unicode/utf16"
	"unicode/utf8"
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
func (s *scanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\r', '\n':
			s.pos++
		default:
			return
		}
	}
}

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
	for i := start; i < len(s.data); i++ {
		switch c := s.data[i]; {
		case c == '"':
			s.pos = i + 1
			return string(s.data[start:i]), nil
		case c == '\\':
			return s.strEscaped(start, i)
		case c < 0x20:
			s.pos = i
			return "", s.syntax("control character in a string")
		}
	}
	s.pos = len(s.data)
	return "", s.syntax("unterminated string")
}

func (s *scanner) strEscaped(start, i int) (string, error) {
	b := append(s.buf[:0], s.data[start:i]...)
	defer func() { s.buf = b[:0] }()
	for i < len(s.data) {
		c := s.data[i]
		switch {
		case c == '"':
			s.pos = i + 1
			return string(b), nil
		case c < 0x20:
			s.pos = i
			return "", s.syntax("control character in a string")
		case c != '\\':
			b = append(b, c)
			i++
			continue
		}
		if i+1 >= len(s.data) {
			break
		}
		switch e := s.data[i+1]; e {
		case '"', '\\', '/':
			b = append(b, e)
		case 'b':
			b = append(b, '\b')
		case 'f':
			b = append(b, '\f')
		case 'n':
			b = append(b, '\n')
		case 'r':
			b = append(b, '\r')
		case 't':
			b = append(b, '\t')
		case 'u':
			r, ok := hex4(s.data[i+2:])
			if !ok {
				s.pos = i
				return "", s.syntax("bad \\u escape")
			}
			i += 6
			if utf16.IsSurrogate(r) {
				r2, ok := rune(0), false
				if i+1 < len(s.data) && s.data[i] == '\\' && s.data[i+1] == 'u' {
					r2, ok = hex4(s.data[i+2:])
				}
				if dec := utf16.DecodeRune(r, r2); ok && dec != unicode.ReplacementChar {
					r = dec
					i += 6
				} else {
					r = unicode.ReplacementChar
				}
			}
			b = utf8.AppendRune(b, r)
			continue
		default:
			s.pos = i
			return "", s.syntax("bad escape in a string")
		}
		i += 2
	}
	s.pos = len(s.data)
	return "", s.syntax("unterminated string")
}

func hex4(b []byte) (rune, bool) {
	if len(b) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range b[:4] {
		switch {
		case '0' <= c && c <= '9':
			c -= '0'
		case 'a' <= c && c <= 'f':
			c = c - 'a' + 10
		case 'A' <= c && c <= 'F':
			c = c - 'A' + 10
		default:
			return 0, false
		}
		r = r<<4 | rune(c)
	}
	return r, true
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
