// Package eventlog reads the amibus event stream: the AMI events of every
// PBX (node) and their session_start, session_end, gap and snapshot markers,
// as stored by ami-ingest in one JetStream stream (schemas/README.md).
//
// A Reader reads one node's history, several nodes' or all of them, in
// stream order (so each node's messages in the order they were read from
// its PBX), from a position the caller gives: the start (default), a stream
// sequence (FromStreamSeq), the message after a stored position (After), a
// time (FromTime) or only what is stored from now on (OnlyNew). It runs over
// the stock nats.go jetstream API: an ordered consumer for ad-hoc reading, or
// a durable consumer (Durable) for a service that must resume where it
// stopped without storing a position itself.
//
// Next returns one Entry at a time. Each carries the stream sequence, the
// node, the session, the session's seq and the time, and one typed value by
// Kind: Event (name and Fields, with the string / repeated-key array
// convention), SessionStart, SessionEnd, Gap, Snapshot, or Invalid for a
// stored message that cannot be decoded. Nothing is skipped silently:
//
//   - a gap marker is a Gap entry;
//   - a jump in a session's seq with no gap marker (which amibus never
//     writes, so it means something is wrong) is reported by the reader as
//     an Inferred Gap with reason ReasonUnmarked, before the message that
//     revealed it;
//   - a node whose session changes with no session_start marker gets an
//     Inferred SessionStart before the message of the new session;
//   - a message stored after later ones of its session (a retried publish,
//     see schemas/README.md) is delivered with Late set;
//   - a message that does not decode is an Invalid entry with its stream
//     sequence, subject, payload and the reason (errors.Is ErrInvalidMessage).
//
// The reader judges a node's messages against the last ones it saw of that
// node. The first it sees (a reader started mid-session) is taken as it
// comes and reports nothing; NodePosition carries a node's session and seq
// across a resume, so that a jump or a session change at the resume point
// is reported too.
//
// Messages the stream's limits (max age, max bytes) discard before the
// reader gets to them show the same way, as unmarked gaps or inferred
// session starts of their nodes; a start position that is already
// discarded when Open is called fails with ErrPositionExpired.
//
// # Ownership and lifetime
//
// The Entry returned by Next, and every slice it holds (Event.Fields, a
// Field's Values, Snapshot.Items, Invalid.Data), are reused by the reader and
// are valid only until the next call to Next or Close. The strings they hold
// are immutable and may be kept for as long as the caller likes: they share
// the message's payload as nats.go received it (no copy), which stays alive
// while one of them does. To keep a whole entry, take Entry.Clone. Decoding
// an event therefore allocates nothing once the reused storage has grown to
// the largest message seen (nats.go allocates each message it receives).
//
// # Positions
//
// Entry.Position is the stream sequence up to which the caller has seen
// everything once it has handled the entry; store it, and resume with
// After(position). An inferred entry stands before the message that revealed
// it, so its Position is one less than its StreamSeq.
//
// # Bounds
//
// The reader holds at most Buffer stored messages ahead of the caller
// (default 4096: three quarters pulled by nats.go, PullMaxMessages, and a
// quarter handed over from nats.go's delivery goroutine to Next), at most
// three entries made from one message, and the last session and seq of at
// most MaxNodes nodes (default 10,000; a message of one more node fails Next
// with ErrTooManyNodes). Each pull request lives 5 s, so a pull nats.go
// loses is made again within that (Stats.Stalls). It starts no goroutine of
// its own (a durable reader's acknowledgement timer excepted, which Close
// stops and waits for): nats.go's consumer (Consume) calls it from its
// delivery goroutine, which stops in Close.
//
// A Reader is used by one goroutine. Stats and Position may be called from
// any goroutine.
package eventlog
