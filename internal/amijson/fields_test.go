package amijson

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/amibus/amibus/pkg/amiwire"
)

func message(kv ...string) *amiwire.Message {
	m := new(amiwire.Message)
	for i := 0; i+1 < len(kv); i += 2 {
		m.Add(kv[i], kv[i+1])
	}
	return m
}

func decode(t *testing.T, b []byte) map[string]any {
	t.Helper()
	var v map[string]any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("invalid JSON %s: %v", b, err)
	}
	return v
}

func isOutput(k []byte) bool { return len(k) == 0 || amiwire.EqualFold(k, "Output") }

func TestAppendFieldsGroupsSkipsAndRedacts(t *testing.T) {
	m := message("Response", "Success", "Output", "line 1", "Variable", "A=1", "", "raw line",
		"Output", "line 2", "Variable", "B=2", "Secret", "s3cret", "Variable", "C=3")
	cases := []struct {
		name         string
		skip, redact FieldFilter
		want         map[string]any
	}{
		{"all", nil, nil, map[string]any{
			"Response": "Success", "Output": []any{"line 1", "line 2"}, "": "raw line",
			"Variable": []any{"A=1", "B=2", "C=3"}, "Secret": "s3cret"}},
		{"skip output", isOutput, nil, map[string]any{
			"Response": "Success", "Variable": []any{"A=1", "B=2", "C=3"}, "Secret": "s3cret"}},
		{"redact", isOutput, func(k []byte) bool { return amiwire.EqualFold(k, "secret") }, map[string]any{
			"Response": "Success", "Variable": []any{"A=1", "B=2", "C=3"}, "Secret": RedactedValue}},
	}
	for _, c := range cases {
		got := decode(t, AppendFields(nil, m, c.skip, c.redact))
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
	}
}

// TestAppendFieldsLargeMatchesSmall: messages over smallFields take the
// sorted path; both paths must give the same object, skip included.
func TestAppendFieldsLargeMatchesSmall(t *testing.T) {
	for _, n := range []int{10, smallFields, smallFields + 1, 500} {
		m := new(amiwire.Message)
		want := map[string]any{}
		out := []any{}
		for i := 0; i < n; i++ {
			switch i % 3 {
			case 0:
				m.Add("Output", fmt.Sprint("o", i))
				out = append(out, fmt.Sprint("o", i))
			case 1:
				k := fmt.Sprint("K", i)
				m.Add(k, "v")
				want[k] = "v"
			case 2:
				m.Add("Rep", fmt.Sprint(i))
			}
		}
		var reps []any
		for i := 2; i < n; i += 3 {
			reps = append(reps, fmt.Sprint(i))
		}
		if len(reps) == 1 {
			want["Rep"] = reps[0]
		} else if len(reps) > 1 {
			want["Rep"] = reps
		}
		got := decode(t, AppendFields(nil, m, isOutput, nil))
		if !reflect.DeepEqual(got, want) {
			t.Errorf("n=%d: skipped Output still there or groups wrong: got %d keys, want %d", n, len(got), len(want))
		}
		all := decode(t, AppendFields(nil, m, nil, nil))
		if len(out) > 1 && !reflect.DeepEqual(all["Output"], out) {
			t.Errorf("n=%d: Output array %v, want %v", n, all["Output"], out)
		}
	}
}

func TestAppendFieldsDoesNotAllocate(t *testing.T) {
	m := message("Event", "Newchannel", "Privilege", "call,all", "Channel", "PJSIP/100-00000001",
		"ChanVariable", "A=1", "ChanVariable", "B=2", "Uniqueid", "1795397676.1")
	buf := make([]byte, 0, 4096)
	if n := testing.AllocsPerRun(100, func() { buf = AppendFields(buf[:0], m, isOutput, nil) }); n != 0 {
		t.Fatalf("%v allocations per message, want 0", n)
	}
}
