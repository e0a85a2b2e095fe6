package state

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
)

const schemaBase = "https://github.com/amibus/amibus/schemas/"

// The value schemas are the published contract: compiled from schemas/.
func compileSchemas(t *testing.T) map[string]*jsonschema.Schema {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	out := map[string]*jsonschema.Schema{}
	names := []string{"channel", "bridge", "queue", "status", "answer"}
	// The answer refers to the others by their $id: register each file
	// under it so that nothing is fetched.
	for _, name := range names {
		data, err := os.ReadFile(filepath.Join("..", "..", "schemas", "state-"+name+".schema.json"))
		if err != nil {
			t.Fatal(err)
		}
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
		if err != nil {
			t.Fatal(err)
		}
		if err := c.AddResource(schemaBase+"state-"+name+".schema.json", doc); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range names {
		s, err := c.Compile(schemaBase + "state-" + name + ".schema.json")
		if err != nil {
			t.Fatalf("compile %s: %v", name, err)
		}
		out[name] = s
	}
	return out
}

func validateJSON(t *testing.T, s *jsonschema.Schema, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Validate(doc); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
}

// TestValuesMatchSchemas validates every value and whole-state answer of
// states built from random sequences, and that the schemas reject a value
// with a field they do not know.
func TestValuesMatchSchemas(t *testing.T) {
	sc := compileSchemas(t)
	f := newFeeder()
	f.newchannel("1.1")
	f.bridgeCreate("b1")
	f.enter("b1", "1.1")
	f.ev("QueueMemberAdded", "Queue", "support", "Interface", "Local/100@demo", "Status", "1")
	f.ev("QueueCallerJoin", append(chanBlock("1.1", "PJSIP/a", 6), "Queue", "support", "Position", "1")...)
	f.marker(KindGap)
	states := []*Node{f.n}
	for seed := uint64(0); seed < 20; seed++ {
		r := rand.New(rand.NewPCG(seed, 3))
		b := make([]byte, 600)
		for i := range b {
			b[i] = byte(r.UintN(256))
		}
		n := NewNode("pbx1")
		replayBytes(n, b)
		states = append(states, n)
	}
	for _, n := range states {
		snap := n.Snapshot()
		validateJSON(t, sc["answer"], snap)
		validateJSON(t, sc["status"], snap.Status)
		for _, c := range snap.Channels {
			validateJSON(t, sc["channel"], c)
		}
		for _, b := range snap.Bridges {
			validateJSON(t, sc["bridge"], b)
		}
		for _, q := range snap.Queues {
			validateJSON(t, sc["queue"], q)
		}
	}
	doc, _ := jsonschema.UnmarshalJSON(bytes.NewReader([]byte(`{"id":"b","members":[],"created":"2026-01-01T00:00:00Z","seq":1,"extra":1}`)))
	if sc["bridge"].Validate(doc) == nil {
		t.Fatal("bridge schema accepts an unknown field")
	}
}
