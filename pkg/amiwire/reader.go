package amiwire

import (
	"bufio"
	"bytes"
	"errors"
	"io"
)

const (
	// DefaultMaxBytes is the default cap on one message's wire size.
	DefaultMaxBytes = 1 << 20
	// DefaultMaxHeaders is the default cap on one message's header count.
	DefaultMaxHeaders = 8192
	// MaxBytesLimit is the largest byte cap a Reader accepts: a Message
	// locates its headers with 32-bit offsets.
	MaxBytesLimit = 1 << 30
	// MaxHeadersLimit is the largest header cap a Reader accepts; no message
	// can hold more headers than bytes.
	MaxHeadersLimit = MaxBytesLimit / 2

	// maxBannerBytes caps the banner line so a peer that is not AMI cannot
	// make ReadBanner buffer without bound; real banners are 29 bytes.
	maxBannerBytes = 1024
	bannerPrefix   = "Asterisk Call Manager/"
	// endCommand ends the raw output of an Asterisk 13 "Response: Follows".
	endCommand = "--END COMMAND--"
)

// Option configures a Reader.
type Option func(*Reader)

// WithMaxBytes caps one message's wire size, line endings and terminating
// empty line included (default DefaultMaxBytes). A message over the cap is
// skipped and reported as a *LimitError. n <= 0 keeps the default; n above
// MaxBytesLimit is clamped to it.
func WithMaxBytes(n int) Option {
	return func(r *Reader) {
		switch {
		case n <= 0:
		case n > MaxBytesLimit:
			r.maxBytes = MaxBytesLimit
		default:
			r.maxBytes = n
		}
	}
}

// WithMaxHeaders caps one message's header count, key-less lines included
// (default DefaultMaxHeaders). A message over the cap is skipped and reported
// as a *LimitError. n <= 0 keeps the default; n above MaxHeadersLimit is
// clamped to it.
func WithMaxHeaders(n int) Option {
	return func(r *Reader) {
		switch {
		case n <= 0:
		case n > MaxHeadersLimit:
			r.maxHeaders = MaxHeadersLimit
		default:
			r.maxHeaders = n
		}
	}
}

// Reader reads AMI messages from a bufio.Reader. It is not safe for
// concurrent use. After an error in the middle of a message (a truncated
// stream, a failed read) the stream is out of step and every later call
// returns that same error; a read error before the first byte of a message
// (a read deadline on an idle connection) is returned once and the Reader
// stays usable.
type Reader struct {
	br         *bufio.Reader
	maxBytes   int // cap on one message's wire bytes; what happens at it: skip + *LimitError
	maxHeaders int // cap on one message's headers; what happens at it: skip + *LimitError
	err        error
}

// NewReader returns a Reader that reads from br.
func NewReader(br *bufio.Reader, opts ...Option) *Reader {
	r := &Reader{br: br, maxBytes: DefaultMaxBytes, maxHeaders: DefaultMaxHeaders}
	for _, o := range opts {
		o(r)
	}
	return r
}

// Reset makes r read from br from its next call on, keeping its caps and
// any sticky error: for a caller that swaps the buffer under a connection
// between two messages (a small one while the peer is quiet, a larger one
// while it sends bursts). Bytes br's predecessor had buffered are the
// caller's to hand over.
func (r *Reader) Reset(br *bufio.Reader) { r.br = br }

// Buffered returns the number of bytes read from the stream and not yet
// consumed.
func (r *Reader) Buffered() int { return r.br.Buffered() }

// Grow makes the read buffer size bytes from now on, for a connection that
// turned out busy: a small buffer keeps an idle connection cheap, a large
// one makes a burst cost few reads. The bytes already buffered are read
// first; the new buffer reads through the old one, which bufio bypasses
// once it is empty (a read at least its size goes straight to the stream).
func (r *Reader) Grow(size int) {
	if size > r.br.Size() {
		r.br = bufio.NewReaderSize(r.br, size)
	}
}

// MaxBytes returns the byte cap in effect.
func (r *Reader) MaxBytes() int { return r.maxBytes }

// MaxHeaders returns the header cap in effect.
func (r *Reader) MaxHeaders() int { return r.maxHeaders }

// ReadBanner reads the banner line, "Asterisk Call Manager/<version>", and
// returns the version. Call it once on a new connection, before ReadMessage.
// A stream that ends before the banner's first byte gives io.EOF (as when a
// restarting Asterisk accepts and drops a connection), one that ends inside
// it a *TruncatedError, and any other line a *ProtocolError. Like every
// *ProtocolError, that one does not stick: a caller that retries always
// consumes input, so it cannot spin on one error.
func (r *Reader) ReadBanner() (version string, err error) {
	if r.err != nil {
		return "", r.err
	}
	var line []byte
	for {
		frag, err := r.br.ReadSlice('\n')
		if len(line)+len(frag) > maxBannerBytes {
			return "", &ProtocolError{Reason: "banner line longer than 1024 bytes", Excerpt: excerpt(append(line, frag...))}
		}
		line = append(line, frag...)
		if err == nil {
			break
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if len(line) == 0 {
			return "", err
		}
		if err == io.EOF {
			err = &TruncatedError{Size: len(line)}
		}
		r.err = err
		return "", err
	}
	line = trimEOL(line)
	v, ok := bytes.CutPrefix(line, []byte(bannerPrefix))
	if !ok || !validVersion(v) {
		return "", &ProtocolError{Reason: "not an AMI banner", Excerpt: excerpt(line)}
	}
	return string(v), nil
}

// validVersion accepts what Asterisk has sent as its AMI version over the
// years ("1.1", "2.10.6", "9.0.0"), and a fork's suffix, but no spaces or
// control characters.
func validVersion(v []byte) bool {
	if len(v) == 0 || v[0] < '0' || v[0] > '9' {
		return false
	}
	for _, c := range v {
		ok := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' ||
			c == '.' || c == '-' || c == '_' || c == '+'
		if !ok {
			return false
		}
	}
	return true
}

// phase is where ReadMessage is inside a message.
type phase uint8

const (
	// phaseHeaders: "Key: Value" lines until the empty line.
	phaseHeaders phase = iota
	// phaseFollowsPrefix: after "Response: Follows", its Privilege and
	// ActionID headers.
	phaseFollowsPrefix
	// phaseFollowsOutput: raw CLI output lines, empty ones included, until
	// the line that ends in "--END COMMAND--".
	phaseFollowsOutput
	// phaseFollowsEnd: after the end marker, where only the empty line
	// belongs.
	phaseFollowsEnd
)

// ReadMessage reads the next message into m, reusing m's buffers: once they
// have grown to the size of the messages seen, it does not allocate. m is
// overwritten even on error, and holds a message only when err is nil.
//
// It returns io.EOF only at a message boundary; a stream that ends inside a
// message gives a *TruncatedError (io.ErrUnexpectedEOF). A message over a cap
// gives a *LimitError and a legacy Command answer with a malformed end a
// *ProtocolError; after either, the next call reads the next message.
func (r *Reader) ReadMessage(m *Message) error {
	m.Reset()
	if r.err != nil {
		return r.err
	}
	var (
		size    int   // wire bytes of the message read so far
		started bool  // a line of the message (not a blank line before it) was read
		skip    error // why the rest of the message is read without being kept
		perr    *ProtocolError
		ph      = phaseHeaders
		tail    lineTail
	)
	for {
		lineStart := len(m.buf)
		wire := 0
		var first byte
		tail.reset()
		for {
			frag, err := r.br.ReadSlice('\n')
			if wire == 0 && len(frag) > 0 {
				first = frag[0]
			}
			wire += len(frag)
			if ph != phaseHeaders {
				tail.push(frag)
			}
			if skip == nil {
				// A line of at most 2 bytes may be a blank line between
				// messages, which belongs to no message: it is checked
				// below, once complete.
				if wire > 2 && size+wire > r.maxBytes {
					skip = ErrMessageTooLarge
					m.buf = m.buf[:lineStart]
				} else {
					m.buf = append(m.buf, frag...)
				}
			}
			if err == nil {
				break
			}
			if err == bufio.ErrBufferFull {
				continue
			}
			return r.fail(m, err, started || wire > 0, size+wire)
		}
		blank := wire == 1 || wire == 2 && first == '\r'
		if !started && blank {
			m.buf = m.buf[:lineStart]
			continue
		}
		started = true
		size += wire
		if skip == nil && size > r.maxBytes {
			skip = ErrMessageTooLarge
			m.buf = m.buf[:lineStart]
		}
		if blank && (ph == phaseHeaders || ph == phaseFollowsEnd) {
			return r.finish(m, size, skip, perr)
		}
		if skip != nil {
			if (ph == phaseFollowsPrefix || ph == phaseFollowsOutput) && tail.hasEndMarker() {
				ph = phaseFollowsEnd
			}
			continue
		}

		end := len(m.buf) - 1 // drop the '\n'
		if end > lineStart && m.buf[end-1] == '\r' {
			end--
		}
		m.buf = m.buf[:end]
		line := m.buf[lineStart:end]
		if ph == phaseFollowsEnd {
			perr = &ProtocolError{Reason: `line after "--END COMMAND--" where the empty line belongs`, Excerpt: excerpt(line)}
			skip = ErrProtocol
			m.buf = m.buf[:lineStart]
			continue
		}
		if len(m.fields) >= r.maxHeaders {
			skip = ErrTooManyHeaders
			m.buf = m.buf[:lineStart]
			if ph != phaseHeaders && endsWithMarker(line) {
				ph = phaseFollowsEnd
			}
			continue
		}
		switch ph {
		case phaseHeaders:
			m.addLine(lineStart, end)
			if len(m.fields) == 1 {
				m.kind = kindOf(m.Key(0))
				if m.kind == KindResponse && EqualFold(m.Value(0), "Follows") {
					m.follows = true
					ph = phaseFollowsPrefix
				}
			}
		case phaseFollowsPrefix:
			if c := bytes.IndexByte(line, ':'); c > 0 && (EqualFold(line[:c], "Privilege") || EqualFold(line[:c], "ActionID")) {
				m.addLine(lineStart, end)
				break
			}
			ph = phaseFollowsOutput
			fallthrough
		case phaseFollowsOutput:
			m.fields = append(m.fields, span{int32(lineStart), int32(lineStart), int32(lineStart), int32(end)})
			if endsWithMarker(line) {
				ph = phaseFollowsEnd
			}
		}
	}
}

// finish ends a message at its terminating empty line.
func (r *Reader) finish(m *Message, size int, skip error, perr *ProtocolError) error {
	if skip == nil {
		m.size = size
		return nil
	}
	var err error
	switch {
	case perr != nil:
		err = perr
	default:
		limit := r.maxBytes
		if skip == ErrTooManyHeaders {
			limit = r.maxHeaders
		}
		err = &LimitError{Err: skip, Kind: m.kind, Name: nameOf(m), ActionID: string(m.ActionID()), Size: size, Limit: limit}
	}
	m.Reset()
	return err
}

// fail handles a read error. Before any byte of a message it is returned as
// is (io.EOF: a clean end); inside a message the stream is out of step, so
// the error sticks, io.EOF becoming a *TruncatedError.
func (r *Reader) fail(m *Message, err error, partial bool, size int) error {
	if partial {
		if errors.Is(err, io.EOF) {
			err = &TruncatedError{Kind: m.kind, Name: nameOf(m), Size: size}
		}
		r.err = err
	}
	m.Reset()
	return err
}

// nameOf returns the first header's value of an event or response; the first
// line of anything else is arbitrary peer data, kept out of error strings.
func nameOf(m *Message) string {
	if m.kind == KindOther || len(m.fields) == 0 {
		return ""
	}
	return string(m.Value(0))
}

// addLine records m.buf[start:end] as one header, split at its first colon
// with one space after the colon dropped. A line with no colon, or starting
// with one, is kept whole as a key-less header.
func (m *Message) addLine(start, end int) {
	c := bytes.IndexByte(m.buf[start:end], ':')
	if c <= 0 {
		m.fields = append(m.fields, span{int32(start), int32(start), int32(start), int32(end)})
		return
	}
	vs := start + c + 1
	if vs < end && m.buf[vs] == ' ' {
		vs++
	}
	m.fields = append(m.fields, span{int32(start), int32(start + c), int32(vs), int32(end)})
}

// trimEOL drops a trailing "\n" or "\r\n".
func trimEOL(b []byte) []byte {
	b = bytes.TrimSuffix(b, []byte{'\n'})
	return bytes.TrimSuffix(b, []byte{'\r'})
}

// endsWithMarker reports whether a line (without its ending) ends the raw
// output of a legacy Command answer; text before the marker is the output's
// last line, written without a newline.
func endsWithMarker(line []byte) bool {
	return len(line) >= len(endCommand) && string(line[len(line)-len(endCommand):]) == endCommand
}

// lineTail keeps the last bytes of the line being read, so that the legacy
// end marker is found even in a line that is skipped rather than stored.
type lineTail struct {
	b [len(endCommand) + 2]byte // the marker and a CRLF
	n int
}

func (t *lineTail) reset() { t.n = 0 }

func (t *lineTail) push(p []byte) {
	if len(p) >= len(t.b) {
		t.n = copy(t.b[:], p[len(p)-len(t.b):])
		return
	}
	keep := min(t.n, len(t.b)-len(p))
	copy(t.b[:keep], t.b[t.n-keep:t.n])
	t.n = keep + copy(t.b[keep:], p)
}

func (t *lineTail) hasEndMarker() bool {
	return endsWithMarker(trimEOL(t.b[:t.n]))
}
