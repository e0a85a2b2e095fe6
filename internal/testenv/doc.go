// Package testenv is the one test environment of amibus: an embedded
// nats-server with JetStream, NATS connections, simulated PBXs over real TCP,
// a built binary run as a subprocess whose log is read line by line, and the
// action reply as requesters decode it.
//
// Only tests import it (the import-rule check in internal/layout enforces
// that). It imports pkg/amisim and no other amibus package, so that the
// tests of every package but amisim's in-package ones can use it without an
// import cycle; connecting with the binaries' own NATS options stays with
// the tests that mean to exercise them.
package testenv

import "time"

// WaitLimit bounds every wait of a test for something that should happen
// promptly: reaching it is a hang, not a slow machine, and fails the test.
// Generous, for a shared two-core machine under -race.
const WaitLimit = 30 * time.Second
