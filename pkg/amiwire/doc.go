// Package amiwire reads and writes the Asterisk Manager Interface wire format:
// a banner line, then messages made of "Key: Value" lines ended by an empty line.
// It holds no I/O policy: no timeouts, no reconnects, no goroutines.
//
// The format facts it honours were checked against a real Asterisk 20.20.1
// (the transcripts in testdata/, described in testdata/README.md) and against
// Asterisk's main/manager.c:
//
//   - The banner is one line, "Asterisk Call Manager/<version>", with no blank
//     line after it ([Reader.ReadBanner]).
//   - Asterisk always answers in CRLF, but bare LF line endings are accepted
//     too, as Asterisk itself accepts them from clients. Empty lines between
//     messages are skipped.
//   - A message keeps its headers in wire order, repeated keys included
//     (Output, Variable, ChanVariable). A line is split at its first colon and
//     one space after the colon is dropped, so values keep any further colons
//     and their trailing spaces; "Key: " is a header with an empty value. A
//     line with no colon (or starting with one) is kept whole as a key-less
//     header.
//   - A message's kind comes from its first line only: the OriginateResponse
//     and ChallengeResponseFailed events carry a Response header too.
//   - Asterisk 13 and older answer Command with "Response: Follows", the
//     Privilege and ActionID headers, the raw CLI output (LF endings, colons
//     and blank lines allowed), and a line equal to or ending in
//     "--END COMMAND--", then the empty line. The raw lines are kept as
//     key-less headers; Asterisk 14+ sends one "Output:" header per line
//     instead. [CommandOutput] returns the lines of either format.
//   - Asterisk closes a slow reader's socket in the middle of an event. A
//     stream that ends inside a message yields a [*TruncatedError] (which
//     matches io.ErrUnexpectedEOF), never a partial message.
//   - Every message is bounded in bytes and headers ([WithMaxBytes],
//     [WithMaxHeaders]); a message over a cap is skipped to its end without
//     being buffered and reported as a [*LimitError]; the stream stays usable.
//   - Asterisk reads client lines into a 1024-byte buffer that must hold the
//     line ending too, and keeps at most 128 lines per action;
//     [AppendAction] refuses anything it would discard or misread, and any CR
//     or LF that could inject a header.
//
// A Message is reused across reads without allocating, as bufio.Scanner
// reuses its buffer: a caller that keeps a message past the next read copies
// it ([Message.Clone], [Message.CopyTo]).
package amiwire
