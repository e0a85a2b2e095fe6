package amisim

import (
	"io"
	"reflect"
	"strings"
	"testing"
	"testing/iotest"
)

// TestLineReader checks the get_input emulation, including where
// Asterisk's 1024-byte buffer cuts a line, with whole and one-byte reads.
func TestLineReader(t *testing.T) {
	y := func(n int) string { return strings.Repeat("y", n) }
	for _, tc := range []struct {
		name    string
		in      string
		want    []string
		tooLong bool
	}{
		{"crlf", "Action: Ping\r\nActionID: 1\r\n\r\n", []string{"Action: Ping", "ActionID: 1", ""}, false},
		{"bare lf", "Action: Ping\nActionID: 1\n\n", []string{"Action: Ping", "ActionID: 1", ""}, false},
		{"lone cr kept", "A: x\ry\r\n", []string{"A: x\ry"}, false},
		{"1022 bytes and crlf fit", y(1022) + "\r\n", []string{y(1022)}, false},
		{"1023 bytes and lf fit", y(1023) + "\n", []string{y(1023)}, false},
		// 1023 bytes and the CR fill the buffer: discarded, the CR kept,
		// which then ends an empty line with the LF.
		{"1023 bytes and crlf", y(1023) + "\r\nB: 1\r\n", []string{"", "B: 1"}, true},
		{"1024 bytes and lf", y(1024) + "\nB: 1\n", []string{"y", "B: 1"}, true},
		{"1500 bytes", y(1500) + "\r\n\r\n", []string{y(1500 - 1023), ""}, true},
	} {
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(tc.in)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			lr := &lineReader{r: r}
			var got []string
			for {
				l, err := lr.readLine()
				if err != nil {
					break
				}
				got = append(got, l)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s (one byte reads %v): lines %q, want %q", tc.name, oneByte, got, tc.want)
			}
			if lr.tooLong != tc.tooLong {
				t.Errorf("%s (one byte reads %v): tooLong %v, want %v", tc.name, oneByte, lr.tooLong, tc.tooLong)
			}
		}
	}
}

// TestRequestHeaders checks astman_get_header's matching: case-insensitive
// key, leading blanks skipped, first match, and the skip-empty variant.
func TestRequestHeaders(t *testing.T) {
	r := &request{lines: []string{"action:", "ACTION:   Ping", "ActionID:x", "no colon here", "Variable: A=1", "variable: B=2"}}
	if got := r.get("Action"); got != "" {
		t.Errorf("get(Action) = %q, want the first (empty) value", got)
	}
	if got := r.getNonEmpty("Action"); got != "Ping" {
		t.Errorf("getNonEmpty(Action) = %q", got)
	}
	if got := r.get("actionid"); got != "x" {
		t.Errorf("get(actionid) = %q", got)
	}
	if got := r.all("Variable"); !reflect.DeepEqual(got, []string{"A=1", "B=2"}) {
		t.Errorf("all(Variable) = %q", got)
	}
	want := [][2]string{{"action", ""}, {"ACTION", "Ping"}, {"ActionID", "x"}, {"", "no colon here"},
		{"Variable", "A=1"}, {"variable", "B=2"}}
	if got := r.pairs(); !reflect.DeepEqual(got, want) {
		t.Errorf("pairs = %q", got)
	}
}

// TestEventMask checks strings_to_mask.
func TestEventMask(t *testing.T) {
	for in, want := range map[string]int{
		"": -1, "on": classAll, "yes": classAll, "off": 0, "no": 0, "system": classSystem,
		"system,call": classSystem | classCall, "call, security": classCall | classSecurity,
		"3": 3, "bogus": 0,
	} {
		if got := eventMask(in); got != want {
			t.Errorf("eventMask(%q) = %d, want %d", in, got, want)
		}
	}
	if got := authorityString(classCall); got != "call,all" {
		t.Errorf("authorityString(call) = %q", got)
	}
}
