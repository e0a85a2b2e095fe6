package amisim

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite templates/ from the transcripts")

// deriveTemplate rebuilds a call template from a transcript: the server's
// events after the Originate's answer up to the Logoff, at their times
// from the Originate, with the substitutions given (value-level rules).
func deriveTemplate(t *testing.T, name string, sub func(event, key, value string, prev [][2]string) string) string {
	t.Helper()
	steps := readTranscript(t, name)
	reT := regexp.MustCompile(`^# \+(\d+\.\d+)s`)
	var now, origin float64
	var b strings.Builder
	fmt.Fprintf(&b, "# amisim call template, derived from transcript %s (real Asterisk 20.20.1)\n", name)
	b.WriteString("# by TestTemplatesDerivedFromTranscripts; do not edit by hand (go test -run Templates -update).\n")
	in, last := false, -1.0
	for _, st := range steps {
		if st.kind == stepNote {
			if m := reT.FindStringSubmatch(st.note); m != nil {
				now, _ = strconv.ParseFloat(m[1], 64)
			}
			continue
		}
		if st.kind == stepClient && strings.HasPrefix(st.raw, "Action: Originate") {
			origin = now
		}
		if st.kind == stepClient && strings.HasPrefix(st.raw, "Action: Logoff") {
			break
		}
		if st.kind == stepServer && st.msg.get("Message") == "Originate successfully queued" {
			in = true
			continue
		}
		if !in || st.kind != stepServer {
			continue
		}
		at, _ := strconv.ParseFloat(fmt.Sprintf("%.3f", now-origin), 64)
		if at != last {
			fmt.Fprintf(&b, "@%.3f\n", at)
			last = at
		}
		for i, h := range st.msg {
			fmt.Fprintf(&b, "%s: %s\n", h[0], sub(st.msg[0][1], h[0], h[1], st.msg[:i]))
		}
		b.WriteString("\n")
	}
	return b.String()
}

// TestTemplatesDerivedFromTranscripts checks that templates/ hold exactly
// what the real transcripts sent, with only the listed values replaced.
func TestTemplatesDerivedFromTranscripts(t *testing.T) {
	answered := deriveTemplate(t, "07-originate-events", func(event, key, v string, prev [][2]string) string {
		v = strings.NewReplacer(
			"Local/200@demo-00000002;1", "${A1}", "Local/200@demo-00000002;2", "${A2}",
			"Local/100@demo-00000003;1", "${B1}", "Local/100@demo-00000003;2", "${B2}").Replace(v)
		if r, ok := map[string]string{
			"1795398116.4": "${UA1}", "1795398116.5": "${UA2}", "1795398116.6": "${UB1}", "1795398116.7": "${UB2}",
			"67534d72-0844-47a5-88cf-488ed7322b50": "${BRIDGE}", "1795398063": "${LOGINTIME}",
		}[v]; ok {
			v = r
		}
		if r, ok := map[string]map[string]string{
			"OriginateResponse": {"ActionID": "${ACTIONID}", "Context": "${OCONTEXT}", "Exten": "${OEXTEN}"},
			"Cdr": {"StartTime": "${CDRSTART}", "AnswerTime": "${CDRANSWER}", "EndTime": "${CDREND}",
				"Duration": "${CDRDUR}", "BillableSeconds": "${CDRDUR}"},
		}[event][key]; ok {
			return r
		}
		if event == "VarSet" && key == "Value" && v != "" {
			switch prev[len(prev)-1][1] {
			case "ANSWEREDTIME", "DIALEDTIME":
				v = "${DURS}"
			case "ANSWEREDTIME_MS":
				v = "${ANSMS}"
			case "DIALEDTIME_MS":
				v = "${DIALMS}"
			}
		}
		return v
	})
	failed := deriveTemplate(t, "07b-originate-failure", func(event, key, v string, _ [][2]string) string {
		v = strings.NewReplacer("Local/999@demo-00000004;1", "${A1}", "Local/999@demo-00000004;2", "${A2}").Replace(v)
		if r, ok := map[string]string{"1795398121.8": "${UA1}", "1795398121.9": "${UA2}"}[v]; ok {
			v = r
		}
		if event == "OriginateResponse" {
			if r, ok := map[string]string{"ActionID": "${ACTIONID}", "Channel": "${OCHANNEL}",
				"Context": "${OCONTEXT}", "Exten": "${OEXTEN}"}[key]; ok {
				v = r
			}
			return v
		}
		switch {
		case (key == "Exten" || key == "Extension") && v == "999":
			v = "${AEXTEN}"
		case key == "Context" && v == "demo":
			v = "${ACONTEXT}"
		case key == "Device" && v == "Local/999@demo":
			v = "${ADEVICE}"
		}
		return v
	})
	for file, want := range map[string]string{
		"templates/call-answered.txt": answered, "templates/call-failed.txt": failed,
	} {
		if *update {
			if err := os.WriteFile(file, []byte(want), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("%s differs from its derivation; run go test -run Templates -update and review", file)
		}
	}
	// Every transcript-specific value was replaced.
	for _, leftover := range []string{"179539", "-0000000", "67534d72", "orig-7", "orig-fail", "01:41"} {
		if strings.Contains(answered+failed, leftover) {
			t.Errorf("template still holds %q", leftover)
		}
	}
	if n := len(answeredTemplate.events); n != 85 {
		t.Errorf("answered call has %d events, the transcript's had 85", n)
	}
	if got := answeredTemplate.duration.Seconds(); got < 3 || got > 3.1 {
		t.Errorf("answered call lasts %.3fs, the transcript's 3.007s", got)
	}
}
