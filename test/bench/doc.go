// Package bench holds amibus's system benchmarks: ami-ingest measured end to
// end against a real nats-server (JetStream, file storage) and the amisim
// simulator, in process where a profile is wanted and as a subprocess where
// the figure is a property of the ami-ingest process (RSS, CPU time); and
// the ami-state binary as a subprocess, on an event stream the benchmark
// writes in pkg/publish's envelope (projection lag, RSS with 100,000
// channels, rebuild of one node).
//
// Run them with `make bench`, or one at a time as BENCHMARKS.md shows. The
// long ones (memory flood, idle fleet, 1000-node scale) take their
// measuring window from the environment (AMIBUS_BENCH_FLOOD,
// AMIBUS_BENCH_IDLE, AMIBUS_BENCH_SCALE, AMIBUS_BENCH_LATENCY,
// AMIBUS_BENCH_STATE_E2E, AMIBUS_BENCH_STATE_SETTLE: Go durations; and
// AMIBUS_BENCH_STATE_REBUILD_EVENTS, a count) and shorten it under -short.
package bench
