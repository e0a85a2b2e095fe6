package session

import (
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/amibus/amibus/pkg/amiwire"
)

// chunkReader returns its data in reads of at most n bytes, as a socket
// delivers what has arrived.
type chunkReader struct {
	data string
	n    int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if c.data == "" {
		return 0, io.EOF
	}
	k := copy(p, c.data[:min(len(c.data), c.n)])
	c.data = c.data[k:]
	return k, nil
}

func event(i int) string {
	return fmt.Sprintf("Event: Newstate\r\nPrivilege: call,all\r\nChannel: PJSIP/%d-0000\r\nUniqueid: %d.%d\r\n\r\n", i, i, i)
}

// readAll reads every message through rb, calling adapt after each as the
// connection's reader does, with the clock advanced by step per message;
// it returns the Uniqueids read and the buffer sizes seen.
func readAll(t *testing.T, rb *readBuf, now time.Time, step time.Duration) (ids []string, large []bool) {
	t.Helper()
	r := amiwire.NewReader(rb.br)
	var m amiwire.Message
	for {
		err := r.ReadMessage(&m)
		if err == io.EOF {
			return ids, large
		}
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, m.Get("Uniqueid"))
		now = now.Add(step)
		if br, changed := rb.adapt(now); changed {
			r.Reset(br)
		}
		large = append(large, rb.large)
	}
}

func TestReadBufferGrowsInABurstAndKeepsTheStream(t *testing.T) {
	var all strings.Builder
	const n = 500
	for i := range n {
		all.WriteString(event(i))
	}
	// The socket hands over 8 KiB per read: a burst.
	rb := newReadBuf(&chunkReader{data: all.String(), n: 8 << 10})
	if rb.large || rb.br.Size() != smallReadBuffer {
		t.Fatalf("a new connection's buffer is %d bytes, want %d", rb.br.Size(), smallReadBuffer)
	}
	ids, large := readAll(t, rb, time.Now(), time.Millisecond)
	if len(ids) != n {
		t.Fatalf("read %d messages, want %d", len(ids), n)
	}
	for i, id := range ids {
		if want := fmt.Sprintf("%d.%d", i, i); id != want {
			t.Fatalf("message %d: Uniqueid %q, want %q (bytes lost or reordered across a buffer swap)", i, id, want)
		}
	}
	if !large[0] || rb.br.Size() != largeReadBuffer {
		t.Errorf("after the first message of a burst the buffer is %d bytes, want %d", rb.br.Size(), largeReadBuffer)
	}
}

func TestReadBufferShrinksWhenQuiet(t *testing.T) {
	var all strings.Builder
	for i := range 20 {
		all.WriteString(event(i))
	}
	burst := all.String()
	// A burst, then one message per read, each shrinkAfter/4 apart.
	quiet := ""
	for i := 20; i < 30; i++ {
		quiet += event(i)
	}
	rb := newReadBuf(io.MultiReader(&chunkReader{data: burst, n: 4 << 10}, &chunkReader{data: quiet, n: len(event(20))}))
	ids, large := readAll(t, rb, time.Now(), shrinkAfter/4)
	if len(ids) != 30 {
		t.Fatalf("read %d messages, want 30", len(ids))
	}
	for i, id := range ids {
		if want := fmt.Sprintf("%d.%d", i, i); id != want {
			t.Fatalf("message %d: Uniqueid %q, want %q", i, id, want)
		}
	}
	if !large[0] {
		t.Error("the burst did not grow the buffer")
	}
	if large[len(large)-1] || rb.br.Size() != smallReadBuffer {
		t.Errorf("after %v without a burst the buffer is %d bytes, want %d", 10*shrinkAfter/4, rb.br.Size(), smallReadBuffer)
	}
}

func TestReadBufferStaysSmallForLoneMessages(t *testing.T) {
	var all strings.Builder
	for i := range 50 {
		all.WriteString(event(i))
	}
	// One message per read: a quiet PBX, or a Ping answer every interval.
	rb := newReadBuf(&chunkReader{data: all.String(), n: len(event(0))})
	_, large := readAll(t, rb, time.Now(), time.Second)
	for i, l := range large {
		if l {
			t.Fatalf("message %d grew the buffer of a connection that reads one message at a time", i)
		}
	}
}
