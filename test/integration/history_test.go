package integration

import (
	"strconv"
	"strings"
	"testing"
)

// The history checker decides every scenario's verdict, so it is tested on
// its own, without Docker: each rule must catch its breach and pass a
// history that keeps it.

func ev(session string, seq uint64) Record {
	return Record{Subject: "ami.events.pbx1.Newchannel", MsgID: session + "-" + strconv.FormatUint(seq, 10),
		Node: "pbx1", Event: "Newchannel", Session: session, Seq: seq}
}

func meta(typ, session, id string) Record {
	return Record{Subject: "ami.events.pbx1._meta", MsgID: session + id, Node: "pbx1", Type: typ, Session: session}
}

func start(session, owner string) Record {
	r := meta(metaStart, session, "-start")
	r.Owner = owner
	return r
}

func end(session string, last uint64) Record {
	r := meta(metaEnd, session, "-end")
	r.LastSeq, r.Reason = last, "closed"
	return r
}

func gap(session string, first, last, count uint64) Record {
	r := meta(metaGap, session, "-gap-"+strconv.FormatUint(first, 10))
	r.FirstSeq, r.LastSeq, r.Count, r.Reason = first, last, count, "buffer_full"
	return r
}

func snapshot(session string) Record {
	r := meta(metaSnapshot, session, "-snap-CoreShowChannels-0")
	r.Action = "CoreShowChannels"
	return r
}

func numbered(recs ...Record) []Record {
	for i := range recs {
		recs[i].StreamSeq = uint64(i + 1)
	}
	return recs
}

func TestCheckNode(t *testing.T) {
	tests := []struct {
		name string
		recs []Record
		want []string // a substring of each violation, in order; none: valid
	}{
		{"complete history", numbered(start("A", "x"), snapshot("A"), ev("A", 1), ev("A", 2), end("A", 2),
			start("B", "y"), ev("B", 1)), nil},
		{"gap marked where the events were lost", numbered(start("A", "x"), ev("A", 1), gap("A", 2, 4, 3), ev("A", 5), end("A", 5)), nil},
		{"crash: next session_start marks the hole", numbered(start("A", "x"), ev("A", 1), start("B", "y"), ev("B", 1)), nil},
		{"jump without gap marker", numbered(start("A", "x"), ev("A", 1), ev("A", 3)), []string{"no gap marker for 2..2"}},
		{"gap count wrong", numbered(start("A", "x"), gap("A", 1, 2, 3), ev("A", 3)), []string{"gap 1..2 with count 3"}},
		{"gap not in place", numbered(start("A", "x"), ev("A", 1), ev("A", 2), gap("A", 2, 2, 1)), []string{"not where the events were lost"}},
		{"event stored twice", numbered(start("A", "x"), ev("A", 1), ev("A", 1)), []string{"Nats-Msg-Id stored twice", "comes again"}},
		{"session_end hides missing events", numbered(start("A", "x"), ev("A", 1), end("A", 3)), []string{"missing without a gap marker"}},
		{"old session after the next started", numbered(start("A", "x"), ev("A", 1), start("B", "y"), ev("A", 2)), []string{"interleaved"}},
		{"message after session_end", numbered(start("A", "x"), end("A", 0), ev("A", 1)), []string{"after its session_end"}},
		{"event before any session_start", numbered(ev("A", 1)), []string{"never started"}},
		{"session started twice", numbered(start("A", "x"), start("A", "x")), []string{"Nats-Msg-Id stored twice", "started twice"}},
		{"wrong Msg-Id", numbered(start("A", "x"), func() Record { r := ev("A", 1); r.MsgID = "A-9"; return r }()), []string{"not <session>-<seq>"}},
		{"wrong subject", numbered(start("A", "x"), func() Record { r := ev("A", 1); r.Subject = "ami.events.pbx1.Hangup"; return r }()), []string{"on subject"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := CheckNode("pbx1", "ami", tt.recs)
			if len(h.Violations) != len(tt.want) {
				t.Fatalf("violations %q, want %d matching %q", h.Violations, len(tt.want), tt.want)
			}
			for i, w := range tt.want {
				if !strings.Contains(h.Violations[i], w) {
					t.Errorf("violation %d: %q, want it to contain %q", i, h.Violations[i], w)
				}
			}
		})
	}
}

func TestCheckNodeAccounts(t *testing.T) {
	h := CheckNode("pbx1", "ami", numbered(start("A", "x"), ev("A", 1), gap("A", 2, 4, 3), ev("A", 5),
		start("B", "y"), ev("B", 1), ev("B", 2), end("B", 2), start("C", "x")))
	if len(h.Violations) != 0 {
		t.Fatal(h.Violations)
	}
	a, b, c := h.Session("A"), h.Session("B"), h.Session("C")
	if !a.Abrupt || a.Events != 2 || a.GapEvents != 3 || a.Accounted != 5 || a.Gaps != 1 || a.Open() {
		t.Errorf("A: %+v", a)
	}
	if b.Abrupt || b.End == nil || b.Events != 2 || b.Open() {
		t.Errorf("B: %+v", b)
	}
	if !c.Open() || h.Current() != c || c.Owner != "x" {
		t.Errorf("C: %+v", c)
	}
	if events, gapEvents, gaps, abrupt := h.Totals(); events != 4 || gapEvents != 3 || gaps != 1 || abrupt != 1 {
		t.Errorf("totals %d %d %d %d", events, gapEvents, gaps, abrupt)
	}
}

func TestCheckStreamNodes(t *testing.T) {
	other := start("Z", "x")
	other.Subject, other.Node = "ami.events.pbx9._meta", "pbx9"
	sh := CheckStream("ami", []string{"pbx1", "pbx2"}, numbered(start("A", "x"), ev("A", 1), other))
	v := strings.Join(sh.Violations(), "\n")
	if !strings.Contains(v, "pbx2: no message at all") || !strings.Contains(v, "pbx9: 1 messages of a node that is not configured") {
		t.Errorf("violations:\n%s", v)
	}
	if len(sh.Nodes["pbx1"].Violations) != 0 {
		t.Errorf("pbx1: %v", sh.Nodes["pbx1"].Violations)
	}
}

func TestSessionOfActionID(t *testing.T) {
	for id, want := range map[string]string{
		"k3f9ab12.pbx1.hofs3e1sao.1f": "k3f9ab12-pbx1-hofs3e1sao",
		"k3f9ab12.pbx1.hofs3e1sao":    "",
		"":                            "",
		"a..b.c":                      "",
	} {
		got, ok := sessionOfActionID(id)
		if got != want || ok != (want != "") {
			t.Errorf("%q: %q %v, want %q", id, got, ok, want)
		}
	}
}
