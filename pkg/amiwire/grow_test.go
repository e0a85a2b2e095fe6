package amiwire

import (
	"bufio"
	"fmt"
	"strings"
	"testing"
)

// TestGrowKeepsTheStream: growing the buffer between two messages, with
// bytes of the next ones already buffered, loses and reorders nothing.
func TestGrowKeepsTheStream(t *testing.T) {
	var in strings.Builder
	const n = 200
	for i := range n {
		fmt.Fprintf(&in, "Event: UserEvent\r\nSeq: %d\r\nPad: %s\r\n\r\n", i, strings.Repeat("x", i*7))
	}
	r := NewReader(bufio.NewReaderSize(strings.NewReader(in.String()), 64))
	var m Message
	for i := range n {
		if err := r.ReadMessage(&m); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		if got := m.Get("Seq"); got != fmt.Sprint(i) || len(m.Get("Pad")) != i*7 {
			t.Fatalf("message %d: Seq %q, pad %d bytes", i, got, len(m.Get("Pad")))
		}
		if i == 3 {
			if r.Buffered() == 0 {
				t.Fatal("nothing buffered: the test would not show the hand-over")
			}
			r.Grow(4096)
		}
	}
}
