package amisim

import (
	"sort"
	"strconv"
	"time"
)

// Truth is what one simulated PBX has at one moment: every live channel,
// bridge and queue, taken after the last event it has emitted and before
// the next one. The Server's CoreShowChannels, Status, BridgeList,
// BridgeInfo, QueueStatus and QueueSummary answers are rendered from the
// same state, and every call event changes that state under the same lock
// as it is emitted, so a consumer that applies the events it received up to
// some point has exactly the Truth at that point.
type Truth struct {
	// Node is the PBX's systemname (Config.Node).
	Node string `json:"node"`
	// Channels are the live channels in creation order.
	Channels []TruthChannel `json:"channels"`
	// Bridges are the live bridges in creation order.
	Bridges []TruthBridge `json:"bridges"`
	// Queues are the configured queues, in QueueStatus order.
	Queues []TruthQueue `json:"queues"`
}

// TruthChannel is one live channel, with the values its last event showed.
type TruthChannel struct {
	Uniqueid          string `json:"uniqueid"`
	Channel           string `json:"channel"`
	State             int    `json:"state"`
	StateDesc         string `json:"state_desc"`
	CallerIDNum       string `json:"caller_id_num"`
	CallerIDName      string `json:"caller_id_name"`
	ConnectedLineNum  string `json:"connected_line_num"`
	ConnectedLineName string `json:"connected_line_name"`
	AccountCode       string `json:"account_code"`
	Language          string `json:"language"`
	Context           string `json:"context"`
	Exten             string `json:"exten"`
	Priority          int    `json:"priority"`
	Application       string `json:"application"`
	ApplicationData   string `json:"application_data"`
	Linkedid          string `json:"linkedid"`
	// Bridge is the BridgeUniqueid of the bridge the channel is in; "" when
	// none.
	Bridge string `json:"bridge"`
	// OnHold is true between the channel's Hold and Unhold events.
	OnHold bool `json:"on_hold"`
}

// TruthBridge is one live bridge.
type TruthBridge struct {
	ID         string `json:"id"`
	Type       string `json:"type"`
	Technology string `json:"technology"`
	Creator    string `json:"creator"`
	Name       string `json:"name"`
	// Members are the Uniqueids of the channels in the bridge, sorted.
	Members []string `json:"members"`
}

// TruthQueue is one queue with its members and the callers waiting in it.
type TruthQueue struct {
	Name    string             `json:"name"`
	Members []TruthQueueMember `json:"members"`
	// Callers are the callers waiting, by position (1 first).
	Callers []TruthQueueCaller `json:"callers"`
}

// TruthQueueMember is one queue member as QueueMemberStatus, QueueMember
// and QueueMemberPause show it.
type TruthQueueMember struct {
	Interface string `json:"interface"`
	Name      string `json:"name"`
	// Status is the member's device state number as AMI gives it (1 not in
	// use, 2 in use, 6 ringing ...).
	Status       int    `json:"status"`
	Paused       bool   `json:"paused"`
	PausedReason string `json:"paused_reason"`
	InCall       bool   `json:"in_call"`
}

// TruthQueueCaller is one caller waiting in a queue.
type TruthQueueCaller struct {
	Uniqueid string `json:"uniqueid"`
	Channel  string `json:"channel"`
	Position int    `json:"position"`
	// Since is when the caller joined (its QueueCallerJoin), in UTC
	// without a monotonic reading; no event carries it.
	Since time.Time `json:"since"`
}

// bridge is one live bridge in the state.
type bridge struct {
	id, typ, tech, creator, name string
	// members are Uniqueids in the order they entered.
	members []string
	seq     int64
}

// queueState is one queue's live state.
type queueState struct {
	name                 string
	members              []*memberState
	callers              []*queueCaller
	completed, abandoned int
}

// memberState is one queue member's live state.
type memberState struct {
	name, iface         string
	status              int
	paused              bool
	pausedReason        string
	inCall              bool
	callsTaken          int
	lastCall, lastPause int64
}

// queueCaller is one caller waiting in a queue.
type queueCaller struct {
	ch    *channel
	since time.Time
	// origPos is the position the caller joined at.
	origPos int
}

// newQueueStates returns the queues of the transcripts' peer with every
// member idle and no caller.
func newQueueStates() []*queueState {
	out := make([]*queueState, 0, len(queues))
	for _, q := range queues {
		qs := &queueState{name: q.name}
		for _, m := range q.members {
			qs.members = append(qs.members, &memberState{name: m.name, iface: m.location, status: devNotInUse})
		}
		out = append(out, qs)
	}
	return out
}

// Device states as QueueMemberStatus numbers them (AST_DEVICE_*).
const (
	devNotInUse = 1
	devInUse    = 2
	devRinging  = 6
)

// Truth returns the PBX's state now: after every event emitted so far and
// before the next. It is a copy; the caller may keep it.
func (s *Server) Truth() Truth {
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.truthLocked()
}

// ObserveLists makes fn receive, for every list answer (CoreShowChannels,
// Status, BridgeList, BridgeInfo, QueueStatus, QueueSummary), the action's
// name, its ActionID and the Truth the answer was rendered from: a test can
// compare what a client stored of a list (a snapshot) with the exact state
// at the moment it describes. fn runs under the Server's locks: it must
// return quickly and call no method of the Server. nil stops it.
func (s *Server) ObserveLists(fn func(action, actionID string, t Truth)) {
	s.mu.Lock()
	s.listObserver = fn
	s.mu.Unlock()
}

// Truth returns every node's Truth, keyed by node name.
func (f *Fleet) Truth() map[string]Truth {
	out := make(map[string]Truth, len(f.servers))
	for _, s := range f.servers {
		out[s.Node()] = s.Truth()
	}
	return out
}

// truthLocked builds the Truth. Caller holds mu.
func (s *Server) truthLocked() Truth {
	t := Truth{Node: s.cfg.Node, Channels: []TruthChannel{}, Bridges: []TruthBridge{}, Queues: []TruthQueue{}}
	for _, ch := range s.sortedChannelsLocked() {
		t.Channels = append(t.Channels, ch.truth())
	}
	for _, b := range s.sortedBridgesLocked() {
		members := append([]string{}, b.members...)
		sort.Strings(members)
		t.Bridges = append(t.Bridges, TruthBridge{ID: b.id, Type: b.typ, Technology: b.tech,
			Creator: b.creator, Name: b.name, Members: members})
	}
	for _, q := range s.queues {
		tq := TruthQueue{Name: q.name, Members: []TruthQueueMember{}, Callers: []TruthQueueCaller{}}
		for _, m := range q.members {
			tq.Members = append(tq.Members, TruthQueueMember{Interface: m.iface, Name: m.name, Status: m.status,
				Paused: m.paused, PausedReason: m.pausedReason, InCall: m.inCall})
		}
		for i, c := range q.callers {
			tq.Callers = append(tq.Callers, TruthQueueCaller{Uniqueid: c.ch.uniqueid, Channel: c.ch.name,
				Position: i + 1, Since: c.since})
		}
		t.Queues = append(t.Queues, tq)
	}
	return t
}

// truth converts a channel.
func (ch *channel) truth() TruthChannel {
	state, _ := strconv.Atoi(ch.state)
	prio, _ := strconv.Atoi(ch.priority)
	return TruthChannel{Uniqueid: ch.uniqueid, Channel: ch.name, State: state, StateDesc: ch.stateDesc,
		CallerIDNum: ch.cidNum, CallerIDName: ch.cidName, ConnectedLineNum: ch.connNum,
		ConnectedLineName: ch.connName, AccountCode: ch.accountCode, Language: ch.language,
		Context: ch.context, Exten: ch.exten, Priority: prio, Application: ch.app,
		ApplicationData: ch.appData, Linkedid: ch.linkedid, Bridge: ch.bridge, OnHold: ch.hold}
}

// sortedChannelsLocked returns the live channels in creation order. Caller
// holds mu.
func (s *Server) sortedChannelsLocked() []*channel {
	out := make([]*channel, 0, len(s.chans))
	for _, ch := range s.chans {
		out = append(out, ch)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

// sortedBridgesLocked returns the live bridges in creation order. Caller
// holds mu.
func (s *Server) sortedBridgesLocked() []*bridge {
	out := make([]*bridge, 0, len(s.bridges))
	for _, b := range s.bridges {
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].seq < out[j].seq })
	return out
}

// chanByUniqueidLocked finds a live channel. Caller holds mu.
func (s *Server) chanByUniqueidLocked(uid string) *channel {
	for _, ch := range s.chans {
		if ch.uniqueid == uid {
			return ch
		}
	}
	return nil
}

// queueLocked finds a queue by name. Caller holds mu.
func (s *Server) queueLocked(name string) *queueState {
	for _, q := range s.queues {
		if q.name == name {
			return q
		}
	}
	return nil
}

// member finds a member by interface.
func (q *queueState) member(iface string) *memberState {
	for _, m := range q.members {
		if m.iface == iface {
			return m
		}
	}
	return nil
}

// writeSnapshot writes the bridge snapshot headers (BridgeUniqueid ...
// BridgeVideoSourceMode) with prefix, as ast_manager_build_bridge_state_string.
func (b *bridge) writeSnapshot(m *msg, prefix string) {
	m.h(prefix+"BridgeUniqueid", b.id).h(prefix+"BridgeType", b.typ).h(prefix+"BridgeTechnology", b.tech).
		h(prefix+"BridgeCreator", b.creator).h(prefix+"BridgeName", b.name).
		hi(prefix+"BridgeNumChannels", len(b.members)).h(prefix+"BridgeVideoSourceMode", "none")
}

// removeMember takes uid out of the bridge.
func (b *bridge) removeMember(uid string) {
	for i, m := range b.members {
		if m == uid {
			b.members = append(b.members[:i], b.members[i+1:]...)
			return
		}
	}
}

// forgetChannelLocked removes a channel that hung up from the channel
// table, its bridge and any queue. Caller holds mu.
func (s *Server) forgetChannelLocked(ch *channel) {
	delete(s.chans, ch.name)
	if b := s.bridges[ch.bridge]; b != nil {
		b.removeMember(ch.uniqueid)
	}
	for _, q := range s.queues {
		for i, c := range q.callers {
			if c.ch == ch {
				q.callers = append(q.callers[:i], q.callers[i+1:]...)
				break
			}
		}
	}
}

// valueOf returns the rendered value of the event's first header key.
func (e *tevent) valueOf(key string, vals []string) string {
	for i := range e.headers {
		if e.headers[i].key == key {
			return vals[i]
		}
	}
	return ""
}
