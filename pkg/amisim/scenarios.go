package amisim

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Scenario names one kind of call the traffic generator makes.
type Scenario string

// The scenarios. Each is a call between PJSIP phones 1001-1099 (queue
// callers and the queue members are the transcripts' Local/100@demo and
// Local/199@demo) whose events follow transcripts 07 and 08b where they
// captured the same step, and Asterisk 20's manager event documentation
// elsewhere (see engine.go).
const (
	// ScenarioTemplate is transcript 07's originated Local call, as played
	// by StartTraffic.
	ScenarioTemplate Scenario = "template"
	// ScenarioBasic: A dials B, B rings and answers, both enter a basic
	// bridge, then the bridge dissolves and both hang up.
	ScenarioBasic Scenario = "basic"
	// ScenarioFailed: A dials B, B rings, and the dial ends before an
	// answer (NOANSWER, BUSY or CONGESTION): B hangs up, then A.
	ScenarioFailed Scenario = "failed"
	// ScenarioHold: a basic call in which A puts the call on hold and
	// takes it off again.
	ScenarioHold Scenario = "hold"
	// ScenarioBlind: A and B talk; A blind-transfers B to C: B leaves the
	// bridge, BlindTransfer, A hangs up and the bridge goes, B dials C and
	// they talk in a new bridge.
	ScenarioBlind Scenario = "blind"
	// ScenarioAttended: A and B talk; A holds, calls C on a second channel,
	// then completes the transfer: BridgeMerge moves C into B's bridge,
	// AttendedTransfer, both of A's channels hang up.
	ScenarioAttended Scenario = "attended"
	// ScenarioLocal: A dials a Local channel whose ;2 dials B; once both
	// legs are bridged the Local pair optimizes away: B takes ;1's place in
	// A's bridge (SwapUniqueid) and the pair hangs up.
	ScenarioLocal Scenario = "local"
	// ScenarioMasquerade: A dials B; while B rings, C picks the call up
	// (Pickup), a masquerade: Rename events swap the names, the picker's old
	// channel hangs up as a zombie, and B's channel, now named as C's,
	// answers and is bridged with A.
	ScenarioMasquerade Scenario = "masquerade"
	// ScenarioQueue: a caller waits in queue support or sales; a free,
	// unpaused member's device is rung (AgentCalled); it answers
	// (AgentConnect ... AgentComplete) or not (AgentRingNoAnswer, and the
	// caller abandons: QueueCallerAbandon, as in 08b). With no member free
	// the caller abandons.
	ScenarioQueue Scenario = "queue"
	// ScenarioPause: a queue member pauses with a reason and later
	// unpauses (QueueMemberPause).
	ScenarioPause Scenario = "pause"
)

// Scenarios lists every scenario.
func Scenarios() []Scenario {
	return []Scenario{ScenarioTemplate, ScenarioBasic, ScenarioFailed, ScenarioHold, ScenarioBlind,
		ScenarioAttended, ScenarioLocal, ScenarioMasquerade, ScenarioQueue, ScenarioPause}
}

// DefaultMix weighs the scenarios of mixed traffic: mostly plain calls, a
// contact centre's share of queue calls, a few of each hard case.
func DefaultMix() map[Scenario]int {
	return map[Scenario]int{ScenarioTemplate: 1, ScenarioBasic: 4, ScenarioFailed: 2, ScenarioHold: 1,
		ScenarioBlind: 1, ScenarioAttended: 1, ScenarioLocal: 1, ScenarioMasquerade: 1, ScenarioQueue: 3,
		ScenarioPause: 1}
}

// ParseMix reads "basic=4,queue=2,..." (weights >= 0); "" is DefaultMix.
func ParseMix(s string) (map[Scenario]int, error) {
	if strings.TrimSpace(s) == "" {
		return DefaultMix(), nil
	}
	known := map[Scenario]bool{}
	for _, sc := range Scenarios() {
		known[sc] = true
	}
	out := map[Scenario]int{}
	total := 0
	for _, part := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		n, err := strconv.Atoi(v)
		if !ok || err != nil || n < 0 {
			return nil, fmt.Errorf("amisim: mix entry %q: want scenario=weight (weight >= 0)", part)
		}
		if !known[Scenario(k)] {
			return nil, fmt.Errorf("amisim: mix entry %q: unknown scenario %q", part, k)
		}
		out[Scenario(k)] = n
		total += n
	}
	if total == 0 {
		return nil, errors.New("amisim: mix: every weight is 0")
	}
	return out, nil
}

// Traffic configures mixed traffic (StartMixedTraffic).
type Traffic struct {
	// CallsPerSecond is how many scenarios start per second; > 0.
	CallsPerSecond float64
	// Seed seeds the choice of scenarios, phones and outcomes; the same
	// seed gives the same sequence of choices (timing still varies).
	Seed uint64
	// Mix weighs the scenarios; nil is DefaultMix.
	Mix map[Scenario]int
}

// StartMixedTraffic starts calls of a seeded random mix of scenarios at
// t.CallsPerSecond, each lasting about CallDuration. It replaces running
// traffic; StopTraffic stops it (calls in progress play to their end).
func (s *Server) StartMixedTraffic(t Traffic) error {
	if !(t.CallsPerSecond > 0) {
		return fmt.Errorf("amisim: mixed traffic: CallsPerSecond %v, want > 0", t.CallsPerSecond)
	}
	mix := t.Mix
	if mix == nil {
		mix = DefaultMix()
	}
	var names []Scenario
	var weights []int
	total := 0
	for sc, w := range mix {
		if w > 0 {
			names = append(names, sc)
		}
	}
	if len(names) == 0 {
		return errors.New("amisim: mixed traffic: every weight is 0")
	}
	sort.Slice(names, func(i, j int) bool { return names[i] < names[j] })
	for _, sc := range names {
		total += mix[sc]
		weights = append(weights, total)
	}
	rng := rand.New(rand.NewPCG(t.Seed, t.Seed^0x9e3779b97f4a7c15))
	pick := func() Scenario {
		n := rng.IntN(total)
		i := sort.SearchInts(weights, n+1)
		return names[i]
	}
	s.startRunner(func(r *runner) {
		p := newPacer(t.CallsPerSecond)
		defer p.stop()
		for p.wait(r.ctx) {
			sc := pick()
			seed := rng.Uint64()
			s.mu.Lock()
			switch {
			case s.restarting:
			case len(s.calls) >= s.cfg.MaxCalls:
				s.stats.callsRejected.Add(1)
			default:
				s.startScenarioLocked(sc, rand.New(rand.NewPCG(seed, seed)), time.Now())
			}
			s.mu.Unlock()
		}
	})
	return nil
}

// StartScenario starts one call of scenario sc now, its random choices
// from seed.
func (s *Server) StartScenario(sc Scenario, seed uint64) error {
	known := false
	for _, k := range Scenarios() {
		known = known || k == sc
	}
	if !known {
		return fmt.Errorf("amisim: unknown scenario %q", sc)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.calls) >= s.cfg.MaxCalls {
		s.stats.callsRejected.Add(1)
		return errors.New("amisim: MaxCalls reached")
	}
	s.startScenarioLocked(sc, rand.New(rand.NewPCG(seed, seed)), time.Now())
	return nil
}

// startScenarioLocked schedules one call. Caller holds mu.
func (s *Server) startScenarioLocked(sc Scenario, rng *rand.Rand, now time.Time) {
	if sc == ScenarioTemplate {
		s.addCallLocked(s.newCallLocked(answeredTemplate, "200@demo", originate{}, now))
		return
	}
	s.startScriptLocked(rng, now, func(b *scriptBuilder) {
		switch sc {
		case ScenarioBasic:
			b.basic()
		case ScenarioFailed:
			b.failed()
		case ScenarioHold:
			b.hold()
		case ScenarioBlind:
			b.blind()
		case ScenarioAttended:
			b.attended()
		case ScenarioLocal:
			b.local()
		case ScenarioMasquerade:
			b.masquerade()
		case ScenarioQueue:
			b.queue()
		case ScenarioPause:
			b.pause()
		}
	})
}

// startScriptLocked schedules a scripted call written by build, with the
// teardown as its last step. Caller holds mu.
func (s *Server) startScriptLocked(rng *rand.Rand, now time.Time, build func(b *scriptBuilder)) {
	c := &call{start: now, idx: -1, track: true}
	b := &scriptBuilder{s: s, c: c, rng: rng, d: s.cfg.CallDuration}
	build(b)
	sort.SliceStable(c.steps, func(i, j int) bool { return c.steps[i].at < c.steps[j].at })
	b.at(1, func(e *emitter) { e.teardown() })
	s.addCallLocked(c)
}

// scriptBuilder writes one scripted call's steps. Times are fractions of
// the call's duration d; the teardown is at 1.
type scriptBuilder struct {
	s   *Server
	c   *call
	rng *rand.Rand
	d   time.Duration
}

// at adds a step at fraction f of the call.
func (b *scriptBuilder) at(f float64, run func(e *emitter)) {
	b.c.steps = append(b.c.steps, scriptStep{at: time.Duration(f * float64(b.d)), run: run})
}

// phone picks a phone extension 1001-1099 other than those given.
func (b *scriptBuilder) phone(not ...string) string {
	for {
		p := strconv.Itoa(1001 + b.rng.IntN(99))
		ok := true
		for _, n := range not {
			ok = ok && n != p
		}
		if ok {
			return p
		}
	}
}

// phones2 and phones3 pick two and three distinct extensions, in the
// order (and with the random draws) of calling phone for each in turn.
func (b *scriptBuilder) phones2() (string, string) {
	a := b.phone()
	return a, b.phone(a)
}

func (b *scriptBuilder) phones3() (string, string, string) {
	a, c := b.phones2()
	return a, c, b.phone(a, c)
}

const phoneContext = "from-internal"

// dial starts a's Dial to phone bNum: B's channel appears with a as its
// connected line, then DialBegin. It returns B's channel.
func (e *emitter) dial(a *channel, bNum string) *channel {
	bc := e.newChannel(e.phoneName(bNum), stDown, phoneContext, bNum, bNum, "", a)
	e.connectedLine(bc, a.cidNum, a.cidName)
	e.dialBegin(a, bc, bNum)
	return bc
}

// caller makes a phone's channel that runs Dial to exten.
func (e *emitter) caller(aNum, exten, app, data string) *channel {
	a := e.newChannel(e.phoneName(aNum), stRing, phoneContext, exten, aNum, "Phone "+aNum, nil)
	e.newexten(a, exten, 1, app, data)
	return a
}

// ring makes the dialled channel ring.
func (e *emitter) ring(a, bc *channel) {
	e.newstate(bc, stRinging)
	e.pairEvent("DialState", classCall, a, bc, "DialStatus", "RINGING")
}

// answer answers bc and bridges it with a in a new bridge.
func (e *emitter) answer(a, bc *channel) *bridge {
	e.newstate(bc, stUp)
	e.connectedLine(a, bc.cidNum, bc.cidName)
	e.dialEnd(a, bc, "ANSWER")
	if a.state != strconv.Itoa(stUp) {
		e.newstate(a, stUp)
	}
	br := e.newBridge()
	e.enter(br, bc, nil)
	e.enter(br, a, nil)
	return br
}

// twoParty scripts A calling B up to their bridge by fraction 0.3.
func (b *scriptBuilder) twoParty(aNum, bNum string, A, B **channel, br **bridge) {
	b.at(0, func(e *emitter) {
		*A = e.caller(aNum, bNum, "Dial", "PJSIP/"+bNum+",30")
		*B = e.dial(*A, bNum)
	})
	b.at(0.1+0.05*b.rng.Float64(), func(e *emitter) { e.ring(*A, *B) })
	b.at(0.3, func(e *emitter) { *br = e.answer(*A, *B) })
}

func (b *scriptBuilder) basic() {
	var A, B *channel
	var br *bridge
	aNum := b.phone()
	b.twoParty(aNum, b.phone(aNum), &A, &B, &br)
}

func (b *scriptBuilder) failed() {
	var A, B *channel
	aNum, bNum := b.phones2()
	outcomes := []struct {
		status string
		cause  int
	}{{"NOANSWER", 19}, {"BUSY", 17}, {"CONGESTION", 34}}
	o := outcomes[b.rng.IntN(len(outcomes))]
	b.at(0, func(e *emitter) {
		A = e.caller(aNum, bNum, "Dial", "PJSIP/"+bNum+",30")
		B = e.dial(A, bNum)
	})
	b.at(0.1, func(e *emitter) { e.ring(A, B) })
	b.at(0.5, func(e *emitter) {
		e.dialEnd(A, B, o.status)
		e.hangup(B, o.cause, "HangupRequest")
	})
	b.at(0.6, func(e *emitter) { e.hangup(A, 16) })
}

func (b *scriptBuilder) hold() {
	var A, B *channel
	var br *bridge
	aNum := b.phone()
	b.twoParty(aNum, b.phone(aNum), &A, &B, &br)
	b.at(0.4, func(e *emitter) { e.hold(A) })
	b.at(0.4+0.3*b.rng.Float64(), func(e *emitter) { e.unhold(A) })
}

func (b *scriptBuilder) blind() {
	var A, B, C *channel
	var br *bridge
	aNum, bNum, cNum := b.phones3()
	b.twoParty(aNum, bNum, &A, &B, &br)
	b.at(0.4, func(e *emitter) {
		// The transferee leaves for the dialplan, then the transfer is
		// reported, then the transferer is hung up and the bridge goes.
		e.leave(B)
		m := e.ev("BlindTransfer", classCall)
		m.h("Result", "Success")
		A.snapshot(m, "Transferer")
		B.snapshot(m, "Transferee")
		br.writeSnapshot(m, "")
		m.h("IsExternal", "No").h("Context", phoneContext).h("Extension", cNum)
		e.send(m, classCall)
		e.hangup(A, 16)
		e.destroy(br)
		e.newexten(B, cNum, 1, "Dial", "PJSIP/"+cNum+",30")
		C = e.dial(B, cNum)
	})
	b.at(0.5, func(e *emitter) { e.ring(B, C) })
	b.at(0.6, func(e *emitter) { e.answer(B, C) })
}

func (b *scriptBuilder) attended() {
	var A, B, A2, C *channel
	var br1, br2 *bridge
	aNum, bNum, cNum := b.phones3()
	b.twoParty(aNum, bNum, &A, &B, &br1)
	b.at(0.35, func(e *emitter) {
		e.hold(A)
		A2 = e.caller(aNum, cNum, "Dial", "PJSIP/"+cNum+",30")
		C = e.dial(A2, cNum)
	})
	b.at(0.45, func(e *emitter) { e.ring(A2, C) })
	b.at(0.55, func(e *emitter) { br2 = e.answer(A2, C) })
	b.at(0.7, func(e *emitter) {
		// Both transferers are kicked while br2 merges into br1.
		m := e.ev("BridgeMerge", classCall)
		br1.writeSnapshot(m, "To")
		br2.writeSnapshot(m, "From")
		e.send(m, classCall)
		e.leave(A2)
		e.enter(br1, C, nil)
		e.leave(A)
		m = e.ev("AttendedTransfer", classCall)
		m.h("Result", "Success")
		A.snapshot(m, "OrigTransferer")
		br1.writeSnapshot(m, "Orig")
		A2.snapshot(m, "SecondTransferer")
		br2.writeSnapshot(m, "Second")
		m.h("DestType", "Bridge").h("DestBridgeUniqueid", br1.id)
		B.snapshot(m, "Transferee")
		C.snapshot(m, "TransferTarget")
		m.h("IsExternal", "No")
		e.send(m, classCall)
		e.hangup(A, 16)
		e.hangup(A2, 16)
		e.destroy(br2)
	})
}

func (b *scriptBuilder) local() {
	var A, L1, L2, B *channel
	var br1, br2 *bridge
	aNum, bNum := b.phones2()
	b.at(0, func(e *emitter) {
		A = e.caller(aNum, "6"+bNum[1:], "Dial", "Local/"+bNum+"@"+phoneContext+",30")
		L1, L2 = e.localPair(A, bNum, phoneContext)
		e.dialBegin(A, L1, bNum+"@"+phoneContext)
		e.newexten(L2, bNum, 1, "Dial", "PJSIP/"+bNum+",30")
		B = e.dial(L2, bNum)
	})
	b.at(0.15, func(e *emitter) {
		e.ring(L2, B)
		e.ring(A, L1)
	})
	b.at(0.3, func(e *emitter) {
		br2 = e.answer(L2, B)
		br1 = e.answer(A, L1)
	})
	b.at(0.35, func(e *emitter) {
		e.s.optimizeSeq++
		id := strconv.Itoa(e.s.optimizeSeq)
		m := e.ev("LocalOptimizationBegin", classCall)
		L1.snapshot(m, "LocalOne")
		L2.snapshot(m, "LocalTwo")
		B.snapshot(m, "Source")
		m.h("DestUniqueId", L1.uniqueid).h("Id", id)
		e.send(m, classCall)
		// B swaps into ;1's place in A's bridge; ;1 leaves it.
		e.enter(br1, B, L1)
		e.leave(L1)
		m = e.ev("LocalOptimizationEnd", classCall)
		L1.snapshot(m, "LocalOne")
		L2.snapshot(m, "LocalTwo")
		m.h("Success", "Yes").h("Id", id)
		e.send(m, classCall)
		e.hangup(L2, 16)
		e.hangup(L1, 16)
		e.destroy(br2)
	})
}

func (b *scriptBuilder) masquerade() {
	var A, B, C *channel
	aNum, bNum, cNum := b.phones3()
	b.at(0, func(e *emitter) {
		A = e.caller(aNum, bNum, "Dial", "PJSIP/"+bNum+",30")
		B = e.dial(A, bNum)
	})
	b.at(0.1, func(e *emitter) { e.ring(A, B) })
	b.at(0.25, func(e *emitter) { C = e.caller(cNum, "*8", "Pickup", bNum+"@"+phoneContext) })
	b.at(0.35, func(e *emitter) {
		// ast_do_masquerade's renames: the clone (the picker's channel)
		// becomes <MASQ>, the original takes the clone's name, the clone
		// ends as the original's <ZOMBIE> and hangs up.
		cName, bName := C.name, B.name
		e.rename(C, cName+"<MASQ>")
		e.rename(B, cName)
		e.rename(C, bName+"<ZOMBIE>")
		e.hangup(C, 16)
		e.callerID(B, cNum, "Phone "+cNum)
		e.answer(A, B)
	})
}

// queue scripts a caller into a random queue.
func (b *scriptBuilder) queue() {
	b.queueCall(b.rng.IntN(len(queues)), b.phone(), b.rng.IntN(5) < 3)
}

// queueCall scripts phone aNum calling queue qi (300 support, 301 sales);
// the member rung answers or not.
func (b *scriptBuilder) queueCall(qi int, aNum string, answers bool) {
	qName := queues[qi].name
	exten := strconv.Itoa(300 + qi)
	var X, L1, L2 *channel
	var q *queueState
	var mb *memberState
	var br *bridge
	var joined time.Time
	b.at(0, func(e *emitter) {
		q = e.s.queueLocked(qName)
		X = e.caller(aNum, exten, "Queue", qName)
		X.hangupReqs = []string{"HangupRequest", "SoftHangupRequest"}
		e.queueJoin(q, X)
		e.chanEvent("MusicOnHoldStart", classCall, X, "Class", "default")
		joined = e.now
	})
	b.at(0.1, func(e *emitter) {
		if q == nil || X.gone {
			return
		}
		for _, m := range q.members {
			if m.status == devNotInUse && !m.paused {
				mb = m
				break
			}
		}
		if mb == nil {
			return // nobody free: the caller waits and abandons at the end
		}
		dev := strings.TrimPrefix(mb.iface, "Local/")
		mExten, mContext, _ := strings.Cut(dev, "@")
		L1, L2 = e.localPair(X, mExten, mContext)
		e.pairEvent("AgentCalled", classAgent, X, L1, "Queue", q.name, "Interface", mb.iface, "MemberName", mb.name)
		e.dialBegin(X, L1, dev)
		e.newexten(L2, mExten, 1, "Answer", "")
		e.newstate(L1, stRinging)
		e.newexten(L1, X.exten, 1, "AppDial", "(Outgoing Line)")
		e.newexten(L2, mExten, 2, "Wait", "30")
		e.pairEvent("DialState", classCall, X, L1, "DialStatus", "RINGING")
		e.deviceStates()
	})
	if answers {
		b.at(0.3, func(e *emitter) {
			if L1 == nil || L1.gone || X.gone {
				return
			}
			e.newstate(L2, stUp)
			e.newstate(L1, stUp)
			e.dialEnd(X, L1, "ANSWER")
			e.chanEvent("MusicOnHoldStop", classCall, X)
			e.queueLeave(q, X)
			e.newstate(X, stUp)
			br = e.newBridge()
			e.enter(br, L1, nil)
			e.enter(br, X, nil)
			hold := strconv.Itoa(int(e.now.Sub(joined) / time.Second))
			e.pairEvent("AgentConnect", classAgent, X, L1, "Queue", q.name, "MemberName", mb.name,
				"Interface", mb.iface, "HoldTime", hold, "RingTime", "0")
			e.inCall(q, mb, true)
			connected := e.now
			e.c.onEnd = func(e *emitter) {
				if L1.gone || X.gone {
					return
				}
				e.pairEvent("AgentComplete", classAgent, X, L1, "Queue", q.name, "MemberName", mb.name,
					"Interface", mb.iface, "HoldTime", hold,
					"TalkTime", strconv.Itoa(int(e.now.Sub(connected)/time.Second)), "Reason", "caller")
				e.inCall(q, mb, false)
			}
		})
		return
	}
	// 08b: the member's ring times out, then the caller gives up.
	b.at(0.5, func(e *emitter) {
		if L1 == nil || L1.gone || X.gone {
			return
		}
		e.chanEvent("SoftHangupRequest", classCall, L2, "Cause", "16")
		e.dialEnd(X, L1, "NOANSWER")
		e.chanEvent("HangupRequest", classCall, L1, "Cause", "16")
		e.pairEvent("AgentRingNoAnswer", classAgent, X, L1, "Queue", q.name, "Interface", mb.iface,
			"MemberName", mb.name, "RingTime", strconv.Itoa(int(e.now.Sub(joined)/time.Millisecond)))
		e.hangup(L2, 16)
		e.hangup(L1, 16)
	})
}

func (b *scriptBuilder) pause() {
	qi := b.rng.IntN(len(queues))
	mi := b.rng.IntN(len(queues[qi].members))
	reasons := []string{"lunch", "break", "training"}
	reason := reasons[b.rng.IntN(len(reasons))]
	var q *queueState
	var mb *memberState
	b.at(0, func(e *emitter) {
		q = e.s.queueLocked(queues[qi].name)
		if q == nil || mi >= len(q.members) || q.members[mi].paused {
			return
		}
		mb = q.members[mi]
		e.pause(q, mb, true, reason)
		e.c.onEnd = func(e *emitter) {
			if mb.paused {
				e.pause(q, mb, false, "")
			}
		}
	})
	b.at(0.5+0.4*b.rng.Float64(), func(e *emitter) {
		if mb != nil && mb.paused {
			e.pause(q, mb, false, "")
		}
	})
}
