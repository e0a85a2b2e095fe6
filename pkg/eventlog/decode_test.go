package eventlog

import (
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/publish"
)

func eventPayload(node, session string, seq uint64, m *amiwire.Message) []byte {
	return StoredEvent("ami", node, session, seq, T0, m).Data
}

func decodeOne(t testing.TB, subject string, data []byte) *Entry {
	t.Helper()
	d := newDecoder("ami")
	e := &Entry{}
	d.decode(e, 7, subject, data)
	return e
}

func TestDecodeEventFieldsConvention(t *testing.T) {
	m := AMIMessage("Event", "VarSet", "Channel", "Local/200@demo-00000002;1", "Variable", "A=1",
		"AccountCode", "", "Variable", "B=\"2\"\\", "Note", "tab\there\r\n", "", "no colon line", "Uni", "ü€𝄞")
	e := decodeOne(t, "ami.events.pbx1.VarSet", eventPayload("pbx1", "s1", 42, m))
	if e.Kind != KindEvent {
		t.Fatalf("kind %v: %v", e.Kind, e.Invalid.Err)
	}
	if e.StreamSeq != 7 || e.Node != "pbx1" || e.Session != "s1" || e.Seq != 42 || !e.Time.Equal(T0) || e.Event.Name != "VarSet" {
		t.Fatalf("entry %+v", e)
	}
	want := Fields{
		{Key: "Event", Value: "VarSet", Values: []string{"VarSet"}},
		{Key: "Channel", Value: "Local/200@demo-00000002;1", Values: []string{"Local/200@demo-00000002;1"}},
		{Key: "Variable", Value: "A=1", Values: []string{"A=1", "B=\"2\"\\"}},
		{Key: "AccountCode", Value: "", Values: []string{""}},
		{Key: "Note", Value: "tab\there\r\n", Values: []string{"tab\there\r\n"}},
		{Key: "", Value: "no colon line", Values: []string{"no colon line"}},
		{Key: "Uni", Value: "ü€𝄞", Values: []string{"ü€𝄞"}},
	}
	if !reflect.DeepEqual(e.Event.Fields, want) {
		t.Fatalf("fields\n got %q\nwant %q", e.Event.Fields, want)
	}
	if got := e.Event.Fields.Values("Variable"); !reflect.DeepEqual(got, []string{"A=1", "B=\"2\"\\"}) {
		t.Fatalf("Values(Variable) = %q", got)
	}
	if v, ok := e.Event.Fields.Lookup("AccountCode"); !ok || v != "" {
		t.Fatalf("Lookup(AccountCode) = %q, %v", v, ok)
	}
	if _, ok := e.Event.Fields.Lookup("accountcode"); ok {
		t.Fatal("keys must compare exactly")
	}
	if e.Event.Fields.Values("Nope") != nil || e.Event.Fields.Get("Nope") != "" {
		t.Fatal("absent key has values")
	}
}

func TestDecodeMarkers(t *testing.T) {
	meta := func(it eventq.Item) []byte { return StoredMeta("ami", "pbx1", it).Data }
	const subj = "ami.events.pbx1._meta"
	e := decodeOne(t, subj, meta(eventq.Item{Kind: eventq.KindSessionStart, Session: "s1", Version: "5.0.2", Owner: "i1"}))
	if e.Kind != KindSessionStart || e.Start.Version != "5.0.2" || e.Start.Owner != "i1" || e.Session != "s1" {
		t.Fatalf("start %+v", e)
	}
	e = decodeOne(t, subj, meta(eventq.Item{Kind: eventq.KindSessionEnd, Session: "s1", Reason: "eof", LastSeq: 9}))
	if e.Kind != KindSessionEnd || e.End != (SessionEnd{Reason: "eof", LastSeq: 9}) || e.Seq != 9 {
		t.Fatalf("end %+v", e)
	}
	e = decodeOne(t, subj, meta(eventq.Item{Kind: eventq.KindGap, Session: "s1", FirstSeq: 3, LastSeq: 5, Count: 3, Reason: "buffer_full"}))
	if e.Kind != KindGap || e.Gap != (Gap{FirstSeq: 3, LastSeq: 5, Count: 3, Reason: ReasonBufferFull}) || e.Seq != 5 {
		t.Fatalf("gap %+v", e)
	}
	items := []*amiwire.Message{
		AMIMessage("Event", "CoreShowChannel", "Channel", "PJSIP/100-1", "Uniqueid", "1.1"),
		AMIMessage("Event", "CoreShowChannel", "Channel", "PJSIP/200-2", "Uniqueid", "1.2", "Variable", "X=1", "Variable", "Y=2"),
	}
	e = decodeOne(t, subj, meta(eventq.Item{Kind: eventq.KindSnapshot, Session: "s1", Action: "CoreShowChannels", Items: items, Total: 2}))
	if e.Kind != KindSnapshot || e.Snapshot.Action != "CoreShowChannels" || e.Snapshot.Truncated || e.Snapshot.Total != 2 ||
		len(e.Snapshot.Items) != 2 || e.Snapshot.Items[0].Get("Uniqueid") != "1.1" || e.Snapshot.Items[1].Get("Uniqueid") != "1.2" ||
		!reflect.DeepEqual(e.Snapshot.Items[1].Values("Variable"), []string{"X=1", "Y=2"}) {
		t.Fatalf("snapshot %+v", e.Snapshot)
	}
	// Cut short by the item cap: truncated with the total returned.
	data := publish.AppendMeta(nil, "pbx1", &eventq.Item{Kind: eventq.KindSnapshot, Session: "s1", Time: T0,
		Action: "CoreShowChannels", Items: items, Total: 2}, nil, publish.SnapshotLimits{MaxItems: 1})
	e = decodeOne(t, subj, data)
	if e.Kind != KindSnapshot || !e.Snapshot.Truncated || e.Snapshot.Total != 2 || len(e.Snapshot.Items) != 1 {
		t.Fatalf("truncated snapshot %+v", e.Snapshot)
	}
	// Lost to a full buffer: no items, truncated, total.
	e = decodeOne(t, subj, meta(eventq.Item{Kind: eventq.KindSnapshot, Session: "s1", Action: "CoreShowChannels", Total: 40}))
	if e.Kind != KindSnapshot || !e.Snapshot.Truncated || e.Snapshot.Total != 40 || len(e.Snapshot.Items) != 0 {
		t.Fatalf("lost snapshot %+v", e.Snapshot)
	}
}

func TestDecodeInvalid(t *testing.T) {
	good := string(eventPayload("pbx1", "s1", 1, AMIMessage("Event", "Hangup", "Uniqueid", "1.1")))
	cases := []struct {
		name, subject, data, want string
	}{
		{"not json", "ami.events.pbx1.Hangup", "garbage", "want an object"},
		{"truncated", "ami.events.pbx1.Hangup", good[:len(good)-3], "end of input"},
		{"trailing", "ami.events.pbx1.Hangup", good + "x", "trailing data"},
		{"subject prefix", "other.events.pbx1.Hangup", good, "not under"},
		{"subject short", "ami.events.pbx1", good, "not ami.events.<node>.<event>"},
		{"subject long", "ami.events.pbx1.Hangup.x", good, "not ami.events.<node>.<event>"},
		{"node mismatch", "ami.events.pbx2.Hangup", good, `payload node "pbx1"`},
		{"no seq", "ami.events.pbx1.Hangup", strings.Replace(good, `"seq":1,`, ``, 1), "missing seq"},
		{"seq zero", "ami.events.pbx1.Hangup", strings.Replace(good, `"seq":1,`, `"seq":0,`, 1), "seq 0"},
		{"seq negative", "ami.events.pbx1.Hangup", strings.Replace(good, `"seq":1,`, `"seq":-1,`, 1), "non-negative integer"},
		{"seq float", "ami.events.pbx1.Hangup", strings.Replace(good, `"seq":1,`, `"seq":1.5,`, 1), "want an integer"},
		{"seq overflow", "ami.events.pbx1.Hangup", strings.Replace(good, `"seq":1,`, `"seq":18446744073709551616,`, 1), "overflows"},
		{"bad time", "ami.events.pbx1.Hangup", strings.Replace(good, `"time":"`, `"time":"x`, 1), "not RFC 3339"},
		{"field number", "ami.events.pbx1.Hangup", strings.Replace(good, `"Uniqueid":"1.1"`, `"Uniqueid":11`, 1), "want a string or an array"},
		{"field empty array", "ami.events.pbx1.Hangup", strings.Replace(good, `"Uniqueid":"1.1"`, `"Uniqueid":[]`, 1), "want a string"},
		{"control char", "ami.events.pbx1.Hangup", strings.Replace(good, `"1.1"`, "\"1\x01\"", 1), "control character"},
		{"bad escape", "ami.events.pbx1.Hangup", strings.Replace(good, `"1.1"`, `"1\x"`, 1), "bad escape"},
		{"unknown marker", "ami.events.pbx1._meta", `{"node":"pbx1","type":"reboot","time":"2026-11-23T01:41:56Z","session":"s1"}`, `marker type "reboot"`},
		{"gap missing count", "ami.events.pbx1._meta", `{"node":"pbx1","type":"gap","time":"2026-11-23T01:41:56Z","session":"s1","first_seq":2,"last_seq":3,"reason":"buffer_full"}`, "missing count"},
		{"gap disagrees", "ami.events.pbx1._meta", `{"node":"pbx1","type":"gap","time":"2026-11-23T01:41:56Z","session":"s1","first_seq":2,"last_seq":3,"count":5,"reason":"buffer_full"}`, "do not agree"},
		{"truncated no total", "ami.events.pbx1._meta", `{"node":"pbx1","type":"snapshot","time":"2026-11-23T01:41:56Z","session":"s1","action":"A","items":[],"truncated":true}`, "without total"},
		{"event on meta", "ami.events.pbx1._meta", good, "missing type"},
		{"deep unknown", "ami.events.pbx1.Hangup", strings.Replace(good, `{"node"`, `{"x":`+strings.Repeat("[", 100)+strings.Repeat("]", 100)+`,"node"`, 1), "too deep"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			e := decodeOne(t, c.subject, []byte(c.data))
			if e.Kind != KindInvalid {
				t.Fatalf("kind %v, want invalid", e.Kind)
			}
			if !errors.Is(e.Invalid.Err, ErrInvalidMessage) || !strings.Contains(e.Invalid.Err.Error(), c.want) {
				t.Fatalf("err %v, want %q", e.Invalid.Err, c.want)
			}
			if e.StreamSeq != 7 || e.Invalid.Subject != c.subject || string(e.Invalid.Data) != c.data {
				t.Fatalf("invalid entry %+v", e)
			}
		})
	}
}

func TestDecodeToleratesWhitespaceAndNewKeys(t *testing.T) {
	data := ` { "later" : {"a":[1,2.5e3,null,true,"x"]} , "node":"pbx1","event":"A\u00fc\ud834\udd1e","session":"s1","seq":3,
	"time":"2026-11-23T01:41:56.1Z","fields":{ "Event" : "A" , "K\"ey":[ "1" , "2\n" ] } } `
	e := decodeOne(t, "ami.events.pbx1.A", []byte(data))
	if e.Kind != KindEvent {
		t.Fatalf("kind %v: %v", e.Kind, e.Invalid.Err)
	}
	if e.Event.Name != "Aü𝄞" || e.Event.Fields.Get(`K"ey`) != "1" || e.Event.Fields.Values(`K"ey`)[1] != "2\n" {
		t.Fatalf("entry %+v", e)
	}
}

func TestDecodeKeysInAnyOrder(t *testing.T) {
	// A snapshot whose payload also holds "fields", and an event whose
	// payload also holds "items": neither overwrites the other's storage.
	snap := `{"items":[{"Event":"CoreShowChannel","Uniqueid":"1.1"},{"Event":"CoreShowChannel","Uniqueid":"1.2"}],` +
		`"fields":{"A":"x","B":["y","z"]},"node":"pbx1","type":"snapshot","time":"2026-11-23T01:41:56Z","session":"s1","action":"CoreShowChannels"}`
	e := decodeOne(t, "ami.events.pbx1._meta", []byte(snap))
	if e.Kind != KindSnapshot || len(e.Snapshot.Items) != 2 || e.Snapshot.Items[0].Get("Uniqueid") != "1.1" ||
		e.Snapshot.Items[1].Get("Uniqueid") != "1.2" || len(e.Snapshot.Items[1]) != 2 {
		t.Fatalf("snapshot %+v", e.Snapshot)
	}
	ev := `{"fields":{"Event":"Hangup","Uniqueid":"1.1"},"items":[{"X":"1","Y":"2","Z":"3"}],` +
		`"node":"pbx1","event":"Hangup","session":"s1","seq":1,"time":"2026-11-23T01:41:56Z"}`
	e = decodeOne(t, "ami.events.pbx1.Hangup", []byte(ev))
	if e.Kind != KindEvent || len(e.Event.Fields) != 2 || e.Event.Fields.Get("Uniqueid") != "1.1" {
		t.Fatalf("event %+v", e.Event)
	}
}

func TestDecodeReusesStorage(t *testing.T) {
	d := newDecoder("ami")
	data := eventPayload("pbx1", "s1", 42, AMIMessage("Event", "Newchannel", "Channel", "PJSIP/100-1", "Uniqueid", "1.1",
		"Variable", "A=1", "Variable", "B=2", "Context", "default", "Exten", "100", "Priority", "1"))
	e := &Entry{}
	d.decode(e, 1, "ami.events.pbx1.Newchannel", data)
	allocs := testing.AllocsPerRun(100, func() {
		d.decode(e, 1, "ami.events.pbx1.Newchannel", data)
	})
	if allocs > 0 {
		t.Fatalf("decode allocates %v times per event, want 0", allocs)
	}
	if e.Kind != KindEvent {
		t.Fatal(e.Invalid.Err)
	}
}

// TestDecodeFieldForms mixes, in one fields object, members the one-pass
// reader takes ("k":"v") with every form it leaves to the general one: white
// space around the colon and the comma, escapes in a key or a value, an
// array, a member cut short.
func TestDecodeFieldForms(t *testing.T) {
	ev := `{"node":"pbx1","event":"E","session":"s1","seq":1,"time":"2026-11-23T01:41:56Z","fields":` +
		`{"A":"1", "B" :"2","C\u0041":"3","D":"x\"y","E":["a","b"] ,"F":"6",` + "\n" + `"G":"","":"h"}}`
	e := decodeOne(t, "ami.events.pbx1.E", []byte(ev))
	if e.Kind != KindEvent {
		t.Fatal(e.Invalid.Err)
	}
	want := Fields{
		{Key: "A", Value: "1", Values: []string{"1"}},
		{Key: "B", Value: "2", Values: []string{"2"}},
		{Key: "CA", Value: "3", Values: []string{"3"}},
		{Key: "D", Value: `x"y`, Values: []string{`x"y`}},
		{Key: "E", Value: "a", Values: []string{"a", "b"}},
		{Key: "F", Value: "6", Values: []string{"6"}},
		{Key: "G", Value: "", Values: []string{""}},
		{Key: "", Value: "h", Values: []string{"h"}},
	}
	if !reflect.DeepEqual(e.Event.Fields, want) {
		t.Fatalf("got %q\nwant %q", e.Event.Fields, want)
	}
	for _, bad := range []string{`{"A":"1`, `{"A":"1"`, `{"A":`, `{"A"`, `{"A":"1",}`, `{"A":"1""B":"2"}`, `{"A":"1"]`} {
		payload := `{"node":"pbx1","event":"E","session":"s1","seq":1,"time":"2026-11-23T01:41:56Z","fields":` + bad + `}`
		if e := decodeOne(t, "ami.events.pbx1.E", []byte(payload)); e.Kind != KindInvalid {
			t.Errorf("fields %s: decoded as %v %q", bad, e.Kind, e.Event.Fields)
		}
	}
}

// TestDecodeStorageGrows decodes events whose fields outgrow the reused
// storage in the middle of the message, then fewer, then more again: every
// field keeps its values (a single value's Values is its Value field, which
// moves with the storage), and nothing of one event shows in the next.
func TestDecodeStorageGrows(t *testing.T) {
	d := newDecoder("ami")
	e := &Entry{}
	for _, n := range []int{300, 5, 1000, 2} {
		kv := []string{"Event", "Big"}
		want := Fields{{Key: "Event", Value: "Big", Values: []string{"Big"}}}
		for i := range n {
			k, v := "K"+strconv.Itoa(i), "v"+strconv.Itoa(n)+"."+strconv.Itoa(i)
			kv = append(kv, k, v)
			vals := []string{v}
			if i%7 == 0 {
				// a repeated key: an array of values in the payload
				kv = append(kv, k, v+"b")
				vals = append(vals, v+"b")
			}
			want = append(want, Field{Key: k, Value: v, Values: vals})
		}
		d.decode(e, uint64(n), "ami.events.pbx1.Big", eventPayload("pbx1", "s1", 1, AMIMessage(kv...)))
		if e.Kind != KindEvent {
			t.Fatalf("%d fields: %v", n, e.Invalid.Err)
		}
		if !reflect.DeepEqual(e.Event.Fields, want) {
			t.Fatalf("%d fields: got %q\nwant %q", n, e.Event.Fields, want)
		}
		for _, f := range e.Event.Fields {
			if len(f.Values) == 1 && cap(f.Values) != 1 {
				t.Fatalf("%d fields: %s's Values has room to append into the storage (cap %d)", n, f.Key, cap(f.Values))
			}
		}
	}
}

func TestParseAckReply(t *testing.T) {
	for _, c := range []struct {
		reply      string
		sseq, ndel uint64
	}{
		{"$JS.ACK.AMI_EVENTS.c1.1.42.40.1700000000000000000.3", 42, 1},
		{"$JS.ACK.hub.ACCHASH.AMI_EVENTS.c1.2.42.40.1700000000000000000.3.rand", 42, 2},
		{"$JS.ACK._.ACCHASH.AMI_EVENTS.c1.2.43.40.1700000000000000000.3", 43, 2},
		{"_INBOX.x", 0, 0},
		{"$JS.ACK.a.b", 0, 0},
	} {
		s, n := parseAckReply(c.reply)
		if s != c.sseq || n != c.ndel {
			t.Errorf("%s: got %d %d, want %d %d", c.reply, s, n, c.sseq, c.ndel)
		}
	}
}

// FuzzDecode feeds the decoder arbitrary payloads: it never panics, and
// whatever it accepts is valid JSON whose values agree with encoding/json.
func FuzzDecode(f *testing.F) {
	f.Add(false, eventPayload("pbx1", "s1", 1, AMIMessage("Event", "Hangup", "Uniqueid", "1.1", "Variable", "a", "Variable", "b")))
	f.Add(true, StoredMeta("ami", "pbx1", eventq.Item{Kind: eventq.KindGap, Session: "s1",
		FirstSeq: 2, LastSeq: 3, Count: 2, Reason: "buffer_full"}).Data)
	f.Add(true, StoredMeta("ami", "pbx1", eventq.Item{Kind: eventq.KindSnapshot, Session: "s1",
		Action: "CoreShowChannels", Items: []*amiwire.Message{AMIMessage("Event", "CoreShowChannel", "X", "\"\\\x01")}}).Data)
	f.Add(false, []byte(`{"node":"pbx1","event":"\ud800\u0041","session":"s","seq":1,"time":"2026-11-23T01:41:56Z","fields":{}}`))
	f.Fuzz(func(t *testing.T, meta bool, data []byte) {
		subject := "ami.events.pbx1.Ev"
		if meta {
			subject = "ami.events.pbx1._meta"
		}
		e := decodeOne(t, subject, data)
		if e.Kind == KindInvalid {
			if !errors.Is(e.Invalid.Err, ErrInvalidMessage) {
				t.Fatalf("invalid without ErrInvalidMessage: %v", e.Invalid.Err)
			}
			return
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		if !utf8.Valid(data) {
			return // encoding/json replaces bad bytes; the reader keeps them
		}
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatal(err)
		}
		if doc["node"] != e.Node || doc["session"] != e.Session {
			t.Fatalf("node/session %q %q vs %v", e.Node, e.Session, doc)
		}
		if e.Kind == KindEvent {
			if doc["event"] != e.Event.Name {
				t.Fatalf("event %q vs %v", e.Event.Name, doc["event"])
			}
			checkFields(t, e.Event.Fields, doc["fields"])
		}
		if e.Kind == KindSnapshot {
			items, _ := doc["items"].([]any)
			if len(items) != len(e.Snapshot.Items) {
				t.Fatalf("%d items vs %d", len(e.Snapshot.Items), len(items))
			}
			for i := range items {
				checkFields(t, e.Snapshot.Items[i], items[i])
			}
		}
	})
}

func checkFields(t *testing.T, f Fields, doc any) {
	t.Helper()
	m, ok := doc.(map[string]any)
	if !ok {
		t.Fatalf("fields %v not an object", doc)
	}
	seen := map[string]bool{}
	for _, fl := range f {
		if seen[fl.Key] {
			return // a duplicate key: encoding/json keeps the last only
		}
		seen[fl.Key] = true
	}
	if len(seen) != len(m) {
		t.Fatalf("%d fields vs %d", len(seen), len(m))
	}
	for _, fl := range f {
		switch v := m[fl.Key].(type) {
		case string:
			if len(fl.Values) != 1 || fl.Value != v {
				t.Fatalf("field %q: %q vs %q", fl.Key, fl.Values, v)
			}
		case []any:
			if len(fl.Values) != len(v) || fl.Value != fl.Values[0] {
				t.Fatalf("field %q: %q vs %v", fl.Key, fl.Values, v)
			}
			for i := range v {
				if v[i] != fl.Values[i] {
					t.Fatalf("field %q: %q vs %v", fl.Key, fl.Values, v)
				}
			}
		default:
			t.Fatalf("field %q: %T", fl.Key, v)
		}
	}
}

// FuzzEventRoundTrip: any AMI header the ingest encodes decodes to itself
// (bytes that are not UTF-8 become U+FFFD, as schemas/README.md says).
func FuzzEventRoundTrip(f *testing.F) {
	f.Add("Channel", "PJSIP/100-1", "Variable", "A=1", "B=2")
	f.Add("", "line\x00\xff", "Output", "\"q\"", "\\")
	f.Fuzz(func(t *testing.T, k1, v1, k2, v2a, v2b string) {
		if k1 == k2 || k1 == "Event" || k2 == "Event" {
			return
		}
		m := AMIMessage("Event", "E", k1, v1, k2, v2a, k2, v2b)
		e := decodeOne(t, "ami.events.pbx1.E", eventPayload("pbx1", "s1", 1, m))
		if e.Kind != KindEvent {
			t.Fatalf("kind %v: %v", e.Kind, e.Invalid.Err)
		}
		// JSON carries each byte of invalid UTF-8 as U+FFFD, as a
		// conversion to []rune does.
		fix := func(s string) string { return string([]rune(s)) }
		want := Fields{
			{Key: "Event", Value: "E", Values: []string{"E"}},
			{Key: fix(k1), Value: fix(v1), Values: []string{fix(v1)}},
			{Key: fix(k2), Value: fix(v2a), Values: []string{fix(v2a), fix(v2b)}},
		}
		if fix(k1) == fix(k2) {
			return // distinct raw keys that map to one after U+FFFD
		}
		if !reflect.DeepEqual(e.Event.Fields, want) {
			t.Fatalf("got %q\nwant %q", e.Event.Fields, want)
		}
	})
}

// BenchmarkDecode is the package's own cost per event, no NATS: decoding a
// real event's payload and tracking its node and seq. In "reused" the
// payloads are decoded in place (nothing allocates, the GC never runs); in
// "fresh" each one is first copied into a new buffer, as nats.go gives
// every message a payload of its own: that allocation keeps the GC
// running, as in a real read, so the decoder's stores pay write barriers
// and the payload is new to the cache (1 alloc per op, the copy).
func BenchmarkDecode(b *testing.B) {
	m := AMIMessage("Event", "Newchannel", "Privilege", "call,all", "Channel", "PJSIP/100-00000001",
		"ChannelState", "0", "ChannelStateDesc", "Down", "CallerIDNum", "100", "CallerIDName", "Alice",
		"ConnectedLineNum", "<unknown>", "ConnectedLineName", "<unknown>", "Language", "en", "AccountCode", "",
		"Context", "from-internal", "Exten", "200", "Priority", "1", "Uniqueid", "1700000000.1",
		"Linkedid", "1700000000.1")
	payloads := make([][]byte, 4096)
	for i := range payloads {
		payloads[i] = eventPayload("pbx1", "s1", uint64(i+1), m)
	}
	for _, fresh := range []bool{false, true} {
		name := "reused"
		if fresh {
			name = "fresh"
		}
		b.Run(name, func(b *testing.B) {
			r := &Reader{dec: newDecoder("ami"), tr: newTracker(DefaultMaxNodes)}
			b.SetBytes(int64(len(payloads[0])))
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				seq := uint64(i + 1)
				p := payloads[i%len(payloads)]
				if fresh {
					p = append([]byte(nil), p...)
				}
				// The seq in the payload repeats; restart the node's track
				// then so that no jump is reported.
				if i%len(payloads) == 0 {
					r.tr = newTracker(DefaultMaxNodes)
				}
				if err := r.take(seq, "ami.events.pbx1.Newchannel", p); err != nil {
					b.Fatal(err)
				}
				if r.out[0].Kind != KindEvent || r.outN != 1 {
					b.Fatalf("entry %+v", r.out[0])
				}
			}
		})
	}
}

func TestDecodeLeavesOnlyItsKindSet(t *testing.T) {
	d := newDecoder("ami")
	e := &Entry{}
	d.decode(e, 1, "ami.events.pbx1.Hangup", eventPayload("pbx1", "s1", 1, AMIMessage("Event", "Hangup", "Uniqueid", "1.1")))
	gap := StoredMeta("ami", "pbx1", eventq.Item{Kind: eventq.KindGap, Session: "s1",
		FirstSeq: 2, LastSeq: 3, Count: 2, Reason: "buffer_full"}).Data
	d.decode(e, 2, "ami.events.pbx1._meta", gap)
	want := Entry{Kind: KindGap, StreamSeq: 2, Node: "pbx1", Session: "s1", Seq: 3, Time: T0,
		Gap: Gap{FirstSeq: 2, LastSeq: 3, Count: 2, Reason: "buffer_full"}}
	if !reflect.DeepEqual(*e, want) {
		t.Fatalf("got %+v\nwant %+v", *e, want)
	}
	d.decode(e, 3, "ami.events.pbx1.Hangup", []byte("{"))
	if e.Kind != KindInvalid || e.Gap != (Gap{}) || e.Session != "" || e.Seq != 0 || !e.Time.IsZero() {
		t.Fatalf("invalid after gap %+v", *e)
	}
	d.decode(e, 4, "ami.events.pbx1.Hangup", eventPayload("pbx1", "s1", 4, AMIMessage("Event", "Hangup")))
	if e.Kind != KindEvent || !reflect.DeepEqual(e.Invalid, Invalid{}) {
		t.Fatalf("event after invalid %+v", *e)
	}
}
