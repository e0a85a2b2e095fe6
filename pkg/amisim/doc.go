// Package amisim simulates one or many Asterisk 20 AMI endpoints that
// behave like real Asterisk on the wire, for tests, the demo and the
// benchmarks. It imports no amibus package: it has its own small wire
// reader and writer, so that a bug in amibus's codec cannot hide on both
// sides of the wire.
//
// What it reproduces comes from the real Asterisk 20.20.1 transcripts in
// testdata/ (see its README): the banner; Login with a plain secret or an
// MD5 challenge, failure answered after AuthFailDelay then a close;
// Events on/off/class lists; FullyBooted and SuccessfulAuth after login;
// security events to other sessions; Permission denied before login;
// Ping, CoreSettings, CoreStatus; Command in both formats; the event lists
// CoreShowChannels, Status, QueueStatus, QueueSummary and Hangup /regex/;
// Originate (async, sync, failures) playing the recorded call; Filter;
// Asterisk's input limits (1024-byte lines, 128 headers); Logoff; the auth
// timeout; and the slow-reader drop: a client whose socket accepts no byte
// for WriteTimeout (100 ms) is closed mid-message.
//
// Bounds: client lines 1024 bytes and 128 headers (as Asterisk); per
// connection QueueBytes of unwritten output; MaxConns connections; MaxCalls
// calls; DefaultMaxFilters filters per session; RecordLimit recorded
// actions and events. What happens at each is counted in Stats.
//
// Goroutines: an accept loop, a call scheduler, and per connection a
// session goroutine (reads and runs actions one at a time, as an Asterisk
// session thread) and a writer. StartTraffic adds one generator. Close
// stops and waits for all of them.
package amisim
