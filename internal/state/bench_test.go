package state

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/amibus/amibus/pkg/eventlog"
)

func blockFields(name string, kv ...string) MapFields {
	f := MapFields{"Event": name, "Privilege": "call,all"}
	for i := 0; i+1 < len(kv); i += 2 {
		f[kv[i]] = kv[i+1]
	}
	return f
}

// BenchmarkApplyNoNewKey applies an event that changes an existing channel
// (Newstate with a full channel block): the steady-state case, which must
// not allocate.
func BenchmarkApplyNoNewKey(b *testing.B) {
	n := NewNode("pbx1")
	n.Apply(&Message{StreamSeq: 1, Kind: KindEvent, Event: "Newchannel", Fields: blockFields("Newchannel", chanBlock("1.1", "PJSIP/a", 0)...)})
	m := &Message{Node: "pbx1", Session: "s", Time: t0, Kind: KindEvent, Event: "Newstate",
		Fields: blockFields("Newstate", chanBlock("1.1", "PJSIP/a", 6)...)}
	seq := uint64(1)
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuNanos()
	for b.Loop() {
		seq++
		m.StreamSeq = seq
		n.Apply(m)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(cpuNanos()-cpu)/float64(b.N), "cpu-ns/event")
}

// cpuNanos is the process's user+system CPU time: on a shared machine the
// wall-clock ns/op is mostly waiting for a core, this is the work.
func cpuNanos() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Utime.Nano() + ru.Stime.Nano()
}

// BenchmarkApplyCall applies, through the reader's Fields type, whole
// two-party calls as Asterisk sends them
// (with the events the projection ignores, VarSet and Cdr, in their real
// proportion), draining the dirty keys every 200 events as a flush would.
func BenchmarkApplyCall(b *testing.B) {
	type ev struct {
		name string
		f    *eventlog.Fields
	}
	var calls [][]ev
	blockFields := func(name string, kv ...string) *eventlog.Fields {
		fs := eventlog.Fields{{Key: "Event", Value: name}, {Key: "Privilege", Value: "call,all"}}
		for i := 0; i+1 < len(kv); i += 2 {
			fs = append(fs, eventlog.Field{Key: kv[i], Value: kv[i+1], Values: kv[i+1 : i+2]})
		}
		return &fs
	}
	for i := 0; i < 64; i++ {
		a, c, br := fmt.Sprintf("1.%d", 2*i), fmt.Sprintf("1.%d", 2*i+1), fmt.Sprintf("b-%d", i)
		ab, cb := chanBlock(a, "PJSIP/a-"+a, 0), chanBlock(c, "PJSIP/c-"+c, 0)
		dest := []string{}
		for j := 0; j+1 < len(cb); j += 2 {
			dest = append(dest, "Dest"+cb[j], cb[j+1])
		}
		up := func(bl []string) []string { x := append([]string{}, bl...); x[3], x[5] = "6", "Up"; return x }
		bridge := []string{"BridgeUniqueid", br, "BridgeType", "basic", "BridgeTechnology", "simple_bridge"}
		call := []ev{
			{"Newchannel", blockFields("Newchannel", ab...)},
			{"VarSet", blockFields("VarSet", append(ab, "Variable", "X", "Value", "1")...)},
			{"Newexten", blockFields("Newexten", append(ab, "Application", "Dial", "AppData", "PJSIP/c")...)},
			{"Newchannel", blockFields("Newchannel", cb...)},
			{"DialBegin", blockFields("DialBegin", append(ab, dest...)...)},
			{"Newstate", blockFields("Newstate", up(cb)...)},
			{"DialEnd", blockFields("DialEnd", append(append(ab, dest...), "DialStatus", "ANSWER")...)},
			{"Newstate", blockFields("Newstate", up(ab)...)},
			{"BridgeCreate", blockFields("BridgeCreate", bridge...)},
			{"BridgeEnter", blockFields("BridgeEnter", append(up(ab), bridge...)...)},
			{"BridgeEnter", blockFields("BridgeEnter", append(up(cb), bridge...)...)},
			{"VarSet", blockFields("VarSet", append(ab, "Variable", "Y", "Value", "1")...)},
			{"BridgeLeave", blockFields("BridgeLeave", append(up(ab), bridge...)...)},
			{"BridgeLeave", blockFields("BridgeLeave", append(up(cb), bridge...)...)},
			{"BridgeDestroy", blockFields("BridgeDestroy", bridge...)},
			{"Hangup", blockFields("Hangup", append(up(ab), "Cause", "16")...)},
			{"Hangup", blockFields("Hangup", append(up(cb), "Cause", "16")...)},
			{"Cdr", blockFields("Cdr", "Source", "100")},
		}
		calls = append(calls, call)
	}
	n := NewNode("pbx1")
	m := &Message{Node: "pbx1", Session: "s", Time: t0, Kind: KindEvent}
	seq := uint64(0)
	visit := func(EntityKind, string, any) {}
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuNanos()
	for i := 0; b.Loop(); {
		// Interleave 8 calls at a time, as a busy PBX does.
		for step := 0; step < len(calls[0]); step++ {
			for k := 0; k < 8; k++ {
				e := calls[(i+k)%len(calls)][step]
				seq++
				m.StreamSeq, m.Event, m.Fields, m.Time = seq, e.name, e.f, t0.Add(time.Duration(seq))
				n.Apply(m)
				if seq%200 == 0 {
					n.Drain(visit)
				}
			}
		}
		i += 8
		clear(n.tombs) // the uids repeat; a real PBX never reuses one
	}
	b.ReportMetric(float64(seq)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(seq), "ns/event")
	b.ReportMetric(float64(cpuNanos()-cpu)/float64(seq), "cpu-ns/event")
}

// BenchmarkApplyEntry is BenchmarkApplyNoNewKey through the adapter from
// the reader's entry (pkg/eventlog's Fields, a slice in wire order), as the
// service applies.
func BenchmarkApplyEntry(b *testing.B) {
	n := NewNode("pbx1")
	n.Apply(&Message{StreamSeq: 1, Kind: KindEvent, Event: "Newchannel", Fields: blockFields("Newchannel", chanBlock("1.1", "PJSIP/a", 0)...)})
	kv := append([]string{"Event", "Newstate", "Privilege", "call,all"}, chanBlock("1.1", "PJSIP/a", 6)...)
	var fs eventlog.Fields
	for i := 0; i+1 < len(kv); i += 2 {
		fs = append(fs, eventlog.Field{Key: kv[i], Value: kv[i+1], Values: []string{kv[i+1]}})
	}
	e := &eventlog.Entry{Kind: eventlog.KindEvent, Node: "pbx1", Session: "s", Time: t0,
		Event: eventlog.Event{Name: "Newstate", Fields: fs}}
	var m Message
	b.ReportAllocs()
	b.ResetTimer()
	cpu := cpuNanos()
	for b.Loop() {
		e.StreamSeq++
		FromEntry(e, &m)
		n.Apply(&m)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(cpuNanos()-cpu)/float64(b.N), "cpu-ns/event")
}
