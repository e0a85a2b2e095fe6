package amisim

import (
	"strconv"
	"strings"
)

// Event classes, the bits of manager.c's perms[] table.
const (
	classSystem    = 1 << 0
	classCall      = 1 << 1
	classLog       = 1 << 2
	classVerbose   = 1 << 3
	classCommand   = 1 << 4
	classAgent     = 1 << 5
	classUser      = 1 << 6
	classConfig    = 1 << 7
	classDTMF      = 1 << 8
	classReporting = 1 << 9
	classCDR       = 1 << 10
	classDialplan  = 1 << 11
	classOriginate = 1 << 12
	classAGI       = 1 << 13
	classCC        = 1 << 14
	classAOC       = 1 << 15
	classTest      = 1 << 16
	classSecurity  = 1 << 17
	classMessage   = 1 << 18
	classAll       = 1<<31 - 1 // INT_MAX, "all"
)

// perms mirrors manager.c's perms[] in its order, which is the order
// authority_to_str prints classes in.
var perms = []struct {
	num   int
	label string
}{
	{classSystem, "system"}, {classCall, "call"}, {classLog, "log"},
	{classVerbose, "verbose"}, {classCommand, "command"}, {classAgent, "agent"},
	{classUser, "user"}, {classConfig, "config"}, {classDTMF, "dtmf"},
	{classReporting, "reporting"}, {classCDR, "cdr"}, {classDialplan, "dialplan"},
	{classOriginate, "originate"}, {classAGI, "agi"}, {classCC, "cc"},
	{classAOC, "aoc"}, {classTest, "test"}, {classSecurity, "security"},
	{classMessage, "message"}, {classAll, "all"},
}

// authorityString is authority_to_str: "call,all" for classCall.
func authorityString(authority int) string {
	var b strings.Builder
	for _, p := range perms {
		if authority&p.num != 0 {
			if b.Len() > 0 {
				b.WriteByte(',')
			}
			b.WriteString(p.label)
		}
	}
	if b.Len() == 0 {
		return "<none>"
	}
	return b.String()
}

// classList is get_perm: the OR of every class named in a comma list.
func classList(s string) int {
	ret := 0
	for _, w := range strings.Split(s, ",") {
		w = strings.TrimSpace(w)
		for _, p := range perms {
			if strings.EqualFold(w, p.label) {
				ret |= p.num
			}
		}
	}
	return ret
}

// privilegeClass is the category of an event from its Privilege value:
// the classes named, "all" aside ("call,all" is classCall).
func privilegeClass(s string) int {
	ret := 0
	for _, w := range strings.Split(s, ",") {
		w = strings.TrimSpace(w)
		for _, p := range perms {
			if p.num != classAll && strings.EqualFold(w, p.label) {
				ret |= p.num
			}
		}
	}
	return ret
}

// eventMask is strings_to_mask, used by Login's Events header and the
// Events action: digits, a false word, a true word or a class list.
// It returns -1 for an empty string (the mask is then left unchanged).
func eventMask(s string) int {
	if s == "" {
		return -1
	}
	if n, err := strconv.Atoi(s); err == nil && n >= 0 && strings.Trim(s, "0123456789") == "" {
		return n
	}
	if isFalse(s) {
		return 0
	}
	if isTrue(s) {
		return classAll
	}
	return classList(s)
}

// isTrue is ast_true.
func isTrue(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "yes", "true", "y", "t", "1", "on":
		return true
	}
	return false
}

// isFalse is ast_false.
func isFalse(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "no", "false", "n", "f", "0", "off":
		return true
	}
	return false
}

// eventClasses gives the class of the events seen in the transcripts and of
// common others, for Emit. An unknown event is of class call.
var eventClasses = map[string]int{
	"FullyBooted": classSystem, "Shutdown": classSystem, "Reload": classSystem,
	"ModuleLoadReport": classSystem, "Registry": classSystem, "PeerStatus": classSystem,
	"ContactStatus": classSystem,
	"Newexten":      classDialplan, "VarSet": classDialplan,
	"Cdr": classCDR, "CEL": classCall,
	"QueueMemberStatus": classAgent, "QueueCallerJoin": classAgent, "QueueCallerLeave": classAgent,
	"QueueCallerAbandon": classAgent, "AgentCalled": classAgent, "AgentRingNoAnswer": classAgent,
	"AgentConnect": classAgent, "AgentComplete": classAgent, "AgentDump": classAgent,
	"QueueMemberAdded": classAgent, "QueueMemberRemoved": classAgent, "QueueMemberPause": classAgent,
	"SuccessfulAuth": classSecurity, "InvalidPassword": classSecurity, "InvalidAccountID": classSecurity,
	"ChallengeResponseFailed": classSecurity, "RequestNotAllowed": classSecurity,
	"RequestBadFormat": classSecurity, "ChallengeSent": classSecurity, "FailedACL": classSecurity,
	"UserEvent": classUser, "DTMFBegin": classDTMF, "DTMFEnd": classDTMF,
	"RTCPSent": classReporting, "RTCPReceived": classReporting,
	"AGIExecStart": classAGI, "AGIExecEnd": classAGI, "AsyncAGIStart": classAGI,
}

// eventClass returns the class of a named event.
func eventClass(name string) int {
	if c, ok := eventClasses[name]; ok {
		return c
	}
	return classCall
}

// Write authority of each action, as registered in Asterisk 20; an action
// with authority 0 is allowed to every logged-in user.
var actionAuthority = map[string]int{
	"login": 0, "logoff": 0, "challenge": 0, "ping": 0, "events": 0,
	"filter":           classSystem,
	"coresettings":     classSystem | classReporting,
	"corestatus":       classSystem | classReporting,
	"coreshowchannels": classSystem | classReporting,
	"status":           classSystem | classCall | classReporting,
	"command":          classCommand,
	"originate":        classOriginate,
	"hangup":           classSystem | classCall,
	"queuestatus":      0,
	"queuesummary":     0,
	// manager_bridges.c registers both with EVENT_FLAG_REPORTING.
	"bridgelist": classReporting,
	"bridgeinfo": classReporting,
}
