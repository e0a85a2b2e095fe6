package amisim

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// serverMessages returns a transcript's server messages on a connection.
func serverMessages(t *testing.T, name string, conn int) []tmsg {
	var out []tmsg
	for _, st := range readTranscript(t, name) {
		if st.kind == stepServer && st.conn == conn {
			out = append(out, st.msg)
		}
	}
	return out
}

// keys returns a message's header keys in order.
func keys(m tmsg) string {
	k := make([]string, len(m))
	for i, h := range m {
		k[i] = h[0]
	}
	return strings.Join(k, ",")
}

// firstWith returns the first message whose first line is first.
func firstWith(t *testing.T, ms []tmsg, first string) tmsg {
	t.Helper()
	for _, m := range ms {
		if m.first() == first {
			return m
		}
	}
	t.Fatalf("no %q message", first)
	return nil
}

// callServer starts a Server with long calls and a logged-in client with
// events off, and originates one call whose channels are all up.
func callServer(t *testing.T, cfg Config) (*Server, *client) {
	if cfg.CallDuration == 0 {
		cfg.CallDuration = time.Minute
	}
	s := start(t, cfg)
	c := loggedIn(t, s)
	r := c.do("Action: Originate", "Channel: Local/200@demo", "Exten: 100", "Context: demo", "Priority: 1",
		"Async: true", "ActionID: o")
	if r.get("Message") != "Originate successfully queued" {
		t.Fatalf("originate: %v", r)
	}
	waitFor(t, s, "the call's channels", func() bool { return len(s.LiveChannels()) == 4 })
	return s, c
}

// TestListShapes: CoreShowChannels, Status, QueueStatus, QueueSummary and
// Hangup /regex/ answer with the header layout of transcripts 08 and 05b.
func TestListShapes(t *testing.T) {
	s, c := callServer(t, Config{})
	ref := serverMessages(t, "08-lists-live-call", 1)
	check := func(action string, want ...string) {
		t.Helper()
		c.send("Action: "+action, "ActionID: x")
		resp := c.mustRead()
		if exp := firstWith(t, ref, "Response: Success"); keys(resp) != "Response,ActionID,EventList,Message" {
			t.Fatalf("%s answer %v (transcript: %v)", action, resp, exp)
		}
		var items []tmsg
		for {
			m := c.mustRead()
			items = append(items, m)
			if m.get("EventList") == "Complete" {
				break
			}
		}
		for _, first := range want {
			exp := firstWith(t, ref, first)
			got := firstWith(t, items, first)
			if keys(got) != keys(exp) {
				t.Errorf("%s: %s keys\n %s\nwant\n %s", action, first, keys(got), keys(exp))
			}
		}
	}
	check("CoreShowChannels", "Event: CoreShowChannel", "Event: CoreShowChannelsComplete")
	check("Status", "Event: Status", "Event: StatusComplete")
	check("QueueStatus", "Event: QueueParams", "Event: QueueMember", "Event: QueueStatusComplete")
	check("QueueSummary", "Event: QueueSummary", "Event: QueueSummaryComplete")

	// Agent100's device is in use during the call.
	c.send("Action: QueueStatus", "Queue: support")
	for _, m := range c.readUntil("Event: QueueStatusComplete") {
		if m.get("Name") == "Agent100" && m.get("Status") != "2" {
			t.Errorf("Agent100 status %q during a call, want 2", m.get("Status"))
		}
	}

	// Hangup by regex: an event list of the channels (05b).
	ref05b := serverMessages(t, "05b-command-during-call", 1)
	chans := s.LiveChannels()
	c.send("Action: Hangup", "Channel: /^Local/", "ActionID: hangup-all")
	got := c.readUntil("Event: ChannelsHungupListComplete")
	if len(got) != 6 {
		t.Fatalf("hangup list: %d messages, want 6", len(got))
	}
	r := newRenamer()
	for i, m := range got {
		if i >= 1 && i <= 4 && m.get("Channel") != chans[i-1] {
			t.Errorf("item %d channel %q, want %q", i, m.get("Channel"), chans[i-1])
		}
		exp := ref05b[len(ref05b)-7+i] // the 05b list before the Goodbye
		if err := r.compare(exp, m); err != nil {
			t.Errorf("hangup list message %d: %v", i, err)
		}
	}
	waitFor(t, s, "the call to end", func() bool { return s.LiveCalls() == 0 })
	if n := len(s.LiveChannels()); n != 0 {
		t.Fatalf("%d channels left", n)
	}
	// Empty lists: start and Complete with 0 items, Status with Items: 0.
	empty := serverMessages(t, "08-lists-live-call", 1)
	for _, tc := range []struct{ action, id string }{{"CoreShowChannels", "csc-empty"}, {"Status", "status-empty"}} {
		c.send("Action: "+tc.action, "ActionID: "+tc.id)
		r := newRenamer()
		for _, exp := range empty {
			if exp.get("ActionID") == tc.id {
				if err := r.compare(exp, c.mustRead()); err != nil {
					t.Errorf("%s: %v", tc.action, err)
				}
			}
		}
	}
}

// TestHangupOne: hangup by name ends the call at once (its hangup events
// play); an unknown name is "No such channel"; Status of one channel.
func TestHangupOne(t *testing.T) {
	s, c := callServer(t, Config{})
	ch := s.LiveChannels()[0]
	c.send("Action: Status", "Channel: "+ch, "ActionID: st")
	items := c.readUntil("Event: StatusComplete")
	if len(items) != 3 || items[1].get("Channel") != ch || items[2].get("Items") != "1" {
		t.Fatalf("Status of one channel: %v", items)
	}
	if r := c.do("Action: Status", "Channel: Local/nope-00000000;1"); r.get("Message") != "No such channel" {
		t.Fatalf("Status of no channel: %v", r)
	}
	if r := c.do("Action: Hangup", "Channel: "+ch, "ActionID: h"); r.get("Message") != "Channel Hungup" || r.get("Response") != "Success" {
		t.Fatalf("hangup: %v", r)
	}
	// The call lasts a minute; it ends now.
	waitFor(t, s, "the call to end", func() bool { return s.LiveCalls() == 0 })
	if r := c.do("Action: Hangup", "Channel: "+ch); r.get("Message") != "No such channel" {
		t.Fatalf("hangup of a gone channel: %v", r)
	}
	if r := c.do("Action: Hangup"); r.get("Message") != "No channel specified" {
		t.Fatalf("hangup without channel: %v", r)
	}
	if r := c.do("Action: Hangup", "Channel: /(/"); !strings.HasPrefix(r.get("Message"), "Regex compile failed on: /(/") {
		t.Fatalf("hangup with a bad regex: %v", r)
	}
}

// TestCoreShowChannelsCLI: the three "core show channels" layouts of 05b.
func TestCoreShowChannelsCLI(t *testing.T) {
	s, c := callServer(t, Config{})
	ref := serverMessages(t, "05b-command-during-call", 1)
	byID := func(id string) []string {
		for _, m := range ref {
			if m.get("ActionID") == id {
				var out []string
				for _, h := range m {
					if h[0] == "Output" {
						out = append(out, h[1])
					}
				}
				return out
			}
		}
		t.Fatalf("no %s in 05b", id)
		return nil
	}
	output := func(cmd string) []string {
		var out []string
		for _, h := range c.do("Action: Command", "Command: "+cmd) {
			if h[0] == "Output" {
				out = append(out, h[1])
			}
		}
		return out
	}
	for _, form := range []string{"", " verbose"} {
		exp, got := byID("cmd-channels"+strings.ReplaceAll(form, " ", "-")), output("core show channels"+form)
		if len(got) != len(exp) || got[0] != exp[0] {
			t.Fatalf("core show channels%s:\n%q\nwant like\n%q", form, got, exp)
		}
		for i := 1; i <= 4; i++ {
			if len(got[i]) != len(exp[i]) || !strings.HasPrefix(got[i], "Local/") {
				t.Errorf("row %q: length %d, want %d", got[i], len(got[i]), len(exp[i]))
			}
		}
		if got[5] != "4 active channels" || got[6] != "3 of 2000 max active calls ( 0.15% of capacity)" {
			t.Errorf("totals %q", got[5:])
		}
		if !regexp.MustCompile(`^\d+ calls processed$`).MatchString(got[7]) {
			t.Errorf("processed %q", got[7])
		}
	}
	exp, got := byID("cmd-channels-concise"), output("core show channels concise")
	if len(got) != 4 || len(exp) != 4 {
		t.Fatalf("concise: %q", got)
	}
	for i := range got {
		if n, want := strings.Count(got[i], "!"), strings.Count(exp[i], "!"); n != want {
			t.Errorf("concise row %q has %d fields separators, want %d", got[i], n, want)
		}
	}
	ch := s.LiveChannels()[0]
	if !strings.HasPrefix(got[0], ch+"!") {
		t.Errorf("concise first row %q, want channel %s", got[0], ch)
	}
}

// TestTraffic: calls at a rate, each transcript 07's 85 events with its
// own ids, visible in CoreShowChannels while they last.
func TestTraffic(t *testing.T) {
	s := start(t, Config{CallDuration: 300 * time.Millisecond})
	c := dial(t, s)
	c.login("ami", "amisecret", "on")
	s.StartTraffic(40)
	waitFor(t, s, "three live calls", func() bool { return s.LiveCalls() >= 3 })
	c.send("Action: CoreShowChannels", "ActionID: csc")
	var n int
	for _, m := range c.readUntil("Event: CoreShowChannelsComplete") {
		if m.first() == "Event: CoreShowChannel" {
			n++
		}
	}
	if n < 4 {
		t.Fatalf("CoreShowChannels listed %d channels during traffic", n)
	}
	s.StopTraffic()
	waitFor(t, s, "calls to end", func() bool { return s.LiveCalls() == 0 && queueEmpty(s, 1) })
	started := int(s.Stats().CallsStarted)
	events := s.SentEvents()[2:] // after FullyBooted, SuccessfulAuth
	if len(events) != 85*started {
		t.Fatalf("%d events for %d calls, want 85 each", len(events), started)
	}
	// Each call: fresh Uniqueids, one Linkedid for all its channels.
	linked := map[string]int{}
	uniq := map[string]bool{}
	for _, e := range events {
		m := tmsg(e.Headers)
		if m.first() == "Event: Newchannel" {
			if uniq[m.get("Uniqueid")] {
				t.Fatalf("Uniqueid %s reused", m.get("Uniqueid"))
			}
			uniq[m.get("Uniqueid")] = true
			linked[m.get("Linkedid")]++
		}
	}
	if len(linked) != started {
		t.Fatalf("%d Linkedids for %d calls", len(linked), started)
	}
	for l, k := range linked {
		if k != 4 {
			t.Fatalf("Linkedid %s has %d channels, want 4", l, k)
		}
	}
}

// TestTrafficFast: calls as fast as possible, whole calls only.
func TestTrafficFast(t *testing.T) {
	s := start(t, Config{})
	c := loggedIn(t, s)
	c.do("Action: Events", "EventMask: call")
	s.StartTraffic(-1)
	waitFor(t, s, "events", func() bool { return s.SentEventCount() >= 1000 })
	s.StopTraffic()
	waitFor(t, s, "the queue to drain", func() bool { return queueEmpty(s, 1) })
	// 41 of a call's 85 events are of class call.
	if n, calls := s.SentEventCount(), int(s.Stats().CallsStarted); n != 41*calls {
		t.Fatalf("%d call events for %d calls", n, calls)
	}
}

// TestEmitEvents: n events of the realistic mix, ~380 bytes on average.
func TestEmitEvents(t *testing.T) {
	s := start(t, Config{})
	c := dial(t, s)
	c.login("ami", "amisecret", "on")
	s.EmitEvents(1000, 0)
	bytes := 0
	names := map[string]bool{}
	for i := 0; i < 1000; i++ {
		m := c.mustRead()
		names[m.get("Event")] = true
		for _, h := range m {
			bytes += len(h[0]) + 2 + len(h[1]) + 2
		}
		bytes += 2
	}
	if avg := bytes / 1000; avg < 330 || avg > 430 {
		t.Fatalf("average event %d bytes", avg)
	}
	if len(names) < 15 {
		t.Fatalf("only %d event types", len(names))
	}
	if s.LiveCalls() != 0 || len(s.LiveChannels()) != 0 {
		t.Fatal("EmitEvents touched the channel table")
	}
	// At a rate: 100 events at 1000/s take at least ~0.1 s.
	t0 := time.Now()
	s.EmitEvents(100, 1000)
	if el := time.Since(t0); el < 90*time.Millisecond {
		t.Fatalf("100 events at 1000/s took %v", el)
	}
}

// TestOriginateVariants: MaxCalls, other technologies, bad parameters.
func TestOriginateVariants(t *testing.T) {
	s := start(t, Config{MaxCalls: 1, CallDuration: time.Minute})
	c := dial(t, s)
	c.login("ami", "amisecret", "call")
	c.do("Action: Originate", "Channel: Local/200@demo", "Exten: 100", "Context: demo", "Priority: 1", "Async: true")
	waitFor(t, s, "the call's channels", func() bool { return len(s.LiveChannels()) == 4 })
	// Over MaxCalls: async queued, then a failed OriginateResponse.
	c.send("Action: Originate", "Channel: Local/200@demo", "Exten: 100", "Context: demo", "Priority: 1",
		"Async: true", "ActionID: over")
	if r := c.resp(); r.get("Message") != "Originate successfully queued" || r.get("ActionID") != "over" {
		t.Fatalf("async over the cap: %v", r)
	}
	for {
		m := c.mustRead()
		if m.first() != "Event: OriginateResponse" || m.get("ActionID") != "over" {
			continue
		}
		if m.get("Response") != "Failure" || m.get("Reason") != "0" || m.get("Channel") != "Local/200@demo" {
			t.Fatalf("over the cap: %v", m)
		}
		break
	}
	c.send("Action: Originate", "Channel: Local/200@demo", "Exten: 100", "Context: demo", "Priority: 1")
	if r := c.resp(); r.get("Message") != "Originate failed" {
		t.Fatalf("sync over the cap: %v", r)
	}
	if s.Stats().CallsRejected != 2 || s.Stats().CallsStarted != 1 {
		t.Fatalf("stats %+v", s.Stats())
	}
	c.do("Action: Events", "EventMask: off")
	if r := c.do("Action: Originate", "Channel: PJSIP/100", "Exten: 100", "Context: demo", "Priority: 1"); r.get("Message") != "Originate failed" {
		t.Fatalf("sync to PJSIP: %v", r)
	}
	for h, want := range map[string]string{
		"Channel: nochannel":                   "Invalid channel",
		"Priority: x":                          "Channel not specified",
		"Channel: Local/1@demo\r\nPriority: x": "Invalid priority",
		"Channel: Local/1@demo\r\nTimeout: x":  "Invalid timeout",
	} {
		if r := c.do("Action: Originate", h); r.get("Message") != want {
			t.Errorf("Originate %q: %v, want %q", h, r, want)
		}
	}
}

// TestOriginateVariables: each Variable is set on both Local channels
// (VarSet events, as in 07d).
func TestOriginateVariables(t *testing.T) {
	s := start(t, Config{CallDuration: 100 * time.Millisecond})
	c := dial(t, s)
	c.login("ami", "amisecret", "dialplan")
	c.do("Action: Originate", "Channel: Local/200@demo", "Exten: 100", "Context: demo", "Priority: 1",
		"Variable: A=1,B=2", "Variable: C=3", "Async: true")
	waitFor(t, s, "the call to end", func() bool { return s.LiveCalls() == 0 && queueEmpty(s, 1) })
	var got []string
	for _, e := range s.SentEvents() {
		m := tmsg(e.Headers)
		if m.first() == "Event: VarSet" && strings.Contains("ABC", m.get("Variable")) && len(m.get("Variable")) == 1 {
			ch := m.get("Channel")
			got = append(got, ch[len(ch)-1:]+":"+m.get("Variable")+"="+m.get("Value"))
		}
	}
	if want := "1:A=1 1:B=2 1:C=3 2:A=1 2:B=2 2:C=3"; strings.Join(got, " ") != want {
		t.Fatalf("VarSets %v, want %s", got, want)
	}
	if n := s.SentEventCount(); n != 39+6 { // 39 dialplan events in the call
		t.Fatalf("%d dialplan events", n)
	}
}

// TestLegacyCommand: the Asterisk 13 format, raw output ended by
// --END COMMAND--.
func TestLegacyCommand(t *testing.T) {
	s := start(t, Config{LegacyCommand: true})
	c := loggedIn(t, s)
	read := func() string {
		var b strings.Builder
		_ = c.nc.SetReadDeadline(time.Now().Add(testTimeout))
		for !strings.HasSuffix(b.String(), "--END COMMAND--\r\n\r\n") {
			l, err := c.r.ReadString('\n')
			if err != nil {
				t.Fatalf("after %q: %v", b.String(), err)
			}
			b.WriteString(l)
		}
		return b.String()
	}
	c.send("Action: Command", "Command: core show version", "ActionID: v")
	if got, want := read(), "Response: Follows\r\nPrivilege: Command\r\nActionID: v\r\n"+
		"Asterisk 20.20.1 built by root @ vm on a x86_64 running Linux on 2026-11-23 01:25:36 UTC\n"+
		"--END COMMAND--\r\n\r\n"; got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	c.send("Action: Command", "Command: manager show settings")
	if got := read(); !strings.HasPrefix(got, "Response: Follows\r\nPrivilege: Command\r\n\nGlobal Settings:\n") {
		t.Fatalf("leading empty line: %q", got)
	}
	c.send("Action: Command", "Command: bogus thing")
	if got := read(); !strings.Contains(got, "\r\nNo such command 'bogus thing' (type 'core show help bogus thing' for other possible commands)\n--END") {
		t.Fatalf("unknown command: %q", got)
	}
	if r := c.do("Action: Command", "ActionID: none"); r.get("Message") != "No command provided" {
		t.Fatalf("no command: %v", r)
	}
}

// TestTimestampEvents: with timestampevents, Timestamp follows Privilege in
// every broadcast event and not in the FullyBooted of the login (12). The
// call's events have the layouts of transcript 12 once its ChanVariable
// lines (channelvars, not simulated) are taken out.
func TestTimestampEvents(t *testing.T) {
	s := start(t, Config{TimestampEvents: true, CallDuration: 100 * time.Millisecond})
	c := dial(t, s)
	c.banner()
	c.do("Action: Login", "Username: ami", "Secret: amisecret", "Events: on")
	ref := serverMessages(t, "12-timestampevents-channelvars", 1)
	r := newRenamer()
	for i := 1; i <= 2; i++ { // FullyBooted, SuccessfulAuth
		if err := r.compare(ref[i], c.mustRead()); err != nil {
			t.Fatal(err)
		}
	}
	c.do("Action: Originate", "Channel: Local/200@demo", "Exten: 100", "Context: demo", "Priority: 1", "Async: true",
		"ActionID: orig-12")
	waitFor(t, s, "the call to end", func() bool { return s.LiveCalls() == 0 && queueEmpty(s, 1) })
	shapes := func(ms []tmsg) map[string]bool {
		out := map[string]bool{}
		for _, m := range ms {
			var k []string
			for _, h := range m {
				if !strings.Contains(h[0], "ChanVariable") {
					k = append(k, h[0])
				}
			}
			if m[0][0] == "Event" {
				out[m[0][1]+": "+strings.Join(k, ",")] = true
			}
		}
		return out
	}
	var got []tmsg
	for _, e := range s.SentEvents()[2:] {
		got = append(got, e.Headers)
	}
	want := shapes(ref[4 : len(ref)-2]) // the call: after the Originate answer, before Ping and Goodbye
	have := shapes(got)
	for k := range want {
		if !have[k] {
			t.Errorf("missing layout %s", k)
		}
	}
	for k := range have {
		if !want[k] {
			t.Errorf("extra layout %s", k)
		}
	}
}

// TestSecurityEvents: ExpectedResponse is md5(challenge + secret), the
// AccountID of RequestNotAllowed after login is the user's.
func TestSecurityEvents(t *testing.T) {
	s := start(t, Config{Users: map[string]string{"ami": "amisecret", "ro": "x"},
		Permissions: map[string]Permission{"ro": {Read: "all", Write: "reporting"}}})
	watch := dial(t, s)
	watch.login("ami", "amisecret", "security")
	if m := watch.mustRead(); m.first() != "Event: SuccessfulAuth" {
		t.Fatalf("after login: %v", m)
	}
	bad := dial(t, s)
	bad.banner()
	ch := bad.do("Action: Challenge", "AuthType: MD5").get("Challenge")
	bad.send("Action: Login", "AuthType: MD5", "Username: ami", "Key: 0123")
	m := watch.mustRead()
	if m.first() != "Event: ChallengeResponseFailed" || m.get("Challenge") != ch ||
		m.get("ExpectedResponse") != md5Key(ch, "amisecret") || m.get("Response") != "0123" {
		t.Fatalf("ChallengeResponseFailed: %v (challenge %s)", m, ch)
	}
	ro := dial(t, s)
	ro.login("ro", "x", "off")
	watch.mustRead() // its SuccessfulAuth
	if r := ro.do("Action: Originate", "Channel: Local/200@demo"); r.get("Message") != "Permission denied" {
		t.Fatalf("read-only Originate: %v", r)
	}
	m = watch.mustRead()
	if m.first() != "Event: RequestNotAllowed" || m.get("AccountID") != "ro" || m.get("RequestType") != "Action: Originate" {
		t.Fatalf("RequestNotAllowed: %v", m)
	}
	ro.do("Action: NoSuch")
	if m := watch.mustRead(); m.first() != "Event: RequestBadFormat" || m.get("RequestType") != "Action: NoSuch" {
		t.Fatalf("RequestBadFormat: %v", m)
	}
}

// TestSourceDerivedErrors covers answers taken from manager.c rather than
// from a transcript.
func TestSourceDerivedErrors(t *testing.T) {
	s := start(t, Config{})
	c := loggedIn(t, s)
	c.write("\r\n") // an empty message is a message without Action
	if r := c.mustRead(); r.get("Message") != errMissingAction {
		t.Fatalf("empty message: %v", r)
	}
	for _, tc := range []struct {
		headers []string
		want    string
	}{
		{[]string{"Action: Events", "ActionID: e"}, "Invalid event mask"},
		{[]string{"Action: Challenge"}, "Must specify AuthType"},
		{[]string{"Action: Filter", "Operation: Add"}, "Success"},
	} {
		if r := c.do(tc.headers...); r.get("Message") != tc.want {
			t.Errorf("%v: %v, want %q", tc.headers, r, tc.want)
		}
	}
	for i := 1; i < DefaultMaxFilters; i++ {
		c.send("Action: Filter", "Operation: Add", fmt.Sprintf("Filter: !Event: X%d", i))
	}
	for i := 1; i < DefaultMaxFilters; i++ {
		c.mustRead()
	}
	if r := c.do("Action: Filter", "Operation: Add", "Filter: Event: Y"); r.get("Message") != "Internal Error. Failed adding filter." {
		t.Fatalf("filter over the cap: %v", r)
	}
	if s.Stats().FilterCapHits != 1 {
		t.Fatalf("FilterCapHits = %d", s.Stats().FilterCapHits)
	}
}
