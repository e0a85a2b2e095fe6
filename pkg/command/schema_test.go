package command

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// TestRequestExamples: the schema and the decoder agree on every example
// request in testdata/requests: valid-* pass both, invalid-* fail both.
func TestRequestExamples(t *testing.T) {
	_, rs := testenv.Schemas(t)
	files, err := filepath.Glob(filepath.Join("testdata", "requests", "*.json"))
	if err != nil || len(files) < 10 {
		t.Fatalf("examples: %v, %d files", err, len(files))
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			schemaErr := validate(t, rs, data)
			subject := ""
			if strings.HasPrefix(name, "valid-subject-") {
				subject = "QueueStatus"
			}
			_, decErr := DecodeRequest(data, subject, 0)
			switch {
			case strings.HasPrefix(name, "valid-") && (schemaErr != nil || decErr != nil):
				t.Fatalf("valid example refused: schema: %v; decoder: %v", schemaErr, decErr)
			case strings.HasPrefix(name, "invalid-") && (schemaErr == nil || decErr == nil):
				t.Fatalf("invalid example accepted: schema: %v; decoder: %v", schemaErr, decErr)
			}
		})
	}
}

// TestRequestSchemaEmbeddedExamples checks the examples inside the schema.
func TestRequestSchemaEmbeddedExamples(t *testing.T) {
	_, rs := testenv.Schemas(t)
	raw, err := os.ReadFile(filepath.Join("..", "..", "schemas", "action-request.schema.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc struct{ Examples []json.RawMessage }
	if err := json.Unmarshal(raw, &doc); err != nil || len(doc.Examples) == 0 {
		t.Fatalf("examples: %v (%d)", err, len(doc.Examples))
	}
	for i, ex := range doc.Examples {
		if err := validate(t, rs, ex); err != nil {
			t.Errorf("example %d: %v", i, err)
		}
		if _, err := DecodeRequest(ex, "Command", 0); err != nil && !strings.Contains(err.Error(), "does not match") {
			t.Errorf("example %d refused by the decoder: %v", i, err)
		}
	}
}

// validate is the schema rs's verdict on data, which must be JSON.
func validate(t *testing.T, rs *jsonschema.Schema, data []byte) error {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	return rs.Validate(v)
}
