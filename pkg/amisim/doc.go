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
// Originate (async, sync, failures) playing the recorded call; one
// connection's actions run strictly one at a time and in order, so a
// synchronous Originate to an extension that rings without answering
// (Config.RingingExtensions, 199@demo) holds its connection until its
// Timeout (default 30 s) and answers "Originate failed", as Asterisk does
// (transcript README, "One action at a time per session");
// allowmultiplelogin = no (Config.SingleLogin); BridgeList and BridgeInfo
// (layout from Asterisk 20's documentation; no capture); Filter;
// Asterisk's input limits (1024-byte lines, 128 headers); Logoff; the auth
// timeout; and the slow-reader drop: a client whose socket accepts no byte
// for WriteTimeout (100 ms) is closed mid-message.
//
// Truth: Server.Truth (and Fleet.Truth, and GET /truth on cmd/amisim's
// control endpoint) says which channels, bridges and queue members and
// callers the PBX has, after the last event emitted and before the next.
// Every call event changes that state and is rendered from it under one
// lock, and the list actions (CoreShowChannels, Status, BridgeList,
// BridgeInfo, QueueStatus, QueueSummary) render from it while holding the
// event order, so a list answer stands in each session's stream exactly at
// the moment it describes, as in Asterisk. ObserveLists hands a test the
// Truth each list answer shows. TestTruthProperty checks truth = lists =
// the state rebuilt from the events, over TCP, under random traffic.
//
// Hard calls: StartMixedTraffic plays a seeded random mix of scenarios
// (scenarios.go): two-party calls through a bridge, calls that fail before
// answer, hold/unhold, blind and attended transfers (BlindTransfer;
// BridgeMerge and AttendedTransfer), Local channel pairs with LocalBridge
// and Local optimization (LocalOptimizationBegin/End, the far channel
// swapping into ;1's place with SwapUniqueid), a masquerade (call pickup:
// Rename events), queue calls (QueueCallerJoin/Leave/Abandon, AgentCalled,
// AgentRingNoAnswer, AgentConnect, AgentComplete, QueueMemberStatus) and
// member pauses (QueueMemberPause). A Hangup action on a scripted call's
// channel tears the call down at once (a ringing dial ends CANCEL). Event order and headers follow
// transcripts 07 and 08b where they captured the step (the queue no-answer
// sequence and the Local pair are compared with them by tests); the rest
// follows Asterisk 20's manager event documentation (engine.go lists which).
//
// Bounds: client lines 1024 bytes and 128 headers (as Asterisk); per
// connection QueueBytes of unwritten output; MaxConns connections; MaxCalls
// calls (template and scripted alike, so the channels, bridges and queue
// callers of the truth are bounded by it too: at most 6 channels and 2
// bridges per call); DefaultMaxFilters filters per session; RecordLimit
// recorded actions and events. What happens at each is counted in Stats.
//
// Known deviations from real Asterisk, each deliberate:
//   - Every answered call plays transcript 07's dialplan (Local/200 dials
//     Local/100), whatever the Originate asked; only the originated
//     channel's name, the Variable headers (as VarSet events) and the
//     OriginateResponse's ActionID, Channel, Context and Exten follow the
//     request. A Local channel to an extension outside Config.Extensions
//     plays 07b's failure; another technology fails without channels.
//   - Events that arise while an action runs (AnswerDelay, a held
//     synchronous Originate) are sent before its answer; Asterisk holds
//     them until it ends. An asynchronous Originate to a ringing extension
//     still plays the answered call.
//   - SetNeverAnswer drops the action's answer and the session goes on
//     with the next action; Asterisk has no such state (a lost answer).
//     SetAnswerDelay holds the connection as a slow action does.
//   - Queues support and sales have static members (Local/100@demo,
//     Local/199@demo); callers and pauses come only from the hard calls.
//     A member's device state is "in use" while any channel of its device
//     lives and changes when the engine says so (not, as in Asterisk, on
//     every device state change); QueueParams' hold and talk times are 0.
//     channelvars is not simulated (timestampevents is); a few CLI
//     commands have output, the rest get Asterisk's "No such command".
//   - The hard calls emit no VarSet, Cdr or DeviceStateChange (no state in
//     them), their phones are PJSIP channels that no action can originate,
//     a masquerade renames channels but keeps each Uniqueid with its
//     channel object (Asterisk 12+ may swap them), and the order of events
//     that no capture holds (transfers, optimization, AgentConnect and
//     AgentComplete) is a plausible one documented in scenarios.go, not a
//     measured one.
//   - List items come in channel creation order (Asterisk: hash order); a
//     call's events come in 07's order (Asterisk's varies between runs).
//   - In front of the kernel buffers each connection has a queue of
//     QueueBytes; a queue full for WriteTimeout drops the client like a
//     blocked socket does. On TLS any write timeout drops the client.
//   - An empty message (a lone blank line) is answered "Missing action in
//     request", as manager.c does; no transcript shows it.
//
// Goroutines: an accept loop, a call scheduler (template and scripted calls
// alike), and per connection a session goroutine (reads and runs actions
// one at a time, as an Asterisk session thread) and a writer.
// StartTraffic or StartMixedTraffic adds one generator. Close stops and
// waits for all of them.
package amisim
