package amiwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Small caps make the fuzzer reach them with short inputs.
const (
	fuzzMaxBytes   = 512
	fuzzMaxHeaders = 16
)

func FuzzReader(f *testing.F) {
	files, err := filepath.Glob("testdata/*.raw")
	if err != nil || len(files) == 0 {
		f.Fatalf("no seed corpus: %v", err)
	}
	for _, p := range files {
		data, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	for _, s := range []string{
		"Response: Follows\r\nPrivilege: Command\r\nout: put\n\n--END COMMAND--\r\n\r\n",
		"Response: Follows\r\nx--END COMMAND--\r\nstray\r\n\r\nEvent: A\r\n\r\n",
		"Event: A\nK:v\nK: \n:x\nnocolon\n\n\n",
		"Asterisk Call Manager/9.0.0\r\nEvent: A\r\nLanguage: e",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bufio.NewReaderSize(bytes.NewReader(data), 16),
			WithMaxBytes(fuzzMaxBytes), WithMaxHeaders(fuzzMaxHeaders))
		if bytes.HasPrefix(data, []byte("Asterisk")) {
			if _, err := r.ReadBanner(); err != nil {
				return
			}
		}
		var m, back Message
		consumed := 0
		// Every call consumes at least one byte or ends the stream.
		for range len(data) + 2 {
			err := r.ReadMessage(&m)
			if cap(m.buf) > 4*fuzzMaxBytes || cap(m.fields) > 4*fuzzMaxHeaders {
				t.Fatalf("buffers grew to %d bytes, %d fields", cap(m.buf), cap(m.fields))
			}
			var le *LimitError
			var pe *ProtocolError
			switch {
			case err == nil:
				if m.Size() <= 0 || m.Size() > fuzzMaxBytes || m.Len() == 0 || m.Len() > fuzzMaxHeaders {
					t.Fatalf("message of %d bytes, %d headers", m.Size(), m.Len())
				}
				consumed += m.Size()
				checkRoundTrip(t, &m, &back)
			case errors.As(err, &le):
				if m.Len() != 0 || le.Size > len(data) ||
					errors.Is(err, ErrMessageTooLarge) && le.Size <= fuzzMaxBytes ||
					errors.Is(err, ErrTooManyHeaders) && le.Limit != fuzzMaxHeaders {
					t.Fatalf("bad limit error %+v, %d headers left", *le, m.Len())
				}
				consumed += le.Size
			case errors.As(err, &pe):
				if m.Len() != 0 || len(pe.Excerpt) > excerptMax {
					t.Fatalf("bad protocol error %v", pe)
				}
			case err == io.EOF:
				if consumed > len(data) {
					t.Fatalf("consumed %d of %d bytes", consumed, len(data))
				}
				return
			case errors.Is(err, io.ErrUnexpectedEOF):
				if again := r.ReadMessage(&m); again != err || m.Len() != 0 {
					t.Fatalf("truncation not sticky: %v then %v", err, again)
				}
				return
			default:
				t.Fatalf("unexpected error %v", err)
			}
		}
		t.Fatal("ReadMessage made no progress")
	})
}

// checkRoundTrip renders m and reads it back: the same kind, form and headers.
func checkRoundTrip(t *testing.T, m, back *Message) {
	t.Helper()
	text := m.String()
	if err := NewReader(bufio.NewReader(strings.NewReader(text))).ReadMessage(back); err != nil {
		t.Fatalf("rendered message %q does not read back: %v", text, err)
	}
	if back.Kind() != m.Kind() || back.IsFollows() != m.IsFollows() || !slices.Equal(headerList(back), headerList(m)) {
		t.Fatalf("round trip changed the message:\n%q\n%q", text, back.String())
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
