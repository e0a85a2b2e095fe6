package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/amibus/amibus/internal/amijson"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/session"
)

// replyJSON is a decoded reply, for assertions.
type replyJSON = testenv.Reply[Code]

// decodeReply checks data against the shipped schema and decodes it.
var decodeReply = testenv.DecodeReply[Code]

func encodeResult(t testing.TB, res *session.Result, limit int) ([]byte, bool, error) {
	t.Helper()
	e := new(encoder)
	data, amiErr, err := e.result("pbx1", "Act", res, 1500*time.Microsecond, limit)
	return bytes.Clone(data), amiErr, err
}

// fieldsOf is the reference for the fields convention, built the obvious
// way with a map.
func fieldsOf(m *amiwire.Message, response bool) map[string]any {
	vals := map[string][]string{}
	for i := 0; i < m.Len(); i++ {
		k := string(m.Key(i))
		if response && (k == "" || strings.EqualFold(k, "Output")) {
			continue
		}
		vals[k] = append(vals[k], fixUTF8(string(m.Value(i))))
	}
	out := map[string]any{}
	for k, v := range vals {
		if len(v) == 1 {
			out[k] = v[0]
			continue
		}
		a := make([]any, len(v))
		for i := range v {
			a[i] = v[i]
		}
		out[k] = a
	}
	return out
}

func TestReplyPing(t *testing.T) {
	res := resultOf(t, "ping.raw", false)
	data, amiErr, err := encodeResult(t, res, 0)
	if err != nil || amiErr {
		t.Fatalf("err %v amiErr %v", err, amiErr)
	}
	r := decodeReply(t, data)
	want := map[string]any{"Response": "Success", "ActionID": "ping-42", "Ping": "Pong", "Timestamp": "1795398114.602322"}
	if !r.OK || r.Node != "pbx1" || r.Action != "Act" || r.ActionID != "ping-42" || r.Response != "Success" || r.Message != "" ||
		!reflect.DeepEqual(r.Fields, want) || len(r.Events) != 0 || len(r.Output) != 0 || *r.Elapsed != 1.5 {
		t.Fatalf("reply %+v\n%s", r, data)
	}
}

func TestReplyEventList(t *testing.T) {
	for _, name := range []string{"coreshowchannels.raw", "queuestatus.raw"} {
		t.Run(name, func(t *testing.T) {
			res := resultOf(t, name, false)
			data, _, err := encodeResult(t, res, 0)
			if err != nil {
				t.Fatal(err)
			}
			r := decodeReply(t, data)
			if !r.OK || r.Message == "" || r.Fields["EventList"] != "start" {
				t.Fatalf("reply head %+v", r)
			}
			if len(r.Events) != len(res.Events) {
				t.Fatalf("%d events, want %d", len(r.Events), len(res.Events))
			}
			for i, ev := range res.Events {
				if !reflect.DeepEqual(r.Events[i].Fields, fieldsOf(ev, false)) {
					t.Fatalf("event %d: %v\nwant %v", i, r.Events[i].Fields, fieldsOf(ev, false))
				}
			}
			if last := r.Events[len(r.Events)-1].Fields; last["EventList"] != "Complete" {
				t.Fatalf("last event %v is not the completion", last)
			}
		})
	}
}

func TestReplyCommandOutput(t *testing.T) {
	want := readRaw(t, "command-settings.raw")[0].Values("Output")
	if len(want) < 5 || want[0] != "" {
		t.Fatalf("testdata: unexpected output %q", want)
	}
	// The session fills Output; if it ever does not, the Output headers
	// are still returned, as output.
	for _, withOutput := range []bool{true, false} {
		t.Run(fmt.Sprint("session output ", withOutput), func(t *testing.T) {
			data, _, err := encodeResult(t, resultOf(t, "command-settings.raw", withOutput), 0)
			if err != nil {
				t.Fatal(err)
			}
			r := decodeReply(t, data)
			if !reflect.DeepEqual(r.Output, want) {
				t.Fatalf("output %q\nwant %q", r.Output, want)
			}
			if _, ok := r.Fields["Output"]; ok || r.Message != "Command output follows" {
				t.Fatalf("fields %v message %q", r.Fields, r.Message)
			}
		})
	}
}

// Asterisk 13 "Response: Follows": raw lines are key-less headers.
func TestReplyFollows(t *testing.T) {
	m := msgOf("Response", "Follows", "Privilege", "Command", "ActionID", "a.1")
	m.Add("", "line one")
	m.Add("", "  line: two  ")
	m.Add("", "--END COMMAND--")
	for _, tc := range []struct {
		output []string
		want   []string
	}{
		{[]string{"line one", "  line: two  "}, []string{"line one", "  line: two  "}},
		{nil, []string{"line one", "  line: two  ", "--END COMMAND--"}},
	} {
		data, _, err := encodeResult(t, &session.Result{ActionID: "a.1", Response: m, Output: tc.output}, 0)
		if err != nil {
			t.Fatal(err)
		}
		r := decodeReply(t, data)
		if !r.OK || r.Response != "Follows" || !reflect.DeepEqual(r.Output, tc.want) || len(r.Fields) != 3 {
			t.Fatalf("reply %+v", r)
		}
	}
}

func TestReplyAMIError(t *testing.T) {
	data, amiErr, err := encodeResult(t, resultOf(t, "unknown-action.raw", false), 0)
	if err != nil || !amiErr {
		t.Fatalf("err %v amiErr %v", err, amiErr)
	}
	r := decodeReply(t, data)
	const pbxMsg = "Invalid/unknown command: NoSuchAction. Use Action: ListCommands to show available commands."
	if r.OK || r.Error.Code != CodeAMIError || r.Error.Message != pbxMsg || r.Message != pbxMsg || r.Response != "Error" || r.ActionID != "unknown-1" {
		t.Fatalf("reply %+v", r)
	}

	// An unknown CLI command: an error with output.
	data, amiErr, _ = encodeResult(t, resultOf(t, "command-unknown.raw", true), 0)
	r = decodeReply(t, data)
	if !amiErr || r.Error.Code != CodeAMIError || len(r.Output) != 1 || !strings.HasPrefix(r.Output[0], "No such command") {
		t.Fatalf("reply %+v", r)
	}
	// Its error message is the output's first line, not the PBX's
	// "Command output follows", which stays in message.
	if r.Error.Message != r.Output[0] || r.Message != "Command output follows" {
		t.Fatalf("error message %q (message %q), want the first output line %q", r.Error.Message, r.Message, r.Output[0])
	}
	// The same when the session filled no Output: the response's own
	// Output headers are read.
	data, _, _ = encodeResult(t, resultOf(t, "command-unknown.raw", false), 0)
	if r = decodeReply(t, data); !strings.HasPrefix(r.Error.Message, "No such command") {
		t.Fatalf("error message %q without session Output", r.Error.Message)
	}

	// An error without a Message still says something.
	data, _, _ = encodeResult(t, &session.Result{Response: msgOf("Response", "error")}, 0)
	if r = decodeReply(t, data); r.Error.Message == "" {
		t.Fatalf("empty error message: %s", data)
	}
}

func TestReplyFailure(t *testing.T) {
	e := new(encoder)
	for _, tc := range []struct{ node, action string }{{"pbx1", "Ping"}, {"", ""}, {"pbx1", ""}} {
		data := e.failure(tc.node, tc.action, CodeTimeout, "no answer \"quoted\"\n", 2*time.Millisecond)
		r := decodeReply(t, data)
		if r.OK || r.Node != tc.node || r.Action != tc.action || r.Error.Code != CodeTimeout || r.Error.Message != "no answer \"quoted\"\n" || *r.Elapsed != 2 {
			t.Fatalf("reply %+v\n%s", r, data)
		}
		if tc.node == "" && bytes.Contains(data, []byte(`"node"`)) {
			t.Fatalf("empty node written: %s", data)
		}
	}
}

// TestReplyFieldsGrouping checks both grouping paths against the map
// reference, and that keys come in order of first appearance.
func TestReplyFieldsGrouping(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	keys := []string{"Variable", "Channel", "ChanVariable(x)", "A", "variable", ""}
	// Up to 80 headers: both of amijson's grouping paths (64 is the switch).
	for n := 0; n <= 80; n++ {
		for round := 0; round < 6; round++ {
			m := new(amiwire.Message)
			var order []string
			seen := map[string]bool{}
			for i := 0; i < n; i++ {
				k := keys[rng.IntN(len(keys))]
				m.Add(k, fmt.Sprintf("v%d", i))
				if !seen[k] {
					seen[k] = true
					order = append(order, k)
				}
			}
			b := amijson.AppendFields(nil, m, nil, nil)
			var got map[string]any
			if err := json.Unmarshal(b, &got); err != nil {
				t.Fatalf("n=%d: %v\n%s", n, err, b)
			}
			if want := fieldsOf(m, false); !reflect.DeepEqual(got, want) {
				t.Fatalf("n=%d: got %v\nwant %v", n, got, want)
			}
			if gotOrder := keyOrder(t, b); !reflect.DeepEqual(gotOrder, order) && n > 0 {
				t.Fatalf("n=%d: key order %q, want %q", n, gotOrder, order)
			}
		}
	}
}

func keyOrder(t *testing.T, obj []byte) []string {
	dec := json.NewDecoder(bytes.NewReader(obj))
	var keys []string
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	for dec.More() {
		tok, _ := dec.Token()
		keys = append(keys, tok.(string))
		var skip any
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// fixUTF8 replaces each invalid byte with U+FFFD, as encoding/json does.
func fixUTF8(s string) string {
	var b strings.Builder
	for _, r := range s { // ranging yields RuneError once per invalid byte
		b.WriteRune(r)
	}
	return b.String()
}

// TestReplyTooLargeStopsEarly: a list answer far over the limit is given
// up on as soon as the JSON passes the limit, not after encoding it all.
func TestReplyTooLargeStopsEarly(t *testing.T) {
	res := resultOf(t, "coreshowchannels.raw", false)
	one := res.Events[0]
	for i := 0; i < 10000; i++ {
		res.Events = append(res.Events, one)
	}
	e := new(encoder)
	const limit = 4096
	_, _, err := e.result("pbx1", "CoreShowChannels", res, 0, limit)
	if !errors.Is(err, errReplyTooLarge) {
		t.Fatalf("err = %v, want errReplyTooLarge", err)
	}
	if len(e.buf) > limit+2*one.Size()+1024 {
		t.Fatalf("encoded %d bytes before giving up on a %d-byte limit", len(e.buf), limit)
	}
	// Exactly at the limit is fine, one byte under is not.
	small := resultOf(t, "ping.raw", false)
	full, _, err := e.result("pbx1", "Ping", small, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	n := len(full)
	if _, _, err := e.result("pbx1", "Ping", small, 0, n); err != nil {
		t.Fatalf("reply of exactly the limit refused: %v", err)
	}
	if _, _, err := e.result("pbx1", "Ping", small, 0, n-1); !errors.Is(err, errReplyTooLarge) {
		t.Fatalf("reply one byte over the limit: err = %v", err)
	}
}

func TestReplyEncodingDoesNotAllocate(t *testing.T) {
	res := resultOf(t, "coreshowchannels.raw", false)
	e := new(encoder)
	_, _, _ = e.result("pbx1", "CoreShowChannels", res, time.Millisecond, 0) // grow the buffers
	allocs := testing.AllocsPerRun(50, func() {
		_, _, _ = e.result("pbx1", "CoreShowChannels", res, time.Millisecond, 0)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per list reply with a warm encoder, want 0", allocs)
	}
}

func TestCodeOf(t *testing.T) {
	tests := []struct {
		err  error
		want Code
	}{
		{session.ErrNotConnected, CodeUnavailable},
		{session.ErrAuth, CodeUnavailable},
		{session.ErrOverloaded, CodeOverloaded},
		{session.ErrTimeout, CodeTimeout},
		{context.DeadlineExceeded, CodeTimeout},
		{session.ErrDisconnected, CodeDisconnected},
		{session.ErrClosed, CodeDisconnected},
		{session.ErrTooLarge, CodeTooLarge},
		{session.ErrInvalidAction, CodeBadRequest},
		{fmt.Errorf("pbx1: %w", session.ErrDisconnected), CodeDisconnected},
		{&RequestError{Field: "x", Msg: "y"}, CodeBadRequest},
		{errors.New("something else"), CodeInternal},
		{context.Canceled, CodeInternal},
	}
	for _, tt := range tests {
		if got := CodeOf(tt.err); got != tt.want {
			t.Errorf("CodeOf(%v) = %s, want %s", tt.err, got, tt.want)
		}
	}
}

func BenchmarkReplyPing(b *testing.B) {
	res := resultOf(b, "ping.raw", false)
	b.ReportAllocs()
	for b.Loop() {
		e := getEncoder()
		data, _, _ := e.result("pbx1", "Ping", res, time.Millisecond, 1<<20)
		b.SetBytes(int64(len(data)))
		putEncoder(e)
	}
}

func BenchmarkDecodeRequestOriginate(b *testing.B) {
	body := []byte(`{"action":"Originate","fields":{"Channel":"Local/100@demo","Exten":"100","Context":"demo","Priority":"1","Async":"true","Variable":["A=1","B=2"]},"timeout_ms":5000}`)
	b.ReportAllocs()
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		if _, err := DecodeRequest(body, "", 0); err != nil {
			b.Fatal(err)
		}
	}
}
