package eventlog

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/publish"
)

type sessKey struct{ node, session string }

// truth is what a generated stream holds, from how it was made, for the
// reader's reports to be checked against.
type truth struct {
	msgs []Stored
	// unmarked are the seqs of each session left out with no gap marker,
	// or stored after a later one: the reader must report exactly these as
	// inferred gaps.
	unmarked map[sessKey][]uint64
	// late are the seqs stored after a later seq of their session.
	late map[sessKey][]uint64
	// marked are the gap markers stored, as first..last.
	marked map[sessKey][][2]uint64
	// noStart are the sessions stored without their session_start that
	// follow another session of their node.
	noStart []sessKey
	invalid int
}

// genStream makes a random stream of nodes' sessions: events, snapshots,
// marked gaps, unmarked drops, late events, missing session_start and
// session_end markers, and undecodable messages, interleaved across nodes
// with each node's order kept.
func genStream(seed uint64) *truth {
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	tr := &truth{unmarked: map[sessKey][]uint64{}, late: map[sessKey][]uint64{}, marked: map[sessKey][][2]uint64{}}
	nodes := 1 + rng.IntN(3)
	perNode := make([][]Stored, nodes)
	tm := T0
	next := func() time.Time { tm = tm.Add(time.Millisecond); return tm }
	for n := range nodes {
		node := "pbx" + strconv.Itoa(n+1)
		var out []Stored
		// A session stored without its session_start shows only once one
		// of its messages is stored.
		var noStart *sessKey
		shown := func() {
			if noStart != nil {
				tr.noStart = append(tr.noStart, *noStart)
				noStart = nil
			}
		}
		meta := func(it eventq.Item) {
			shown()
			it.Time = next()
			out = append(out, StoredMeta("ami", node, it))
		}
		event := func(session string, seq uint64) {
			shown()
			m := AMIMessage("Event", "Newstate", "Uniqueid", fmt.Sprintf("%d.%d", n, seq))
			out = append(out, StoredEvent("ami", node, session, seq, next(), m))
		}
		sessions := 1 + rng.IntN(4)
		for s := range sessions {
			session := fmt.Sprintf("%s-s%d-%d", node, s, seed)
			k := sessKey{node, session}
			noStart = nil
			if rng.IntN(6) == 0 && s > 0 {
				noStart = &k
			} else {
				meta(eventq.Item{Kind: eventq.KindSessionStart, Session: session, Version: "5.0.2", Owner: "i1"})
			}
			if rng.IntN(2) == 0 {
				meta(eventq.Item{Kind: eventq.KindSnapshot, Session: session, Action: "CoreShowChannels",
					Items: []*amiwire.Message{AMIMessage("Event", "CoreShowChannel")}, Total: 1})
			}
			var seq uint64
			// Unmarked drops show only once a later seq of the session is
			// stored; drops at the end of a session with no session_end
			// cannot be seen by anyone.
			var hidden []uint64
			seen := func() {
				if len(hidden) > 0 {
					tr.unmarked[k] = append(tr.unmarked[k], hidden...)
					hidden = nil
				}
			}
			steps := rng.IntN(40)
			for range steps {
				switch r := rng.IntN(20); {
				case r == 0: // a marked drop run
					c := 1 + uint64(rng.IntN(5))
					seen()
					meta(eventq.Item{Kind: eventq.KindGap, Session: session, FirstSeq: seq + 1, LastSeq: seq + c, Count: c, Reason: "buffer_full"})
					tr.marked[k] = append(tr.marked[k], [2]uint64{seq + 1, seq + c})
					seq += c
				case r == 1: // an unmarked drop run, which must never happen
					c := 1 + uint64(rng.IntN(3))
					for i := range c {
						hidden = append(hidden, seq+1+i)
					}
					seq += c
				case r == 2: // a retried publish stored after the next one
					seen()
					event(session, seq+2)
					event(session, seq+1)
					tr.unmarked[k] = append(tr.unmarked[k], seq+1)
					tr.late[k] = append(tr.late[k], seq+1)
					seq += 2
				case r == 3:
					out = append(out, Stored{Subject: publish.EventSubject("ami", node, []byte("Bad")), Data: []byte(`{"node":` + strconv.Itoa(rng.IntN(100)))})
					tr.invalid++
				case r == 4:
					meta(eventq.Item{Kind: eventq.KindSnapshot, Session: session, Action: "CoreShowChannels", Total: 3})
				default:
					seen()
					seq++
					event(session, seq)
				}
			}
			if rng.IntN(5) != 0 {
				if rng.IntN(4) == 0 { // events lost at the end with no marker
					c := 1 + uint64(rng.IntN(3))
					for i := range c {
						hidden = append(hidden, seq+1+i)
					}
					seq += c
				}
				seen()
				meta(eventq.Item{Kind: eventq.KindSessionEnd, Session: session, Reason: "eof", LastSeq: seq})
			}
		}
		perNode[n] = out
	}
	// Interleave the nodes at random, each node's order kept.
	idx := make([]int, nodes)
	for {
		var left []int
		for n := range nodes {
			if idx[n] < len(perNode[n]) {
				left = append(left, n)
			}
		}
		if len(left) == 0 {
			break
		}
		n := left[rng.IntN(len(left))]
		tr.msgs = append(tr.msgs, perNode[n][idx[n]])
		idx[n]++
	}
	return tr
}

// checkReports checks the entries a reader delivered for tr's messages,
// stored with stream sequences 1..len(tr.msgs).
func checkReports(t *testing.T, tr *truth, got []*Entry) {
	t.Helper()
	unmarked := map[sessKey][]uint64{}
	late := map[sessKey][]uint64{}
	marked := map[sessKey][][2]uint64{}
	var noStart []sessKey
	var sseq, pos uint64
	invalid := 0
	for i, e := range got {
		if e.Position() < pos {
			t.Fatalf("entry %d: position %d after %d", i, e.Position(), pos)
		}
		pos = e.Position()
		k := sessKey{e.Node, e.Session}
		if e.Inferred {
			if e.StreamSeq != sseq+1 {
				t.Fatalf("entry %d: inferred at stream seq %d, next stored is %d", i, e.StreamSeq, sseq+1)
			}
			switch e.Kind {
			case KindGap:
				if e.Gap.Reason != ReasonUnmarked || e.Gap.Count != e.Gap.LastSeq-e.Gap.FirstSeq+1 || e.Seq != e.Gap.LastSeq {
					t.Fatalf("entry %d: inferred gap %+v", i, e.Gap)
				}
				for s := e.Gap.FirstSeq; s <= e.Gap.LastSeq; s++ {
					unmarked[k] = append(unmarked[k], s)
				}
			case KindSessionStart:
				if e.Start.Previous == "" {
					t.Fatalf("entry %d: inferred start without previous", i)
				}
				noStart = append(noStart, k)
			default:
				t.Fatalf("entry %d: inferred %v", i, e.Kind)
			}
			continue
		}
		sseq++
		if e.StreamSeq != sseq {
			t.Fatalf("entry %d: stream seq %d, want %d (skipped or repeated)", i, e.StreamSeq, sseq)
		}
		switch e.Kind {
		case KindInvalid:
			invalid++
		case KindGap:
			marked[k] = append(marked[k], [2]uint64{e.Gap.FirstSeq, e.Gap.LastSeq})
		case KindEvent:
			if e.Late {
				late[k] = append(late[k], e.Seq)
			}
			if want := fmt.Sprintf("%d.%d", atoi(e.Node[3:])-1, e.Seq); e.Event.Fields.Get("Uniqueid") != want {
				t.Fatalf("entry %d: event %q of seq %d, want %q", i, e.Event.Fields.Get("Uniqueid"), e.Seq, want)
			}
		}
	}
	if sseq != uint64(len(tr.msgs)) {
		t.Fatalf("delivered %d stored messages, want %d", sseq, len(tr.msgs))
	}
	if invalid != tr.invalid {
		t.Fatalf("%d invalid, want %d", invalid, tr.invalid)
	}
	eq := func(what string, a, b any) {
		if fmt.Sprint(a) != fmt.Sprint(b) {
			t.Fatalf("%s:\n got %v\nwant %v", what, a, b)
		}
	}
	for _, m := range []map[sessKey][]uint64{unmarked, tr.unmarked, late, tr.late} {
		for k := range m {
			slices.Sort(m[k])
		}
	}
	eq("inferred gap seqs", unmarked, tr.unmarked)
	eq("late seqs", late, tr.late)
	eq("marked gaps", marked, tr.marked)
	slices.SortFunc(noStart, cmpKey)
	slices.SortFunc(tr.noStart, cmpKey)
	eq("inferred session starts", noStart, tr.noStart)
}

func cmpKey(a, b sessKey) int {
	if a.node != b.node {
		if a.node < b.node {
			return -1
		}
		return 1
	}
	if a.session < b.session {
		return -1
	}
	if a.session > b.session {
		return 1
	}
	return 0
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// readAll runs tr's messages through a reader's decode and track steps,
// with stream sequences 1, 2, ...
func readAll(t *testing.T, tr *truth) []*Entry {
	t.Helper()
	r := &Reader{dec: newDecoder("ami"), tr: newTracker(DefaultMaxNodes)}
	var got []*Entry
	for i, m := range tr.msgs {
		if err := r.take(uint64(i+1), m.Subject, m.Data); err != nil {
			t.Fatal(err)
		}
		for r.outI < r.outN {
			got = append(got, r.deliver().Clone())
		}
	}
	return got
}

// FuzzReports: for random streams of events and markers, the reader
// delivers every stored message once in order and reports exactly the
// unmarked holes, late events and missing session starts the stream was
// made with. Plain go test runs the seed corpus (seeds 0-199).
func FuzzReports(f *testing.F) {
	for s := range uint64(200) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		tr := genStream(seed)
		checkReports(t, tr, readAll(t, tr))
	})
}

// TestReportsOverJetStream stores generated streams in a real JetStream and
// checks what Open/Next deliver, read whole and read in pieces resumed from
// the stored Position.
func TestReportsOverJetStream(t *testing.T) {
	srv, err := StartJetStream(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for _, seed := range []uint64{1, 7, 42} {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			name := fmt.Sprint("S", seed)
			if _, err := publish.EnsureStream(ctx, js, publish.StreamConfig{Name: name, Prefix: "ami", Storage: jetstream.MemoryStorage}); err != nil {
				t.Fatal(err)
			}
			defer js.DeleteStream(ctx, name)
			tr := genStream(seed)
			for _, m := range tr.msgs {
				if _, err := js.PublishMsg(ctx, m.Msg()); err != nil {
					t.Fatal(err)
				}
			}
			n := len(tr.msgs)
			// Read whole.
			checkReports(t, tr, readN(t, ctx, js, n, Stream(name)))
			// Read in pieces of random length, each from the Position
			// stored after the last, across several readers.
			rng := rand.New(rand.NewPCG(seed, 1))
			var got []*Entry
			var pos uint64
			lastSess := map[string]*Entry{}
			for pos < uint64(n) {
				opts := []Option{Stream(name), After(pos), Buffer(MinBuffer + rng.IntN(16))}
				for _, e := range lastSess {
					opts = append(opts, NodePosition(e.Node, e.Session, e.Seq))
				}
				r, err := Open(ctx, js, opts...)
				if err != nil {
					t.Fatal(err)
				}
				for range 1 + rng.IntN(20) {
					e, err := r.Next(ctx)
					if err != nil {
						t.Fatal(err)
					}
					got = append(got, e.Clone())
					pos = e.Position()
					if e.Kind != KindInvalid && !e.Late && !(e.Kind == KindSnapshot) {
						lastSess[e.Node] = e.Clone()
					}
					if pos == uint64(n) {
						break
					}
				}
				if err := r.Close(ctx); err != nil {
					t.Fatal(err)
				}
			}
			checkReports(t, tr, got)
		})
	}
}

func readN(t *testing.T, ctx context.Context, js jetstream.JetStream, n int, opts ...Option) []*Entry {
	t.Helper()
	r, err := Open(ctx, js, opts...)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close(ctx)
	var got []*Entry
	for r.Position() < uint64(n) {
		e, err := r.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, e.Clone())
	}
	return got
}
