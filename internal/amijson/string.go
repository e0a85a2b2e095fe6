// Package amijson writes AMI messages as JSON, by appending into reused
// buffers: the string escaping and the "fields" object that events (publish)
// and action replies (command) share, so both follow one convention. It also
// reads JSON strings (Unquote) for the two decoders: requests (command) and
// stored events (eventlog).
package amijson

import (
	"encoding/binary"
	"unicode/utf8"
)

// text is what the JSON appenders take: AMI values are []byte spans of a
// message, names are strings; neither is converted (which would allocate).
type text interface{ ~string | ~[]byte }

const hexDigits = "0123456789abcdef"

// safeASCII[b] is true for an ASCII byte that goes into a JSON string as is.
var safeASCII = func() (t [utf8.RuneSelf]bool) {
	for b := 0x20; b < utf8.RuneSelf; b++ {
		t[b] = b != '"' && b != '\\'
	}
	return t
}()

// AppendString appends s as a JSON string. It escapes '"', '\\' and every
// control character (as \n, \r, \t, \b, \f or \u00XX), U+2028 and U+2029
// (as encoding/json does, for JavaScript consumers), and replaces each byte
// that is not part of valid UTF-8 by \ufffd, as encoding/json does: JSON
// cannot carry invalid UTF-8, and a consumer must get valid JSON.
func AppendString[T text](dst []byte, s T) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		// Most AMI text is plain ASCII: skip it 8 bytes at a time.
		for i+8 <= len(s) && !needsEscape8(binary.LittleEndian.Uint64([]byte(s[i:i+8]))) {
			i += 8
		}
		if i >= len(s) {
			break
		}
		b := s[i]
		if b < utf8.RuneSelf {
			if safeASCII[b] {
				i++
				continue
			}
			dst = append(dst, s[start:i]...)
			switch b {
			case '"', '\\':
				dst = append(dst, '\\', b)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			case '\b':
				dst = append(dst, '\\', 'b')
			case '\f':
				dst = append(dst, '\\', 'f')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[b>>4], hexDigits[b&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := decodeRune(s, i)
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i++
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

const (
	lsb = 0x0101010101010101
	msb = 0x8080808080808080
)

// needsEscape8 reports whether any of the 8 bytes in x is a control
// character, '"', '\\' or not ASCII.
func needsEscape8(x uint64) bool { return (special8(x)|x)&msb != 0 }

// special8 sets the high bit of each byte of x that is a control character,
// '"' or '\\' (SWAR: a false positive can only follow a true one, so a
// clean result is exact).
func special8(x uint64) uint64 {
	ctl := (x - lsb*0x20) &^ x
	q := x ^ (lsb * '"')
	bs := x ^ (lsb * '\\')
	return ctl | (q-lsb)&^q | (bs-lsb)&^bs
}

// decodeRune decodes the rune at s[i] without converting s.
func decodeRune[T text](s T, i int) (rune, int) {
	var b [utf8.UTFMax]byte
	n := copy(b[:], s[i:])
	return utf8.DecodeRune(b[:n])
}

// compareKeys orders two keys as the JSON strings AppendString makes of
// them (invalid bytes read as U+FFFD), so that keys which would become the
// same JSON key are grouped together and a JSON object never holds a key
// twice.
func compareKeys(a, b []byte) int {
	i, j := 0, 0
	for i < len(a) && j < len(b) {
		ca, cb := a[i], b[j]
		if ca < utf8.RuneSelf && cb < utf8.RuneSelf {
			if ca != cb {
				return int(ca) - int(cb)
			}
			i++
			j++
			continue
		}
		ra, sa := utf8.DecodeRune(a[i:])
		rb, sb := utf8.DecodeRune(b[j:])
		if ra != rb {
			return int(ra) - int(rb)
		}
		i += sa
		j += sb
	}
	return (len(a) - i) - (len(b) - j)
}
