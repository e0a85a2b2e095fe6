package amijson

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

// stringCases are the strings JSON escaping gets wrong most easily; they
// also seed FuzzAppendString.
var stringCases = []string{
	"", "plain", `quote " and \ backslash`, "tab\tcr\rlf\nnul\x00bell\x07esc\x1b del\x7f",
	"\b\f", "é ü 中文 🎉", "\u2028\u2029", "bad \xff\xfe utf8 \xc3", "\xed\xa0\x80 surrogate",
	"<html> & 'x'", strings.Repeat("a", 1000) + "\x01",
}

func TestAppendStringMatchesEncodingJSON(t *testing.T) {
	for _, s := range stringCases {
		checkString(t, s)
	}
}

func FuzzAppendString(f *testing.F) {
	for _, s := range append([]string{"a\"b", "\x00\x1f", "\xff", "é\u2028", "\xf0\x9f\x8e"}, stringCases...) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkString(t, s) })
}

// checkString: AppendString must give valid JSON that decodes to what
// encoding/json's own encoding of s decodes to, for string and []byte input.
func checkString(t *testing.T, s string) {
	t.Helper()
	want, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var wantS string
	if err := json.Unmarshal(want, &wantS); err != nil {
		t.Fatal(err)
	}
	fromString, fromBytes := AppendString([]byte("x"), s)[1:], AppendString(nil, []byte(s))
	if !bytes.Equal(fromString, fromBytes) {
		t.Fatalf("%q: string and []byte forms differ: %s vs %s", s, fromString, fromBytes)
	}
	for _, got := range [][]byte{fromString, fromBytes} {
		if !utf8.Valid(got) {
			t.Fatalf("%q: output is not valid UTF-8: %q", s, got)
		}
		if !json.Valid(got) {
			t.Fatalf("invalid JSON for %q: %s", s, got)
		}
		var gotS string
		if err := json.Unmarshal(got, &gotS); err != nil {
			t.Fatalf("decode %s: %v", got, err)
		}
		if gotS != wantS {
			t.Fatalf("%q: decoded %q, want %q", s, gotS, wantS)
		}
	}
}
