package publish

import (
	"bytes"
	"path/filepath"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

// The schemas are the published contract: tests compile them from the
// repository's schemas/ directory, not from a copy.
var schemas = sync.OnceValues(func() (map[string]*jsonschema.Schema, error) {
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	out := map[string]*jsonschema.Schema{}
	for _, name := range []string{"event", "meta"} {
		path, err := filepath.Abs(filepath.Join("..", "..", "schemas", name+".schema.json"))
		if err != nil {
			return nil, err
		}
		s, err := c.Compile(path)
		if err != nil {
			return nil, err
		}
		out[name] = s
	}
	return out, nil
})

// validate checks one published payload against the schema its subject's
// last token calls for.
func validate(t testing.TB, lastToken string, data []byte) {
	t.Helper()
	all, err := schemas()
	if err != nil {
		t.Fatalf("compile schemas: %v", err)
	}
	s := all["event"]
	if lastToken == MetaToken {
		s = all["meta"]
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("payload is not JSON: %v: %s", err, data)
	}
	if err := s.Validate(v); err != nil {
		t.Fatalf("payload does not match the %s schema: %v\n%s", lastToken, err, data)
	}
}

func TestSchemasRejectWrongMessages(t *testing.T) {
	all, err := schemas()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ schema, doc string }{
		{"event", `{"node":"pbx1","event":"X","session":"s","seq":0,"time":"2026-11-23T00:41:56Z","fields":{}}`},
		{"event", `{"node":"pbx.1","event":"X","session":"s","seq":1,"time":"2026-11-23T00:41:56Z","fields":{}}`},
		{"event", `{"node":"pbx1","event":"X","session":"s","seq":1,"time":"2026-11-23T00:41:56+01:00","fields":{}}`},
		{"event", `{"node":"pbx1","event":"X","session":"s","seq":1,"time":"2026-11-23T00:41:56Z","fields":{"A":["only one"]}}`},
		{"event", `{"node":"pbx1","event":"X","session":"s","seq":1,"time":"2026-11-23T00:41:56Z","fields":{"A":1}}`},
		{"event", `{"node":"pbx1","event":"X","session":"s","seq":1,"time":"2026-11-23T00:41:56Z","fields":{},"extra":1}`},
		{"meta", `{"node":"pbx1","type":"gap","time":"2026-11-23T00:41:56Z","session":"s","first_seq":1,"last_seq":1,"count":1,"reason":"filtered"}`},
		{"meta", `{"node":"pbx1","type":"session_start","time":"2026-11-23T00:41:56Z","session":"s","version":"9.0.0"}`},
		{"meta", `{"node":"pbx1","type":"snapshot","time":"2026-11-23T00:41:56Z","session":"s","action":"A","items":[],"truncated":true}`},
		{"meta", `{"node":"pbx1","type":"other","time":"2026-11-23T00:41:56Z","session":"s"}`},
	} {
		v, err := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(tc.doc)))
		if err != nil {
			t.Fatal(err)
		}
		if all[tc.schema].Validate(v) == nil {
			t.Errorf("%s schema accepted %s", tc.schema, tc.doc)
		}
	}
}
