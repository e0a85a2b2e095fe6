package eventlog

import (
	"fmt"
	"strings"
)

// nodeTrack is where one node stands: its session and the last seq
// accounted for (an event, a gap, a session_end).
type nodeTrack struct {
	session string
	last    uint64
	known   bool // last is known (not after a first sight by a snapshot)
	ended   bool // a session_end of session was seen
}

// tracker follows each node's session and seq to report what no marker
// says: an unmarked jump, a session change with no session_start, a late
// event. It holds at most max nodes.
type tracker struct {
	nodes map[string]*nodeTrack
	max   int
}

func newTracker(maxNodes int) tracker {
	return tracker{nodes: make(map[string]*nodeTrack), max: maxNodes}
}

func (t *tracker) seed(k nodePos) {
	t.nodes[k.node] = &nodeTrack{session: k.session, last: k.seq, known: true}
}

// apply checks e against its node's track, updates the track, sets e.Seq
// and e.Late and the Previous fields of a session start, and writes the
// entries to deliver before e into pre (n of them).
func (t *tracker) apply(e *Entry, pre *[2]Entry) (n int, err error) {
	nt, ok := t.nodes[e.Node]
	if !ok {
		if len(t.nodes) >= t.max {
			return 0, fmt.Errorf("%w: node %q at stream sequence %d would be number %d (MaxNodes %d)",
				ErrTooManyNodes, e.Node, e.StreamSeq, len(t.nodes)+1, t.max)
		}
		nt = &nodeTrack{}
		// The key must not keep the message's payload alive.
		t.nodes[strings.Clone(e.Node)] = nt
	}
	if e.Kind == KindSessionStart {
		e.Start.Previous, e.Start.PreviousEnded = nt.session, nt.ended
		e.Seq = 0
		nt.begin(e.Session, true)
		return 0, nil
	}
	if nt.session != e.Session {
		if nt.session != "" {
			s := &pre[n]
			n++
			*s = Entry{Kind: KindSessionStart, StreamSeq: e.StreamSeq, Inferred: true, Node: e.Node,
				Session: e.Session, Time: e.Time,
				Start: SessionStart{Previous: nt.session, PreviousEnded: nt.ended}}
			nt.begin(e.Session, true)
		} else {
			nt.begin(e.Session, false)
		}
	}
	// jump reports seqs nt.last+1..upTo as missing with no marker.
	jump := func(upTo uint64) {
		g := &pre[n]
		n++
		*g = Entry{Kind: KindGap, StreamSeq: e.StreamSeq, Inferred: true, Node: e.Node,
			Session: e.Session, Seq: upTo, Time: e.Time,
			Gap: Gap{FirstSeq: nt.last + 1, LastSeq: upTo, Count: upTo - nt.last, Reason: ReasonUnmarked}}
	}
	switch e.Kind {
	case KindEvent:
		switch {
		case !nt.known:
		case e.Seq <= nt.last:
			e.Late = true
			return n, nil
		case e.Seq > nt.last+1:
			jump(e.Seq - 1)
		}
		nt.last, nt.known = e.Seq, true
	case KindGap:
		if nt.known && e.Gap.FirstSeq > nt.last+1 {
			jump(e.Gap.FirstSeq - 1)
		}
		if !nt.known || e.Gap.LastSeq > nt.last {
			nt.last, nt.known = e.Gap.LastSeq, true
		}
	case KindSessionEnd:
		if nt.known && e.End.LastSeq > nt.last {
			jump(e.End.LastSeq)
		}
		if !nt.known || e.End.LastSeq > nt.last {
			nt.last, nt.known = e.End.LastSeq, true
		}
		nt.ended = true
	case KindSnapshot:
		e.Seq = nt.last
	}
	return n, nil
}

// begin makes session the node's current one; known says whether its
// position (0, nothing read yet) is known.
func (nt *nodeTrack) begin(session string, known bool) {
	nt.session = strings.Clone(session)
	nt.last, nt.known, nt.ended = 0, known, false
}
