package amiwire

import (
	"bufio"
	"testing"
)

// eventStream returns the events Asterisk sent in 07-originate-events (a
// Local->Local call: 85 call events, plus FullyBooted and SuccessfulAuth)
// back to back, byte for byte as on the wire; about 370 bytes per event, the
// size measured under load in the transcripts' README.
func eventStream(tb testing.TB) (stream []byte, events int) {
	tb.Helper()
	for _, m := range readFile(tb, "07-originate-events.server.raw").msgs {
		if m.Kind() == KindEvent {
			stream = append(stream, m.String()...)
			events++
		}
	}
	return stream, events
}

// BenchmarkReadEvents reads an endless stream of real events through a 64 KiB
// bufio.Reader into one reused Message; one op is one event, so allocs/op is
// allocations per event.
func BenchmarkReadEvents(b *testing.B) {
	stream, n := eventStream(b)
	r := NewReader(bufio.NewReaderSize(&cycleReader{data: stream}, 64<<10))
	var m Message
	b.SetBytes(int64(len(stream) / n))
	b.ReportAllocs()
	events := 0
	for b.Loop() {
		if err := r.ReadMessage(&m); err != nil {
			b.Fatal(err)
		}
		events++
	}
	b.ReportMetric(float64(events)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(len(stream))/float64(n), "B/event")
}

// BenchmarkAppendAction encodes an Originate into a reused buffer.
func BenchmarkAppendAction(b *testing.B) {
	headers := []Header{
		{"Channel", "Local/200@demo"}, {"Exten", "100"}, {"Context", "demo"}, {"Priority", "1"},
		{"Async", "true"}, {"CallerID", "amibus <100>"}, {"Variable", "AMIBUS_TAG=golden-12"}, {"Timeout", "30000"},
	}
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		buf, err = AppendAction(buf[:0], "Originate", "k3x9q.pbx1.1795398116.42", headers)
		if err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}
