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
// Known deviations from real Asterisk, each deliberate:
//   - Every answered call plays transcript 07's dialplan (Local/200 dials
//     Local/100), whatever the Originate asked; only the originated
//     channel's name, the Variable headers (as VarSet events) and the
//     OriginateResponse's ActionID, Channel, Context and Exten follow the
//     request. A Local channel to an extension outside Config.Extensions
//     plays 07b's failure; another technology fails without channels.
//   - A synchronous Originate is answered at once, not when the channel
//     answers. Events that arise while an action runs (AnswerDelay) are
//     sent before its answer; Asterisk holds them until it ends.
//   - Queues support and sales are static with no callers; channelvars is
//     not simulated (timestampevents is); a few CLI commands have output,
//     the rest get Asterisk's "No such command" answer.
//   - List items come in channel creation order (Asterisk: hash order); a
//     call's events come in 07's order (Asterisk's varies between runs).
//   - In front of the kernel buffers each connection has a queue of
//     QueueBytes; a queue full for WriteTimeout drops the client like a
//     blocked socket does. On TLS any write timeout drops the client.
//   - An empty message (a lone blank line) is answered "Missing action in
//     request", as manager.c does; no transcript shows it.
//
// Goroutines: an accept loop, a call scheduler, and per connection a
// session goroutine (reads and runs actions one at a time, as an Asterisk
// session thread) and a writer. StartTraffic adds one generator. Close
// stops and waits for all of them.
package amisim
