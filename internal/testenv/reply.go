package testenv

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

// Reply is an action reply as requesters decode it; C is the type of the
// error code (pkg/command's Code in its own tests, string elsewhere).
type Reply[C ~string] struct {
	OK       bool                              `json:"ok"`
	Node     string                            `json:"node"`
	Action   string                            `json:"action"`
	ActionID string                            `json:"action_id"`
	Response string                            `json:"response"`
	Message  string                            `json:"message"`
	Fields   map[string]any                    `json:"fields"`
	Events   []struct{ Fields map[string]any } `json:"events"`
	Output   []string                          `json:"output"`
	Elapsed  *float64                          `json:"elapsed_ms"`
	Error    *struct {
		Code    C      `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
	// Raw is the reply as it came, for failure messages.
	Raw []byte `json:"-"`
}

// Outcome is the error code, or "ok".
func (r Reply[C]) Outcome() string {
	if r.OK {
		return "ok"
	}
	if r.Error == nil {
		return "<no error>"
	}
	return string(r.Error.Code)
}

// Field is a string field of the answer ("" when absent or not a string).
func (r Reply[C]) Field(key string) string {
	s, _ := r.Fields[key].(string)
	return s
}

// The shipped schemas, read from the repository so that a test fails when
// code and contract drift apart; compiled once per test binary.
var (
	schemaOnce             sync.Once
	replySchema, reqSchema *jsonschema.Schema
	schemaErr              error
)

// SchemaPath is the path of a shipped JSON schema, such as
// "action-reply.schema.json", wherever the test runs.
func SchemaPath(name string) string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "schemas", name)
}

func compileSchemas() error {
	schemaOnce.Do(func() {
		c := jsonschema.NewCompiler()
		replySchema, schemaErr = c.Compile(SchemaPath("action-reply.schema.json"))
		if schemaErr != nil {
			return
		}
		reqSchema, schemaErr = c.Compile(SchemaPath("action-request.schema.json"))
	})
	if schemaErr != nil {
		return fmt.Errorf("compile schemas: %w", schemaErr)
	}
	return nil
}

// Schemas are the compiled action reply and request schemas.
func Schemas(t testing.TB) (reply, req *jsonschema.Schema) {
	t.Helper()
	if err := compileSchemas(); err != nil {
		t.Fatal(err)
	}
	return replySchema, reqSchema
}

// CheckReply checks data against the shipped action reply schema and
// decodes it; safe to call from any goroutine.
func CheckReply[C ~string](data []byte) (Reply[C], error) {
	if err := compileSchemas(); err != nil {
		return Reply[C]{}, err
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(data))
	if err != nil {
		return Reply[C]{}, fmt.Errorf("reply is not JSON: %w\n%s", err, data)
	}
	if err := replySchema.Validate(v); err != nil {
		return Reply[C]{}, fmt.Errorf("reply does not match action-reply.schema.json: %w\n%s", err, data)
	}
	var r Reply[C]
	if err := json.Unmarshal(data, &r); err != nil {
		return Reply[C]{}, fmt.Errorf("decode reply: %w\n%s", err, data)
	}
	r.Raw = data
	return r, nil
}

// DecodeReply is CheckReply for the test goroutine: it fails the test.
func DecodeReply[C ~string](t testing.TB, data []byte) Reply[C] {
	t.Helper()
	r, err := CheckReply[C](data)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Outcome sends one request and returns the reply's error code, or "ok":
// the answer of any amibus request service (actions, state), whatever its
// schema.
func Outcome(t testing.TB, nc *nats.Conn, subject string, data []byte) string {
	t.Helper()
	m, err := nc.Request(subject, data, WaitLimit)
	if err != nil {
		t.Fatalf("%s: %v", subject, err)
	}
	var r struct {
		OK    bool `json:"ok"`
		Error *struct {
			Code string `json:"code"`
		} `json:"error"`
	}
	if err := json.Unmarshal(m.Data, &r); err != nil {
		t.Fatalf("%s: reply is not JSON: %v\n%s", subject, err, m.Data)
	}
	switch {
	case r.OK:
		return "ok"
	case r.Error == nil:
		return "<no error>"
	}
	return r.Error.Code
}
