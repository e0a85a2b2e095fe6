// Package integration is amibus's container test suite (issue 6): real
// nats-server, amisim, ami-ingest, ami-actor and ami-state processes in Docker
// containers, on two networks, with faults injected through the Docker API:
// killed and restarted containers, a replica cut off from NATS, a NATS
// server killed, a rolling restart, an actor killed with requests in flight,
// replicas reloading a new node list one after the other (SIGHUP).
//
// Nothing is pulled from a registry. TestMain's first user builds the
// binaries statically (CGO_ENABLED=0; nats-server from its Go module, a
// dependency of this module) and one image FROM scratch that holds them
// (images.go). Ryuk, testcontainers' reaper, needs a pulled image and is
// turned off, so every test removes its containers and networks itself
// (t.Cleanup), and TestMain removes the image.
//
// Without a Docker engine every test skips with "docker not available:
// container integration suite skipped"; with one it runs in `make test`.
// `go test -short` skips the suite too.
//
// What the tests observe, and how:
//   - the stream: a tail (stream.go) reads every message of AMI_EVENTS from
//     the start, in order, through the test's own NATS connection to the
//     servers' mapped ports, and checks each node's history (history.go);
//   - amisim: its --control endpoint (internal/simcmd/control.go) reports per
//     node the logins, concurrent sessions per user, the actions it received
//     and the events it wrote to each connection;
//   - ami-ingest and ami-actor: their /metrics;
//   - the actions: NATS requests from the test.
//
// Containers have no shell, so nothing runs inside them: readiness is
// checked over HTTP from the test process through mapped ports.
//
// When a test fails, every container's log is saved under
// $TMPDIR/amibus-it-logs/<test>/ (the test log says where).
//
//	go test -race -count=1 -timeout 20m ./test/integration/
package integration
