package amijson

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestPlainEndStopsAtEachSpecialByte(t *testing.T) {
	for pos := range 8 {
		for b := range 256 {
			buf := []byte("abcdefghijklmnop")
			buf[pos] = byte(b)
			want := len(buf)
			if b == '"' || b == '\\' || b < 0x20 {
				want = pos
			}
			if got := PlainEnd(string(buf), 0); got != want {
				t.Fatalf("byte %#x at %d: %d, want %d", b, pos, got, want)
			}
		}
	}
}

// TestPlainEndFindsTheFirstOfTwo puts a special byte and any byte after it
// in one word or the next: PlainEnd names the first, whatever the second
// (special8 may mark bytes after a true one, e.g. a space after a control
// byte, never before).
func TestPlainEndFindsTheFirstOfTwo(t *testing.T) {
	for pos := range 16 {
		for _, first := range []byte{'"', '\\', 0x00, 0x1f, '\n'} {
			for second := pos + 1; second < pos+9; second++ {
				for b := range 256 {
					buf := []byte("abcdefghijklmnopqrstuvwx")
					buf[pos], buf[second] = first, byte(b)
					if got := PlainEnd(string(buf), 0); got != pos {
						t.Fatalf("%#x at %d, %#x at %d: %d", first, pos, b, second, got)
					}
					if got := PlainEnd(buf, 0); got != pos {
						t.Fatalf("[]byte: %#x at %d, %#x at %d: %d", first, pos, b, second, got)
					}
				}
			}
		}
	}
}

func TestUnquoteMatchesEncodingJSON(t *testing.T) {
	for _, in := range []string{
		`plain"`, `a\"b\\c\/d\b\f\n\r\t"`, `\u00e9\u4e2d"`, `\ud83c\udf89"`,
		`\ud83c"`, `\udf89\ud83c"`, `\ud83c\u0041"`, `\ud83cx"`,
	} {
		var want string
		if err := json.Unmarshal([]byte(`"`+in), &want); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		got, end, err := Unquote(nil, in, 0)
		if err != nil || string(got) != want || end != len(in) {
			t.Errorf("%q: got %q, %d, %v; want %q, %d", in, got, end, err, want, len(in))
		}
	}
}

func TestUnquoteErrorsNameTheByteAtFault(t *testing.T) {
	for _, c := range []struct {
		in   string
		at   int
		want error
	}{
		{"ab\x01\"", 2, ErrControl},
		{`ab\x"`, 2, ErrBadEscape},
		{`ab\u12G4"`, 2, ErrBadUnicode},
		{`\ud83c\u12G4"`, 6, ErrBadUnicode},
		{`abc`, 3, ErrUnterminated},
		{`abc\`, 4, ErrUnterminated},
	} {
		_, at, err := Unquote(nil, []byte(c.in), 0)
		if !errors.Is(err, c.want) || at != c.at {
			t.Errorf("%q: %d, %v; want %d, %v", c.in, at, err, c.at, c.want)
		}
	}
}

func TestSkipSpaceSkipsOnlyJSONSpace(t *testing.T) {
	for in, want := range map[string]int{"": 0, " \t\r\nx": 4, "\v": 0, "\u00a0": 0, "  ": 2, "x ": 0} {
		if got := SkipSpace(in, 0); got != want {
			t.Errorf("%q: %d, want %d", in, got, want)
		}
	}
}
