package amiwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
)

func TestAppendAction(t *testing.T) {
	tests := []struct {
		name     string
		action   string
		actionID string
		headers  []Header
		want     string
	}{
		{"login", "Login", "login-1", []Header{{"Username", "ami"}, {"Secret", "amisecret"}, {"Events", "off"}},
			"Action: Login\r\nActionID: login-1\r\nUsername: ami\r\nSecret: amisecret\r\nEvents: off\r\n\r\n"},
		{"no headers", "Ping", "p-1", nil, "Action: Ping\r\nActionID: p-1\r\n\r\n"},
		{"no ActionID", "Ping", "", nil, "Action: Ping\r\n\r\n"},
		{"repeated keys and empty values", "Originate", "o-1",
			[]Header{{"Variable", "A=1"}, {"Variable", "B=2"}, {"Account", ""}},
			"Action: Originate\r\nActionID: o-1\r\nVariable: A=1\r\nVariable: B=2\r\nAccount: \r\n\r\n"},
		{"colons and spaces in values", "Filter", "f-1", []Header{{"Operation", "Add"}, {"Filter", "Event: Newchannel"}},
			"Action: Filter\r\nActionID: f-1\r\nOperation: Add\r\nFilter: Event: Newchannel\r\n\r\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prefix := []byte("kept")
			got, err := AppendAction(prefix, tt.action, tt.actionID, tt.headers)
			if err != nil || string(got) != "kept"+tt.want {
				t.Fatalf("AppendAction = %q, %v; want %q", got, err, "kept"+tt.want)
			}
		})
	}
}

func TestAppendActionRefuses(t *testing.T) {
	h := func(k, v string) []Header { return []Header{{"Channel", "Local/100@demo"}, {k, v}} }
	many := func(n int) []Header { return slices.Repeat([]Header{{"X", "v"}}, n) }
	// The longest line Asterisk reads is 1024 bytes with its CRLF: 1022 before it.
	fill := func(prefix string, total int) string { return strings.Repeat("y", total-len(prefix)-2) }
	tests := []struct {
		name     string
		action   string
		actionID string
		headers  []Header
		err      error // nil: accepted
		index    int
	}{
		{"CRLF in a value", "Originate", "o", h("Data", "x\r\nAction: Command\r\nCommand: core stop now"), ErrInvalidValue, 1},
		{"LF in a value", "Originate", "o", h("Data", "x\nAction: Command"), ErrInvalidValue, 1},
		{"CR in a value", "Originate", "o", h("Data", "x\rAction: Command"), ErrInvalidValue, 1},
		{"NUL in a value", "Originate", "o", h("Data", "x\x00y"), ErrInvalidValue, 1},
		{"CRLF in a key", "Originate", "o", h("X\r\nAction", "Command"), ErrInvalidKey, 1},
		{"LF in a key", "Originate", "o", h("X\nY", "s3cr3t-v"), ErrInvalidKey, 1},
		{"colon in a key", "Originate", "o", h("Channel: Local/1@x\r\nY", "s3cr3t-v"), ErrInvalidKey, 1},
		{"colon alone in a key", "Originate", "o", h("A:B", "s3cr3t-v"), ErrInvalidKey, 1},
		{"space in a key", "Originate", "o", h("Bad Key", "s3cr3t-v"), ErrInvalidKey, 1},
		{"tab in a key", "Originate", "o", h("Bad\tKey", "s3cr3t-v"), ErrInvalidKey, 1},
		{"empty key", "Originate", "o", h("", "s3cr3t-v"), ErrInvalidKey, 1},
		{"caller ActionID", "Originate", "o", h("ActionID", "mine"), ErrInvalidKey, 1},
		{"caller ActionID any case", "Originate", "o", h("actionid", "mine"), ErrInvalidKey, 1},
		{"caller Action", "Originate", "o", h("ACTION", "Command"), ErrInvalidKey, 1},
		{"empty action", "", "o", nil, ErrEmptyAction, -1},
		{"CRLF in the action", "Ping\r\nAction: Command", "o", nil, ErrInvalidValue, -1},
		{"space in the action", "Core Stop", "o", nil, ErrInvalidValue, -1},
		{"colon in the action", "Ping:", "o", nil, ErrInvalidValue, -1},
		{"CRLF in the ActionID", "Ping", "1\r\nAction: Command", nil, ErrInvalidValue, -1},
		{"blank before the ActionID", "Ping", " 1", nil, ErrInvalidValue, -1},
		{"header line of 1024 bytes", "Ping", "o", h("X-Long", fill("X-Long: ", 1024)), nil, 0},
		{"header line of 1025 bytes", "Ping", "o", h("X-Long", fill("X-Long: ", 1025)), ErrLineTooLong, 1},
		{"ActionID line of 1024 bytes", "Ping", fill("ActionID: ", 1024), nil, nil, 0},
		{"ActionID line of 1025 bytes", "Ping", fill("ActionID: ", 1025), nil, ErrLineTooLong, -1},
		{"Action line of 1025 bytes", fill("Action: ", 1025), "o", nil, ErrLineTooLong, -1},
		{"128 lines", "Ping", "o", many(126), nil, 0},
		{"129 lines", "Ping", "o", many(127), ErrTooManyHeaders, -1},
		{"129 lines without ActionID", "Ping", "", many(128), ErrTooManyHeaders, -1},
		{"leading blank in a value is data", "Ping", "o", h("X", "  v"), nil, 0},
		{"non-ASCII", "Ping", "o", h("Ключ", "значение"), nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dst := make([]byte, 3, 8192)
			copy(dst, "abc")
			got, err := AppendAction(dst, tt.action, tt.actionID, tt.headers)
			if tt.err == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			var ee *EncodeError
			if !errors.Is(err, tt.err) || !errors.As(err, &ee) || ee.Index != tt.index {
				t.Fatalf("err %v (%#v), want %v at index %d", err, err, tt.err, tt.index)
			}
			if len(got) != 3 || &got[0] != &dst[0] || string(dst[:cap(dst)][3:4]) != "\x00" {
				t.Fatalf("dst changed: %q", got)
			}
			for _, h := range tt.headers {
				if len(h.Value) >= 6 && strings.Contains(err.Error(), h.Value) {
					t.Errorf("error %q quotes a value", err)
				}
			}
		})
	}
}

// TestEncoderAgreesWithAsterisk re-encodes every action the client sent in
// transcript 06 and expects AppendAction to refuse exactly the two Asterisk
// rejected for their size: the 1110-byte line ("line too long") and the
// 132-line action ("Too many lines"). Everything else, the 300-character
// ActionID included, is accepted and reads back the same.
func TestEncoderAgreesWithAsterisk(t *testing.T) {
	r := NewReader(bufio.NewReader(bytes.NewReader(readTestdata(t, "06-errors.client.raw"))))
	refused := map[string]error{"line-too-long": ErrLineTooLong, "too-many-headers": ErrTooManyHeaders}
	var m, back Message
	actions := 0
	for {
		err := r.ReadMessage(&m)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		name, ok := m.Lookup("Action")
		if !ok {
			continue // the two messages Asterisk answered "Missing action in request"
		}
		actions++
		id := string(m.ActionID())
		var hs []Header
		for i := range m.Len() {
			if k := string(m.Key(i)); k != "Action" && k != "ActionID" {
				hs = append(hs, Header{k, string(m.Value(i))})
			}
		}
		out, err := AppendAction(nil, string(name), id, hs)
		if want := refused[id]; want != nil {
			if !errors.Is(err, want) {
				t.Errorf("action %q: %v, want %v", id, err, want)
			}
			continue
		}
		if err != nil {
			t.Errorf("action %q refused: %v", id, err)
			continue
		}
		if err := NewReader(bufio.NewReader(bytes.NewReader(out))).ReadMessage(&back); err != nil {
			t.Fatal(err)
		}
		if string(back.Get("Action")) != string(name) || string(back.ActionID()) != id || !slices.Equal(headerList(&back)[len(headerList(&back))-len(hs):], hs) {
			t.Errorf("action %q reads back as %q", id, back.String())
		}
	}
	if actions != 15 {
		t.Errorf("%d actions in 06, want 15", actions)
	}
}

func FuzzEncode(f *testing.F) {
	f.Add("Originate", "amibus.pbx1.1.42", "Channel", "Local/100@demo", "Variable", "A=1")
	f.Add("Login", "login-1", "Username", "ami", "Secret", "amisecret")
	f.Add("Ping", "", "X", "a\r\nAction: Command", "Y", "")
	f.Add("Filter", "f", "Filter", "Event: Newchannel", "Operation", "  Add  ")
	f.Add("Ping", " id", "ActionID", "x", "Bad Key", "v")
	f.Add("Command", "c", "Command", strings.Repeat("y", 1014), "K", "\x00")
	f.Fuzz(func(t *testing.T, name, id, k1, v1, k2, v2 string) {
		hs := []Header{{k1, v1}, {k2, v2}}
		dst := []byte("prefix")
		out, err := AppendAction(dst, name, id, hs)
		if err != nil {
			var ee *EncodeError
			if !errors.As(err, &ee) || string(out) != "prefix" || len(out) != len(dst) {
				t.Fatalf("refusal %v changed dst to %q", err, out)
			}
			return
		}
		if strings.ContainsAny(name+id+k1+v1+k2+v2, "\r\n") {
			t.Fatalf("accepted CR or LF: %q", out)
		}
		wire := out[len(dst):]
		lines := bytes.SplitAfter(wire, []byte("\r\n"))
		if len(lines) > MaxActionLines+2 { // +1 empty line, +1 empty tail of the split
			t.Fatalf("%d lines", len(lines))
		}
		for _, l := range lines {
			if len(l) > MaxActionLine {
				t.Fatalf("line of %d bytes: %q", len(l), l)
			}
		}
		var m Message
		r := NewReader(bufio.NewReader(bytes.NewReader(wire)))
		if err := r.ReadMessage(&m); err != nil {
			t.Fatalf("%q does not read back: %v", wire, err)
		}
		want := []Header{{"Action", name}}
		if id != "" {
			want = append(want, Header{"ActionID", id})
		}
		want = append(want, hs...)
		if got := headerList(&m); !slices.Equal(got, want) || m.Size() != len(wire) {
			t.Fatalf("%q reads back as %q (%d bytes)", wire, got, m.Size())
		}
		if err := r.ReadMessage(&m); err != io.EOF {
			t.Fatalf("after the action: %v", err)
		}
	})
}
