// Package bench holds amibus's system benchmarks: ami-ingest measured end to
// end against a real nats-server (JetStream, file storage) and the amisim
// simulator, in process where a profile is wanted and as a subprocess where
// the figure is a property of the ami-ingest process (RSS, CPU time).
//
// Run them with `make bench`, or one at a time as BENCHMARKS.md shows. The
// long ones (memory flood, idle fleet, 1000-node scale) take their
// measuring window from the environment (AMIBUS_BENCH_FLOOD,
// AMIBUS_BENCH_IDLE, AMIBUS_BENCH_SCALE, AMIBUS_BENCH_LATENCY: Go
// durations) and shorten it under -short.
package bench
