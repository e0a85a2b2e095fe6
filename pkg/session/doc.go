// Package session keeps AMI sessions to Asterisk PBXs up for months: it
// dials (DNS and TLS within DialTimeout), reads the banner, logs in (plain or
// MD5 challenge) with the caller's Events mask, delivers events in order with
// per-session sequence numbers, sends actions and collects their complete
// answers, pings an idle PBX, and reconnects with jittered exponential
// backoff.
//
// # Ownership
//
// A Session owns one supervisor goroutine (Start .. Close). Per connection
// the supervisor starts and waits for a reader, a writer, a keepalive and,
// from Close on, a closer (Logoff), and runs the optional OnUp hook itself;
// all of them stop through the connection's context and the closing of its
// socket, and the next dial waits until they have ended.
// Close returns only when every one of them has. A Pool owns its sessions.
//
// # Flow
//
// Reader: socket → bufio (32 KiB) → amiwire.Reader (MaxMessageBytes,
// MaxHeaders) → one reused Message → responses and list events to the
// pending action with their ActionID, every other event through Accept to
// the Handler, numbered 1, 2, 3 ... The reader waits on nothing but the
// socket: Asterisk drops a client whose socket stays full for 100 ms.
//
// Writer: Send encodes the action (amiwire.AppendAction refuses header
// injection), registers it (MaxPending), and queues it on the connection's
// own queue. The writer gathers queued actions into one write under a
// deadline. The queue, the pending map and every queued byte die with the
// connection: an action not written before a disconnect fails with
// ErrDisconnected and is never written to the next connection.
//
// # Keepalive
//
// Asterisk runs a session's actions one at a time, so a Ping queued behind
// a slow action (a sync Originate rings up to its Timeout) would declare a
// working PBX dead. The rule: a connection that owes nothing and read
// nothing for PingInterval sends a Ping, which must be answered within
// PingTimeout; a connection that owes answers sends none and is alive while
// the latest owed answer is inside its deadline (the caller's, or a sync
// Originate's Timeout when later) plus PingTimeout, or anything was read
// within PingTimeout. TCP keepalive on every socket catches a vanished
// peer meanwhile. See docs/actor.md.
//
// # Bounds
//
//   - MaxMessageBytes, MaxHeaders per wire message: skipped, counted in
//     ami_messages_oversized_total, the stream goes on.
//   - MaxAnswerBytes, MaxListEvents per answer: the rest is read and
//     discarded, the action fails with ErrTooLarge, counted in
//     ami_action_answers_oversized_total.
//   - MaxPending actions per session, timed-out ones whose answer is still
//     owed included, and a PendingLimit shared by several sessions to one
//     node if given: ErrOverloaded.
//   - A DialLimiter (16 per process by default) on connection attempts:
//     the others wait, counted in ami_dials_waiting.
//
// Secrets: the AMI secret is held in a closure (nothing prints it); neither
// it nor the MD5 key is ever logged or put in an error.
package session
