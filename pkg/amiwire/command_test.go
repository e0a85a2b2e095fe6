package amiwire

import (
	"slices"
	"testing"
)

// TestCommandOutputAsterisk20 checks every Command answer of transcript 05
// against the Output lines Asterisk sent, trailing spaces and empty lines
// included.
func TestCommandOutputAsterisk20(t *testing.T) {
	want := map[string][]string{
		"login-1":     nil,
		"cmd-version": {"Asterisk 20.20.1 built by root @ vm on a x86_64 running Linux on 2026-11-23 01:25:36 UTC"},
		"cmd-channels": {
			"Channel                                                          Location                         State   Application(Data)             ",
			"0 active channels",
			"0 of 2000 max active calls ( 0.00% of capacity)",
			"0 calls processed",
		},
		"cmd-unknown": {"No such command 'no such cli command' (type 'core show help no such' for other possible commands)"},
		"cmd-settings": {
			"",
			"Global Settings:",
			"----------------",
			"  Manager (AMI):             Yes            ",
			"  Web Manager (AMI/HTTP):    No             ",
			"  TCP Bindaddress:           127.0.0.1:5038 ",
			"  HTTP Timeout (seconds):    60             ",
			"  TLS Enable:                Yes            ",
			"  TLS Bindaddress:           127.0.0.1:5039 ",
			"  TLS Certfile:              /etc/asterisk/keys/ami.crt",
			"  TLS Privatekey:            /etc/asterisk/keys/ami.key",
			"  TLS Cipher:                               ",
			"  Allow multiple login:      Yes            ",
			"  Display connects:          Yes            ",
			"  Timestamp events:          No             ",
			"  Channel vars:              ",
			"  Disabled events:           ",
			"  Debug:                     No             ",
		},
		"cmd-dialplan": {
			"[ Context 'demo' created by 'pbx_config' ]",
			"  '200' =>          1. NoOp(amibus test call)                     [extensions.conf:13]",
			"                    2. Dial(Local/100@demo,30)                    [extensions.conf:14]",
			"                    3. Hangup()                                   [extensions.conf:15]",
			"",
			"-= 1 extension (3 priorities) in 1 context. =-",
		},
		"cmd-verbose":         {"Console verbose is still 3."},
		"cmd-no-output":       {""},
		"cmd-leading-newline": {"", "    -- Global variable 'AMIBUS' set to '1'"},
		"cmd-blacklisted":     nil,
		"cmd-missing-header":  nil,
		"logoff-1":            nil,
	}
	res := readFile(t, "05-command.server.raw")
	if len(res.msgs) != len(want) {
		t.Fatalf("%d answers, want %d", len(res.msgs), len(want))
	}
	for _, m := range res.msgs {
		id := string(m.ActionID())
		w, ok := want[id]
		if !ok {
			t.Errorf("unexpected answer %q", id)
			continue
		}
		if got := CommandOutput(m); !slices.Equal(got, w) || (w == nil) != (got == nil) {
			t.Errorf("%s: output\n got %q\nwant %q", id, got, w)
		}
	}
}

// TestCommandOutputLegacy reads the hand-written Asterisk 13 answers
// (testdata/README.md gives their provenance).
func TestCommandOutputLegacy(t *testing.T) {
	want := map[string][]string{
		"login-1":    nil,
		"cmd-uptime": {"System uptime: 2 hours, 3 minutes, 4 seconds", "Last reload: 2 hours, 3 minutes, 4 seconds"},
		"cmd-settings": {"", "Global Settings:", "----------------", "  Manager (AMI):             Yes",
			"  TCP Bindaddress:           0.0.0.0:5038", "", "  Channel vars:              "},
		"cmd-no-output":  nil,
		"cmd-no-newline": {"Console verbose was OFF and is now 3."},
		"": {"Name/username             Host            Dyn Forcerport Comedia    ACL Port     Status      Description",
			"ActionID: not-a-header", "Response: Success",
			"1 sip peers [Monitored: 0 online, 0 offline Unmonitored: 0 online, 0 offline]"},
		"logoff-1": nil,
	}
	res := readFile(t, "legacy-follows.server.raw")
	n := 0
	for _, m := range res.msgs {
		if m.Kind() != KindResponse {
			continue
		}
		n++
		id := string(m.ActionID())
		if got := CommandOutput(m); !slices.Equal(got, want[id]) {
			t.Errorf("%q: output\n got %q\nwant %q", id, got, want[id])
		}
	}
	if n != len(want) {
		t.Errorf("%d answers, want %d", n, len(want))
	}
}
