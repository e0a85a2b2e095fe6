package amisim

import (
	_ "embed"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The call templates are the event sequences real Asterisk sent for one
// answered call (transcript 07) and one failed call (07b), with the values
// that vary per call replaced by ${PLACEHOLDERS}. "@<seconds>" lines give
// each event's time from the Originate.
var (
	//go:embed templates/call-answered.txt
	answeredText string
	//go:embed templates/call-failed.txt
	failedText string

	answeredTemplate = mustTemplate("call-answered", answeredText)
	failedTemplate   = mustTemplate("call-failed", failedText)
)

// ph names one placeholder; phLit is a literal part.
type ph uint8

const (
	phLit ph = iota
	phA1
	phA2
	phB1
	phB2
	phUA1
	phUA2
	phUB1
	phUB2
	phBridge
	phActionID
	phOChannel
	phOContext
	phOExten
	phAExten
	phAContext
	phADevice
	phCDRStart
	phCDRAnswer
	phCDREnd
	phCDRDur
	phDurS
	phAnsMS
	phDialMS
	phLoginTime
	numPh
)

var phNames = map[string]ph{
	"A1": phA1, "A2": phA2, "B1": phB1, "B2": phB2,
	"UA1": phUA1, "UA2": phUA2, "UB1": phUB1, "UB2": phUB2,
	"BRIDGE": phBridge, "ACTIONID": phActionID,
	"OCHANNEL": phOChannel, "OCONTEXT": phOContext, "OEXTEN": phOExten,
	"AEXTEN": phAExten, "ACONTEXT": phAContext, "ADEVICE": phADevice,
	"CDRSTART": phCDRStart, "CDRANSWER": phCDRAnswer, "CDREND": phCDREnd, "CDRDUR": phCDRDur,
	"DURS": phDurS, "ANSMS": phAnsMS, "DIALMS": phDialMS, "LOGINTIME": phLoginTime,
}

// endPh are the placeholders known only when the call ends.
func (p ph) atEnd() bool {
	switch p {
	case phCDREnd, phCDRDur, phDurS, phAnsMS, phDialMS:
		return true
	}
	return false
}

type part struct {
	lit string
	ph  ph
}

type theader struct {
	key   string
	parts []part
	// optional headers (ActionID) are left out when their value is empty.
	optional bool
}

// Channel snapshot keys the channel table follows, in snapshot order.
var snapKeys = [...]string{"Channel", "ChannelState", "ChannelStateDesc", "CallerIDNum", "CallerIDName",
	"ConnectedLineNum", "ConnectedLineName", "Language", "AccountCode", "Context", "Exten", "Priority",
	"Uniqueid", "Linkedid", "Application", "AppData", "BridgeUniqueid"}

const (
	kChannel = iota
	kState
	kStateDesc
	kCIDNum
	kCIDName
	kConnNum
	kConnName
	kLanguage
	kAccountCode
	kContext
	kExten
	kPriority
	kUniqueid
	kLinkedid
	kApplication
	kAppData
	kBridge
	numSnapKeys
)

type tevent struct {
	at        time.Duration
	name      string
	class     int
	privilege string
	headers   []theader
	// snap holds the index in headers of each snapKeys entry, -1 if absent.
	snap   [numSnapKeys]int8
	usesAt bool // uses a value known only at the call's end
}

type template struct {
	name     string
	events   []*tevent
	duration time.Duration
	// hangupIdx is the first event of the hangup phase, where a Hangup
	// action makes the call jump.
	hangupIdx int
}

func mustTemplate(name, text string) *template {
	t, err := parseTemplate(name, text)
	if err != nil {
		panic(err)
	}
	return t
}

func parseTemplate(name, text string) (*template, error) {
	t := &template{name: name, hangupIdx: -1}
	var at time.Duration
	var cur *tevent
	flush := func() error {
		if cur == nil {
			return nil
		}
		if cur.name == "" || cur.privilege == "" {
			return fmt.Errorf("%s: event without Event and Privilege first", name)
		}
		for i := range cur.snap {
			cur.snap[i] = -1
		}
		for i, h := range cur.headers {
			for k, sk := range snapKeys {
				if h.key == sk && cur.snap[k] < 0 {
					cur.snap[k] = int8(i)
				}
			}
			for _, p := range h.parts {
				if p.ph.atEnd() {
					cur.usesAt = true
				}
			}
		}
		if cur.name == "SoftHangupRequest" && t.hangupIdx < 0 {
			t.hangupIdx = len(t.events)
		}
		t.events = append(t.events, cur)
		cur = nil
		return nil
	}
	for n, line := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(line, "#"):
		case strings.HasPrefix(line, "@"):
			sec, err := strconv.ParseFloat(line[1:], 64)
			if err != nil {
				return nil, fmt.Errorf("%s:%d: %w", name, n+1, err)
			}
			at = time.Duration(sec * float64(time.Second))
			if at > t.duration {
				t.duration = at
			}
		case line == "":
			if err := flush(); err != nil {
				return nil, err
			}
		default:
			k, v, ok := strings.Cut(line, ": ")
			if !ok {
				return nil, fmt.Errorf("%s:%d: no \": \" in %q", name, n+1, line)
			}
			if cur == nil {
				cur = &tevent{at: at}
			}
			switch {
			case k == "Event" && cur.name == "":
				cur.name = v
			case k == "Privilege" && cur.privilege == "":
				cur.privilege = v
				cur.class = privilegeClass(v)
			default:
				parts, err := parseParts(v)
				if err != nil {
					return nil, fmt.Errorf("%s:%d: %w", name, n+1, err)
				}
				cur.headers = append(cur.headers, theader{key: k, parts: parts,
					optional: len(parts) == 1 && parts[0].ph == phActionID})
			}
		}
	}
	if err := flush(); err != nil {
		return nil, err
	}
	if t.hangupIdx < 0 {
		t.hangupIdx = len(t.events)
	}
	return t, nil
}

func parseParts(v string) ([]part, error) {
	var parts []part
	for v != "" {
		i := strings.Index(v, "${")
		if i < 0 {
			parts = append(parts, part{lit: v})
			break
		}
		if i > 0 {
			parts = append(parts, part{lit: v[:i]})
		}
		j := strings.IndexByte(v[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("unterminated placeholder in %q", v)
		}
		p, ok := phNames[v[i+2:i+j]]
		if !ok {
			return nil, fmt.Errorf("unknown placeholder %q", v[i:i+j+1])
		}
		parts = append(parts, part{ph: p})
		v = v[i+j+1:]
	}
	if len(parts) == 0 {
		parts = []part{{lit: ""}}
	}
	return parts, nil
}

// value renders one header's value with a call's variables.
func (h *theader) value(vars *[numPh]string) string {
	if len(h.parts) == 1 {
		if h.parts[0].ph == phLit {
			return h.parts[0].lit
		}
		return vars[h.parts[0].ph]
	}
	var b strings.Builder
	for _, p := range h.parts {
		if p.ph == phLit {
			b.WriteString(p.lit)
		} else {
			b.WriteString(vars[p.ph])
		}
	}
	return b.String()
}

// render writes the event with vars into a new buffer and the header
// values into vals (reused, len(e.headers)); a left-out optional header has
// the value "" in vals.
func (e *tevent) render(vars *[numPh]string, ts string, vals []string) []byte {
	m := msg{b: make([]byte, 0, 512)}
	m.h("Event", e.name).h("Privilege", e.privilege)
	if ts != "" {
		m.h("Timestamp", ts)
	}
	for i := range e.headers {
		h := &e.headers[i]
		v := h.value(vars)
		vals[i] = v
		if h.optional && v == "" {
			continue
		}
		m.h(h.key, v)
	}
	return m.end().b
}
