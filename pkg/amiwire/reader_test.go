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
	"testing/iotest"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// readResult is everything a Reader made of one stream.
type readResult struct {
	version string
	msgs    []*Message
	errs    []error // non-nil errors that did not end the stream (caps, protocol)
	end     error   // the error that ended the stream (io.EOF when clean)
}

// readStream reads a whole stream, the banner first when banner is true,
// cloning every message; it stops at the first error that is not a
// *LimitError or *ProtocolError from ReadMessage.
func readStream(t testing.TB, r *Reader, banner bool) readResult {
	t.Helper()
	var res readResult
	if banner {
		v, err := r.ReadBanner()
		if err != nil {
			res.end = err
			return res
		}
		res.version = v
	}
	var m Message
	for i := 0; ; i++ {
		if i > 1e6 {
			t.Fatal("ReadMessage never ends")
		}
		err := r.ReadMessage(&m)
		var le *LimitError
		var pe *ProtocolError
		switch {
		case err == nil:
			res.msgs = append(res.msgs, m.Clone())
		case errors.As(err, &le) || errors.As(err, &pe):
			if m.Len() != 0 || m.Size() != 0 {
				t.Fatalf("message left filled after %v: %q", err, m.String())
			}
			res.errs = append(res.errs, err)
		default:
			if m.Len() != 0 {
				t.Fatalf("partial message left after %v: %q", err, m.String())
			}
			res.end = err
			return res
		}
	}
}

func readString(t testing.TB, s string, opts ...Option) readResult {
	return readStream(t, NewReader(bufio.NewReader(strings.NewReader(s)), opts...), false)
}

func countKinds(msgs []*Message) (resp, ev, other int) {
	for _, m := range msgs {
		switch m.Kind() {
		case KindResponse:
			resp++
		case KindEvent:
			ev++
		default:
			other++
		}
	}
	return
}

// TestReadTranscripts reads every real server stream and checks each message
// against the raw bytes: Asterisk writes "Key: Value\r\n" lines, so a message
// rendered back with String must be exactly the bytes it was read from, and
// the sizes must add up to the file's length.
func TestReadTranscripts(t *testing.T) {
	tests := []struct {
		file              string
		banner            bool
		resp, ev, other   int
		truncatedAt       int // size of the partial message at the end, 0 for a clean EOF
		truncatedKind     Kind
		truncatedName     string
		emptyBeforeBanner bool
	}{
		{file: "01-login-logoff.server.raw", banner: true, resp: 2, ev: 2},
		{file: "01b-login-logoff-tls.server.raw", banner: true, resp: 2, ev: 2},
		{file: "01c-login-no-events-header.server.raw", banner: true, resp: 2, ev: 2},
		{file: "02-login-failure.server.raw", banner: true, resp: 1},
		{file: "02b-login-unknown-user.server.raw", banner: true, resp: 1},
		{file: "02c-action-before-login.server.raw", banner: true, resp: 3},
		{file: "02d-auth-timeout.server.raw", banner: true},
		{file: "02e-security-events-seen-by-other-session.server.raw", banner: true, resp: 2, ev: 6},
		{file: "02e-security-events-seen-by-other-session.2.server.raw", banner: true, resp: 1},
		{file: "02e-security-events-seen-by-other-session.3.server.raw", banner: true, resp: 1},
		{file: "02e-security-events-seen-by-other-session.4.server.raw", banner: true, resp: 2},
		{file: "02e-security-events-seen-by-other-session.5.server.raw", banner: true, resp: 2},
		{file: "03-md5-challenge.server.raw", banner: true, resp: 3},
		{file: "03b-md5-challenge-bad-key.server.raw", banner: true, resp: 2},
		{file: "04-ping-coresettings-corestatus.server.raw", banner: true, resp: 6},
		{file: "05-command.server.raw", banner: true, resp: 12},
		{file: "05b-command-during-call.server.raw", banner: true, resp: 7, ev: 5},
		{file: "06-errors.server.raw", banner: true, resp: 17},
		{file: "06b-permission-denied.server.raw", banner: true, resp: 6},
		{file: "07-originate-events.server.raw", banner: true, resp: 3, ev: 87},
		{file: "07b-originate-failure.server.raw", banner: true, resp: 3, ev: 10},
		{file: "07c-originate-sync.server.raw", banner: true, resp: 4},
		{file: "07d-originate-application.server.raw", banner: true, resp: 3, ev: 31},
		{file: "08-lists-live-call.server.raw", banner: true, resp: 13, ev: 44},
		{file: "08b-lists-live-call-events-on.server.raw", banner: true, resp: 11, ev: 184},
		{file: "09-events-filter.server.raw", banner: true, resp: 16, ev: 93},
		{file: "09b-login-events-mask.server.raw", banner: true, resp: 3, ev: 41},
		{file: "10-slow-reader.2.server.raw", banner: true, resp: 202},
		// The head is the first 32 KiB of a 3 MB stream: cut mid-event by the capture.
		{file: "10-slow-reader.server.head.raw", banner: true, resp: 1, ev: 80, truncatedAt: 169, truncatedKind: KindEvent, truncatedName: "VarSet"},
		// The tail starts mid-event (a key-less first line: KindOther) and ends
		// where Asterisk really closed the socket, inside a Newchannel event.
		{file: "10-slow-reader.server.tail.raw", resp: 0, ev: 120, other: 1, truncatedAt: 236, truncatedKind: KindEvent, truncatedName: "Newchannel"},
		{file: "10b-paused-reader-low-rate.server.raw", banner: true, resp: 3, ev: 87},
		{file: "10b-paused-reader-low-rate.2.server.raw", banner: true, resp: 3},
		// Accepted and reset by the dying Asterisk: not even a banner.
		{file: "11-restart.2.server.raw", banner: true, emptyBeforeBanner: true},
		{file: "11-restart.server.raw", banner: true, resp: 1, ev: 3},
		{file: "11-restart.3.server.raw", banner: true, resp: 2, ev: 2},
		{file: "11b-reload.server.raw", banner: true, resp: 3, ev: 4},
		{file: "12-timestampevents-channelvars.server.raw", banner: true, resp: 4, ev: 89},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		seen[tt.file] = true
		t.Run(tt.file, func(t *testing.T) {
			data := readTestdata(t, tt.file)
			res := readStream(t, NewReader(bufio.NewReader(bytes.NewReader(data))), tt.banner)
			if tt.emptyBeforeBanner {
				if res.end != io.EOF {
					t.Fatalf("ReadBanner on an empty stream: %v, want io.EOF", res.end)
				}
				return
			}
			off := 0
			if tt.banner {
				if res.version != "9.0.0" {
					t.Fatalf("version %q, want 9.0.0", res.version)
				}
				off = len("Asterisk Call Manager/9.0.0\r\n")
			}
			if len(res.errs) != 0 {
				t.Fatalf("unexpected errors: %v", res.errs)
			}
			resp, ev, other := countKinds(res.msgs)
			if resp != tt.resp || ev != tt.ev || other != tt.other {
				t.Errorf("responses/events/others = %d/%d/%d, want %d/%d/%d", resp, ev, other, tt.resp, tt.ev, tt.other)
			}
			for i, m := range res.msgs {
				raw := string(data[off : off+m.Size()])
				if m.String() != raw {
					t.Fatalf("message %d at offset %d:\n got %q\nwant %q", i, off, m.String(), raw)
				}
				off += m.Size()
			}
			if tt.truncatedAt == 0 {
				if res.end != io.EOF {
					t.Fatalf("stream ended with %v, want io.EOF", res.end)
				}
			} else {
				var te *TruncatedError
				if !errors.Is(res.end, io.ErrUnexpectedEOF) || !errors.As(res.end, &te) {
					t.Fatalf("stream ended with %v, want a *TruncatedError", res.end)
				}
				if te.Size != tt.truncatedAt || te.Kind != tt.truncatedKind || te.Name != tt.truncatedName {
					t.Errorf("truncated %+v, want size %d kind %v name %q", *te, tt.truncatedAt, tt.truncatedKind, tt.truncatedName)
				}
				off += te.Size
			}
			if off != len(data) {
				t.Errorf("accounted for %d bytes of %d", off, len(data))
			}
		})
	}
	// Every server stream in testdata must be in the table above.
	files, _ := filepath.Glob("testdata/*.server*.raw")
	for _, f := range files {
		if b := filepath.Base(f); !seen[b] && !strings.HasPrefix(b, "legacy-") {
			t.Errorf("testdata/%s is not read by TestReadTranscripts", b)
		}
	}
}

func readFile(t testing.TB, name string) readResult {
	t.Helper()
	res := readStream(t, NewReader(bufio.NewReader(bytes.NewReader(readTestdata(t, name)))), true)
	if res.end != io.EOF || len(res.errs) != 0 {
		t.Fatalf("%s: end %v, errors %v", name, res.end, res.errs)
	}
	return res
}

func headerList(m *Message) []Header {
	var hs []Header
	for i := range m.Len() {
		hs = append(hs, Header{string(m.Key(i)), string(m.Value(i))})
	}
	return hs
}

func TestKindFromFirstLineOnly(t *testing.T) {
	res := readFile(t, "07-originate-events.server.raw")
	var originate []*Message
	for _, m := range res.msgs {
		if m.Get("Event") == "OriginateResponse" {
			originate = append(originate, m)
		}
	}
	if len(originate) != 1 {
		t.Fatalf("%d OriginateResponse events, want 1", len(originate))
	}
	m := originate[0]
	if m.Kind() != KindEvent || m.Get("Response") != "Success" || string(m.ActionID()) != "orig-7" {
		t.Errorf("OriginateResponse: kind %v, Response %q, ActionID %q", m.Kind(), m.Get("Response"), m.ActionID())
	}
	want := []Header{
		{"Event", "OriginateResponse"}, {"Privilege", "call,all"}, {"ActionID", "orig-7"},
		{"Response", "Success"}, {"Channel", "Local/200@demo-00000002;1"}, {"Context", "demo"},
		{"Exten", "100"}, {"Reason", "4"}, {"Uniqueid", "1795398116.4"},
		{"CallerIDNum", "<unknown>"}, {"CallerIDName", "<unknown>"},
	}
	if got := headerList(m); !slices.Equal(got, want) {
		t.Errorf("OriginateResponse headers\n got %v\nwant %v", got, want)
	}

	res = readFile(t, "02e-security-events-seen-by-other-session.server.raw")
	found := false
	for _, m := range res.msgs {
		if m.Get("Event") == "ChallengeResponseFailed" {
			found = true
			if m.Kind() != KindEvent || m.Get("Response") == "" {
				t.Errorf("ChallengeResponseFailed: kind %v, Response %q", m.Kind(), m.Get("Response"))
			}
		}
	}
	if !found {
		t.Error("no ChallengeResponseFailed event in 02e")
	}
}

func TestTranscriptHeaders(t *testing.T) {
	res := readFile(t, "12-timestampevents-channelvars.server.raw")
	var tagged *Message
	for _, m := range res.msgs {
		if m.Get("Event") == "VarSet" && m.Get("Value") == "golden-12" && m.Get("Variable") == "AMIBUS_TAG" {
			tagged = m
			break
		}
	}
	if tagged == nil {
		t.Fatal("no VarSet AMIBUS_TAG=golden-12 in 12")
	}
	want := []Header{
		{"Event", "VarSet"}, {"Privilege", "dialplan,all"}, {"Timestamp", "1795398179.400446"},
		{"Channel", "Local/200@demo-00000000;1"}, {"ChannelState", "0"}, {"ChannelStateDesc", "Down"},
		{"CallerIDNum", "<unknown>"}, {"CallerIDName", "<unknown>"}, {"ConnectedLineNum", "<unknown>"},
		{"ConnectedLineName", "<unknown>"}, {"Language", "en"}, {"AccountCode", ""}, {"Context", "demo"},
		{"Exten", "200"}, {"Priority", "1"}, {"Uniqueid", "1795398179.0"}, {"Linkedid", "1795398179.0"},
		{"ChanVariable", "AMIBUS_TAG=golden-12"}, {"ChanVariable", "DIALSTATUS="},
		{"Variable", "AMIBUS_TAG"}, {"Value", "golden-12"},
	}
	if got := headerList(tagged); !slices.Equal(got, want) {
		t.Errorf("VarSet headers\n got %v\nwant %v", got, want)
	}
	if got := tagged.Values("ChanVariable"); !slices.Equal(got, []string{"AMIBUS_TAG=golden-12", "DIALSTATUS="}) {
		t.Errorf("Values(ChanVariable) = %q", got)
	}
	if v, ok := tagged.Lookup("accountcode"); !ok || len(v) != 0 {
		t.Errorf(`Lookup("accountcode") = %q, %v; want an empty value that is present`, v, ok)
	}

	// The first event after a login with events on, header order kept.
	res = readFile(t, "01-login-logoff.server.raw")
	if got := headerList(res.msgs[1]); !slices.Equal(got[:2], []Header{{"Event", "FullyBooted"}, {"Privilege", "system,all"}}) ||
		got[len(got)-1] != (Header{"Status", "Fully Booted"}) {
		t.Errorf("FullyBooted headers %v", got)
	}
	// ActionIDs are echoed whole (300 characters in 06).
	res = readFile(t, "06-errors.server.raw")
	long := strings.Repeat("x", 300)
	if !slices.ContainsFunc(res.msgs, func(m *Message) bool { return string(m.ActionID()) == long }) {
		t.Error("the 300-character ActionID of 06 was not read whole")
	}
}

// transports feed a stream whole, and one byte per read through the smallest
// bufio buffer, which splits every line longer than 16 bytes into fragments.
var transports = []struct {
	name string
	wrap func(s string) *bufio.Reader
}{
	{"whole", func(s string) *bufio.Reader { return bufio.NewReader(strings.NewReader(s)) }},
	{"bytewise-16", func(s string) *bufio.Reader {
		return bufio.NewReaderSize(iotest.OneByteReader(strings.NewReader(s)), 16)
	}},
}

func TestReadMessageFraming(t *testing.T) {
	long := strings.Repeat("v", 5000)
	tests := []struct {
		name  string
		in    string
		kinds []Kind
		want  [][]Header
	}{
		{"crlf", "Response: Success\r\nActionID: 1\r\n\r\n", []Kind{KindResponse},
			[][]Header{{{"Response", "Success"}, {"ActionID", "1"}}}},
		{"bare lf", "Event: A\nKey: v\n\n", []Kind{KindEvent}, [][]Header{{{"Event", "A"}, {"Key", "v"}}}},
		{"mixed endings", "Event: A\r\nKey: v\n\r\n", []Kind{KindEvent}, [][]Header{{{"Event", "A"}, {"Key", "v"}}}},
		{"blank lines between and before messages", "\r\n\n\r\nEvent: A\r\n\r\n\r\n\n\r\nEvent: B\r\n\r\n\r\n",
			[]Kind{KindEvent, KindEvent}, [][]Header{{{"Event", "A"}}, {{"Event", "B"}}}},
		{"value with colons", "Event: A\r\nAddress: IPV4/TCP/127.0.0.1/5038\r\nTime: 12:34:56\r\nURL: http://x:80/\r\n\r\n",
			[]Kind{KindEvent}, [][]Header{{{"Event", "A"}, {"Address", "IPV4/TCP/127.0.0.1/5038"}, {"Time", "12:34:56"}, {"URL", "http://x:80/"}}}},
		{"empty values", "Event: A\r\nAccountCode: \r\nNoSpace:\r\n\r\n", []Kind{KindEvent},
			[][]Header{{{"Event", "A"}, {"AccountCode", ""}, {"NoSpace", ""}}}},
		{"spaces kept", "Event: A\r\nPadded:   x  \r\nNoSpace:v\r\n\r\n", []Kind{KindEvent},
			[][]Header{{{"Event", "A"}, {"Padded", "  x  "}, {"NoSpace", "v"}}}},
		{"repeated keys in order", "Event: A\r\nOutput: 1\r\nOther: x\r\nOutput: 2\r\nOutput: \r\n\r\n", []Kind{KindEvent},
			[][]Header{{{"Event", "A"}, {"Output", "1"}, {"Other", "x"}, {"Output", "2"}, {"Output", ""}}}},
		{"lines with no colon are key-less", "Response: Error\r\nthis line has no colon\r\n:starts with colon\r\n\r\n", []Kind{KindResponse},
			[][]Header{{{"Response", "Error"}, {"", "this line has no colon"}, {"", ":starts with colon"}}}},
		{"a lone CR is data", "Event: A\r\nK: a\rb\r\r\n\r\n", []Kind{KindEvent}, [][]Header{{{"Event", "A"}, {"K", "a\rb\r"}}}},
		{"kind from the first line only", "Event: OriginateResponse\r\nResponse: Failure\r\n\r\nResponse: Success\r\nEvent: X\r\n\r\nMessage: hi\r\nResponse: Success\r\n\r\nresponse: lower\r\n\r\nnocolon\r\nEvent: X\r\n\r\n",
			[]Kind{KindEvent, KindResponse, KindOther, KindResponse, KindOther},
			[][]Header{
				{{"Event", "OriginateResponse"}, {"Response", "Failure"}},
				{{"Response", "Success"}, {"Event", "X"}},
				{{"Message", "hi"}, {"Response", "Success"}},
				{{"response", "lower"}},
				{{"", "nocolon"}, {"Event", "X"}},
			}},
		{"line longer than the bufio buffer", "Event: A\r\nLong: " + long + "\r\n\r\n", []Kind{KindEvent},
			[][]Header{{{"Event", "A"}, {"Long", long}}}},
	}
	for _, tt := range tests {
		for _, tr := range transports {
			t.Run(tt.name+"/"+tr.name, func(t *testing.T) {
				res := readStream(t, NewReader(tr.wrap(tt.in)), false)
				if res.end != io.EOF || len(res.errs) != 0 {
					t.Fatalf("end %v, errors %v", res.end, res.errs)
				}
				if len(res.msgs) != len(tt.want) {
					t.Fatalf("%d messages, want %d", len(res.msgs), len(tt.want))
				}
				for i, m := range res.msgs {
					if got := headerList(m); !slices.Equal(got, tt.want[i]) || m.Kind() != tt.kinds[i] {
						t.Errorf("message %d: %v %v, want %v %v", i, m.Kind(), got, tt.kinds[i], tt.want[i])
					}
				}
			})
		}
	}
}

func TestReadMessageSize(t *testing.T) {
	in := "\r\n\r\nEvent: A\nK: v\r\n\r\nEvent: B\r\n\n"
	res := readString(t, in)
	if len(res.msgs) != 2 {
		t.Fatalf("%d messages", len(res.msgs))
	}
	// Blank lines before a message belong to no message.
	if a, b := res.msgs[0].Size(), res.msgs[1].Size(); a != len("Event: A\nK: v\r\n\r\n") || b != len("Event: B\r\n\n") {
		t.Errorf("sizes %d, %d", a, b)
	}
}

func TestReadMessageEOF(t *testing.T) {
	tests := []struct {
		name string
		in   string
		msgs int
		// truncated is the size of the partial message, -1 for a clean EOF.
		truncated int
		kind      Kind
		evName    string
	}{
		{"empty stream", "", 0, -1, 0, ""},
		{"only blank lines", "\r\n\n\r\n", 0, -1, 0, ""},
		{"clean end with trailing blank lines", "Event: A\r\n\r\n\r\n\n", 1, -1, 0, ""},
		{"mid line", "Event: A\r\n\r\nEvent: Newchannel\r\nLanguage: e", 1, len("Event: Newchannel\r\nLanguage: e"), KindEvent, "Newchannel"},
		{"complete lines, no empty line", "Response: Success\r\nActionID: 7\r\n", 0, len("Response: Success\r\nActionID: 7\r\n"), KindResponse, "Success"},
		{"one CR", "Event: A\r\n\r\n\r", 1, 1, KindOther, ""},
		{"half of the final CRLF CRLF", "Event: A\r\n\r", 0, len("Event: A\r\n\r"), KindEvent, "A"},
		{"key-less first line", "secret-looking junk\r\n", 0, len("secret-looking junk\r\n"), KindOther, ""},
		{"legacy output without its end", "Response: Follows\r\nPrivilege: Command\r\nline\n\n", 0, len("Response: Follows\r\nPrivilege: Command\r\nline\n\n"), KindResponse, "Follows"},
		{"legacy end without the empty line", "Response: Follows\r\nline\n--END COMMAND--\r\n", 0, len("Response: Follows\r\nline\n--END COMMAND--\r\n"), KindResponse, "Follows"},
	}
	for _, tt := range tests {
		for _, tr := range transports {
			t.Run(tt.name+"/"+tr.name, func(t *testing.T) {
				r := NewReader(tr.wrap(tt.in))
				res := readStream(t, r, false)
				if len(res.msgs) != tt.msgs {
					t.Fatalf("%d messages, want %d", len(res.msgs), tt.msgs)
				}
				var m Message
				if tt.truncated < 0 {
					if res.end != io.EOF {
						t.Fatalf("end %v, want io.EOF", res.end)
					}
					if err := r.ReadMessage(&m); err != io.EOF {
						t.Fatalf("after EOF: %v", err)
					}
					return
				}
				var te *TruncatedError
				if !errors.Is(res.end, io.ErrUnexpectedEOF) || !errors.As(res.end, &te) {
					t.Fatalf("end %v, want a *TruncatedError", res.end)
				}
				if te.Size != tt.truncated || te.Kind != tt.kind || te.Name != tt.evName {
					t.Errorf("got %+v, want size %d kind %v name %q", *te, tt.truncated, tt.kind, tt.evName)
				}
				if strings.Contains(te.Error(), "junk") {
					t.Errorf("error quotes arbitrary peer data: %v", te)
				}
				// The stream is out of step: the error sticks.
				if err := r.ReadMessage(&m); err != res.end || m.Len() != 0 {
					t.Fatalf("after truncation: %v, %d headers", err, m.Len())
				}
			})
		}
	}
}

// scriptReader returns its steps in order: data, or an error.
type scriptReader struct{ steps []any }

func (s *scriptReader) Read(p []byte) (int, error) {
	if len(s.steps) == 0 {
		return 0, io.EOF
	}
	step := s.steps[0]
	s.steps = s.steps[1:]
	if err, ok := step.(error); ok {
		return 0, err
	}
	return copy(p, step.(string)), nil
}

func TestReadErrors(t *testing.T) {
	errTimeout := errors.New("i/o timeout")
	// Before the first byte of a message a read error is passed on once and
	// the Reader goes on (an idle read deadline).
	r := NewReader(bufio.NewReader(&scriptReader{steps: []any{"Event: A\r\n\r\n", errTimeout, "Event: B\r\n\r\n"}}))
	var m Message
	if err := r.ReadMessage(&m); err != nil || m.Get("Event") != "A" {
		t.Fatalf("first: %v %q", err, m.String())
	}
	if err := r.ReadMessage(&m); err != errTimeout {
		t.Fatalf("second: %v, want the timeout", err)
	}
	if err := r.ReadMessage(&m); err != nil || m.Get("Event") != "B" {
		t.Fatalf("after the timeout: %v %q", err, m.String())
	}
	// Inside a message the stream is out of step: the error sticks.
	r = NewReader(bufio.NewReader(&scriptReader{steps: []any{"Event: A\r\nKey: ", errTimeout, "v\r\n\r\nEvent: B\r\n\r\n"}}))
	for range 2 {
		if err := r.ReadMessage(&m); err != errTimeout || m.Len() != 0 {
			t.Fatalf("mid-message: %v, %d headers", err, m.Len())
		}
	}
}

func TestReadBanner(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		version string
		err     error // checked with errors.Is
	}{
		{"asterisk 20", "Asterisk Call Manager/9.0.0\r\n", "9.0.0", nil},
		{"old", "Asterisk Call Manager/1.1\r\n", "1.1", nil},
		{"bare lf", "Asterisk Call Manager/2.10.6\n", "2.10.6", nil},
		{"empty stream", "", "", io.EOF},
		{"cut", "Asterisk Call Man", "", io.ErrUnexpectedEOF},
		{"ssh", "SSH-2.0-OpenSSH_9.2\r\n", "", ErrProtocol},
		{"http", "HTTP/1.1 400 Bad Request\r\n", "", ErrProtocol},
		{"no version", "Asterisk Call Manager/\r\n", "", ErrProtocol},
		{"space in version", "Asterisk Call Manager/9.0.0 extra\r\n", "", ErrProtocol},
		{"blank line first", "\r\nAsterisk Call Manager/9.0.0\r\n", "", ErrProtocol},
		{"message first", "Response: Success\r\n\r\n", "", ErrProtocol},
		{"endless line", strings.Repeat("A", 100000), "", ErrProtocol},
	}
	for _, tt := range tests {
		for _, tr := range transports {
			t.Run(tt.name+"/"+tr.name, func(t *testing.T) {
				r := NewReader(tr.wrap(tt.in))
				v, err := r.ReadBanner()
				if v != tt.version || !errors.Is(err, tt.err) || (tt.err == nil) != (err == nil) {
					t.Fatalf("ReadBanner() = %q, %v; want %q, %v", v, err, tt.version, tt.err)
				}
				var pe *ProtocolError
				if errors.Is(err, ErrProtocol) && (!errors.As(err, &pe) || len(pe.Excerpt) > 64) {
					t.Errorf("protocol error %v without a bounded excerpt", err)
				}
			})
		}
	}
	// A wrong banner does not stick: what follows it is read.
	r0 := NewReader(bufio.NewReader(strings.NewReader("SSH-2.0-OpenSSH_9.2\r\nEvent: A\r\n\r\n")))
	var m0 Message
	if _, err := r0.ReadBanner(); !errors.Is(err, ErrProtocol) {
		t.Fatalf("ReadBanner: %v", err)
	}
	if err := r0.ReadMessage(&m0); err != nil || m0.Get("Event") != "A" {
		t.Fatalf("after a wrong banner: %v %q", err, m0.String())
	}
	// The banner is followed directly by the first message.
	r := NewReader(bufio.NewReader(strings.NewReader("Asterisk Call Manager/9.0.0\r\nResponse: Success\r\n\r\n")))
	var m Message
	if _, err := r.ReadBanner(); err != nil {
		t.Fatal(err)
	}
	if err := r.ReadMessage(&m); err != nil || m.Kind() != KindResponse || m.Len() != 1 {
		t.Fatalf("message after the banner: %v %q", err, m.String())
	}
}

func TestReaderOptions(t *testing.T) {
	tests := []struct {
		name         string
		opts         []Option
		bytes, heads int
	}{
		{"defaults", nil, 1 << 20, 8192},
		{"set", []Option{WithMaxBytes(4096), WithMaxHeaders(10)}, 4096, 10},
		{"zero keeps the default", []Option{WithMaxBytes(0), WithMaxHeaders(0)}, 1 << 20, 8192},
		{"negative keeps the default", []Option{WithMaxBytes(-1), WithMaxHeaders(-5)}, 1 << 20, 8192},
		{"clamped", []Option{WithMaxBytes(1 << 40), WithMaxHeaders(1 << 40)}, MaxBytesLimit, MaxHeadersLimit},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewReader(bufio.NewReader(strings.NewReader("")), tt.opts...)
			if r.MaxBytes() != tt.bytes || r.MaxHeaders() != tt.heads {
				t.Errorf("caps %d/%d, want %d/%d", r.MaxBytes(), r.MaxHeaders(), tt.bytes, tt.heads)
			}
		})
	}
}

func TestLimits(t *testing.T) {
	next := "Event: Next\r\nK: v\r\n\r\n"
	big := strings.Repeat("y", 300<<10)
	headers := func(n int) string {
		var b strings.Builder
		for i := range n {
			b.WriteString("H: v\r\n")
			_ = i
		}
		return b.String()
	}
	exactly64 := "Event: A\r\nK: " + strings.Repeat("z", 64-len("Event: A\r\nK: \r\n\r\n")) + "\r\n\r\n"
	legacyBig := "Response: Follows\r\nPrivilege: Command\r\nActionID: big\r\n" +
		strings.Repeat("a line: with a colon\n\n", 10) + "--END COMMAND--\r\n\r\n"
	tests := []struct {
		name      string
		in        string
		maxBytes  int
		maxHeads  int
		err       error // nil: the first message is read
		kind      Kind
		evName    string
		actionID  string
		size      int
		limit     int
		firstHdrs int // headers of the first message when it is read
	}{
		{name: "exactly at the byte cap", in: exactly64 + next, maxBytes: 64, firstHdrs: 2},
		{name: "one byte over the byte cap", in: "Event: A\r\nK: " + strings.Repeat("z", 64-len("Event: A\r\nK: \r\n\r\n")+1) + "\r\n\r\n" + next,
			maxBytes: 64, err: ErrMessageTooLarge, kind: KindEvent, evName: "A", size: 65, limit: 64},
		{name: "huge line skipped", in: "Response: Error\r\nActionID: a-1\r\nMessage: " + big + "\r\nMore: x\r\n\r\n" + next,
			maxBytes: 4096, err: ErrMessageTooLarge, kind: KindResponse, evName: "Error", actionID: "a-1",
			size: len("Response: Error\r\nActionID: a-1\r\nMessage: " + big + "\r\nMore: x\r\n\r\n"), limit: 4096},
		{name: "ActionID after the cap is not known", in: "Event: A\r\nBig: " + big + "\r\nActionID: late\r\n\r\n" + next,
			maxBytes: 4096, err: ErrMessageTooLarge, kind: KindEvent, evName: "A", size: len("Event: A\r\nBig: " + big + "\r\nActionID: late\r\n\r\n"), limit: 4096},
		{name: "first line over the cap", in: "Event: " + big + "\r\n\r\n" + next,
			maxBytes: 4096, err: ErrMessageTooLarge, kind: KindOther, size: len("Event: " + big + "\r\n\r\n"), limit: 4096},
		{name: "exactly at the header cap", in: "Event: A\r\n" + headers(9) + "\r\n" + next, maxHeads: 10, firstHdrs: 10},
		{name: "one header over the cap", in: "Event: A\r\nActionID: h\r\n" + headers(9) + "\r\n" + next, maxHeads: 10,
			err: ErrTooManyHeaders, kind: KindEvent, evName: "A", actionID: "h", size: len("Event: A\r\nActionID: h\r\n" + headers(9) + "\r\n"), limit: 10},
		{name: "many key-less lines", in: "Response: Error\r\n" + strings.Repeat("junk\r\n", 100000) + "\r\n" + next, maxHeads: 100,
			err: ErrTooManyHeaders, kind: KindResponse, evName: "Error", size: len("Response: Error\r\n" + strings.Repeat("junk\r\n", 100000) + "\r\n"), limit: 100},
		// A legacy answer's blank output lines do not end it: it is skipped
		// to the empty line after its end marker.
		{name: "legacy answer over the byte cap", in: legacyBig + next, maxBytes: 100,
			err: ErrMessageTooLarge, kind: KindResponse, evName: "Follows", actionID: "big", size: len(legacyBig), limit: 100},
		{name: "legacy answer over the header cap", in: legacyBig + next, maxHeads: 8,
			err: ErrTooManyHeaders, kind: KindResponse, evName: "Follows", actionID: "big", size: len(legacyBig), limit: 8},
	}
	for _, tt := range tests {
		for _, tr := range transports {
			t.Run(tt.name+"/"+tr.name, func(t *testing.T) {
				r := NewReader(tr.wrap(tt.in), WithMaxBytes(tt.maxBytes), WithMaxHeaders(tt.maxHeads))
				var m Message
				err := r.ReadMessage(&m)
				if tt.err == nil {
					if err != nil || m.Len() != tt.firstHdrs {
						t.Fatalf("first message: %v, %d headers, want %d", err, m.Len(), tt.firstHdrs)
					}
				} else {
					var le *LimitError
					if !errors.Is(err, tt.err) || !errors.As(err, &le) {
						t.Fatalf("first message: %v, want a *LimitError for %v", err, tt.err)
					}
					want := LimitError{Err: tt.err, Kind: tt.kind, Name: tt.evName, ActionID: tt.actionID, Size: tt.size, Limit: tt.limit}
					if *le != want {
						t.Errorf("got  %+v\nwant %+v", *le, want)
					}
					if m.Len() != 0 {
						t.Errorf("a skipped message left %d headers", m.Len())
					}
					// Skipped, not buffered: the message's buffers stay within the cap.
					if cap(m.buf) > 2*r.MaxBytes() || cap(m.fields) > 2*r.MaxHeaders() {
						t.Errorf("buffers grew to %d bytes, %d fields", cap(m.buf), cap(m.fields))
					}
				}
				if err := r.ReadMessage(&m); err != nil || m.Get("Event") != "Next" || m.Get("K") != "v" {
					t.Fatalf("next message: %v %q", err, m.String())
				}
				if err := r.ReadMessage(&m); err != io.EOF {
					t.Fatalf("end: %v", err)
				}
			})
		}
	}
}

func TestLegacyFollows(t *testing.T) {
	res := readStream(t, NewReader(bufio.NewReader(bytes.NewReader(readTestdata(t, "legacy-follows.server.raw")))), true)
	if res.version != "2.10.6" || res.end != io.EOF || len(res.errs) != 0 {
		t.Fatalf("version %q, end %v, errors %v", res.version, res.end, res.errs)
	}
	type want struct {
		kind    Kind
		follows bool
		headers []Header
	}
	k := func(s string) Header { return Header{"", s} }
	wants := []want{
		{KindResponse, false, []Header{{"Response", "Success"}, {"ActionID", "login-1"}, {"Message", "Authentication accepted"}}},
		{KindResponse, true, []Header{{"Response", "Follows"}, {"Privilege", "Command"}, {"ActionID", "cmd-uptime"},
			k("System uptime: 2 hours, 3 minutes, 4 seconds"), k("Last reload: 2 hours, 3 minutes, 4 seconds"), k("--END COMMAND--")}},
		{KindResponse, true, []Header{{"Response", "Follows"}, {"Privilege", "Command"}, {"ActionID", "cmd-settings"},
			k(""), k("Global Settings:"), k("----------------"), k("  Manager (AMI):             Yes"),
			k("  TCP Bindaddress:           0.0.0.0:5038"), k(""), k("  Channel vars:              "), k("--END COMMAND--")}},
		{KindEvent, false, []Header{{"Event", "Reload"}, {"Privilege", "system,all"}, {"Module", "manager"}, {"Status", "0"}}},
		{KindResponse, true, []Header{{"Response", "Follows"}, {"Privilege", "Command"}, {"ActionID", "cmd-no-output"}, k("--END COMMAND--")}},
		{KindResponse, true, []Header{{"Response", "Follows"}, {"Privilege", "Command"}, {"ActionID", "cmd-no-newline"},
			k("Console verbose was OFF and is now 3.--END COMMAND--")}},
		{KindResponse, true, []Header{{"Response", "Follows"}, {"Privilege", "Command"},
			k("Name/username             Host            Dyn Forcerport Comedia    ACL Port     Status      Description"),
			k("ActionID: not-a-header"), k("Response: Success"),
			k("1 sip peers [Monitored: 0 online, 0 offline Unmonitored: 0 online, 0 offline]"), k("--END COMMAND--")}},
		{KindResponse, false, []Header{{"Response", "Goodbye"}, {"ActionID", "logoff-1"}, {"Message", "Thanks for all the fish."}}},
	}
	if len(res.msgs) != len(wants) {
		t.Fatalf("%d messages, want %d", len(res.msgs), len(wants))
	}
	for i, m := range res.msgs {
		w := wants[i]
		if got := headerList(m); m.Kind() != w.kind || m.IsFollows() != w.follows || !slices.Equal(got, w.headers) {
			t.Errorf("message %d: %v follows=%v %q\nwant %v follows=%v %q", i, m.Kind(), m.IsFollows(), got, w.kind, w.follows, w.headers)
		}
	}
	// The ActionID-looking output line is output, not the answer's ActionID.
	if id := res.msgs[6].ActionID(); id != nil {
		t.Errorf("ActionID %q read from output", id)
	}
}

func TestLegacyFollowsMalformedEnd(t *testing.T) {
	in := "Response: Follows\r\nActionID: 1\r\nout\n--END COMMAND--\r\nstray line\r\nmore\r\n\r\nEvent: Next\r\n\r\n"
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			res := readStream(t, NewReader(tr.wrap(in)), false)
			var pe *ProtocolError
			if len(res.errs) != 1 || !errors.Is(res.errs[0], ErrProtocol) || !errors.As(res.errs[0], &pe) || pe.Excerpt != "stray line" {
				t.Fatalf("errors %v, want one ProtocolError quoting the stray line", res.errs)
			}
			if len(res.msgs) != 1 || res.msgs[0].Get("Event") != "Next" || res.end != io.EOF {
				t.Fatalf("after the malformed answer: %d messages, end %v", len(res.msgs), res.end)
			}
		})
	}
}

// cycleReader serves data over and over, as a socket with an endless stream.
type cycleReader struct {
	data []byte
	off  int
}

func (c *cycleReader) Read(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := copy(p[n:], c.data[c.off:])
		n += k
		c.off = (c.off + k) % len(c.data)
	}
	return n, nil
}

// streamWithoutBanner returns a testdata stream with its banner line cut off.
func streamWithoutBanner(t testing.TB, name string) []byte {
	data := readTestdata(t, name)
	return data[bytes.IndexByte(data, '\n')+1:]
}

func TestReadMessageZeroAlloc(t *testing.T) {
	for _, name := range []string{"07-originate-events.server.raw", "12-timestampevents-channelvars.server.raw", "legacy-follows.server.raw"} {
		t.Run(name, func(t *testing.T) {
			src := &cycleReader{data: streamWithoutBanner(t, name)}
			r := NewReader(bufio.NewReaderSize(src, 64<<10))
			var m Message
			// Grow the message's buffers to the largest message once.
			for range 500 {
				if err := r.ReadMessage(&m); err != nil {
					t.Fatal(err)
				}
			}
			allocs := testing.AllocsPerRun(2000, func() {
				if err := r.ReadMessage(&m); err != nil {
					t.Fatal(err)
				}
			})
			if allocs != 0 {
				t.Errorf("%v allocations per message, want 0", allocs)
			}
		})
	}
}

func TestResetSwapsTheBufferBetweenMessages(t *testing.T) {
	wire := "Event: A\r\nX: 1\r\n\r\nEvent: B\r\nX: 2\r\n\r\n"
	src := strings.NewReader(wire)
	// A 16-byte buffer holds only part of the first message.
	small := bufio.NewReaderSize(src, 16)
	r := NewReader(small, WithMaxBytes(64))
	var m Message
	if err := r.ReadMessage(&m); err != nil || string(m.Name()) != "A" {
		t.Fatalf("first message: %q, %v", m.Name(), err)
	}
	// What small holds is handed over in front of the rest of the stream.
	n := small.Buffered()
	held, _ := small.Peek(n)
	r.Reset(bufio.NewReaderSize(io.MultiReader(bytes.NewReader(bytes.Clone(held)), src), 4096))
	if err := r.ReadMessage(&m); err != nil || string(m.Name()) != "B" || m.Get("X") != "2" {
		t.Fatalf("second message after Reset: %q X=%q, %v", m.Name(), m.Get("X"), err)
	}
	if r.MaxBytes() != 64 {
		t.Errorf("Reset lost the byte cap: %d", r.MaxBytes())
	}
	if err := r.ReadMessage(&m); err != io.EOF {
		t.Errorf("after the last message: %v, want io.EOF", err)
	}
}

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
