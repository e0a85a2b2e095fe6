package publish

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/amibus/amibus/pkg/amiwire"
)

// loadEvents reads a server transcript from testdata and returns its events
// (responses are skipped). It splits lines as the AMI reader does: key up to
// the first colon, one space after it dropped, a line with no colon kept
// whole under the empty key.
func loadEvents(t testing.TB, name string) []*amiwire.Message {
	t.Helper()
	raw, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	var out []*amiwire.Message
	lines := strings.Split(string(raw), "\r\n")[1:] // banner
	m := &amiwire.Message{}
	for _, l := range lines {
		if l == "" {
			if m.Len() > 0 && bytes.EqualFold(m.Key(0), []byte("Event")) {
				out = append(out, m)
			}
			m = &amiwire.Message{}
			continue
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			m.Add("", l)
			continue
		}
		m.Add(k, strings.TrimPrefix(v, " "))
	}
	if len(out) == 0 {
		t.Fatalf("no events in %s", name)
	}
	return out
}

// jsonText is what encoding/json makes of s: each byte of invalid UTF-8
// becomes U+FFFD (as in a conversion to []rune).
func jsonText(s string) string { return string([]rune(s)) }

// refFields is the fields object a message must become, built the obvious
// way with maps: the reference AppendEvent's hand-written grouping is
// checked against.
func refFields(m *amiwire.Message, redact func([]byte) bool) map[string]any {
	count := map[string]int{}
	for i := 0; i < m.Len(); i++ {
		count[jsonText(string(m.Key(i)))]++
	}
	out := map[string]any{}
	for i := 0; i < m.Len(); i++ {
		k := jsonText(string(m.Key(i)))
		v := jsonText(string(m.Value(i)))
		if redact != nil && redact(m.Key(i)) {
			v = RedactedValue
		}
		if count[k] == 1 {
			out[k] = v
			continue
		}
		arr, _ := out[k].([]any)
		out[k] = append(arr, v)
	}
	return out
}
