package command

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/amibus/amibus/pkg/session"
)

func TestDecodeRequestAccepts(t *testing.T) {
	tests := []struct {
		name    string
		body    string
		subject string
		want    Request
	}{
		{
			name: "action only",
			body: `{"action":"Ping"}`,
			want: Request{Action: "Ping"},
		},
		{
			name: "fields keep body order and arrays expand in order",
			body: `{"action":"Originate","fields":{"Channel":"Local/100@demo","Variable":["A=1","B=2"],"Async":"true"},"timeout_ms":5000}`,
			want: Request{Action: "Originate", Headers: []session.Header{
				{Key: "Channel", Value: "Local/100@demo"},
				{Key: "Variable", Value: "A=1"},
				{Key: "Variable", Value: "B=2"},
				{Key: "Async", Value: "true"},
			}, Timeout: 5 * time.Second},
		},
		{
			name: "values may hold colons, tabs, unicode and be empty",
			body: `{"action":"Setvar","fields":{"Value":"a: b\tc é","Empty":""}}`,
			want: Request{Action: "Setvar", Headers: []session.Header{{Key: "Value", Value: "a: b\tc é"}, {Key: "Empty", Value: ""}}},
		},
		{
			name:    "subject names the action, empty body",
			body:    ``,
			subject: "Ping",
			want:    Request{Action: "Ping"},
		},
		{
			name:    "subject and body agree ignoring case; the subject's spelling is kept",
			body:    ` {"action":"PING"} `,
			subject: "ping",
			want:    Request{Action: "ping"},
		},
		{
			name:    "body may omit the action named by the subject",
			body:    `{"fields":{"Command":"core show version"}}`,
			subject: "Command",
			want:    Request{Action: "Command", Headers: []session.Header{{Key: "Command", Value: "core show version"}}},
		},
		{
			name: "an empty array sends nothing",
			body: `{"action":"Ping","fields":{"Variable":[]}}`,
			want: Request{Action: "Ping"},
		},
		{
			name: "integral number forms count as integers",
			body: `{"action":"Ping","timeout_ms":2.5e3}`,
			want: Request{Action: "Ping", Timeout: 2500 * time.Millisecond},
		},
		{
			name: "a huge timeout is clamped, not refused",
			body: `{"action":"Ping","timeout_ms":1e300}`,
			want: Request{Action: "Ping", Timeout: time.Duration(1<<63-1) / time.Millisecond * time.Millisecond},
		},
		{
			name: "exactly the cap of field values",
			body: `{"action":"Ping","fields":{"X":[` + strings.TrimSuffix(strings.Repeat(`"v",`, MaxFieldValues), ",") + `]}}`,
			want: Request{Action: "Ping", Headers: repeatHeader("X", "v", MaxFieldValues)},
		},
		{
			name: "a line of exactly MaxLineBytes",
			body: `{"action":"Ping","fields":{"K":"` + strings.Repeat("v", MaxLineBytes-3) + `"}}`,
			want: Request{Action: "Ping", Headers: []session.Header{{Key: "K", Value: strings.Repeat("v", MaxLineBytes-3)}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeRequest([]byte(tt.body), tt.subject, 0)
			if err != nil {
				t.Fatalf("DecodeRequest: %v", err)
			}
			if got.Action != tt.want.Action || got.Timeout != tt.want.Timeout || fmt.Sprint(got.Headers) != fmt.Sprint(tt.want.Headers) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func repeatHeader(k, v string, n int) []session.Header {
	hs := make([]session.Header, n)
	for i := range hs {
		hs[i] = session.Header{Key: k, Value: v}
	}
	return hs
}

func manyEmptyArrays(n int) string {
	var b strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `"K%d":[]`, i)
	}
	return b.String()
}

func TestDecodeRequestRefuses(t *testing.T) {
	manyFields := func(n int) string {
		var b strings.Builder
		b.WriteString(`{"action":"Ping","fields":{`)
		for i := 0; i < n; i++ {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"X-H%d":"v"`, i)
		}
		b.WriteString(`}}`)
		return b.String()
	}
	tests := []struct {
		name      string
		body      string
		subject   string
		maxBytes  int
		wantField string
		wantMsg   string // a substring of the message
	}{
		{"not JSON", `Action: Ping`, "", 0, "body", "not valid JSON"},
		{"truncated JSON", `{"action":"Ping"`, "", 0, "body", "not valid JSON"},
		{"JSON array", `[{"action":"Ping"}]`, "", 0, "body", "must be a JSON object"},
		{"JSON string", `"Ping"`, "", 0, "body", "must be a JSON object"},
		{"data after the object", `{"action":"Ping"}{}`, "", 0, "body", "data after"},
		{"garbage after the object", `{"action":"Ping"} x`, "", 0, "body", "data after"},
		{"trailing comma", `{"action":"Ping",}`, "", 0, "body", "expected a string key"},
		{"missing colon", `{"action" "Ping"}`, "", 0, "body", "expected ':'"},
		{"bad escape", `{"action":"Ping","fields":{"A":"\x"}}`, "", 0, "body", "bad escape"},
		{"bad unicode escape", `{"action":"Ping","fields":{"A":"\u12G4"}}`, "", 0, "body", "bad \\u escape"},
		{"raw control character", "{\"action\":\"Ping\",\"fields\":{\"A\":\"a\tb\"}}", "", 0, "body", "control character"},
		{"unterminated string", `{"action":"Pi`, "", 0, "body", "unterminated string"},
		{"bad number", `{"action":"Ping","timeout_ms":01}`, "", 0, "body", "leading zero"},
		{"bad literal", `{"action":nul}`, "", 0, "body", "expected a value"},
		{"array for object", `{"action":"Ping","fields":[]}`, "", 0, "fields", "not an array"},
		{"bad exponent", `{"action":"Ping","timeout_ms":1e}`, "", 0, "body", "bad number"},
		{"vertical tab is not JSON space", "\v", "Ping", 0, "body", "not valid JSON at offset 0"},
		{"invalid UTF-8", "{\"action\":\"Ping\",\"fields\":{\"A\":\"\xff\"}}", "", 0, "body", "not valid UTF-8 (first bad byte at offset 32)"},
		{"unknown key", `{"action":"Ping","timeout":5}`, "", 0, "timeout", "unknown key"},
		{"keys are case-sensitive", `{"Action":"Ping"}`, "", 0, "Action", "unknown key"},
		{"missing action", `{"fields":{}}`, "", 0, "action", "missing"},
		{"empty body without subject action", ``, "", 0, "action", "missing"},
		{"action not a string", `{"action":1}`, "", 0, "action", "must be a string"},
		{"action null", `{"action":null}`, "", 0, "action", "must be a string"},
		{"action twice", `{"action":"Ping","action":"Logoff"}`, "", 0, "action", "given twice"},
		{"empty action", `{"action":""}`, "", 0, "action", "empty"},
		{"CRLF in action", `{"action":"Ping\r\nAction: Logoff"}`, "", 0, "action", "character '\\r'"},
		{"LF in action", `{"action":"Ping\nX"}`, "", 0, "action", "character '\\n'"},
		{"colon in action", `{"action":"Ping:"}`, "", 0, "action", "character ':'"},
		{"space in action", `{"action":"Ping X"}`, "", 0, "action", "character ' '"},
		{"long action", `{"action":"` + strings.Repeat("A", 65) + `"}`, "", 0, "action", "longer than 64"},
		{"bad subject action", ``, "Ping:x", 0, "subject", "character ':'"},
		{"subject and body differ", `{"action":"Logoff"}`, "Ping", 0, "action", "does not match"},
		{"fields not an object", `{"action":"Ping","fields":["a"]}`, "", 0, "fields", "must be an object"},
		{"fields null", `{"action":"Ping","fields":null}`, "", 0, "fields", "must be an object"},
		{"nested object", `{"action":"Ping","fields":{"A":{"B":"c"}}}`, "", 0, "fields.A", "not an object"},
		{"number value", `{"action":"Ping","fields":{"A":1}}`, "", 0, "fields.A", "string or an array"},
		{"null value", `{"action":"Ping","fields":{"A":null}}`, "", 0, "fields.A", "string or an array"},
		{"nested array", `{"action":"Ping","fields":{"A":[["x"]]}}`, "", 0, "fields.A[0]", "must be a string"},
		{"array of numbers", `{"action":"Ping","fields":{"A":["x",2]}}`, "", 0, "fields.A[1]", "must be a string"},
		{"deep nesting stops at once", `{"action":"Ping","fields":{"A":` + strings.Repeat("[", 100000) + `}}`, "", 0, "fields.A[0]", "must be a string"},
		{"CRLF in key", `{"action":"Ping","fields":{"A\r\nAction: Logoff":"x"}}`, "", 0, `fields["A\r\nAction: Logoff"]`, "character '\\r'"},
		{"colon in key", `{"action":"Ping","fields":{"A:B":"x"}}`, "", 0, "fields.A:B", "character ':'"},
		{"space in key", `{"action":"Ping","fields":{"A B":"x"}}`, "", 0, `fields["A B"]`, "character ' '"},
		{"non-ASCII key", `{"action":"Ping","fields":{"Clé":"x"}}`, "", 0, `fields["Clé"]`, "printable ASCII"},
		{"empty key", `{"action":"Ping","fields":{"":"x"}}`, "", 0, "fields", "empty key"},
		{"CRLF in value", `{"action":"Ping","fields":{"A":"x\r\nAction: Logoff"}}`, "", 0, "fields.A", "character '\\r'"},
		{"LF in value", `{"action":"Ping","fields":{"A":"x\nAction: Logoff"}}`, "", 0, "fields.A", "character '\\n'"},
		{"LF in array value", `{"action":"Ping","fields":{"A":["ok","x\ny"]}}`, "", 0, "fields.A[1]", "character '\\n'"},
		{"NUL in value", `{"action":"Ping","fields":{"A":"x\u0000y"}}`, "", 0, "fields.A", "character '\\x00'"},
		{"ActionID in fields", `{"action":"Ping","fields":{"ActionID":"mine"}}`, "", 0, "fields.ActionID", "assigns ActionIDs"},
		{"ActionID in any case", `{"action":"Ping","fields":{"actionid":"mine"}}`, "", 0, "fields.actionid", "assigns ActionIDs"},
		{"Action in fields", `{"action":"Ping","fields":{"ACTION":"Logoff"}}`, "", 0, "fields.ACTION", "not in fields"},
		{"key twice", `{"action":"Ping","fields":{"Channel":"a","channel":"b"}}`, "", 0, "fields.channel", "given twice"},
		{"too many fields", manyFields(MaxFieldValues + 1), "", 0, "fields", "more than 126 fields or values"},
		{"thousands of fields", manyFields(5000), "", 0, "fields", "more than 126 fields or values"},
		{"empty array key twice", `{"action":"Ping","fields":{"A":[],"a":"x"}}`, "", 0, "fields.a", "given twice"},
		{"thousands of empty arrays", `{"action":"Ping","fields":{` + manyEmptyArrays(3000) + `}}`, "", 0, "fields", "more than 126"},
		{"too many array values", `{"action":"Ping","fields":{"X":[` + strings.TrimSuffix(strings.Repeat(`"v",`, 3000), ",") + `]}}`, "", 0, "fields", "more than 126 fields or values"},
		{"line too long", `{"action":"Ping","fields":{"K":"` + strings.Repeat("v", MaxLineBytes-2) + `"}}`, "", 0, "fields.K", "Asterisk discards lines over 1022"},
		{"timeout zero", `{"action":"Ping","timeout_ms":0}`, "", 0, "timeout_ms", "positive integer"},
		{"timeout negative", `{"action":"Ping","timeout_ms":-5}`, "", 0, "timeout_ms", "positive integer"},
		{"timeout fraction", `{"action":"Ping","timeout_ms":1.5}`, "", 0, "timeout_ms", "positive integer"},
		{"timeout string", `{"action":"Ping","timeout_ms":"100"}`, "", 0, "timeout_ms", "positive integer"},
		{"timeout null", `{"action":"Ping","timeout_ms":null}`, "", 0, "timeout_ms", "positive integer"},
		{"over the size cap", `{"action":"Ping","fields":{"A":"` + strings.Repeat("x", 100) + `"}}`, "", 64, "body", "over the limit of 64 bytes"},
		{"megabyte unknown key is not echoed", `{"` + strings.Repeat("k", 1<<20) + `":1}`, "", 2 << 20, `["` + strings.Repeat("k", 64) + `..."]`, "unknown key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeRequest([]byte(tt.body), tt.subject, tt.maxBytes)
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("err = %v, want a *RequestError", err)
			}
			if re.Field != tt.wantField || !strings.Contains(re.Msg, tt.wantMsg) {
				t.Fatalf("got field %q msg %q\nwant field %q msg containing %q", re.Field, re.Msg, tt.wantField, tt.wantMsg)
			}
			if CodeOf(err) != CodeBadRequest {
				t.Fatalf("CodeOf = %s, want bad_request", CodeOf(err))
			}
			if len(err.Error()) > 400 {
				t.Fatalf("error message of %d bytes: an error must not echo the input", len(err.Error()))
			}
		})
	}
}

// TestDecodeRequestRefusesBigBodyBeforeParsing: a 10 MB body that would be
// expensive to parse (and invalid) is refused for its size alone.
func TestDecodeRequestRefusesBigBodyBeforeParsing(t *testing.T) {
	body := []byte(`{"action":"Ping","fields":{"A":` + strings.Repeat("[", 10<<20) + `}}`)
	allocs := testing.AllocsPerRun(5, func() {
		_, err := DecodeRequest(body, "", DefaultMaxRequestBytes)
		if err == nil || !strings.Contains(err.Error(), "over the limit") {
			t.Fatalf("err = %v", err)
		}
	})
	if allocs > 10 {
		t.Fatalf("%v allocations to refuse a big body; it must be refused before parsing", allocs)
	}
}

// FuzzDecodeRequest: no input panics; whatever is accepted is valid JSON
// that encoding/json reads the same way, and is safe to put on the wire:
// no header can be forged.
func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"action":"Ping"}`,
		`{"action":"Originate","fields":{"Channel":"Local/100@demo","Variable":["A=1","B=2"]},"timeout_ms":5000}`,
		`{"fields":{"A":"x\r\ny"}}`,
		`{"action":"Ping","fields":{"A":[["x"]]}}`,
		`{"action":"Ping","fields":{"A":"\u00e9\ud83d\ude00\ud800x\/"}}`,
		`{"action":"Ping","timeout_ms":1.5e3}`,
		"{\"action\":\"\xff\"}",
		` { } `,
		``,
	} {
		f.Add([]byte(s), "")
		f.Add([]byte(s), "Ping")
	}
	f.Fuzz(func(t *testing.T, body []byte, subject string) {
		req, err := DecodeRequest(body, subject, 4096)
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("error %v is not a *RequestError", err)
			}
			return
		}
		if checkActionName("", req.Action) != nil {
			t.Fatalf("accepted action %q", req.Action)
		}
		if len(req.Headers) > MaxFieldValues {
			t.Fatalf("accepted %d headers", len(req.Headers))
		}
		for _, h := range req.Headers {
			if checkFieldKey(h.Key) != nil || checkFieldValue(h.Key, -1, h.Value) != nil {
				t.Fatalf("accepted header %q: %q", h.Key, h.Value)
			}
		}
		if req.Timeout < 0 {
			t.Fatalf("negative timeout %v", req.Timeout)
		}
		if isJSONSpace(body) {
			return
		}
		// The reference reading.
		if !json.Valid(body) {
			t.Fatalf("accepted invalid JSON %q", body)
		}
		var ref struct {
			Action  *string
			Fields  map[string]json.RawMessage
			Timeout *float64 `json:"timeout_ms"`
		}
		if err := json.Unmarshal(body, &ref); err != nil {
			t.Fatalf("encoding/json refuses accepted %q: %v", body, err)
		}
		if ref.Action != nil && subject == "" && *ref.Action != req.Action {
			t.Fatalf("action %q, encoding/json reads %q", req.Action, *ref.Action)
		}
		var want []string
		for _, h := range req.Headers {
			if _, ok := ref.Fields[h.Key]; !ok {
				t.Fatalf("header %q not in encoding/json's fields %v", h.Key, ref.Fields)
			}
		}
		for k, raw := range ref.Fields {
			var one string
			var many []string
			if json.Unmarshal(raw, &one) == nil {
				many = []string{one}
			} else if err := json.Unmarshal(raw, &many); err != nil {
				t.Fatalf("field %q = %s accepted", k, raw)
			}
			for _, v := range many {
				want = append(want, k+": "+v)
			}
		}
		var got []string
		for _, h := range req.Headers {
			got = append(got, h.Key+": "+h.Value)
		}
		slices.Sort(got)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Fatalf("headers %q, encoding/json reads %q", got, want)
		}
	})
}
