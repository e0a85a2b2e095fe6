package state

import (
	"fmt"
	"runtime"
	"testing"

	"github.com/amibus/amibus/pkg/eventlog"
)

// BenchmarkMemory100kChannels holds 100 live channels on each of 1000
// nodes, made by Newchannel events with real-sized fields as the reader
// decodes them (each event its own payload, as from the stream), and
// reports the heap they take: the projection's share of ami-state's memory.
// The ami-state process with as many channels is test/bench's
// BenchmarkStateMemory100k.
func BenchmarkMemory100kChannels(b *testing.B) {
	for b.Loop() {
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		p := NewProjection()
		var m Message
		seq := uint64(0)
		for node := 0; node < 1000; node++ {
			name := fmt.Sprintf("pbx%04d", node)
			for c := 0; c < 100; c++ {
				seq++
				uid := fmt.Sprintf("%s-1796000000.%d", name, c)
				kv := chanBlock(uid, fmt.Sprintf("PJSIP/%s-%08x", name, c), 6)
				// One payload per event, as the reader's strings share it.
				payload := ""
				for i := 1; i < len(kv); i += 2 {
					payload += kv[i]
				}
				fs := make(eventlog.Fields, 0, len(kv)/2)
				off := 0
				for i := 0; i+1 < len(kv); i += 2 {
					v := payload[off : off+len(kv[i+1])]
					off += len(kv[i+1])
					fs = append(fs, eventlog.Field{Key: kv[i], Value: v})
				}
				e := &eventlog.Entry{Kind: eventlog.KindEvent, StreamSeq: seq, Node: name, Session: "s", Time: t0,
					Event: eventlog.Event{Name: "Newchannel", Fields: fs}}
				FromEntry(e, &m)
				if err := p.Apply(&m); err != nil {
					b.Fatal(err)
				}
			}
			n, _ := p.Lookup(name)
			n.Drain(func(EntityKind, string, any) {})
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/(1<<20), "heap-MiB")
		runtime.KeepAlive(p)
	}
}
