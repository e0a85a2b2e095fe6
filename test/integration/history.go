package integration

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Meta types of <prefix>.events.<node>._meta (schemas/meta.schema.json).
const (
	metaStart    = "session_start"
	metaEnd      = "session_end"
	metaGap      = "gap"
	metaSnapshot = "snapshot"
)

// Record is one stream message as the suite reads it: the fields of an
// event or of a marker that the checks need, without the AMI fields.
type Record struct {
	StreamSeq uint64
	Subject   string
	MsgID     string
	Node      string
	Event     string // event name; empty for a marker
	Type      string // marker type; empty for an event
	Session   string
	Seq       uint64 // event
	FirstSeq  uint64 // gap
	LastSeq   uint64 // gap, session_end
	Count     uint64 // gap
	Owner     string // session_start
	Reason    string // session_end, gap
	Action    string // snapshot
	Time      time.Time
	// Received is when the test read the message.
	Received time.Time
}

// wireRecord is the JSON of an event or a marker, minus fields and items,
// which the decoder skips.
type wireRecord struct {
	Node     string    `json:"node"`
	Event    string    `json:"event"`
	Type     string    `json:"type"`
	Session  string    `json:"session"`
	Seq      uint64    `json:"seq"`
	Time     time.Time `json:"time"`
	FirstSeq uint64    `json:"first_seq"`
	LastSeq  uint64    `json:"last_seq"`
	Count    uint64    `json:"count"`
	Owner    string    `json:"owner"`
	Reason   string    `json:"reason"`
	Action   string    `json:"action"`
}

// parseRecord decodes one stream message.
func parseRecord(streamSeq uint64, subject, msgID string, data []byte, received time.Time) (Record, error) {
	var w wireRecord
	if err := json.Unmarshal(data, &w); err != nil {
		return Record{}, fmt.Errorf("stream seq %d (%s): %w", streamSeq, subject, err)
	}
	return Record{
		StreamSeq: streamSeq, Subject: subject, MsgID: msgID, Node: w.Node, Event: w.Event, Type: w.Type,
		Session: w.Session, Seq: w.Seq, FirstSeq: w.FirstSeq, LastSeq: w.LastSeq, Count: w.Count,
		Owner: w.Owner, Reason: w.Reason, Action: w.Action, Time: w.Time, Received: received,
	}, nil
}

// IsMeta reports whether r is a marker.
func (r *Record) IsMeta() bool { return r.Event == "" }

// SessionInfo is what one node's history says about one AMI session.
type SessionInfo struct {
	ID    string
	Owner string
	// Start is the session_start record; End the session_end record, nil
	// while the session is open or when it ended without one (Abrupt).
	Start, End *Record
	// Abrupt: another session started on the node before this one's
	// session_end (a crashed or cut-off replica). Its tail may be missing;
	// the next session_start is the mark of that hole.
	Abrupt bool
	// Events stored, and events marked missing by gap markers.
	Events, GapEvents uint64
	// Accounted is the highest seq covered by an event or a gap: every seq
	// 1..Accounted is one or the other.
	Accounted uint64
	Gaps      int
	Snapshots int
}

// Open reports whether the session had neither a session_end nor a
// successor when the history was read.
func (s *SessionInfo) Open() bool { return s.End == nil && !s.Abrupt }

// NodeHistory is the verdict on one node's history.
type NodeHistory struct {
	Node     string
	Sessions []*SessionInfo // in the order they started
	// Violations are breaches of the contract, each naming the record.
	Violations []string
}

// Current is the last session to start, or nil.
func (h *NodeHistory) Current() *SessionInfo {
	if len(h.Sessions) == 0 {
		return nil
	}
	return h.Sessions[len(h.Sessions)-1]
}

// Session returns the session with id, or nil.
func (h *NodeHistory) Session(id string) *SessionInfo {
	for _, s := range h.Sessions {
		if s.ID == id {
			return s
		}
	}
	return nil
}

// Totals sums the node's sessions.
func (h *NodeHistory) Totals() (events, gapEvents uint64, gaps, abrupt int) {
	for _, s := range h.Sessions {
		events += s.Events
		gapEvents += s.GapEvents
		gaps += s.Gaps
		if s.Abrupt {
			abrupt++
		}
	}
	return
}

// CheckNode checks the history of one node, its records in stream order,
// against what a consumer replaying the node's subjects is promised
// (README "Events: the contract", schemas/README.md):
//
//   - every message is on <prefix>.events.<node>.<Event> or .._meta and
//     carries the Nats-Msg-Id the contract gives it; no Msg-Id and no
//     (session, seq) is stored twice;
//   - a session's messages come after its session_start and, if it has
//     one, up to its session_end; a session's messages never come after
//     another session started (no interleaving);
//   - within a session seq runs 1, 2, 3 ...; every jump is exactly covered
//     by gap markers placed where the events were lost, each with
//     count = last_seq - first_seq + 1;
//   - session_end's last_seq is the last seq covered, so nothing is
//     missing unmarked at a clean end;
//   - a session that stops without session_end is followed by another
//     session's session_start (the mark of a hole of unknown size).
func CheckNode(node, prefix string, recs []Record) *NodeHistory {
	h := &NodeHistory{Node: node}
	bad := func(r *Record, format string, args ...any) {
		h.Violations = append(h.Violations, fmt.Sprintf("stream seq %d (%s, msg id %q): %s",
			r.StreamSeq, r.Subject, r.MsgID, fmt.Sprintf(format, args...)))
	}
	msgIDs := make(map[string]uint64, len(recs))
	byID := map[string]*SessionInfo{}
	var cur *SessionInfo
	base := prefix + ".events." + node + "."
	for i := range recs {
		r := &recs[i]
		if r.Node != node {
			bad(r, "node %q in a message of node %q", r.Node, node)
		}
		if first, dup := msgIDs[r.MsgID]; dup {
			bad(r, "Nats-Msg-Id stored twice (first at stream seq %d)", first)
		} else {
			msgIDs[r.MsgID] = r.StreamSeq
		}
		if !r.IsMeta() {
			if want := base + eventToken(r.Event); r.Subject != want {
				bad(r, "event %q on subject %q, want %q", r.Event, r.Subject, want)
			}
			if want := r.Session + "-" + strconv.FormatUint(r.Seq, 10); r.MsgID != want {
				bad(r, "Nats-Msg-Id is not <session>-<seq> (%q)", want)
			}
		} else if r.Subject != base+"_meta" {
			bad(r, "marker %q on subject %q", r.Type, r.Subject)
		}

		if r.IsMeta() && r.Type == metaStart {
			if r.MsgID != r.Session+"-start" {
				bad(r, "session_start Msg-Id is not <session>-start")
			}
			if byID[r.Session] != nil {
				bad(r, "session %s started twice", r.Session)
				continue
			}
			if cur != nil && cur.End == nil {
				cur.Abrupt = true
			}
			cur = &SessionInfo{ID: r.Session, Owner: r.Owner, Start: r}
			byID[r.Session] = cur
			h.Sessions = append(h.Sessions, cur)
			continue
		}
		s := byID[r.Session]
		switch {
		case s == nil:
			bad(r, "message of session %q, which never started", r.Session)
			continue
		case s != cur:
			bad(r, "message of session %s after session %s started (interleaved histories)", r.Session, cur.ID)
			continue
		case s.End != nil:
			bad(r, "message of session %s after its session_end (stream seq %d)", r.Session, s.End.StreamSeq)
			continue
		}
		if !r.IsMeta() {
			switch {
			case r.Seq == s.Accounted+1:
				s.Accounted = r.Seq
				s.Events++
			case r.Seq <= s.Accounted:
				bad(r, "seq %d of session %s comes again or out of order (already covered up to %d)", r.Seq, s.ID, s.Accounted)
			default:
				bad(r, "seq jumps from %d to %d in session %s with no gap marker for %d..%d",
					s.Accounted, r.Seq, s.ID, s.Accounted+1, r.Seq-1)
				s.Accounted = r.Seq
				s.Events++
			}
			continue
		}
		switch r.Type {
		case metaGap:
			if r.MsgID != r.Session+"-gap-"+strconv.FormatUint(r.FirstSeq, 10) {
				bad(r, "gap Msg-Id is not <session>-gap-<first_seq>")
			}
			if r.Reason != "buffer_full" && r.Reason != "publish_failed" {
				bad(r, "gap reason %q", r.Reason)
			}
			if r.LastSeq < r.FirstSeq || r.Count != r.LastSeq-r.FirstSeq+1 {
				bad(r, "gap %d..%d with count %d", r.FirstSeq, r.LastSeq, r.Count)
			}
			if r.FirstSeq != s.Accounted+1 {
				bad(r, "gap %d..%d is not where the events were lost (seq covered up to %d)", r.FirstSeq, r.LastSeq, s.Accounted)
			}
			if r.LastSeq > s.Accounted {
				s.GapEvents += r.LastSeq - max(r.FirstSeq, s.Accounted+1) + 1
				s.Accounted = r.LastSeq
			}
			s.Gaps++
		case metaEnd:
			if r.MsgID != r.Session+"-end" {
				bad(r, "session_end Msg-Id is not <session>-end")
			}
			if r.LastSeq != s.Accounted {
				bad(r, "session_end says last_seq %d, but seq is covered up to %d: %d events missing without a gap marker",
					r.LastSeq, s.Accounted, int64(r.LastSeq)-int64(s.Accounted))
			}
			s.End = r
		case metaSnapshot:
			if !strings.HasPrefix(r.MsgID, r.Session+"-snap-") {
				bad(r, "snapshot Msg-Id is not <session>-snap-...")
			}
			s.Snapshots++
		default:
			bad(r, "unknown marker type %q", r.Type)
		}
	}
	return h
}

// eventToken is the subject token of an event name (schemas/README.md):
// the suite's events are all valid tokens, anything else goes to _bad_.
func eventToken(name string) string {
	valid := name != "" && len(name) <= 128 && name[0] != '_'
	for i := 0; valid && i < len(name); i++ {
		c := name[i]
		valid = c == '_' || c == '-' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
	}
	if valid {
		return name
	}
	return "_bad_" // never equal to a real subject token: reported
}

// StreamHistory is the verdict on every node of a stream.
type StreamHistory struct {
	Nodes map[string]*NodeHistory
}

// CheckStream splits recs by node (from the subject) and checks each
// node's history; nodes are the configured ones, each of which must have
// a history.
func CheckStream(prefix string, nodes []string, recs []Record) *StreamHistory {
	by := map[string][]Record{}
	for _, r := range recs {
		by[subjectNode(prefix, r.Subject)] = append(by[subjectNode(prefix, r.Subject)], r)
	}
	sh := &StreamHistory{Nodes: map[string]*NodeHistory{}}
	for _, n := range nodes {
		h := CheckNode(n, prefix, by[n])
		if len(by[n]) == 0 {
			h.Violations = append(h.Violations, "no message at all")
		}
		sh.Nodes[n] = h
		delete(by, n)
	}
	for n, rs := range by {
		h := &NodeHistory{Node: n}
		h.Violations = append(h.Violations, fmt.Sprintf("%d messages of a node that is not configured (first: stream seq %d, %s)",
			len(rs), rs[0].StreamSeq, rs[0].Subject))
		sh.Nodes[n] = h
	}
	return sh
}

// Violations lists every node's violations, prefixed by the node, nodes in
// name order.
func (sh *StreamHistory) Violations() []string {
	var out []string
	for _, n := range sh.nodeNames() {
		for _, v := range sh.Nodes[n].Violations {
			out = append(out, n+": "+v)
		}
	}
	return out
}

func (sh *StreamHistory) nodeNames() []string {
	names := make([]string, 0, len(sh.Nodes))
	for n := range sh.Nodes {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// subjectNode returns the node token of <prefix>.events.<node>.<x>.
func subjectNode(prefix, subject string) string {
	rest, ok := strings.CutPrefix(subject, prefix+".events.")
	if !ok {
		return ""
	}
	node, _, _ := strings.Cut(rest, ".")
	return node
}

// sessionOfActionID maps an ingest ActionID, "<instance>.<node>.<epoch>.<n>",
// to its session id, "<instance>-<node>-<epoch>" (pkg/session ids.go), so
// that what amisim recorded on a connection can be matched with a session
// in the stream. ok is false for anything else.
func sessionOfActionID(id string) (string, bool) {
	parts := strings.Split(id, ".")
	if len(parts) != 4 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
		return "", false
	}
	return parts[0] + "-" + parts[1] + "-" + parts[2], true
}
