package publish

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/pkg/amiwire"
)

var t0 = time.Date(2026, 11, 23, 1, 41, 56, 154000321, time.FixedZone("CET", 3600))

func msg(kv ...string) *amiwire.Message {
	m := &amiwire.Message{}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Add(kv[i], kv[i+1])
	}
	return m
}

type eventJSON struct {
	Node    string         `json:"node"`
	Event   string         `json:"event"`
	Session string         `json:"session"`
	Seq     uint64         `json:"seq"`
	Time    string         `json:"time"`
	Fields  map[string]any `json:"fields"`
}

func decodeEvent(t testing.TB, data []byte) eventJSON {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var e eventJSON
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	checkUniqueKeys(t, data)
	return e
}

// checkUniqueKeys fails if any JSON object in data holds a key twice, which
// a map decode would hide by keeping the last.
func checkUniqueKeys(t testing.TB, data []byte) {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(data))
	type frame struct {
		obj  bool
		keys map[string]bool
		key  bool // next string token is a key
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err != nil {
			return
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		isKey := top != nil && top.obj && top.key
		switch v := tok.(type) {
		case json.Delim:
			switch v {
			case '{':
				if top != nil && top.obj {
					top.key = true
				}
				stack = append(stack, &frame{obj: true, keys: map[string]bool{}, key: true})
			case '[':
				if top != nil && top.obj {
					top.key = true
				}
				stack = append(stack, &frame{})
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		case string:
			if isKey {
				if top.keys[v] {
					t.Fatalf("duplicate key %q in %s", v, data)
				}
				top.keys[v] = true
				top.key = false
				continue
			}
		}
		if top != nil && top.obj {
			top.key = true
		}
	}
}

func TestAppendEventLossless(t *testing.T) {
	tricky := msg(
		"Event", "UserEvent",
		"Privilege", "user,all",
		"Variable", "A=1",
		"Value", "has: colons: inside",
		"Empty", "",
		"Variable", "B=2",
		"Unicode", "Zoë 中文 🎉",
		"Control", "tab\there\x01\x1f\x7f",
		"Quote", `"quoted" \back\`,
		"", "a line with no colon",
		"Variable", "",
		"", "another raw line",
		"ChanVariable(SIP/1)", "X=1",
		"Bad", "\xff\xfeinvalid",
		"variable", "other case is another key",
	)
	events := append(loadEvents(t, "07-originate-events.server.raw"), tricky)
	for i, m := range events {
		it := &eventq.Item{Kind: eventq.KindEvent, Session: "inst-pbx1-1", Seq: uint64(i + 1), Time: t0, Msg: m}
		data := AppendEvent(nil, "pbx1", it, nil)
		e := decodeEvent(t, data)
		if e.Node != "pbx1" || e.Session != "inst-pbx1-1" || e.Seq != uint64(i+1) || e.Event != string(m.Name()) {
			t.Fatalf("envelope %s", data)
		}
		if e.Time != "2026-11-23T00:41:56.154000321Z" {
			t.Fatalf("time %q", e.Time)
		}
		if want := refFields(m, nil); !reflect.DeepEqual(e.Fields, want) {
			t.Fatalf("event %d fields:\n got %v\nwant %v", i, e.Fields, want)
		}
	}
	// The tricky one, spelled out, so the reference itself is checked.
	e := decodeEvent(t, AppendEvent(nil, "pbx1", &eventq.Item{Msg: tricky, Seq: 1}, nil))
	if v := e.Fields["Variable"]; !reflect.DeepEqual(v, []any{"A=1", "B=2", ""}) {
		t.Fatalf("Variable = %#v", v)
	}
	if v := e.Fields[""]; !reflect.DeepEqual(v, []any{"a line with no colon", "another raw line"}) {
		t.Fatalf("key-less lines = %#v", v)
	}
	if e.Fields["Value"] != "has: colons: inside" || e.Fields["Empty"] != "" || e.Fields["Control"] != "tab\there\x01\x1f\x7f" {
		t.Fatalf("fields %v", e.Fields)
	}
}

func TestAppendEventKeepsFirstAppearanceOrder(t *testing.T) {
	m := msg("Event", "X", "B", "1", "A", "2", "B", "3", "C", "4")
	got := string(AppendEvent(nil, "n", &eventq.Item{Msg: m, Session: "s", Seq: 1, Time: t0}, nil))
	want := `"fields":{"Event":"X","B":["1","3"],"A":"2","C":"4"}}`
	if !strings.HasSuffix(got, want) {
		t.Fatalf("got %s\nwant suffix %s", got, want)
	}
}

func TestAppendEventManyHeaders(t *testing.T) {
	// Over smallFields: the sort-based grouping, with repeats far apart and
	// keys that only invalid UTF-8 tells apart (same JSON key: grouped).
	m := msg("Event", "Big")
	for i := 0; i < 300; i++ {
		m.Add(fmt.Sprintf("K%d", i%97), fmt.Sprint(i))
		if i%50 == 0 {
			m.Add("", fmt.Sprintf("raw %d", i))
		}
	}
	m.Add("\xff", "a")
	m.Add("\xfe", "b")
	e := decodeEvent(t, AppendEvent(nil, "n", &eventq.Item{Msg: m, Seq: 1}, nil))
	if want := refFields(m, nil); !reflect.DeepEqual(e.Fields, want) {
		t.Fatalf("fields differ:\n got %v\nwant %v", e.Fields, want)
	}
	small := msg("Event", "Small", "\xff", "a", "\xfe", "b", "\uFFFD", "c")
	e = decodeEvent(t, AppendEvent(nil, "n", &eventq.Item{Msg: small, Seq: 1}, nil))
	if v := e.Fields["\uFFFD"]; !reflect.DeepEqual(v, []any{"a", "b", "c"}) {
		t.Fatalf("keys equal as JSON not grouped: %v", e.Fields)
	}
}

func FuzzAppendEvent(f *testing.F) {
	f.Add([]byte("Event\x00Newchannel\x00Channel\x00SIP/1\x00Channel\x00SIP/2\x00\x00raw line"))
	f.Add([]byte("Event\x00X\x00\xff\x00\x01\x00\xfe\x00\"\x00"))
	f.Fuzz(func(t *testing.T, in []byte) {
		parts := bytes.Split(in, []byte{0})
		m := &amiwire.Message{}
		for i := 0; i+1 < len(parts) && m.Len() < 200; i += 2 {
			m.Add(string(parts[i]), string(parts[i+1]))
		}
		redact := RedactFields("Secret")
		data := AppendEvent(nil, "n", &eventq.Item{Msg: m, Session: "s\x00", Seq: 7}, redact)
		e := decodeEvent(t, data)
		if want := refFields(m, redact); !reflect.DeepEqual(e.Fields, want) {
			t.Fatalf("fields:\n got %v\nwant %v", e.Fields, want)
		}
	})
}

func TestRedaction(t *testing.T) {
	var crf *amiwire.Message
	for _, m := range loadEvents(t, "02e-security-events-seen-by-other-session.server.raw") {
		if string(m.Name()) == "ChallengeResponseFailed" {
			crf = m
		}
	}
	if crf == nil {
		t.Fatal("no ChallengeResponseFailed in testdata")
	}
	secret, _ := crf.Lookup("ExpectedResponse")
	for _, names := range [][]string{DefaultRedactFields, {"expectedresponse"}, {"EXPECTEDRESPONSE", "Other"}} {
		data := AppendEvent(nil, "pbx1", &eventq.Item{Msg: crf, Seq: 1}, RedactFields(names...))
		if bytes.Contains(data, secret) {
			t.Fatalf("%v: secret left in %s", names, data)
		}
		e := decodeEvent(t, data)
		if e.Fields["ExpectedResponse"] != RedactedValue || e.Fields["Challenge"] != "953216435" {
			t.Fatalf("%v: fields %v", names, e.Fields)
		}
	}
	if RedactFields() != nil || RedactFields("") != nil {
		t.Fatal("empty list must redact nothing")
	}
	rep := msg("Event", "X", "Secret", "a", "Secret", "b")
	e := decodeEvent(t, AppendEvent(nil, "n", &eventq.Item{Msg: rep, Seq: 1}, RedactFields("secret")))
	if !reflect.DeepEqual(e.Fields["Secret"], []any{RedactedValue, RedactedValue}) {
		t.Fatalf("repeated redacted key: %v", e.Fields)
	}
}

func TestEventToken(t *testing.T) {
	for in, want := range map[string]string{
		"Newchannel":             "Newchannel",
		"Agent-Called_2":         "Agent-Called_2",
		"":                       "_bad_",
		"a.b":                    "_bad_a_b",
		"*":                      "_bad__",
		">":                      "_bad__",
		"with space":             "_bad_with_space",
		"_meta":                  "_bad__meta",
		"tab\there":              "_bad_tab_here",
		"é":                      "_bad___",
		strings.Repeat("x", 128): strings.Repeat("x", 128),
		strings.Repeat("y", 200): "_bad_" + strings.Repeat("y", 128),
	} {
		if got := EventToken([]byte(in)); got != want {
			t.Errorf("EventToken(%q) = %q, want %q", in, got, want)
		}
	}
	if got := EventSubject("ami", "pbx1", []byte("Newchannel")); got != "ami.events.pbx1.Newchannel" {
		t.Errorf("subject %q", got)
	}
	if got := MetaSubject("x.y", "pbx1"); got != "x.y.events.pbx1._meta" {
		t.Errorf("meta subject %q", got)
	}
}

func TestAppendMeta(t *testing.T) {
	list := loadEvents(t, "07-originate-events.server.raw")[:5]
	one := eventq.Item{Kind: eventq.KindSnapshot, Session: "s1", Time: t0, Action: "CoreShowChannels", Items: list[:1], Total: 1}
	// Room for the first item and the truncation tail, not for the second.
	oneItemBytes := len(AppendMeta(nil, "pbx1", &one, nil, SnapshotLimits{})) + snapshotTail + 30
	tests := []struct {
		name string
		it   eventq.Item
		lim  SnapshotLimits
		want map[string]any
	}{
		{
			name: "session_start",
			it:   eventq.Item{Kind: eventq.KindSessionStart, Session: "s1", Time: t0, Version: "9.0.0", Owner: "inst\"1"},
			want: map[string]any{"type": "session_start", "version": "9.0.0", "owner": "inst\"1"},
		},
		{
			name: "session_end",
			it:   eventq.Item{Kind: eventq.KindSessionEnd, Session: "s1", Time: t0, Reason: "eof", LastSeq: 42},
			want: map[string]any{"type": "session_end", "reason": "eof", "last_seq": 42.0},
		},
		{
			name: "gap",
			it:   eventq.Item{Kind: eventq.KindGap, Session: "s1", Time: t0, Reason: "buffer_full", FirstSeq: 5, LastSeq: 9, Count: 5},
			want: map[string]any{"type": "gap", "reason": "buffer_full", "first_seq": 5.0, "last_seq": 9.0, "count": 5.0},
		},
		{
			name: "snapshot whole",
			it:   eventq.Item{Kind: eventq.KindSnapshot, Session: "s1", Time: t0, Action: "CoreShowChannels", Items: list[:2], Total: 2},
			want: map[string]any{"type": "snapshot", "action": "CoreShowChannels", "items": []any{refAny(list[0]), refAny(list[1])}},
		},
		{
			name: "snapshot cut by count",
			it:   eventq.Item{Kind: eventq.KindSnapshot, Session: "s1", Time: t0, Action: "CoreShowChannels", Items: list, Total: 5},
			lim:  SnapshotLimits{MaxItems: 2},
			want: map[string]any{"type": "snapshot", "action": "CoreShowChannels", "items": []any{refAny(list[0]), refAny(list[1])}, "truncated": true, "total": 5.0},
		},
		{
			name: "snapshot cut by bytes",
			it:   eventq.Item{Kind: eventq.KindSnapshot, Session: "s1", Time: t0, Action: "CoreShowChannels", Items: list, Total: 5},
			lim:  SnapshotLimits{MaxBytes: oneItemBytes},
			want: map[string]any{"type": "snapshot", "action": "CoreShowChannels", "items": []any{refAny(list[0])}, "truncated": true, "total": 5.0},
		},
		{
			name: "snapshot dropped by the buffer",
			it:   eventq.Item{Kind: eventq.KindSnapshot, Session: "s1", Time: t0, Action: "QueueStatus", Total: 3},
			want: map[string]any{"type": "snapshot", "action": "QueueStatus", "items": []any{}, "truncated": true, "total": 3.0},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := AppendMeta(nil, "pbx1", &tc.it, nil, tc.lim)
			if tc.lim.MaxBytes > 0 && len(data) > tc.lim.MaxBytes {
				t.Fatalf("%d bytes over the %d limit", len(data), tc.lim.MaxBytes)
			}
			checkUniqueKeys(t, data)
			var got map[string]any
			if err := json.Unmarshal(data, &got); err != nil {
				t.Fatalf("%s: %v", data, err)
			}
			tc.want["node"], tc.want["session"], tc.want["time"] = "pbx1", "s1", "2026-11-23T00:41:56.154000321Z"
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("\n got %v\nwant %v", got, tc.want)
			}
			validate(t, MetaToken, data)
		})
	}
}

func refAny(m *amiwire.Message) any { return refFields(m, nil) }

func TestMetaIDs(t *testing.T) {
	for _, tc := range []struct {
		it   eventq.Item
		want string
	}{
		{eventq.Item{Kind: eventq.KindSessionStart, Session: "i-pbx1-1"}, "i-pbx1-1-start"},
		{eventq.Item{Kind: eventq.KindSessionEnd, Session: "i-pbx1-1"}, "i-pbx1-1-end"},
		{eventq.Item{Kind: eventq.KindGap, Session: "i-pbx1-1", FirstSeq: 17}, "i-pbx1-1-gap-17"},
		{eventq.Item{Kind: eventq.KindSnapshot, Session: "i-pbx1-1", Action: "Core Show\r\n", Seq: 3}, "i-pbx1-1-snap-Core_Show__-3"},
		{eventq.Item{Kind: eventq.KindSnapshot, Session: "i-pbx1-1", Action: "CoreShowChannels", Seq: 3, Count: 1}, "i-pbx1-1-snap-CoreShowChannels-3-2"},
	} {
		if got := string(appendMetaID(nil, &tc.it)); got != tc.want {
			t.Errorf("%v: %q, want %q", tc.it.Kind, got, tc.want)
		}
	}
}

func BenchmarkAppendEvent(b *testing.B) {
	events := loadEvents(b, "07-originate-events.server.raw")
	items := make([]eventq.Item, len(events))
	var size int
	for i, m := range events {
		items[i] = eventq.Item{Kind: eventq.KindEvent, Session: "a1b2c3-pbx1-1795398116", Seq: uint64(i + 1), Time: t0, Msg: m}
		size += m.Size()
	}
	redact := RedactFields(DefaultRedactFields...)
	buf := make([]byte, 0, 64<<10)
	b.SetBytes(int64(size / len(events)))
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		buf = AppendEvent(buf[:0], "pbx1", &items[i], redact)
		if i++; i == len(items) {
			i = 0
		}
	}
}
