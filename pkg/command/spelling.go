package command

// asteriskActions are Asterisk's own spellings of the manager actions of
// Asterisk 13 to 21 and their common modules. Asterisk compares action
// names without case, NATS subjects compare with case: a permission that
// grants or denies ami.action.*.Command must not be side-stepped by
// ami.action.*.command, so the subject form accepts a known action only in
// this spelling (checkSubjectSpelling). An action not listed here is
// passed as spelt; an allow-list NATS permission names it exactly.
var asteriskActions = []string{
	// manager.c
	"AbsoluteTimeout", "AOCMessage", "Atxfer", "BlindTransfer", "CancelAtxfer",
	"Challenge", "Command", "CoreSettings", "CoreShowChannelMap", "CoreShowChannels",
	"CoreStatus", "CreateConfig", "Events", "ExtensionState", "ExtensionStateList",
	"Filter", "GetConfig", "GetConfigJSON", "Getvar", "Hangup", "ListCategories",
	"ListCommands", "LoggerRotate", "Login", "Logoff", "MailboxCount", "MailboxStatus",
	"ModuleCheck", "ModuleLoad", "Originate", "Ping", "PlayDTMF", "PresenceState",
	"PresenceStateList", "Redirect", "Reload", "SendText", "Setvar", "Status",
	"UpdateConfig", "UserEvent", "WaitEvent", "DeviceStateList",
	// bridges, parking, features
	"Bridge", "BridgeDestroy", "BridgeInfo", "BridgeKick", "BridgeList",
	"BridgeTechnologyList", "BridgeTechnologySuspend", "BridgeTechnologyUnsuspend",
	"Park", "ParkedCalls", "Parkinglots", "LocalOptimizeAway",
	// apps
	"Agents", "AgentLogoff", "AGI", "ConfbridgeKick", "ConfbridgeList",
	"ConfbridgeListRooms", "ConfbridgeLock", "ConfbridgeMute", "ConfbridgeSetSingleVideoSrc",
	"ConfbridgeStartRecord", "ConfbridgeStopRecord", "ConfbridgeUnlock", "ConfbridgeUnmute",
	"ControlPlayback", "DBDel", "DBDelTree", "DBGet", "DBGetTree", "DBPut",
	"DialplanExtensionAdd", "DialplanExtensionRemove", "MeetmeList", "MeetmeListRooms",
	"MeetmeMute", "MeetmeUnmute", "MessageSend", "MixMonitor", "MixMonitorMute",
	"MuteAudio", "MWIDelete", "MWIGet", "MWIUpdate", "StopMixMonitor",
	"QueueAdd", "QueueChangePriorityCaller", "QueueLog", "QueueMemberRingInUse",
	"QueuePause", "QueuePenalty", "QueueReload", "QueueRemove", "QueueReset",
	"QueueRule", "QueueStatus", "QueueSummary", "QueueWithdrawCaller",
	"ShowDialPlan", "VoicemailRefresh", "VoicemailUsersList", "VoicemailUserStatus",
	"FAXSession", "FAXSessions", "FAXStats",
	// channel drivers
	"PJSIPHangup", "PJSIPNotify", "PJSIPQualify", "PJSIPRegister", "PJSIPShowAors",
	"PJSIPShowAuths", "PJSIPShowContacts", "PJSIPShowEndpoint", "PJSIPShowEndpoints",
	"PJSIPShowRegistrationInboundContactStatuses", "PJSIPShowRegistrationsInbound",
	"PJSIPShowRegistrationsOutbound", "PJSIPShowResourceLists",
	"PJSIPShowSubscriptionsInbound", "PJSIPShowSubscriptionsOutbound", "PJSIPUnregister",
	"SIPnotify", "SIPpeers", "SIPpeerstatus", "SIPqualifypeer", "SIPshowpeer",
	"SIPshowregistry", "IAXnetstats", "IAXpeerlist", "IAXpeers", "IAXregistry",
	"DAHDIDialOffhook", "DAHDIDNDoff", "DAHDIDNDon", "DAHDIHangup", "DAHDIRestart",
	"DAHDIShowChannels", "DAHDITransfer", "PRIShowSpans",
}

// spelling maps a lower-case action name to Asterisk's spelling.
var spelling = func() map[string]string {
	m := make(map[string]string, len(asteriskActions)+len(wellKnown))
	for _, list := range [][]string{wellKnown, asteriskActions} {
		for _, n := range list {
			m[lowerString(n)] = n
		}
	}
	return m
}()

// checkSubjectSpelling refuses an action named by the subject in another
// case than Asterisk's own spelling of it, naming the subject to use.
func checkSubjectSpelling(prefix, node, action string) error {
	var buf [MaxActionNameBytes]byte
	key, ok := lowerKey(&buf, action)
	if !ok {
		return nil // checkActionName reports it
	}
	want, known := spelling[string(key)]
	if !known || want == action {
		return nil
	}
	return badRequest("subject",
		"Asterisk spells the action %q as %q: send it to %s%s.%s (NATS permissions compare subjects with case)",
		action, want, prefix, node, want)
}
