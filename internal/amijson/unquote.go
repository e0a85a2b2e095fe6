package amijson

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"unicode/utf16"
	"unicode/utf8"
)

// Errors of Unquote, for the readers of JSON strings (command's request
// scanner, eventlog's decoder) to wrap in their own syntax errors.
var (
	ErrControl      = errors.New("control character in a string")
	ErrBadEscape    = errors.New("bad escape in a string")
	ErrBadUnicode   = errors.New("bad \\u escape")
	ErrUnterminated = errors.New("unterminated string")
)

// PlainEnd returns the index of the first byte at or after i that a JSON
// string reader must look at: '"', '\\' or a control character; len(s) if
// there is none. Most of a value is plain, so it is read 8 bytes at a time,
// and the word that holds the byte gives its place too (the lowest byte
// special8 marks is exact): a short string, most of them, takes one word
// and no byte loop, as long as 8 bytes of s remain.
func PlainEnd[T text](s T, i int) int {
	for i+8 <= len(s) {
		if m := special8(binary.LittleEndian.Uint64([]byte(s[i:i+8]))) & msb; m != 0 {
			return i + bits.TrailingZeros64(m)/8
		}
		i += 8
	}
	for ; i < len(s); i++ {
		if c := s[i]; c == '"' || c == '\\' || c < 0x20 {
			break
		}
	}
	return i
}

// Unquote appends to dst the rest of the JSON string read from s[i] up to
// its closing quote, unescaped as encoding/json unescapes (a lone surrogate
// becomes U+FFFD), and returns the index just past that quote. On error the
// index is that of the byte at fault: a control character, the backslash of
// a bad escape, or len(s) when the string does not end.
func Unquote[T text](dst []byte, s T, i int) ([]byte, int, error) {
	for i < len(s) {
		c := s[i]
		switch {
		case c == '"':
			return dst, i + 1, nil
		case c < 0x20:
			return dst, i, ErrControl
		case c != '\\':
			dst = append(dst, c)
			i++
			continue
		}
		if i+1 >= len(s) {
			break
		}
		switch e := s[i+1]; e {
		case '"', '\\', '/':
			dst = append(dst, e)
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(s, i+2)
			if !ok {
				return dst, i, ErrBadUnicode
			}
			i += 6
			if utf16.IsSurrogate(r) {
				// Not a pair: the first is lone, the second is read on
				// its own next.
				r2, ok := rune(0), false
				if i+1 < len(s) && s[i] == '\\' && s[i+1] == 'u' {
					r2, ok = hex4(s, i+2)
				}
				if d := utf16.DecodeRune(r, r2); ok && d != utf8.RuneError {
					r = d
					i += 6
				} else {
					r = utf8.RuneError
				}
			}
			dst = utf8.AppendRune(dst, r)
			continue
		default:
			return dst, i, ErrBadEscape
		}
		i += 2
	}
	return dst, len(s), ErrUnterminated
}

// hex4 reads the four hex digits at s[i:].
func hex4[T text](s T, i int) (rune, bool) {
	if i+4 > len(s) {
		return 0, false
	}
	var r rune
	for j := i; j < i+4; j++ {
		c := s[j]
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

// SkipSpace returns the index of the first byte at or after i that is not
// JSON white space (space, tab, CR, LF and nothing else); len(s) if none.
func SkipSpace[T text](s T, i int) int {
	for ; i < len(s); i++ {
		switch s[i] {
		case ' ', '\t', '\n', '\r':
		default:
			return i
		}
	}
	return i
}
