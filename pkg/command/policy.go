package command

import (
	"fmt"

	"github.com/amibus/amibus/pkg/amiwire"
)

// defaultDeny are the actions that would break or hijack the actor's own
// session; they are denied whatever the configuration says.
var defaultDeny = amiwire.SessionActions()

// DefaultDeny returns the actions always denied: Login, Logoff, Challenge,
// Events and Filter.
func DefaultDeny() []string { return append([]string(nil), defaultDeny...) }

// wellKnown are action names that get their own metric label even when no
// allow list names them. The set is fixed so that the action label stays
// bounded whatever requesters send; anything else is "other".
var wellKnown = []string{
	"AbsoluteTimeout", "Agents", "AGI", "Atxfer", "BlindTransfer", "Bridge",
	"BridgeInfo", "BridgeList", "Command", "ConfbridgeList", "ConfbridgeKick",
	"ConfbridgeMute", "ConfbridgeUnmute", "CoreSettings", "CoreShowChannels",
	"CoreStatus", "DBDel", "DBDelTree", "DBGet", "DBPut", "DeviceStateList",
	"ExtensionState", "ExtensionStateList", "Getvar", "Hangup", "ListCommands",
	"MailboxCount", "MailboxStatus", "MixMonitor", "MixMonitorMute",
	"ModuleCheck", "MuteAudio", "Originate", "Park", "ParkedCalls", "Ping",
	"PJSIPQualify", "PJSIPShowContacts", "PJSIPShowEndpoint",
	"PJSIPShowEndpoints", "PJSIPShowRegistrationsOutbound", "PlayDTMF",
	"QueueAdd", "QueueMemberRingInUse", "QueuePause", "QueuePenalty",
	"QueueRemove", "QueueStatus", "QueueSummary", "Redirect", "SendText",
	"Setvar", "ShowDialPlan", "SIPpeers", "SIPshowpeer", "Status",
	"StopMixMonitor",
}

// Policy decides which actions may run. Names compare without regard to
// case, as Asterisk compares them, so "logoff" is denied like "Logoff".
// A Policy is immutable and safe for concurrent use.
type Policy struct {
	allow  map[string]string // lower-case name -> configured spelling
	deny   map[string]string
	labels map[string]string // lower-case name -> metric label
}

// NewPolicy builds a policy. An empty allow list allows every action that is
// not denied; deny is added to DefaultDeny, and deny wins over allow. A name
// that is not a valid action name is an error naming its list and index
// ("allow[2]: ...").
func NewPolicy(allow, deny []string) (*Policy, error) {
	p := &Policy{
		allow:  make(map[string]string, len(allow)),
		deny:   make(map[string]string, len(deny)+len(defaultDeny)),
		labels: make(map[string]string, len(wellKnown)+len(allow)+len(deny)+len(defaultDeny)),
	}
	for _, n := range wellKnown {
		p.labels[lowerString(n)] = n
	}
	add := func(list string, names []string, m map[string]string) error {
		for i, n := range names {
			if err := checkActionName(fmt.Sprintf("%s[%d]", list, i), n); err != nil {
				return err
			}
			m[lowerString(n)] = n
			p.labels[lowerString(n)] = n
		}
		return nil
	}
	if err := add("allow", allow, p.allow); err != nil {
		return nil, err
	}
	if err := add("deny", deny, p.deny); err != nil {
		return nil, err
	}
	if err := add("default deny", defaultDeny, p.deny); err != nil {
		return nil, err
	}
	return p, nil
}

// Allowed reports whether the action may be sent to a PBX.
func (p *Policy) Allowed(action string) bool {
	var buf [MaxActionNameBytes]byte
	key, ok := lowerKey(&buf, action)
	if !ok {
		return false
	}
	if _, denied := p.deny[string(key)]; denied {
		return false
	}
	if len(p.allow) == 0 {
		return true
	}
	_, allowed := p.allow[string(key)]
	return allowed
}

// label returns the metric label for an action: its configured or
// well-known spelling, or "other", so that requesters cannot grow the
// label set.
func (p *Policy) label(action string) string {
	var buf [MaxActionNameBytes]byte
	if key, ok := lowerKey(&buf, action); ok {
		if l, ok := p.labels[string(key)]; ok {
			return l
		}
	}
	return "other"
}

// lowerKey lower-cases a valid action name into buf; the map lookups that
// use it with string(key) do not allocate. An invalid name is refused.
func lowerKey(buf *[MaxActionNameBytes]byte, name string) ([]byte, bool) {
	if name == "" || len(name) > len(buf) {
		return nil, false
	}
	for i := 0; i < len(name); i++ {
		if !amiwire.NameByte(name[i]) {
			return nil, false
		}
		buf[i] = amiwire.Lower(name[i])
	}
	return buf[:len(name)], true
}

func lowerString(s string) string {
	b := []byte(s)
	for i := range b {
		b[i] = amiwire.Lower(b[i])
	}
	return string(b)
}
