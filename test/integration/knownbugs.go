package integration

import (
	"os"
	"testing"
)

// Product bugs this suite found that are not fixed yet. Each scenario
// checks for its bug's symptom where the symptom shows; when it shows, the
// test stops there as skipped, naming the bug and what was seen, so that
// `make test` stays usable and the skip is visible in its output. With
// AMIBUS_IT_KNOWN_BUGS=1 the symptom fails the test instead, which is how
// a fix is verified (and when it is, the check goes back to a plain
// failure and the entry below goes).
//
// A check never skips when the symptom does not show: then the test runs
// to its end and asserts everything.
const (
	// bugBlockedNATS: nats.go holds its connection lock while its flusher
	// writes to a socket that stopped draining (a partition), for up to
	// FlusherTimeout (1 minute by default), and every publish or request
	// waits for that lock whatever its context says. pkg/ownership's
	// renewals and pkg/ingest's Release (publisher drain) call into that
	// connection, so a replica cut off from NATS gives its nodes up late:
	// its AMI sessions may outlive its leases (two sessions of a node at
	// once) and Release overruns the deadline the Manager gave it.
	bugBlockedNATS = "ownership/ingest: a replica cut off from NATS blocks in nats.go (connection lock held by the flusher up to FlusherTimeout, 1 min) instead of giving its nodes up by its lease deadline"
	// bugStalePublish: events the cut-off replica had already handed to
	// nats.go before it gave a node up reach the stream once the network
	// is back, after the new owner's session_start: the node's history
	// interleaves two sessions.
	bugStalePublish = "ingest: after a partition heals, publishes a replica made before giving a node up land after the new owner's session started (interleaved history)"
	// bugCreateNotTaken: a lease Create is stored in the bucket (seen on
	// $KV.ami_owners.node.<n>) but the replica neither takes the node nor
	// deletes the key; the node has no session until the key expires.
	bugCreateNotTaken = "ownership: a replica's lease Create is stored but the replica does not start the node (nor free the key), so a hand-over waits for the lease TTL"
	// bugFreeNodeNotTaken: a node whose lease was released or expired
	// stays without an owner (for a TTL, or for good) while a live replica
	// holds less than its fair share and logs nothing about it.
	bugFreeNodeNotTaken = "ownership: a free node is not taken by a replica below its fair share (no error logged)"
	// bugLeasesBeforeStream: pkg/ingest runs the ownership manager (takes
	// leases, opens AMI sessions) before its stream is ensured; if
	// EnsureStream hangs (10 s, seen when replicas start together on a
	// fresh cluster) it reads events it cannot publish and drops them all
	// unmarked when it hands the nodes over: whole sessions are missing.
	bugLeasesBeforeStream = "ingest: a replica takes leases and reads events before its stream is ensured, then drops them unmarked at the hand-over (sessions missing from the stream)"
)

// knownBug stops t at a known bug's symptom: skipped by default, failed
// with AMIBUS_IT_KNOWN_BUGS=1. A test that already failed stays failed.
func knownBug(t *testing.T, bug, seen string) {
	t.Helper()
	if os.Getenv("AMIBUS_IT_KNOWN_BUGS") == "1" {
		t.Fatalf("known bug: %s\nseen: %s", bug, seen)
	}
	t.Skipf("known bug, not fixed yet (AMIBUS_IT_KNOWN_BUGS=1 fails on it): %s\nseen: %s", bug, seen)
}
