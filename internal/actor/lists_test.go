package actor_test

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// The requests docs/actor.md shows, byte for byte: they must work as
// written against the simulator.
const (
	readmeOriginate = `{"action":"Originate","fields":{"Channel":"Local/100@demo","Exten":"100","Context":"demo","Priority":"1","Async":"true"}}`
	readmeChannels  = `{"action":"CoreShowChannels"}`
)

// channelsPerCall is how many channels one simulated call has once it is
// up: the two halves of the originated Local channel and of the one it
// dials, as in the real Asterisk transcript 07.
const channelsPerCall = 4

// TestEventListAggregation originates calls with the README's request,
// then lists them: every list event comes back in order with the
// completion event, and the channels are exactly the PBX's live ones.
func TestEventListAggregation(t *testing.T) {
	// Long calls: every channel of a call is created in its first instant,
	// and with this duration nothing else changes for minutes.
	e := newEnv(t, amisim.Config{CallDuration: 10 * time.Minute}, 0, false, "")
	const calls = 3
	for i := range calls {
		r := request(t, e.nc, "ami.action.pbx1", readmeOriginate)
		wantCode(t, r, "ok")
		if r.Message != "Originate successfully queued" {
			t.Fatalf("Originate %d: %s", i, r.Raw)
		}
	}
	testenv.WaitSim(t, e.sim, fmt.Sprintf("%d live channels", calls*channelsPerCall), func() bool {
		return len(e.sim.LiveChannels()) == calls*channelsPerCall
	})
	before := e.sim.LiveChannels()

	r := request(t, e.nc, "ami.action.pbx1", readmeChannels)
	wantCode(t, r, "ok")
	if after := e.sim.LiveChannels(); !slices.Equal(before, after) {
		t.Fatalf("the channels changed during the test: %v, then %v", before, after)
	}
	if r.Message != "Channels will follow" || r.Field("EventList") != "start" {
		t.Fatalf("response %s", r.Raw)
	}
	if len(r.Events) != len(before)+1 {
		t.Fatalf("%d events, want %d channels and the completion event", len(r.Events), len(before))
	}
	var listed []string
	for i, ev := range r.Events {
		f := ev.Fields
		if f["ActionID"] != r.ActionID {
			t.Errorf("event %d has ActionID %v, want %q", i, f["ActionID"], r.ActionID)
		}
		if i < len(before) {
			if f["Event"] != "CoreShowChannel" {
				t.Errorf("event %d is %v, want CoreShowChannel", i, f["Event"])
			}
			listed = append(listed, f["Channel"].(string))
		}
	}
	last := r.Events[len(r.Events)-1].Fields
	if last["Event"] != "CoreShowChannelsComplete" || last["EventList"] != "Complete" ||
		last["ListItems"] != strconv.Itoa(len(before)) {
		t.Errorf("completion event %v", last)
	}
	if !slices.Equal(listed, before) {
		t.Errorf("listed channels %v, want the PBX's %v in order", listed, before)
	}
	for _, ch := range before {
		if !strings.HasPrefix(ch, "Local/") {
			t.Errorf("channel %q: want a Local channel", ch)
		}
	}

	t.Run("QueueStatus", func(t *testing.T) {
		r := request(t, e.nc, "ami.action.pbx1.QueueStatus", ``)
		wantCode(t, r, "ok")
		var names []string
		for _, ev := range r.Events {
			names = append(names, ev.Fields["Event"].(string)+"/"+fmt.Sprint(ev.Fields["Queue"]))
			if ev.Fields["ActionID"] != r.ActionID {
				t.Errorf("event %v: wrong ActionID", ev.Fields)
			}
		}
		// The simulator's two queues, as configured on the transcripts' PBX.
		want := []string{"QueueParams/support", "QueueMember/support", "QueueMember/support",
			"QueueParams/sales", "QueueMember/sales", "QueueStatusComplete/<nil>"}
		if !slices.Equal(names, want) {
			t.Fatalf("events %v, want %v", names, want)
		}
		if last := r.Events[len(r.Events)-1].Fields; last["ListItems"] != "5" || last["EventList"] != "Complete" {
			t.Errorf("completion event %v", last)
		}
	})

	t.Run("Status one channel", func(t *testing.T) {
		body := fmt.Sprintf(`{"action":"Status","fields":{"Channel":%q}}`, before[0])
		r := request(t, e.nc, "ami.action.pbx1", body)
		wantCode(t, r, "ok")
		if len(r.Events) != 2 || r.Events[0].Fields["Channel"] != before[0] || r.Events[1].Fields["Event"] != "StatusComplete" {
			t.Fatalf("Status of %s: %s", before[0], r.Raw)
		}
	})
}

// TestCommandBothFormats runs the same CLI commands on an Asterisk 14+
// style PBX (Output: headers) and an Asterisk 13 style one (Response:
// Follows, raw lines, --END COMMAND--): the requester gets the same
// output lines from both.
func TestCommandBothFormats(t *testing.T) {
	ns := testenv.StartNATS(t)
	modern := testenv.StartSim(t, amisim.Config{Node: "pbx1"})
	legacy := testenv.StartSim(t, amisim.Config{Node: "pbx13", LegacyCommand: true})
	startActor(t, configYAML(ns.ClientURL(), []node{{"pbx1", modern.Addr()}, {"pbx13", legacy.Addr()}}, ""), "pbx1", "pbx13")
	nc := testenv.Connect(t, ns.ClientURL())

	cmds := []struct {
		cmd  string
		want []string
	}{
		{"core show version", []string{"Asterisk 20.20.1 built by root @ vm on a x86_64 running Linux on 2026-11-23 01:25:36 UTC"}},
		{"dialplan show 200@demo", []string{
			"[ Context 'demo' created by 'pbx_config' ]",
			"  '200' =>          1. NoOp(amibus test call)                     [extensions.conf:13]",
			"                    2. Dial(Local/100@demo,30)                    [extensions.conf:14]",
			"                    3. Hangup()                                   [extensions.conf:15]",
			"",
			"-= 1 extension (3 priorities) in 1 context. =-",
		}},
	}
	for _, c := range cmds {
		for _, n := range []struct{ node, response string }{{"pbx1", "Success"}, {"pbx13", "Follows"}} {
			t.Run(n.node+"/"+c.cmd, func(t *testing.T) {
				body := fmt.Sprintf(`{"fields":{"Command":%q},"timeout_ms":3000}`, c.cmd)
				r := request(t, nc, "ami.action."+n.node+".Command", body)
				wantCode(t, r, "ok")
				if r.Response != n.response {
					t.Errorf("response %q, want %q", r.Response, n.response)
				}
				if !slices.Equal(r.Output, c.want) {
					t.Errorf("output\n%q\nwant\n%q", r.Output, c.want)
				}
				if _, ok := r.Fields["Output"]; ok {
					t.Errorf("output lines also in fields: %s", r.Raw)
				}
				if _, ok := r.Fields[""]; ok {
					t.Errorf("raw lines in fields: %s", r.Raw)
				}
			})
		}
	}
}
