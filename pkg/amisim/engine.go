package amisim

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// The call engine builds the hard calls (scenarios.go) from primitive
// steps on the live state: each primitive changes the state and renders
// the event that reports the change, in that order and under mu, while the
// scheduler holds emitMu until the events are queued. So the events leave
// in the order of the state changes, and a list action (which also takes
// emitMu) sees the state exactly as the events before its answer left it.
//
// Field layouts: events that transcripts 07 and 08b captured (Newchannel,
// Newstate, Newexten, NewCallerid, NewConnectedLine, LocalBridge,
// DialBegin, DialState, DialEnd, BridgeCreate/Enter/Leave/Destroy,
// SoftHangupRequest, HangupRequest, Hangup, QueueCallerJoin/Leave/Abandon,
// AgentCalled, AgentRingNoAnswer, QueueMemberStatus, MusicOnHoldStart/Stop)
// have their captured header order. The others (Hold, Unhold, Rename,
// BlindTransfer, AttendedTransfer, BridgeMerge, LocalOptimizationBegin/End,
// AgentConnect, AgentComplete, QueueMemberPause) follow Asterisk 20's
// manager event documentation, no capture holding them. The engine emits no
// VarSet, Cdr or DeviceStateChange: they carry no channel, bridge or queue
// state.

// scriptStep is one moment of a scripted call.
type scriptStep struct {
	at  time.Duration
	run func(e *emitter)
}

// emitter collects the events of one step. Its methods are the engine's
// primitives. The caller holds mu (and emitMu, from runDue).
type emitter struct {
	s   *Server
	c   *call
	now time.Time
	ts  string
	out []pendingEvent
}

// ev starts an event.
func (e *emitter) ev(name string, class int) *msg {
	m := &msg{b: make([]byte, 0, 512)}
	m.h("Event", name).h("Privilege", authorityString(class))
	if e.ts != "" {
		m.h("Timestamp", e.ts)
	}
	return m
}

// send queues a finished event.
func (e *emitter) send(m *msg, class int) {
	e.out = append(e.out, pendingEvent{b: m.end().b, class: class})
}

var stateDescs = map[int]string{0: "Down", 1: "Rsrvd", 2: "OffHook", 3: "Dialing", 4: "Ring", 5: "Ringing",
	6: "Up", 7: "Busy"}

// Channel states as AMI numbers them.
const (
	stDown    = 0
	stRing    = 4
	stRinging = 5
	stUp      = 6
)

// newChannel creates a channel and emits its Newchannel. linked gives the
// Linkedid (nil: the channel's own Uniqueid).
func (e *emitter) newChannel(name string, state int, context, exten, cidNum, cidName string, linked *channel) *channel {
	s := e.s
	s.chanSeq++
	ch := &channel{name: name, state: strconv.Itoa(state), stateDesc: stateDescs[state],
		cidNum: orUnknown(cidNum), cidName: orUnknown(cidName), connNum: "<unknown>", connName: "<unknown>",
		language: "en", context: context, exten: exten, priority: "1",
		uniqueid: s.uniqueIDLocked(), created: e.now, seq: s.chanSeq, call: e.c}
	ch.linkedid = ch.uniqueid
	if linked != nil {
		ch.linkedid = linked.linkedid
	}
	s.chans[name] = ch
	e.c.own = append(e.c.own, ch)
	m := e.ev("Newchannel", classCall)
	ch.snapshot(m, "")
	e.send(m, classCall)
	return ch
}

func orUnknown(v string) string {
	if v == "" {
		return "<unknown>"
	}
	return v
}

// chanEvent emits an event of ch's snapshot followed by extra headers.
func (e *emitter) chanEvent(name string, class int, ch *channel, extra ...string) {
	m := e.ev(name, class)
	ch.snapshot(m, "")
	for i := 0; i+1 < len(extra); i += 2 {
		m.h(extra[i], extra[i+1])
	}
	e.send(m, class)
}

// newstate changes ch's state.
func (e *emitter) newstate(ch *channel, state int) {
	ch.state, ch.stateDesc = strconv.Itoa(state), stateDescs[state]
	e.chanEvent("Newstate", classCall, ch)
}

// newexten moves ch in the dialplan and runs app.
func (e *emitter) newexten(ch *channel, exten string, prio int, app, data string) {
	ch.exten, ch.priority, ch.app, ch.appData = exten, strconv.Itoa(prio), app, data
	if !ch.pbx && app != "AppDial" && app != "AppDial2" {
		ch.pbx = true
		e.s.processedCalls++
	}
	e.chanEvent("Newexten", classDialplan, ch, "Extension", exten, "Application", app, "AppData", data)
}

// callerID changes ch's caller id.
func (e *emitter) callerID(ch *channel, num, name string) {
	ch.cidNum, ch.cidName = orUnknown(num), orUnknown(name)
	e.chanEvent("NewCallerid", classCall, ch, "CID-CallingPres", "0 (Presentation Allowed, Not Screened)")
}

// connectedLine changes ch's connected line.
func (e *emitter) connectedLine(ch *channel, num, name string) {
	ch.connNum, ch.connName = orUnknown(num), orUnknown(name)
	e.chanEvent("NewConnectedLine", classCall, ch)
}

// pairEvent emits caller's snapshot (if any), dest's with prefix Dest, then
// extra headers, as the Dial* and Agent* events have them.
func (e *emitter) pairEvent(name string, class int, caller, dest *channel, extra ...string) {
	m := e.ev(name, class)
	if caller != nil {
		caller.snapshot(m, "")
	}
	if dest != nil {
		dest.snapshot(m, "Dest")
	}
	for i := 0; i+1 < len(extra); i += 2 {
		m.h(extra[i], extra[i+1])
	}
	e.send(m, class)
}

// dialBegin reports caller dialling dest; the call remembers the dial
// until dialEnd, so that a teardown can cancel it.
func (e *emitter) dialBegin(caller, dest *channel, dialString string) {
	e.c.dials = append(e.c.dials, [2]*channel{caller, dest})
	e.pairEvent("DialBegin", classCall, caller, dest, "DialString", dialString)
}

// dialEnd reports the end of a dial with its DialStatus.
func (e *emitter) dialEnd(caller, dest *channel, status string) {
	for i, d := range e.c.dials {
		if d[0] == caller && d[1] == dest {
			e.c.dials = append(e.c.dials[:i], e.c.dials[i+1:]...)
			break
		}
	}
	e.pairEvent("DialEnd", classCall, caller, dest, "DialStatus", status)
}

// localBridge reports a Local channel pair.
func (e *emitter) localBridge(one, two *channel) {
	m := e.ev("LocalBridge", classCall)
	one.snapshot(m, "LocalOne")
	two.snapshot(m, "LocalTwo")
	m.h("Context", two.context).h("Exten", two.exten).h("LocalOptimization", "Yes")
	e.send(m, classCall)
}

// newBridge creates a basic two-party bridge and emits BridgeCreate.
func (e *emitter) newBridge() *bridge {
	s := e.s
	s.bridgeSeq++
	b := &bridge{id: newUUID(), typ: "basic", tech: "simple_bridge", creator: "<unknown>", name: "<unknown>",
		seq: s.bridgeSeq}
	s.bridges[b.id] = b
	e.c.bridges = append(e.c.bridges, b)
	m := e.ev("BridgeCreate", classCall)
	b.writeSnapshot(m, "")
	e.send(m, classCall)
	return b
}

// enter puts ch into b; swap, when set, is the channel ch replaces
// (SwapUniqueid), which leaves b right after.
func (e *emitter) enter(b *bridge, ch *channel, swap *channel) {
	if ch.bridge != "" {
		e.leave(ch)
	}
	ch.bridge = b.id
	b.members = append(b.members, ch.uniqueid)
	m := e.ev("BridgeEnter", classCall)
	b.writeSnapshot(m, "")
	ch.snapshot(m, "")
	if swap != nil {
		m.h("SwapUniqueid", swap.uniqueid)
	}
	e.send(m, classCall)
}

// leave takes ch out of its bridge.
func (e *emitter) leave(ch *channel) {
	b := e.s.bridges[ch.bridge]
	if b == nil {
		ch.bridge = ""
		return
	}
	b.removeMember(ch.uniqueid)
	ch.bridge = ""
	m := e.ev("BridgeLeave", classCall)
	b.writeSnapshot(m, "")
	ch.snapshot(m, "")
	e.send(m, classCall)
}

// destroy removes b: members still in it leave, then BridgeDestroy.
func (e *emitter) destroy(b *bridge) {
	if e.s.bridges[b.id] != b {
		return
	}
	for _, uid := range append([]string(nil), b.members...) {
		if ch := e.s.chanByUniqueidLocked(uid); ch != nil {
			e.leave(ch)
		}
	}
	delete(e.s.bridges, b.id)
	m := e.ev("BridgeDestroy", classCall)
	b.writeSnapshot(m, "")
	e.send(m, classCall)
}

// hold and unhold put ch on hold and take it off (Hold, Unhold).
func (e *emitter) hold(ch *channel) {
	ch.hold = true
	e.chanEvent("Hold", classCall, ch, "MusicClass", "default")
}

func (e *emitter) unhold(ch *channel) {
	ch.hold = false
	e.chanEvent("Unhold", classCall, ch)
}

// rename gives ch a new name (Rename: Channel, Newname, Uniqueid).
func (e *emitter) rename(ch *channel, newName string) {
	old := ch.name
	delete(e.s.chans, old)
	ch.name = newName
	e.s.chans[newName] = ch
	m := e.ev("Rename", classCall)
	m.h("Channel", old).h("Newname", newName).h("Uniqueid", ch.uniqueid)
	e.send(m, classCall)
}

// hangup ends ch as 07 and 08b show: it leaves its bridge and any queue
// first, then the request events named (HangupRequest, SoftHangupRequest)
// with the cause, then Hangup; then the queue members' device states.
func (e *emitter) hangup(ch *channel, cause int, requests ...string) {
	if ch.gone {
		return
	}
	if ch.bridge != "" {
		e.leave(ch)
	}
	for _, q := range e.s.queues {
		for _, qc := range q.callers {
			if qc.ch == ch {
				e.queueAbandon(q, ch)
				break
			}
		}
	}
	c := strconv.Itoa(cause)
	for _, r := range requests {
		e.chanEvent(r, classCall, ch, "Cause", c)
	}
	ch.gone = true
	e.s.forgetChannelLocked(ch)
	e.chanEvent("Hangup", classCall, ch, "Cause", c, "Cause-txt", causeText[cause])
	e.deviceStates()
}

var causeText = map[int]string{0: "Unknown", 16: "Normal Clearing", 17: "User busy", 19: "No answer",
	21: "Call Rejected", 34: "Circuit/channel congestion"}

// deviceStates recomputes each queue member's device state from the live
// channels of its interface ("Local/100@demo" is in use while a channel
// "Local/100@demo-..." lives, as 07 and 08b show) and emits
// QueueMemberStatus for every member whose status changed.
func (e *emitter) deviceStates() {
	for _, q := range e.s.queues {
		for _, mb := range q.members {
			if st := e.s.deviceStatusLocked(mb.iface); st != mb.status {
				mb.status = st
				e.memberEvent("QueueMemberStatus", q, mb)
			}
		}
	}
}

// deviceStatusLocked is a device's state: in use while any of its channels
// lives. Caller holds mu.
func (s *Server) deviceStatusLocked(iface string) int {
	prefix := iface + "-"
	for name := range s.chans {
		if strings.HasPrefix(name, prefix) {
			return devInUse
		}
	}
	return devNotInUse
}

// memberEvent emits QueueMemberStatus or QueueMemberPause (08b's layout).
func (e *emitter) memberEvent(name string, q *queueState, mb *memberState) {
	e.out = append(e.out, pendingEvent{b: e.s.memberMsg(name, q, mb, e.ts).b, class: classAgent})
}

// memberMsg renders a member event from the member's state. Caller holds mu.
func (s *Server) memberMsg(name string, q *queueState, mb *memberState, ts string) *msg {
	m := &msg{b: make([]byte, 0, 512)}
	m.h("Event", name).h("Privilege", authorityString(classAgent))
	if ts != "" {
		m.h("Timestamp", ts)
	}
	m.h("Queue", q.name).h("MemberName", mb.name).h("Interface", mb.iface).h("StateInterface", mb.iface).
		h("Membership", "static").h("Penalty", "0").hi("CallsTaken", mb.callsTaken).
		h("LastCall", strconv.FormatInt(mb.lastCall, 10)).h("LastPause", strconv.FormatInt(mb.lastPause, 10)).
		h("LoginTime", strconv.FormatInt(s.startTime.Unix(), 10)).h("InCall", boolDigit(mb.inCall)).
		hi("Status", mb.status).h("Paused", boolDigit(mb.paused)).h("PausedReason", mb.pausedReason).
		h("Ringinuse", "1").h("Wrapuptime", "0")
	return m.end()
}

// pause pauses or unpauses a member in one queue (QueueMemberPause).
func (e *emitter) pause(q *queueState, mb *memberState, paused bool, reason string) {
	mb.paused = paused
	mb.pausedReason = ""
	if paused {
		mb.pausedReason = reason
		mb.lastPause = e.now.Unix()
	}
	e.memberEvent("QueueMemberPause", q, mb)
}

// inCall marks a member in a call or out of it; Asterisk reports it with
// QueueMemberStatus.
func (e *emitter) inCall(q *queueState, mb *memberState, in bool) {
	mb.inCall = in
	if !in {
		mb.callsTaken++
		mb.lastCall = e.now.Unix()
	}
	e.memberEvent("QueueMemberStatus", q, mb)
}

// queueJoin puts ch at the end of q (QueueCallerJoin).
func (e *emitter) queueJoin(q *queueState, ch *channel) {
	q.callers = append(q.callers, &queueCaller{ch: ch, since: e.now.UTC(), origPos: len(q.callers) + 1})
	e.chanEvent("QueueCallerJoin", classAgent, ch, "Queue", q.name, "Position", strconv.Itoa(len(q.callers)),
		"Count", strconv.Itoa(len(q.callers)))
}

// remove takes ch out of q and returns its position (1-based) and entry;
// 0 if not there.
func (q *queueState) remove(ch *channel) (int, *queueCaller) {
	for i, qc := range q.callers {
		if qc.ch == ch {
			q.callers = append(q.callers[:i], q.callers[i+1:]...)
			return i + 1, qc
		}
	}
	return 0, nil
}

// queueLeave takes ch out of q when it is connected (QueueCallerLeave).
func (e *emitter) queueLeave(q *queueState, ch *channel) {
	pos, _ := q.remove(ch)
	if pos == 0 {
		return
	}
	e.chanEvent("QueueCallerLeave", classAgent, ch, "Queue", q.name, "Position", strconv.Itoa(pos),
		"Count", strconv.Itoa(len(q.callers)))
}

// queueAbandon reports a waiting caller that hangs up: MusicOnHoldStop,
// QueueCallerAbandon, QueueCallerLeave (08b).
func (e *emitter) queueAbandon(q *queueState, ch *channel) {
	var qc *queueCaller
	pos := 0
	for i, c := range q.callers {
		if c.ch == ch {
			pos, qc = i+1, c
		}
	}
	if qc == nil {
		return
	}
	e.chanEvent("MusicOnHoldStop", classCall, ch)
	q.abandoned++
	e.chanEvent("QueueCallerAbandon", classAgent, ch, "Queue", q.name, "Position", strconv.Itoa(pos),
		"OriginalPosition", strconv.Itoa(qc.origPos), "HoldTime", strconv.Itoa(int(e.now.Sub(qc.since)/time.Second)))
	q.remove(ch)
	e.chanEvent("QueueCallerLeave", classAgent, ch, "Queue", q.name, "Position", strconv.Itoa(pos),
		"Count", strconv.Itoa(len(q.callers)))
}

// phoneName returns a new PJSIP channel name for an endpoint.
func (e *emitter) phoneName(endpoint string) string {
	e.s.pjsipSeq++
	return fmt.Sprintf("PJSIP/%s-%08x", endpoint, e.s.pjsipSeq)
}

// localPair creates a Local channel pair to exten@context as Dial does
// (07): Newchannel ;1 and ;2, AppDial on ;1, the caller id on ;1 and the
// connected line on ;2, LocalBridge.
func (e *emitter) localPair(caller *channel, exten, context string) (*channel, *channel) {
	base := e.s.localNameLocked(exten + "@" + context)
	one := e.newChannel(base+";1", stDown, context, exten, "", "", caller)
	two := e.newChannel(base+";2", stRing, context, exten, "", "", caller)
	e.newexten(one, caller.exten, 1, "AppDial", "(Outgoing Line)")
	e.callerID(one, caller.exten, "")
	e.connectedLine(two, caller.exten, "")
	e.localBridge(one, two)
	return one, two
}

// teardown ends whatever of the call still lives: every bridge dissolves
// (its members leave), each channel hangs up, and the bridges go, as in
// 07's hangup phase; a waiting queue caller abandons first.
func (e *emitter) teardown() {
	c := e.c
	if c.onEnd != nil {
		c.onEnd(e)
		c.onEnd = nil
	}
	// A dial still ringing is cancelled, as when the caller hangs up.
	for len(c.dials) > 0 {
		d := c.dials[0]
		if d[0].gone || d[1].gone {
			c.dials = c.dials[1:]
			continue
		}
		e.dialEnd(d[0], d[1], "CANCEL")
	}
	for _, b := range c.bridges {
		if e.s.bridges[b.id] == b {
			for _, uid := range append([]string(nil), b.members...) {
				if ch := e.s.chanByUniqueidLocked(uid); ch != nil {
					e.leave(ch)
				}
			}
		}
	}
	for _, ch := range c.own {
		e.hangup(ch, 16, ch.hangupReqs...)
	}
	for _, b := range c.bridges {
		e.destroy(b)
	}
}
