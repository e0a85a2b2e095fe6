package ingest

import (
	"slices"
	"strings"
	"testing"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
	"github.com/amibus/amibus/pkg/session"
)

func TestPBXFilters(t *testing.T) {
	cases := []struct {
		name             string
		include, exclude []string
		want             []string
	}{
		{"none", nil, nil, nil},
		{"exclude", nil, []string{"VarSet", "Newexten"}, []string{"!^Event: (VarSet|Newexten)[[:space:]]"}},
		{"include", []string{"Hangup"}, nil, []string{"^Event: (Hangup)[[:space:]]"}},
		{"both", []string{"Newchannel", "Hangup"}, []string{"Cdr"},
			[]string{"^Event: (Newchannel|Hangup)[[:space:]]", "!^Event: (Cdr)[[:space:]]"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var got []string
			for _, a := range pbxFilters(c.include, c.exclude) {
				if a.Name != "Filter" || len(a.Headers) != 2 || a.Headers[0] != (session.Header{Key: "Operation", Value: "Add"}) || a.Headers[1].Key != "Filter" {
					t.Fatalf("action %+v", a)
				}
				got = append(got, a.Headers[1].Value)
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("filters %q, want %q", got, c.want)
			}
		})
	}
}

// TestPBXFiltersSplitLongLists: a list too long for one AMI line (Asterisk
// drops a line over 1024 bytes) is split over several Filter actions, each
// line within the limit, together naming every event once.
func TestPBXFiltersSplitLongLists(t *testing.T) {
	var names []string
	for i := 0; i < 300; i++ {
		names = append(names, "SomeRatherLongEventName"+strings.Repeat("x", i%7)+string(rune('A'+i%26))+strings.Repeat("y", i%3))
	}
	acts := pbxFilters(nil, names)
	if len(acts) < 2 {
		t.Fatalf("%d actions for %d names", len(acts), len(names))
	}
	var seen []string
	for _, a := range acts {
		v := a.Headers[1].Value
		if l := len("Filter: ") + len(v) + 2; l > 1024 {
			t.Fatalf("Filter line of %d bytes", l)
		}
		inner := strings.TrimSuffix(strings.TrimPrefix(v, "!^Event: ("), ")[[:space:]]")
		seen = append(seen, strings.Split(inner, "|")...)
	}
	if !slices.Equal(seen, names) {
		t.Fatalf("split lists name %d events, want the %d given in order", len(seen), len(names))
	}
}

func TestFilterAccept(t *testing.T) {
	cases := []struct {
		include, exclude []string
		name             string
		want             bool
	}{
		{nil, nil, "VarSet", true},
		{nil, []string{"VarSet"}, "VarSet", false},
		{nil, []string{"VarSet"}, "VarSetX", true},
		{[]string{"Hangup"}, nil, "Hangup", true},
		{[]string{"Hangup"}, nil, "HangupRequest", false},
		{[]string{"Hangup"}, []string{"Hangup"}, "Hangup", false},
		{[]string{"Hangup"}, nil, "hangup", false}, // Asterisk spells event names one way
	}
	for _, c := range cases {
		if got := newFilter(c.include, c.exclude).accept([]byte(c.name)); got != c.want {
			t.Errorf("include %v exclude %v: accept(%s) = %v", c.include, c.exclude, c.name, got)
		}
	}
}

// TestFiltering: include and exclude lists, the default for all nodes and a
// node's own, filter what is published; the numbers stay contiguous (a
// filtered event takes none); the PBX is asked to filter with Filter actions
// so unwanted events stop crossing the wire; and where the PBX refuses the
// Filter action, the ingest filters alone and counts every event it left out.
func TestFiltering(t *testing.T) {
	leakCheck(t)
	ns := testenv.StartNATS(t)
	sims := testenv.StartFleet(t, 3, amisim.Config{})
	// pbx4 does not let the ingest's user run Filter (write=system).
	noFilter := testenv.StartSim(t, amisim.Config{Node: "pbx4", Permissions: map[string]amisim.Permission{
		"ami": {Read: "all", Write: "call,reporting"},
	}})
	sims = append(sims, noFilter)
	perNode := map[string]string{
		// pbx1 inherits ingest.exclude.
		"pbx2": "    include: [Newchannel, Hangup]\n    exclude: []\n",
		"pbx3": "    exclude: []\n", // its own empty list: nothing filtered
	}
	cfg := parseConfig(t, "nats: {url: "+ns.ClientURL()+"}\n"+testSession+
		"ingest: {exclude: [VarSet, Newexten]}\n"+
		nodesYAML(sims, func(i int) string { return perNode[sims[i].Node()] }))
	nc := connect(t, ns.ClientURL())
	preCreateStream(t, nc, cfg)
	reader := newStreamReader(t, nc, "AMI_EVENTS")
	run := startService(t, cfg, nc, nil)

	accept := map[string]func(string) bool{
		"pbx1": func(e string) bool { return e != "VarSet" && e != "Newexten" },
		"pbx2": func(e string) bool { return e == "Newchannel" || e == "Hangup" },
		"pbx3": func(string) bool { return true },
		"pbx4": func(e string) bool { return e != "VarSet" && e != "Newexten" },
	}
	base := map[string]int{}
	for _, s := range sims {
		// The Filter actions come before the snapshot on the connection,
		// and a PBX answers a session's actions in order: once the
		// snapshot is stored, the PBX filters.
		upAndSnapshot(reader, s.Node(), 1)
		base[s.Node()] = s.SentEventCount()
	}
	const n = 1000
	// pbx3 filters nothing: what it writes is the mix itself, and the
	// other PBXs are sent the same mix.
	var mix []string
	for _, s := range sims {
		s.EmitEvents(n, 0)
	}
	pbx3 := sims[2]
	testenv.WaitSim(t, pbx3, "the mix written", func() bool { return pbx3.SentEventCount() == base["pbx3"]+n })
	for _, e := range pbx3.SentEvents()[base["pbx3"]:] {
		mix = append(mix, e.Headers[0][1])
	}
	for _, s := range sims {
		node := s.Node()
		wire := n // pbx3, and pbx4, which refused the Filter
		if node == "pbx1" || node == "pbx2" {
			wire = 0
			for _, name := range mix {
				if accept[node](name) {
					wire++
				}
			}
		}
		testenv.WaitSim(t, s, "the events written", func() bool { return s.SentEventCount() == base[node]+wire })
	}
	want := map[string][]amisim.SentEvent{}
	sentAll := map[string][]amisim.SentEvent{}
	for _, s := range sims {
		node := s.Node()
		sentAll[node] = sentTo(s, loginConns(s)[0])
		for _, e := range sentAll[node] {
			if accept[node](e.Headers[0][1]) {
				want[node] = append(want[node], e)
			}
		}
	}
	recs := reader.until("every node's accepted events", func(recs []record) bool {
		for node, w := range want {
			if !reached(recs, node, 1, uint64(len(w))) {
				return false
			}
		}
		return true
	})

	for _, s := range sims {
		node := s.Node()
		sessions, _, _ := checkHistory(t, recs, node)
		checkSessionEvents(t, recs, node, sessions[0], want[node])
		if got, wantN := filtered(run.m, node), uint64(len(sentAll[node])-len(want[node])); got != wantN {
			t.Errorf("%s: ami_events_filtered_total %d, want %d", node, got, wantN)
		}
		if r := received(run.m, node); r != uint64(len(want[node])) {
			t.Errorf("%s: received %d (filtered events are not received), want %d", node, r, len(want[node]))
		}
	}

	// The PBX was asked to filter, with anchored patterns (Hangup must not
	// let HangupRequest through), and only where there is a filter.
	wantFilters := map[string][]string{
		"pbx1": {"!^Event: (VarSet|Newexten)[[:space:]]"},
		"pbx2": {"^Event: (Newchannel|Hangup)[[:space:]]"},
		"pbx3": nil,
		"pbx4": {"!^Event: (VarSet|Newexten)[[:space:]]"},
	}
	for _, s := range sims {
		var got []string
		for _, a := range s.Received() {
			if strings.EqualFold(a.Name, "Filter") {
				for _, h := range a.Headers {
					if h[0] == "Filter" {
						got = append(got, h[1])
					}
				}
			}
		}
		if !slices.Equal(got, wantFilters[s.Node()]) {
			t.Errorf("%s: Filter actions %q, want %q", s.Node(), got, wantFilters[s.Node()])
		}
	}
	// Where the PBX took the filter, nothing unwanted crossed the wire once
	// it was set; where it refused, everything came and the ingest left out
	// what the configuration excludes.
	for _, node := range []string{"pbx1", "pbx2"} {
		for _, e := range sentAll[node][base[node]:] {
			if !accept[node](e.Headers[0][1]) {
				t.Fatalf("%s: the PBX sent %s after its Filter was set", node, e.Headers[0][1])
			}
		}
	}
	if filtered(run.m, "pbx4") < n/10 {
		t.Fatalf("pbx4 refused Filter, yet the ingest filtered only %d of %d events", filtered(run.m, "pbx4"), n)
	}
	if filtered(run.m, "pbx3") != 0 || len(want["pbx3"]) != len(sentAll["pbx3"]) {
		t.Fatalf("pbx3 has no filter, yet %d events were filtered", filtered(run.m, "pbx3"))
	}
}
