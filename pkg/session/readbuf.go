package session

import (
	"bufio"
	"io"
	"time"
)

const (
	// smallReadBuffer is the buffer under the AMI reader of a quiet
	// connection: enough for the handshake, a Ping answer or a lone event
	// in one read. Most nodes of a large fleet are quiet most of the time,
	// and at 10,000 nodes every KiB here is 10 MiB.
	smallReadBuffer = 2 << 10
	// largeReadBuffer is the buffer of a connection that receives bursts
	// (many events per socket read, a snapshot list, a long Command
	// answer): a burst of ~380-byte events then costs one syscall per ~86
	// events instead of one per ~5.
	largeReadBuffer = 32 << 10
	// busyBuffered: at least this much already buffered when a message
	// ends means the peer sent more than one message per read; the
	// connection is busy.
	busyBuffered = smallReadBuffer / 2
	// shrinkAfter is how long a connection must have been quiet (no burst
	// seen) for its large buffer to be given back; it is given back at the
	// first message boundary with nothing buffered after that (on an idle
	// session, at the latest the next Ping answer).
	shrinkAfter = 10 * time.Second
)

// readBuf is the buffered reader under a connection's amiwire.Reader. It
// starts small, grows to largeReadBuffer while bursts come, and shrinks back
// once they stop, so that an idle session holds 2 KiB instead of 32 KiB. It
// is used by one goroutine at a time (the handshake, then the reader).
type readBuf struct {
	src   carryReader
	br    *bufio.Reader
	large bool
	busy  time.Time // the last burst seen
}

func newReadBuf(r io.Reader) *readBuf {
	rb := &readBuf{src: carryReader{r: r}}
	rb.br = bufio.NewReaderSize(&rb.src, smallReadBuffer)
	return rb
}

// adapt runs between two messages. It returns the reader to use from now
// on and whether it changed (the caller hands it to its amiwire.Reader).
// On the steady path it costs a comparison and allocates nothing.
func (rb *readBuf) adapt(now time.Time) (*bufio.Reader, bool) {
	n := rb.br.Buffered()
	if n >= busyBuffered {
		rb.busy = now
		if !rb.large {
			rb.swap(largeReadBuffer)
			return rb.br, true
		}
		return rb.br, false
	}
	if rb.large && n == 0 && now.Sub(rb.busy) >= shrinkAfter {
		rb.swap(smallReadBuffer)
		return rb.br, true
	}
	return rb.br, false
}

// swap replaces the bufio.Reader by one of size bytes; what the old one
// had buffered is read first.
func (rb *readBuf) swap(size int) {
	if n := rb.br.Buffered(); n > 0 {
		b, _ := rb.br.Peek(n) // cannot fail: n bytes are buffered
		rb.src.carry = append(append(make([]byte, 0, n+len(rb.src.carry)), b...), rb.src.carry...)
	}
	rb.br = bufio.NewReaderSize(&rb.src, size)
	rb.large = size > smallReadBuffer
}

// carryReader reads the bytes carried over from a replaced buffer, then r.
type carryReader struct {
	carry []byte // at most one buffer's worth; nil once read
	r     io.Reader
}

func (c *carryReader) Read(p []byte) (int, error) {
	if len(c.carry) > 0 {
		n := copy(p, c.carry)
		c.carry = c.carry[n:]
		if len(c.carry) == 0 {
			c.carry = nil
		}
		return n, nil
	}
	return c.r.Read(p)
}
