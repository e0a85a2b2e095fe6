package amisim

import (
	"io"
	"net"
	"testing"
	"time"
)

// BenchmarkEmitEvents measures the flood the simulator can send to one
// session that reads as fast as it can (the ingest benchmarks need the
// simulator faster than the pipeline behind it).
func BenchmarkEmitEvents(b *testing.B) {
	s := start(b, Config{RecordLimit: -1})
	c := loggedIn(b, s)
	c.do("Action: Events", "EventMask: on")
	drained := make(chan int64)
	go func() {
		n, _ := io.Copy(io.Discard, c.r)
		drained <- n
	}()
	b.ResetTimer()
	t0 := time.Now()
	s.EmitEvents(b.N, 0)
	waitFor(b, s, "the queue to drain", func() bool { return queueEmpty(s, 1) })
	el := time.Since(t0)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/el.Seconds(), "events/s")
	c.nc.(*net.TCPConn).CloseRead()
	s.Close()
	n := <-drained
	b.ReportMetric(float64(n)/el.Seconds()/1e6, "MB/s")
}

// BenchmarkScriptedCalls measures the call engine: b.N calls of the
// default mix, each played at once (CallDuration 1ns), their events
// applied to the state, rendered and sent to one session reading as fast
// as it can. It reports events/s and the events per call.
func BenchmarkScriptedCalls(b *testing.B) {
	s := start(b, Config{RecordLimit: -1, CallDuration: time.Nanosecond, MaxCalls: 1 << 30})
	c := dial(b, s)
	c.login("ami", "amisecret", "on")
	go func() { _, _ = io.Copy(io.Discard, c.r) }()
	mix := Scenarios()
	before := s.Stats().EventsBroadcast
	b.ResetTimer()
	t0 := time.Now()
	for i := 0; i < b.N; i++ {
		if err := s.StartScenario(mix[i%len(mix)], uint64(i)); err != nil {
			b.Fatal(err)
		}
	}
	waitFor(b, s, "the calls to end", func() bool { return s.LiveCalls() == 0 && queueEmpty(s, 1) })
	el := time.Since(t0)
	b.StopTimer()
	n := s.Stats().EventsBroadcast - before
	b.ReportMetric(float64(n)/el.Seconds(), "events/s")
	b.ReportMetric(float64(n)/float64(b.N), "events/call")
}
