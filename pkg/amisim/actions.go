package amisim

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// actionFunc runs one action; it reports whether the session goes on.
type actionFunc func(c *conn, req *request, id string) bool

var actions map[string]actionFunc

func init() {
	actions = map[string]actionFunc{
		"login":            (*conn).actLogin,
		"logoff":           (*conn).actLogoff,
		"challenge":        (*conn).actChallenge,
		"ping":             (*conn).actPing,
		"events":           (*conn).actEvents,
		"filter":           (*conn).actFilter,
		"coresettings":     (*conn).actCoreSettings,
		"corestatus":       (*conn).actCoreStatus,
		"command":          (*conn).actCommand,
		"coreshowchannels": (*conn).actCoreShowChannels,
		"status":           (*conn).actStatus,
		"queuestatus":      (*conn).actQueueStatus,
		"queuesummary":     (*conn).actQueueSummary,
		"bridgelist":       (*conn).actBridgeList,
		"bridgeinfo":       (*conn).actBridgeInfo,
		"hangup":           (*conn).actHangup,
		"originate":        (*conn).actOriginate,
	}
}

// handle is manager.c's process_message for one complete message.
func (c *conn) handle(req *request) bool {
	id := req.get("ActionID")
	name := req.getNonEmpty("Action")
	if name == "" {
		ok := c.send(response("Error", id).h("Message", errMissingAction).end())
		c.s.securityEvent(c, "RequestBadFormat", "Error", 1, [][2]string{{"RequestType", "Action: NONE"}})
		return ok
	}
	lname := strings.ToLower(name)
	if !c.authed.Load() && lname != "login" && lname != "logoff" && lname != "challenge" {
		ok := c.send(response("Error", id).h("Message", "Permission denied").end())
		c.s.securityEvent(c, "RequestNotAllowed", "Error", 1, [][2]string{{"RequestType", "Action: " + name}})
		return ok
	}
	c.s.mu.Lock()
	never, delay := c.s.neverAnswer[lname], c.s.answerDelay[lname]
	c.s.mu.Unlock()
	if never {
		return true
	}
	if delay > 0 && !sleepDone(c.done, delay) {
		return false
	}
	fn, ok := actions[lname]
	if !ok {
		ok := c.send(response("Error", id).h("Message",
			"Invalid/unknown command: "+name+". Use Action: ListCommands to show available commands.").end())
		c.s.securityEvent(c, "RequestBadFormat", "Error", 1, [][2]string{{"RequestType", "Action: " + name}})
		return ok
	}
	if auth := actionAuthority[lname]; auth != 0 && c.writePerm&auth == 0 {
		ok := c.send(response("Error", id).h("Message", "Permission denied").end())
		c.s.securityEvent(c, "RequestNotAllowed", "Error", 1, [][2]string{{"RequestType", "Action: " + name}})
		return ok
	}
	return fn(c, req, id)
}

// sleepDone waits d; false if done closed first.
func sleepDone(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

func (c *conn) ack(id, message string) bool {
	return c.send(response("Success", id).h("Message", message).end())
}

func (c *conn) fail(id, message string) bool {
	return c.send(response("Error", id).h("Message", message).end())
}

// actLogin is action_login with authenticate().
func (c *conn) actLogin(req *request, id string) bool {
	if c.authed.Load() {
		return c.ack(id, "Already authenticated")
	}
	s := c.s
	user := strings.ToLower(req.get("Username"))
	secret, known := s.cfg.Users[user]
	ok := false
	switch {
	case req.get("Username") == "":
	case !known:
		s.securityEvent(c, "InvalidAccountID", "Error", 1, nil, req.get("Username"))
	case strings.EqualFold(req.get("AuthType"), "MD5"):
		key := req.get("Key")
		if key != "" && c.challenge != "" {
			sum := md5.Sum([]byte(c.challenge + secret))
			expected := hex.EncodeToString(sum[:])
			if key == expected {
				ok = true
			} else {
				s.securityEvent(c, "ChallengeResponseFailed", "Error", 1, [][2]string{
					{"Challenge", c.challenge}, {"Response", key}, {"ExpectedResponse", expected}})
			}
		}
	default:
		if req.get("Secret") == secret {
			ok = true
		} else {
			s.securityEvent(c, "InvalidPassword", "Error", 2, nil, req.get("Username"))
		}
	}
	if ok && s.cfg.SingleLogin && s.ActiveSessions(user) > 0 {
		// manager.conf allowmultiplelogin = no: authenticate() reports
		// a SessionLimit and the login fails like a wrong secret.
		s.securityEvent(c, "SessionLimit", "Error", 1, nil, req.get("Username"))
		ok = false
	}
	if !ok {
		s.stats.loginFailures.Add(1)
		if !sleepDone(c.done, s.cfg.AuthFailDelay) {
			return false
		}
		c.fail(id, "Authentication failed")
		c.closeGraceful()
		return false
	}
	c.user = user
	c.account = req.get("Username")
	perm := s.cfg.Permissions[user]
	c.readPerm.Store(int64(permOrAll(perm.Read)))
	c.writePerm = permOrAll(perm.Write)
	if m := eventMask(req.get("Events")); m >= 0 {
		c.mask.Store(int64(m))
	}
	c.loginTime = time.Now()
	_ = c.nc.SetReadDeadline(time.Time{})

	// The answer, FullyBooted and the login's own place in the fan-out list
	// are one step, so no event can come between them (as in Asterisk, where
	// FullyBooted is appended inside the action).
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	items := []outItem{{b: response("Success", id).h("Message", "Authentication accepted").end().b}}
	s.mu.Lock()
	booted, start, reload := s.booted, s.startTime, s.reloadTime
	s.mu.Unlock()
	if booted && int(c.mask.Load())&classSystem != 0 && int(c.readPerm.Load())&classSystem != 0 {
		now := time.Now()
		m := &msg{}
		m.h("Event", "FullyBooted").h("Privilege", authorityString(classSystem)).
			hi("Uptime", int(now.Sub(start)/time.Second)).hi("LastReload", int(now.Sub(reload)/time.Second)).
			h("Status", "Fully Booted").end()
		items = append(items, outItem{b: m.b, event: true})
	}
	// Under closeMu: a close either comes first (no login at all) or sees
	// the session logged in and undoes it. Counted before the answer is
	// queued: a client that has read "Authentication accepted" must find
	// its login in Logins.
	c.closeMu.Lock()
	if c.closed {
		c.closeMu.Unlock()
		return false
	}
	c.authed.Store(true)
	s.setLoggedIn(c, true)
	s.login(c)
	c.closeMu.Unlock()
	if !c.enqueueAll(items...) {
		return false
	}
	s.broadcastLocked(s.securityEventBytes(c, "SuccessfulAuth", "Informational", 1,
		[][2]string{{"UsingPassword", "0"}}, ""), classSecurity)
	s.notify()
	return true
}

func permOrAll(list string) int {
	if list == "" {
		return classAll
	}
	return classList(list)
}

func (c *conn) actLogoff(_ *request, id string) bool {
	c.send(response("Goodbye", id).h("Message", "Thanks for all the fish.").end())
	c.closeGraceful()
	return false
}

func (c *conn) actChallenge(req *request, id string) bool {
	if !strings.EqualFold(req.get("AuthType"), "MD5") {
		return c.fail(id, "Must specify AuthType")
	}
	if c.challenge == "" {
		// ast_random() is a long: decimal digits.
		c.challenge = strconv.FormatInt(rand.Int64N(1<<31), 10)
	}
	return c.send(response("Success", id).h("Challenge", c.challenge).end())
}

func (c *conn) actPing(_ *request, id string) bool {
	return c.send(response("Success", id).h("Ping", "Pong").h("Timestamp", epochMicro(time.Now())).end())
}

// actEvents is action_events: "Events: On|Off" with no Message header.
func (c *conn) actEvents(req *request, id string) bool {
	m := eventMask(req.get("EventMask"))
	switch {
	case m > 0:
		c.mask.Store(int64(m))
		return c.send(response("Success", id).h("Events", "On").end())
	case m == 0:
		c.mask.Store(0)
		return c.send(response("Success", id).h("Events", "Off").end())
	}
	return c.fail(id, "Invalid event mask")
}

// actFilter is action_filter: only Operation Add exists.
func (c *conn) actFilter(req *request, id string) bool {
	if !strings.EqualFold(req.get("Operation"), "Add") {
		return c.fail(id, "Unknown operation")
	}
	pattern := req.get("Filter")
	exclude := strings.HasPrefix(pattern, "!")
	if exclude {
		pattern = pattern[1:]
	}
	// POSIX regexec without REG_NEWLINE lets "." match a newline.
	re, err := regexp.Compile("(?s)" + pattern)
	if err != nil {
		return c.fail(id, "Filter did not compile.  Check the syntax of the filter given.")
	}
	old := c.filters.Load()
	next := &filterSet{}
	if old != nil {
		next.include = append(next.include, old.include...)
		next.exclude = append(next.exclude, old.exclude...)
	}
	if len(next.include)+len(next.exclude) >= DefaultMaxFilters {
		c.s.stats.filterCapHits.Add(1)
		return c.fail(id, "Internal Error. Failed adding filter.")
	}
	if exclude {
		next.exclude = append(next.exclude, re)
	} else {
		next.include = append(next.include, re)
	}
	c.filters.Store(next)
	return c.ack(id, "Success")
}

func (c *conn) actCoreSettings(_ *request, id string) bool {
	s := c.s
	m := response("Success", id)
	m.h("AMIversion", s.cfg.Version).h("AsteriskVersion", s.cfg.AsteriskVersion).
		h("SystemName", s.cfg.Node).hi("CoreMaxCalls", s.cfg.MaxCalls).
		h("CoreMaxLoadAvg", "0.000000").h("CoreRunUser", "root").h("CoreRunGroup", "root").
		h("CoreMaxFilehandles", "0").h("CoreRealTimeEnabled", "No").h("CoreCDRenabled", "Yes").
		h("CoreHTTPenabled", "No").h("SoundsSearchCustomDir", "No")
	return c.send(m.end())
}

func (c *conn) actCoreStatus(_ *request, id string) bool {
	s := c.s
	s.mu.Lock()
	start, reload := s.startTime, s.reloadTime
	current, processed := s.activeCallCountLocked(), s.processedCalls
	s.mu.Unlock()
	m := response("Success", id)
	m.h("CoreStartupDate", start.Format("2006-01-02")).h("CoreStartupTime", start.Format("15:04:05")).
		h("CoreReloadDate", reload.Format("2006-01-02")).h("CoreReloadTime", reload.Format("15:04:05")).
		hi("CoreCurrentCalls", current).hi("CoreProcessedCalls", processed)
	return c.send(m.end())
}

// actCommand is action_command in the Asterisk 14+ format, or the 13 one.
func (c *conn) actCommand(req *request, id string) bool {
	cmd := req.get("Command")
	if cmd == "" {
		return c.fail(id, "No command provided")
	}
	if blacklisted(cmd) {
		return c.fail(id, "Command blacklisted")
	}
	out, ok := c.s.cli(cmd)
	if c.s.cfg.LegacyCommand {
		// Asterisk 13: raw CLI output with its own LF line ends.
		m := &msg{b: make([]byte, 0, 128+len(out))}
		m.h("Response", "Follows").h("Privilege", "Command").id(id)
		m.b = append(m.b, out...)
		m.b = append(m.b, "--END COMMAND--\r\n\r\n"...)
		return c.send(m)
	}
	resp := "Success"
	if !ok {
		resp = "Error"
	}
	m := response(resp, id).h("Message", "Command output follows")
	// One trailing newline of the CLI output is dropped, then one Output
	// header per line.
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		m.h("Output", line)
	}
	return c.send(m.end())
}

// listStart is astman_send_listack.
func listStart(id, message string) *msg {
	return response("Success", id).h("EventList", "start").h("Message", message).end()
}

// listComplete is astman_send_list_complete.
func listComplete(m *msg, event, id string, n int) {
	m.h("Event", event).id(id).h("EventList", "Complete").hi("ListItems", n)
}

func (c *conn) actCoreShowChannels(_ *request, id string) bool {
	return c.sendFromState("CoreShowChannels", id, func(s *Server) *msg {
		chans := s.sortedChannelsLocked()
		m := listStart(id, "Channels will follow")
		now := time.Now()
		for _, ch := range chans {
			m.h("Event", "CoreShowChannel").id(id)
			ch.snapshot(m, "")
			m.h("Application", ch.app).h("ApplicationData", ch.appData).
				h("Duration", hms(now.Sub(ch.created))).h("BridgeId", ch.bridge).end()
		}
		listComplete(m, "CoreShowChannelsComplete", id, len(chans))
		return m.end()
	})
}

// sendFromState renders an answer from the live state and queues it in one
// step with respect to events: as in Asterisk, where a session's events
// wait while its action runs, no event emitted after the state was read
// can come before the answer, and none emitted before can come after it.
// So the answer's place in the session's stream is the moment it shows.
func (c *conn) sendFromState(action, id string, render func(s *Server) *msg) bool {
	s := c.s
	s.emitMu.Lock()
	defer s.emitMu.Unlock()
	s.mu.Lock()
	m := render(s)
	if s.listObserver != nil {
		s.listObserver(action, id, s.truthLocked())
	}
	s.mu.Unlock()
	return c.send(m)
}

func hms(d time.Duration) string {
	sec := int(d / time.Second)
	return fmt.Sprintf("%02d:%02d:%02d", sec/3600, sec/60%60, sec%60)
}

func (c *conn) actStatus(req *request, id string) bool {
	name := req.get("Channel")
	return c.sendFromState("Status", id, func(s *Server) *msg {
		chans := s.sortedChannelsLocked()
		if name != "" {
			var found []*channel
			for _, ch := range chans {
				if ch.name == name {
					found = append(found, ch)
				}
			}
			if len(found) == 0 {
				return response("Error", id).h("Message", "No such channel").end()
			}
			chans = found
		}
		m := listStart(id, "Channel status will follow")
		now := time.Now()
		for _, ch := range chans {
			m.h("Event", "Status").h("Privilege", "Call")
			ch.snapshot(m, "")
			tech, _, _ := strings.Cut(ch.name, "/")
			m.h("Type", tech).h("DNID", "").h("EffectiveConnectedLineNum", ch.connNum).
				h("EffectiveConnectedLineName", ch.connName).h("TimeToHangup", "0").h("BridgeID", ch.bridge).
				h("Application", ch.app).h("Data", ch.appData).h("Nativeformats", "(slin)").
				h("Readformat", "slin").h("Readtrans", "").h("Writeformat", "slin").h("Writetrans", "").
				h("Callgroup", "0").h("Pickupgroup", "0").hi("Seconds", int(now.Sub(ch.created)/time.Second)).
				id(id).end()
		}
		listComplete(m, "StatusComplete", id, len(chans))
		m.hi("Items", len(chans))
		return m.end()
	})
}

// queue is a static queue of the transcripts' peer.
type queue struct {
	name    string
	members []queueMember
}

type queueMember struct{ name, location string }

var queues = []queue{
	{"support", []queueMember{{"Agent100", "Local/100@demo"}, {"Agent199", "Local/199@demo"}}},
	{"sales", []queueMember{{"Ringer199", "Local/199@demo"}}},
}

func (c *conn) actQueueStatus(req *request, id string) bool {
	filter := req.get("Queue")
	return c.sendFromState("QueueStatus", id, func(s *Server) *msg {
		login := strconv.FormatInt(s.startTime.Unix(), 10)
		now := time.Now()
		m := listStart(id, "Queue status will follow")
		n := 0
		for _, q := range s.queues {
			if filter != "" && filter != q.name {
				continue
			}
			m.h("Event", "QueueParams").h("Queue", q.name).h("Max", "0").h("Strategy", "ringall").
				hi("Calls", len(q.callers)).h("Holdtime", "0").h("TalkTime", "0").hi("Completed", q.completed).
				hi("Abandoned", q.abandoned).h("ServiceLevel", "0").h("ServicelevelPerf", "0.0").
				h("ServicelevelPerf2", "0.0").h("Weight", "0").id(id).end()
			n++
			for _, mb := range q.members {
				m.h("Event", "QueueMember").h("Queue", q.name).h("Name", mb.name).h("Location", mb.iface).
					h("StateInterface", mb.iface).h("Membership", "static").h("Penalty", "0").
					hi("CallsTaken", mb.callsTaken).h("LastCall", strconv.FormatInt(mb.lastCall, 10)).
					h("LastPause", strconv.FormatInt(mb.lastPause, 10)).h("LoginTime", login).
					h("InCall", boolDigit(mb.inCall)).hi("Status", mb.status).h("Paused", boolDigit(mb.paused)).
					h("PausedReason", mb.pausedReason).h("Wrapuptime", "0").id(id).end()
				n++
			}
			for i, qc := range q.callers {
				// QueueEntry shows an unknown caller id as "unknown" (08b).
				m.h("Event", "QueueEntry").h("Queue", q.name).hi("Position", i+1).h("Channel", qc.ch.name).
					h("Uniqueid", qc.ch.uniqueid).h("CallerIDNum", entryID(qc.ch.cidNum)).
					h("CallerIDName", entryID(qc.ch.cidName)).h("ConnectedLineNum", entryID(qc.ch.connNum)).
					h("ConnectedLineName", entryID(qc.ch.connName)).hi("Wait", int(now.Sub(qc.since)/time.Second)).
					h("Priority", "0").id(id).end()
				n++
			}
		}
		listComplete(m, "QueueStatusComplete", id, n)
		return m.end()
	})
}

// entryID is a caller id as QueueEntry shows it: "unknown" for none.
func entryID(v string) string {
	if v == "" || v == "<unknown>" {
		return "unknown"
	}
	return v
}

func boolDigit(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func (c *conn) actQueueSummary(req *request, id string) bool {
	filter := req.get("Queue")
	return c.sendFromState("QueueSummary", id, func(s *Server) *msg {
		now := time.Now()
		m := listStart(id, "Queue summary will follow")
		n := 0
		for _, q := range s.queues {
			if filter != "" && filter != q.name {
				continue
			}
			avail := 0
			for _, mb := range q.members {
				if mb.status == devNotInUse && !mb.paused {
					avail++
				}
			}
			longest := 0
			if len(q.callers) > 0 {
				longest = int(now.Sub(q.callers[0].since) / time.Second)
			}
			m.h("Event", "QueueSummary").h("Queue", q.name).hi("LoggedIn", len(q.members)).hi("Available", avail).
				hi("Callers", len(q.callers)).h("HoldTime", "0").h("TalkTime", "0").hi("LongestHoldTime", longest).
				id(id).end()
			n++
		}
		listComplete(m, "QueueSummaryComplete", id, n)
		return m.end()
	})
}

// actBridgeList is manager_bridges.c's BridgeList. No capture holds it: the
// layout follows Asterisk 20's documentation of BridgeList, BridgeListItem
// and BridgeListComplete, with ActionID where astman_send_listack and
// astman_send_list_complete put it and, in items, right after Event (as
// CoreShowChannel has it).
func (c *conn) actBridgeList(req *request, id string) bool {
	typ := req.get("BridgeType")
	return c.sendFromState("BridgeList", id, func(s *Server) *msg {
		m := listStart(id, "Bridge listing will follow")
		n := 0
		for _, b := range s.sortedBridgesLocked() {
			if typ != "" && typ != b.typ {
				continue
			}
			m.h("Event", "BridgeListItem").id(id)
			b.writeSnapshot(m, "")
			m.end()
			n++
		}
		listComplete(m, "BridgeListComplete", id, n)
		return m.end()
	})
}

// actBridgeInfo is manager_bridges.c's BridgeInfo: a BridgeInfoChannel per
// member, then BridgeInfoComplete with the bridge's snapshot. No capture
// holds it; the layout and error texts follow Asterisk 20's documentation
// and manager_bridges.c.
func (c *conn) actBridgeInfo(req *request, id string) bool {
	uid := req.get("BridgeUniqueid")
	if uid == "" {
		return c.fail(id, "BridgeUniqueid must be provided")
	}
	return c.sendFromState("BridgeInfo", id, func(s *Server) *msg {
		b := s.bridges[uid]
		if b == nil {
			return response("Error", id).h("Message", "Bridge not found").end()
		}
		m := listStart(id, "Bridge channel listing will follow")
		n := 0
		for _, uid := range b.members {
			ch := s.chanByUniqueidLocked(uid)
			if ch == nil {
				continue
			}
			m.h("Event", "BridgeInfoChannel")
			ch.snapshot(m, "")
			m.id(id).end()
			n++
		}
		listComplete(m, "BridgeInfoComplete", id, n)
		b.writeSnapshot(m, "")
		return m.end()
	})
}

// actHangup is ast_manager_hangup_helper: a channel name, or /regex/ with
// an event list of the channels hung up.
func (c *conn) actHangup(req *request, id string) bool {
	name := req.get("Channel")
	if name == "" {
		return c.fail(id, "No channel specified")
	}
	if name[0] != '/' {
		if !c.s.hangupChannels(func(n string) bool { return n == name }, nil) {
			return c.fail(id, "No such channel")
		}
		return c.ack(id, "Channel Hungup")
	}
	if len(name) < 2 || name[len(name)-1] != '/' {
		return c.fail(id, "Regex format invalid, Channel param should be /regex/")
	}
	re, err := regexp.Compile(name[1 : len(name)-1])
	if err != nil {
		return c.fail(id, "Regex compile failed on: "+name)
	}
	var hung []string
	c.s.hangupChannels(re.MatchString, &hung)
	m := listStart(id, "Channels hung up will follow")
	for _, ch := range hung {
		m.h("Event", "ChannelHungup").h("Channel", ch).id(id).end()
	}
	listComplete(m, "ChannelsHungupListComplete", id, len(hung))
	return c.send(m.end())
}

// actOriginate is action_originate: checks in Asterisk's order, then a
// call from the answered template (a reachable Local extension) or the
// failed one.
func (c *conn) actOriginate(req *request, id string) bool {
	name := req.get("Channel")
	exten, context, priority := req.get("Exten"), req.get("Context"), req.get("Priority")
	app := req.get("Application")
	async := isTrue(req.get("Async"))
	if name == "" {
		return c.fail(id, "Channel not specified")
	}
	if priority != "" {
		if _, err := strconv.Atoi(priority); err != nil {
			return c.fail(id, "Invalid priority")
		}
	}
	ring := DefaultOriginateTimeout
	if t := req.get("Timeout"); t != "" {
		ms, err := strconv.Atoi(t)
		if err != nil {
			return c.fail(id, "Invalid timeout")
		}
		ring = time.Duration(max(ms, 0)) * time.Millisecond
	}
	tech, data, ok := strings.Cut(name, "/")
	if !ok || tech == "" {
		return c.fail(id, "Invalid channel")
	}
	if !async && app == "" && (exten == "" || context == "" || priority == "") {
		return c.fail(id, "Originate with 'Exten' requires 'Context' and 'Priority'")
	}
	if !async && c.s.ringsUnanswered(tech, data) {
		// action_originate runs a synchronous call in the session's own
		// thread: nothing else on this connection is read until the
		// channel answers or Timeout passes. This one never answers.
		if !sleepDone(c.done, ring) {
			return false
		}
		return c.fail(id, "Originate failed")
	}
	var vars [][2]string
	for _, v := range req.all("Variable") {
		for _, kv := range strings.Split(v, ",") {
			if k, val, ok := strings.Cut(kv, "="); ok && k != "" {
				vars = append(vars, [2]string{k, val})
			}
		}
	}
	o := originate{
		channel: name, tech: tech, data: data, exten: exten, context: context,
		actionID: id, async: async, vars: vars,
	}
	keep := true
	// The answer is queued before the call's first event can be.
	c.s.startOriginate(o, func(answered bool) {
		if async || answered {
			keep = c.ack(id, "Originate successfully queued")
		} else {
			keep = c.fail(id, "Originate failed")
		}
	})
	return keep
}

// ringsUnanswered reports whether a channel to tech/data rings without
// answering (Config.RingingExtensions).
func (s *Server) ringsUnanswered(tech, data string) bool {
	if !strings.EqualFold(tech, "Local") {
		return false
	}
	dest, _, _ := strings.Cut(data, "/")
	return slices.Contains(s.cfg.RingingExtensions, dest)
}
