package amisim

import (
	"container/heap"
	"context"
	"crypto/rand"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// channel is one live channel, kept up to date from the events the
// simulator emits, so that CoreShowChannels, Status and "core show
// channels" agree with the event stream.
type channel struct {
	name, state, stateDesc, cidNum, cidName, connNum, connName string
	language, accountCode, context, exten, priority            string
	uniqueid, linkedid, app, appData, bridge                   string
	created                                                    time.Time
	seq                                                        int64
	pbx                                                        bool
	hold                                                       bool
	gone                                                       bool     // hung up (engine.go)
	hangupReqs                                                 []string // request events its teardown hangup emits
	call                                                       *call
}

// snapshot writes the channel snapshot headers (Channel ... Linkedid).
func (ch *channel) snapshot(m *msg, prefix string) {
	m.h(prefix+"Channel", ch.name).h(prefix+"ChannelState", ch.state).h(prefix+"ChannelStateDesc", ch.stateDesc).
		h(prefix+"CallerIDNum", ch.cidNum).h(prefix+"CallerIDName", ch.cidName).
		h(prefix+"ConnectedLineNum", ch.connNum).h(prefix+"ConnectedLineName", ch.connName).
		h(prefix+"Language", ch.language).h(prefix+"AccountCode", ch.accountCode).
		h(prefix+"Context", ch.context).h(prefix+"Exten", ch.exten).h(prefix+"Priority", ch.priority).
		h(prefix+"Uniqueid", ch.uniqueid).h(prefix+"Linkedid", ch.linkedid)
}

// cidNumOrEmpty is the caller number as the CLI shows it: "" when unknown.
func (ch *channel) cidNumOrEmpty() string {
	if ch.cidNum == "<unknown>" {
		return ""
	}
	return ch.cidNum
}

// call is one simulated call playing a template.
type call struct {
	tmpl   *template
	events []*tevent
	vars   [numPh]string
	start  time.Time
	// shift moves the remaining events when a Hangup makes the call jump.
	shift time.Duration
	scale float64
	next  int
	due   time.Time
	idx   int // in the heap
	// noOriginateResponse: a synchronous Originate gets no such event.
	noOriginateResponse bool
	// track: the call's channels enter the channel table.
	track bool

	// A scripted call (engine.go, scenarios.go) has steps instead of
	// template events; its last step is the teardown a Hangup jumps to.
	steps   []scriptStep
	own     []*channel
	bridges []*bridge
	// onEnd runs first in the teardown (an agent's AgentComplete).
	onEnd func(e *emitter)
	// dials are the caller/callee pairs between DialBegin and DialEnd.
	dials [][2]*channel
}

func (c *call) dueOf(i int) time.Time {
	if c.steps != nil {
		return c.start.Add(c.steps[i].at)
	}
	return c.start.Add(time.Duration(float64(c.events[i].at)*c.scale) + c.shift)
}

// length is the number of events or steps.
func (c *call) length() int {
	if c.steps != nil {
		return len(c.steps)
	}
	return len(c.events)
}

// callHeap orders calls by the time of their next event.
type callHeap []*call

func (h callHeap) Len() int           { return len(h) }
func (h callHeap) Less(i, j int) bool { return h[i].due.Before(h[j].due) }
func (h callHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].idx = i
	h[j].idx = j
}
func (h *callHeap) Push(x any) {
	c := x.(*call)
	c.idx = len(*h)
	*h = append(*h, c)
}
func (h *callHeap) Pop() any {
	old := *h
	c := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	c.idx = -1
	return c
}

// originate is a parsed Originate action.
type originate struct {
	channel, tech, data, exten, context, actionID string
	async                                         bool
	vars                                          [][2]string
}

// uniqueID returns the next Uniqueid: "[systemname-]epoch.n". Caller holds mu.
func (s *Server) uniqueIDLocked() string {
	id := strconv.FormatInt(s.uidEpoch, 10) + "." + strconv.Itoa(s.uidSeq)
	s.uidSeq++
	if s.cfg.Node != "" {
		return s.cfg.Node + "-" + id
	}
	return id
}

// localNameLocked returns the next Local channel pair's base name.
func (s *Server) localNameLocked(dest string) string {
	name := fmt.Sprintf("Local/%s-%08x", dest, s.localSeq)
	s.localSeq++
	return name
}

func newUUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// newCallLocked prepares a call from tmpl. dest is the Local channel's
// "exten@context"; o is the Originate, zero for traffic. Caller holds mu.
func (s *Server) newCallLocked(tmpl *template, dest string, o originate, now time.Time) *call {
	c := &call{tmpl: tmpl, events: tmpl.events, start: now, idx: -1, track: true}
	if tmpl.duration > 0 {
		c.scale = float64(s.cfg.CallDuration) / float64(tmpl.duration)
	}
	v := &c.vars
	a := s.localNameLocked(dest)
	v[phA1], v[phA2] = a+";1", a+";2"
	v[phUA1], v[phUA2] = s.uniqueIDLocked(), s.uniqueIDLocked()
	if tmpl == answeredTemplate {
		b := s.localNameLocked("100@demo")
		v[phB1], v[phB2] = b+";1", b+";2"
		v[phUB1], v[phUB2] = s.uniqueIDLocked(), s.uniqueIDLocked()
		v[phBridge] = newUUID()
	}
	exten, context, _ := strings.Cut(dest, "@")
	v[phAExten], v[phAContext], v[phADevice] = exten, context, "Local/"+dest
	v[phActionID], v[phOChannel], v[phOContext], v[phOExten] = o.actionID, o.channel, o.context, o.exten
	if o.channel == "" {
		v[phOChannel], v[phOContext], v[phOExten] = "Local/"+dest, "demo", "100"
	}
	v[phLoginTime] = strconv.FormatInt(s.startTime.Unix(), 10)
	v[phCDRStart] = now.Format("2006-01-02 15:04:05")
	v[phCDRAnswer] = v[phCDRStart]
	if len(o.vars) > 0 && tmpl == answeredTemplate {
		c.events = withVarSets(tmpl, o.vars)
	}
	return c
}

// withVarSets inserts the VarSet events an Originate's Variable headers
// cause on both Local channels (07d), after the first channel's AppDial2.
func withVarSets(tmpl *template, vars [][2]string) []*tevent {
	var protoA1, protoA2 *tevent
	for _, e := range tmpl.events {
		i := e.snap[kChannel]
		if i < 0 || len(e.headers[i].parts) != 1 {
			continue
		}
		switch p := e.headers[i].parts[0].ph; {
		case e.name == "Newexten" && p == phA1 && protoA1 == nil:
			protoA1 = e
		case e.name == "Newchannel" && p == phA2 && protoA2 == nil:
			protoA2 = e
		}
	}
	if protoA1 == nil || protoA2 == nil {
		return tmpl.events
	}
	varSet := func(proto *tevent, k, v string) *tevent {
		e := &tevent{at: proto.at, name: "VarSet", class: classDialplan, privilege: "dialplan,all"}
		last := int(proto.snap[kLinkedid])
		e.headers = append(e.headers, proto.headers[:last+1]...)
		e.headers = append(e.headers, theader{key: "Variable", parts: []part{{lit: k}}},
			theader{key: "Value", parts: []part{{lit: v}}})
		e.snap = proto.snap
		e.snap[kApplication], e.snap[kAppData], e.snap[kBridge] = -1, -1, -1
		return e
	}
	out := make([]*tevent, 0, len(tmpl.events)+2*len(vars))
	for _, e := range tmpl.events {
		out = append(out, e)
		if e == protoA1 {
			for _, kv := range vars {
				out = append(out, varSet(protoA1, kv[0], kv[1]))
			}
			for _, kv := range vars {
				out = append(out, varSet(protoA2, kv[0], kv[1]))
			}
		}
	}
	return out
}

// setEndVars fills the values known at the call's end.
func (c *call) setEndVars(now time.Time) {
	d := now.Sub(c.start)
	ms := int(d / time.Millisecond)
	c.vars[phCDREnd] = now.Format("2006-01-02 15:04:05")
	c.vars[phCDRDur] = strconv.Itoa(int(d / time.Second))
	c.vars[phDurS] = c.vars[phCDRDur]
	c.vars[phAnsMS] = strconv.Itoa(ms)
	c.vars[phDialMS] = strconv.Itoa(ms + 2)
}

// pendingEvent is a rendered event waiting for fan-out.
type pendingEvent struct {
	b     []byte
	class int
}

// stepLocked renders the call's events due by now, updates the channel
// table and appends them to out. It reports whether the call is over.
// Caller holds mu.
func (s *Server) stepLocked(c *call, now time.Time, out []pendingEvent, vals []string) ([]pendingEvent, bool) {
	ts := s.timestamp()
	if c.steps != nil {
		e := emitter{s: s, c: c, now: now, ts: ts, out: out}
		for c.next < len(c.steps) && !c.dueOf(c.next).After(now) {
			c.next++
			c.steps[c.next-1].run(&e)
		}
		if c.next < len(c.steps) {
			c.due = c.dueOf(c.next)
			return e.out, false
		}
		return e.out, true
	}
	for c.next < len(c.events) && !c.dueOf(c.next).After(now) {
		e := c.events[c.next]
		c.next++
		if c.noOriginateResponse && e.name == "OriginateResponse" {
			continue
		}
		if e.usesAt {
			c.setEndVars(now)
		}
		vals = vals[:len(e.headers)]
		b := e.render(&c.vars, ts, vals)
		if c.track {
			s.applyLocked(c, e, vals, now)
			if e.name == "QueueMemberStatus" {
				// The member's device state comes from the template; the
				// rest (paused, calls taken) from the member's state.
				if q := s.queueLocked(e.valueOf("Queue", vals)); q != nil {
					if mb := q.member(e.valueOf("Interface", vals)); mb != nil {
						b = s.memberMsg(e.name, q, mb, ts).b
					}
				}
			}
		}
		out = append(out, pendingEvent{b: b, class: e.class})
	}
	if c.next < len(c.events) {
		c.due = c.dueOf(c.next)
		return out, false
	}
	return out, true
}

// applyLocked follows one event in the channel table. Caller holds mu.
func (s *Server) applyLocked(c *call, e *tevent, vals []string, now time.Time) {
	at := func(k int) string {
		if i := e.snap[k]; i >= 0 {
			return vals[i]
		}
		return ""
	}
	switch e.name {
	case "BridgeCreate":
		id := e.valueOf("BridgeUniqueid", vals)
		if s.bridges[id] == nil {
			s.bridgeSeq++
			s.bridges[id] = &bridge{id: id, typ: e.valueOf("BridgeType", vals),
				tech: e.valueOf("BridgeTechnology", vals), creator: e.valueOf("BridgeCreator", vals),
				name: e.valueOf("BridgeName", vals), seq: s.bridgeSeq}
		}
		return
	case "BridgeDestroy":
		delete(s.bridges, e.valueOf("BridgeUniqueid", vals))
		return
	case "QueueMemberStatus":
		if q := s.queueLocked(e.valueOf("Queue", vals)); q != nil {
			if m := q.member(e.valueOf("Interface", vals)); m != nil {
				// From the live channels, not the recorded value: another
				// call may hold the device too.
				m.status = s.deviceStatusLocked(m.iface)
			}
		}
		return
	}
	if e.snap[kChannel] < 0 || e.snap[kStateDesc] < 0 {
		return
	}
	name := at(kChannel)
	ch := s.chans[name]
	if e.name == "Newchannel" && ch == nil {
		s.chanSeq++
		ch = &channel{name: name, created: now, seq: s.chanSeq, call: c}
		s.chans[name] = ch
	}
	if ch == nil {
		return
	}
	if e.name == "Hangup" {
		s.forgetChannelLocked(ch)
		return
	}
	ch.state, ch.stateDesc = at(kState), at(kStateDesc)
	ch.cidNum, ch.cidName, ch.connNum, ch.connName = at(kCIDNum), at(kCIDName), at(kConnNum), at(kConnName)
	ch.language, ch.accountCode = at(kLanguage), at(kAccountCode)
	ch.context, ch.exten, ch.priority = at(kContext), at(kExten), at(kPriority)
	ch.uniqueid, ch.linkedid = at(kUniqueid), at(kLinkedid)
	switch e.name {
	case "Newexten":
		ch.app, ch.appData = at(kApplication), at(kAppData)
		if !ch.pbx && ch.app != "AppDial" && ch.app != "AppDial2" && ch.app != "AppQueue" {
			ch.pbx = true
			s.processedCalls++
		}
	case "BridgeEnter":
		ch.bridge = at(kBridge)
		if b := s.bridges[ch.bridge]; b != nil {
			b.members = append(b.members, ch.uniqueid)
		}
	case "BridgeLeave":
		if b := s.bridges[ch.bridge]; b != nil {
			b.removeMember(ch.uniqueid)
		}
		ch.bridge = ""
	}
}

// dropCallLocked removes what is left of a finished call from the table.
func (s *Server) dropCallLocked(c *call) {
	for _, ch := range s.chans {
		if ch.call == c {
			s.forgetChannelLocked(ch)
		}
	}
}

// runScheduler plays every scheduled call's events at their times.
func (s *Server) runScheduler() {
	defer s.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	vals := make([]string, 0, maxTemplateHeaders)
	for {
		s.mu.Lock()
		var next time.Time
		if len(s.calls) > 0 {
			next = s.calls[0].due
		}
		s.mu.Unlock()
		if !next.IsZero() {
			t.Reset(time.Until(next))
		}
		select {
		case <-s.ctx.Done():
			t.Stop()
			return
		case <-s.schedWake:
		case <-t.C:
		}
		t.Stop()
		vals = s.runDue(vals)
	}
}

// runDue emits the events of every call due now, in one global order.
func (s *Server) runDue(vals []string) []string {
	now := time.Now()
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	var out []pendingEvent
	ending := 0
	s.mu.Lock()
	for len(s.calls) > 0 && !s.calls[0].due.After(now) {
		c := s.calls[0]
		var done bool
		out, done = s.stepLocked(c, now, out, vals)
		if done {
			heap.Pop(&s.calls)
			s.dropCallLocked(c)
			ending++
		} else {
			heap.Fix(&s.calls, 0)
		}
	}
	s.ending += ending
	hook := s.sendHook
	s.mu.Unlock()
	if hook != nil && len(out) > 0 {
		hook()
	}
	for _, ev := range out {
		s.broadcastLocked(ev.b, ev.class)
	}
	if ending > 0 {
		// A call counts as live until its last events are queued.
		s.mu.Lock()
		s.ending -= ending
		s.mu.Unlock()
	}
	if len(out) > 0 || ending > 0 {
		s.notify()
	}
	return vals
}

// maxTemplateHeaders bounds the headers of any call event: the templates'
// largest, or a VarSet built from a snapshot plus two.
var maxTemplateHeaders = func() int {
	n := 0
	for _, t := range []*template{answeredTemplate, failedTemplate} {
		for _, e := range t.events {
			n = max(n, len(e.headers)+2)
		}
	}
	return n
}()

// addCallLocked schedules c. Caller holds mu.
func (s *Server) addCallLocked(c *call) {
	c.due = c.dueOf(0)
	heap.Push(&s.calls, c)
	s.stats.callsStarted.Add(1)
	select {
	case s.schedWake <- struct{}{}:
	default:
	}
}

// activeCallCountLocked counts channels running dialplan, which is what
// Asterisk calls active calls. Caller holds mu.
func (s *Server) activeCallCountLocked() int {
	n := 0
	for _, ch := range s.chans {
		if ch.pbx {
			n++
		}
	}
	return n
}

// LiveCalls returns the number of calls in progress: from the moment an
// Originate is answered until the call's last events are queued for the
// sessions.
func (s *Server) LiveCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.calls) + s.ending + s.starting
}

// LiveChannels returns the names of the live channels in creation order.
func (s *Server) LiveChannels() []string {
	chans := s.channelSnapshot()
	out := make([]string, len(chans))
	for i, ch := range chans {
		out[i] = ch.name
	}
	return out
}

// channelSnapshot copies the channel table in creation order.
func (s *Server) channelSnapshot() []channel {
	s.mu.Lock()
	out := make([]channel, 0, len(s.chans))
	for _, ch := range s.chans {
		out = append(out, *ch)
	}
	s.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

// clearCalls forgets every call and channel, as a restart does.
func (s *Server) clearCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.calls {
		c.idx = -1 // a Hangup that looked the channel up before stays off the heap
	}
	s.calls = nil
	s.chans = make(map[string]*channel)
	s.bridges = make(map[string]*bridge)
	s.queues = newQueueStates()
}

// hangupChannels hangs up the calls of every channel whose name matches:
// each jumps to its hangup phase now. The names are appended to out in
// channel order. It reports whether any matched.
func (s *Server) hangupChannels(match func(string) bool, out *[]string) bool {
	chans := s.channelSnapshot()
	now := time.Now()
	found := false
	s.mu.Lock()
	for _, ch := range chans {
		if !match(ch.name) {
			continue
		}
		found = true
		if out != nil {
			*out = append(*out, ch.name)
		}
		c := ch.call
		if c != nil && c.steps != nil && c.idx >= 0 && c.next < len(c.steps) {
			// A scripted call jumps to its teardown, now.
			c.next = len(c.steps) - 1
			c.steps[c.next].at = now.Sub(c.start)
			c.due = now
			heap.Fix(&s.calls, c.idx)
			continue
		}
		if c == nil || c.idx < 0 || c.tmpl == nil || c.next >= c.tmpl.hangupIdx {
			continue
		}
		c.next = c.tmpl.hangupIdx
		if c.next < len(c.events) {
			c.shift = now.Sub(c.start.Add(time.Duration(float64(c.events[c.next].at) * c.scale)))
			c.due = now
			heap.Fix(&s.calls, c.idx)
		}
	}
	if found {
		select {
		case s.schedWake <- struct{}{}:
		default:
		}
	}
	s.mu.Unlock()
	return found
}

// reachable reports whether a Local channel's "exten@context[/opts]"
// exists in the simulated dialplan, and returns it without options.
func (s *Server) reachable(data string) (string, bool) {
	dest, _, _ := strings.Cut(data, "/")
	return dest, s.extensions[dest]
}

// startOriginate runs an Originate: respond(answered) queues the answer,
// then the call starts. A Local channel to a reachable extension plays the
// answered template; a Local channel elsewhere the failed one; another
// technology, or MaxCalls reached, gives only a failed OriginateResponse
// (async) or the error (sync).
func (s *Server) startOriginate(o originate, respond func(answered bool)) {
	dest, ok := s.reachable(o.data)
	local := strings.EqualFold(o.tech, "Local")
	// Holding emitMu from the answer to the call's scheduling: no event of
	// the call can precede the answer, and once the answer is out the call
	// counts in LiveCalls.
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	s.mu.Lock()
	over := len(s.calls) >= s.cfg.MaxCalls
	s.starting++
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		s.starting--
		s.mu.Unlock()
	}()
	if over {
		s.stats.callsRejected.Add(1)
	}
	respond(local && ok && !over)
	if !local || over {
		if o.async {
			s.originateFailureLocked(o)
		}
		return
	}
	tmpl := failedTemplate
	if ok {
		tmpl = answeredTemplate
	}
	s.mu.Lock()
	c := s.newCallLocked(tmpl, dest, o, time.Now())
	c.noOriginateResponse = !o.async
	s.addCallLocked(c)
	s.mu.Unlock()
}

// originateFailureLocked emits the failed template's OriginateResponse
// alone. The caller holds emitMu.
func (s *Server) originateFailureLocked(o originate) {
	var vars [numPh]string
	vars[phActionID], vars[phOChannel], vars[phOContext], vars[phOExten] = o.actionID, o.channel, o.context, o.exten
	for _, e := range failedTemplate.events {
		if e.name == "OriginateResponse" {
			vals := make([]string, len(e.headers))
			s.broadcastLocked(e.render(&vars, s.timestamp(), vals), e.class)
			return
		}
	}
}

// runner is a background generator the Server owns.
type runner struct {
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

// StartTraffic starts live calls at callsPerSecond, each playing transcript
// 07's ~85 events with fresh Uniqueids, Linkedid and channel names over
// CallDuration, visible in CoreShowChannels and Status while they last.
// callsPerSecond < 0 runs calls back to back as fast as the sessions take
// their events, each call's events at once. It replaces running traffic.
// StartMixedTraffic makes the hard calls.
func (s *Server) StartTraffic(callsPerSecond float64) {
	if callsPerSecond == 0 {
		s.StopTraffic()
		return
	}
	s.startRunner(func(r *runner) { s.runTraffic(r.ctx, callsPerSecond) })
}

// startRunner replaces the traffic generator with one running run.
func (s *Server) startRunner(run func(r *runner)) {
	s.StopTraffic()
	ctx, cancel := context.WithCancel(s.ctx)
	r := &runner{ctx: ctx, cancel: cancel, done: make(chan struct{})}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		cancel()
		return
	}
	s.traffic = r
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		defer close(r.done)
		run(r)
	}()
}

// StopTraffic stops starting calls; calls in progress play to their end.
func (s *Server) StopTraffic() {
	s.mu.Lock()
	r := s.traffic
	s.traffic = nil
	s.mu.Unlock()
	if r != nil {
		r.cancel()
		<-r.done
	}
}

func (s *Server) runTraffic(ctx context.Context, cps float64) {
	p := newPacer(cps)
	defer p.stop()
	vals := make([]string, 0, maxTemplateHeaders)
	for p.wait(ctx) {
		now := time.Now()
		s.mu.Lock()
		if s.restarting {
			s.mu.Unlock()
			continue
		}
		if len(s.calls) >= s.cfg.MaxCalls {
			s.mu.Unlock()
			s.stats.callsRejected.Add(1)
			continue
		}
		c := s.newCallLocked(answeredTemplate, "200@demo", originate{}, now)
		if cps > 0 {
			s.addCallLocked(c)
			s.mu.Unlock()
			continue
		}
		s.mu.Unlock()
		// As fast as possible: the whole call now, from this goroutine.
		c.scale = 0
		s.stats.callsStarted.Add(1)
		s.emitMu.Lock()
		s.mu.Lock()
		out, _ := s.stepLocked(c, now, nil, vals)
		s.dropCallLocked(c)
		s.mu.Unlock()
		for _, ev := range out {
			s.broadcastLocked(ev.b, ev.class)
		}
		s.emitMu.Unlock()
		s.notify()
	}
}

// EmitEvents broadcasts n events of a realistic mix (transcript 07's call,
// ~370 B on average, fresh ids every 85 events) at rate events/s, or as
// fast as the sessions take them if rate <= 0. These events do not touch
// the channel table. It returns when done or when the Server closes.
func (s *Server) EmitEvents(n int, rate float64) {
	p := newPacer(rate)
	defer p.stop()
	var c *call
	vals := make([]string, 0, maxTemplateHeaders)
	for i := 0; i < n; i++ {
		if !p.wait(s.ctx) {
			return
		}
		j := i % len(answeredTemplate.events)
		if j == 0 || c == nil {
			s.mu.Lock()
			c = s.newCallLocked(answeredTemplate, "200@demo", originate{}, time.Now())
			s.mu.Unlock()
			c.setEndVars(time.Now())
		}
		e := answeredTemplate.events[j]
		b := e.render(&c.vars, s.timestamp(), vals[:len(e.headers)])
		s.emitMu.Lock()
		s.broadcastLocked(b, e.class)
		s.emitMu.Unlock()
	}
}

// pacer spaces iterations at a rate without busy waiting: it sleeps only
// when at least a millisecond ahead, so high rates go in small bursts.
type pacer struct {
	rate  float64
	start time.Time
	n     int64
	t     *time.Timer
}

func newPacer(rate float64) *pacer {
	return &pacer{rate: rate, start: time.Now()}
}

// wait returns when the next iteration is due; false if ctx ended.
func (p *pacer) wait(ctx context.Context) bool {
	if ctx.Err() != nil {
		return false
	}
	if p.rate > 0 {
		due := p.start.Add(time.Duration(float64(p.n) / p.rate * float64(time.Second)))
		if d := time.Until(due); d >= time.Millisecond {
			if p.t == nil {
				p.t = time.NewTimer(d)
			} else {
				p.t.Reset(d)
			}
			select {
			case <-p.t.C:
			case <-ctx.Done():
				return false
			}
		}
	}
	p.n++
	return true
}

func (p *pacer) stop() {
	if p.t != nil {
		p.t.Stop()
	}
}
