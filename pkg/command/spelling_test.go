package command

import (
	"strings"
	"testing"
)

// TestSubjectSpelling: a known action named by the subject in any other
// case than Asterisk's is refused bad_request, naming the subject to use,
// before the Sender sees it; the right spelling and unknown actions pass.
func TestSubjectSpelling(t *testing.T) {
	snd := echoSender()
	env := newEnv(t, 0, Nodes{"pbx1": snd})
	for _, subj := range []string{"ami.action.pbx1.command", "ami.action.pbx1.COMMAND", "ami.action.pbx1.cOMMAND"} {
		r := env.request(t, subj, `{"fields":{"Command":"core show version"}}`)
		if r.OK || r.Error.Code != CodeBadRequest || !strings.Contains(r.Error.Message, `"Command"`) ||
			!strings.Contains(r.Error.Message, "ami.action.pbx1.Command") {
			t.Fatalf("%s: %+v", subj, r)
		}
	}
	for _, subj := range []string{"ami.action.pbx1.pjsipshowendpoints", "ami.action.pbx1.Sippeers", "ami.action.pbx1.getvar"} {
		if r := env.request(t, subj, ``); r.OK || r.Error.Code != CodeBadRequest {
			t.Fatalf("%s: %+v", subj, r)
		}
	}
	if n := snd.calls.Load(); n != 0 {
		t.Fatalf("the Sender ran %d misspelt actions", n)
	}
	for _, subj := range []string{"ami.action.pbx1.Command", "ami.action.pbx1.SIPpeers", "ami.action.pbx1.MyModuleAction", "ami.action.pbx1.mymoduleaction"} {
		if r := env.request(t, subj, ``); !r.OK {
			t.Fatalf("%s: %+v", subj, r)
		}
	}
}

// TestBodyFormOff: with the body form off, a request on
// <prefix>.action.<node> is refused bad_request naming the subject form,
// whatever its body says, and the subject form still runs.
func TestBodyFormOff(t *testing.T) {
	snd := echoSender()
	env := newEnv(t, 0, Nodes{"pbx1": snd}, WithBodyForm(false))
	for _, body := range []string{`{"action":"Ping"}`, `{"action":"Command","fields":{"Command":"core stop now"}}`, ``} {
		r := env.request(t, "ami.action.pbx1", body)
		if r.OK || r.Error.Code != CodeBadRequest || !strings.Contains(r.Error.Message, "ami.action.pbx1.<Action>") {
			t.Fatalf("body form %s: %+v", body, r)
		}
	}
	if n := snd.calls.Load(); n != 0 {
		t.Fatalf("the Sender ran %d body-form requests", n)
	}
	if r := env.request(t, "ami.action.pbx1.Ping", ``); !r.OK {
		t.Fatalf("subject form: %+v", r)
	}
	if r := env.request(t, "ami.action.pbx1.Ping", `{"action":"Command"}`); r.OK || r.Error.Code != CodeBadRequest {
		t.Fatalf("subject Ping with body Command: %+v", r)
	}
}
