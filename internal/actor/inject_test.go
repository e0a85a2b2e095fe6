package actor_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// TestInjectionRefusedBeforePBX sends requests that would forge AMI headers
// or smuggle a second action if they were written: each is refused
// bad_request, and the PBX receives nothing at all until the sentinel
// Ping that follows them.
func TestInjectionRefusedBeforePBX(t *testing.T) {
	e := newEnv(t, amisim.Config{}, 0, false, "actor:\n  max_request_bytes: 65536\n")
	manyFields := make([]string, 127)
	for i := range manyFields {
		manyFields[i] = fmt.Sprintf(`"F%d":"v"`, i)
	}
	cases := []struct{ name, subject, body string }{
		{"CRLF in a value", "ami.action.pbx1", `{"action":"Ping","fields":{"X":"a\r\nAction: Originate\r\nChannel: Local/100@demo"}}`},
		{"LF in a value", "ami.action.pbx1", `{"action":"Ping","fields":{"X":"a\nAction: Hangup"}}`},
		{"CR in a value", "ami.action.pbx1", `{"action":"Ping","fields":{"X":"a\rAction: Hangup"}}`},
		{"LF in an array element", "ami.action.pbx1", `{"action":"Ping","fields":{"Variable":["A=1","B=2\nAction: Hangup"]}}`},
		{"NUL in a value", "ami.action.pbx1", `{"action":"Ping","fields":{"X":"a\u0000b"}}`},
		{"CRLF in a key", "ami.action.pbx1", `{"action":"Ping","fields":{"X\r\nAction":"Hangup"}}`},
		{"colon in a key", "ami.action.pbx1", `{"action":"Ping","fields":{"Action: Hangup\r\nX":"y"}}`},
		{"space in a key", "ami.action.pbx1", `{"action":"Ping","fields":{"Bad Key":"v"}}`},
		{"ActionID field", "ami.action.pbx1", `{"action":"Ping","fields":{"ActionID":"mine"}}`},
		{"Action field", "ami.action.pbx1", `{"action":"Ping","fields":{"action":"Hangup"}}`},
		{"CRLF in the action", "ami.action.pbx1", `{"action":"Ping\r\nAction: Hangup"}`},
		{"colon in the action", "ami.action.pbx1", `{"action":"Ping:"}`},
		{"repeated key in another case", "ami.action.pbx1", `{"action":"Ping","fields":{"Channel":"a","channel":"b"}}`},
		{"line over 1022 bytes", "ami.action.pbx1", `{"action":"Ping","fields":{"X":"` + strings.Repeat("y", 1100) + `"}}`},
		{"more than 126 values", "ami.action.pbx1", `{"action":"Ping","fields":{` + strings.Join(manyFields, ",") + `}}`},
		{"body over max_request_bytes", "ami.action.pbx1", `{"action":"Ping","fields":{"X":"` + strings.Repeat("y", 100000) + `"}}`},
		{"deeply nested", "ami.action.pbx1", `{"action":"Ping","fields":{"X":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}}`},
	}
	before := len(e.sim.Received())
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := request(t, e.nc, c.subject, c.body)
			wantCode(t, r, "bad_request")
		})
	}
	// Each refusal was answered before the next request was sent, and the
	// session writes in order: if any had been written, it would be on the
	// wire before the sentinel.
	ping := request(t, e.nc, "ami.action.pbx1", `{"action":"Ping","fields":{"Marker":"sentinel"}}`)
	wantCode(t, ping, "ok")
	testenv.WaitSim(t, e.sim, "the sentinel", func() bool { return len(receivedWith(e.sim, "Marker", "sentinel")) == 1 })
	got := e.sim.Received()[before:]
	if len(got) != 1 || got[0].ActionID != ping.ActionID {
		t.Fatalf("the PBX received %d actions, want only the sentinel Ping: %+v", len(got), got)
	}
	for _, h := range got[0].Headers {
		if !strings.EqualFold(h[0], "Action") && !strings.EqualFold(h[0], "ActionID") && h[0] != "Marker" {
			t.Errorf("sentinel carried an unexpected header %q", h)
		}
	}
}
