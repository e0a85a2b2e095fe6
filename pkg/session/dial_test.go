package session

import (
	"fmt"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
)

// TestDialLimiterCapsConcurrentAttempts holds every connection open without
// a banner (a PBX that accepts and never speaks) and checks that no more
// attempts than the limiter allows are ever open at once, that the others
// are counted as waiting, and that a freed slot goes to a waiting session.
func TestDialLimiterCapsConcurrentAttempts(t *testing.T) {
	leakCheck(t)
	const nodes, slots = 5, 2
	var (
		open, maxOpen atomic.Int32
		release       = make(chan struct{})
		accepted      = make(chan string, 100)
		seen          = map[string]bool{} // nodes that got a slot; test goroutine only
	)
	m := metrics.New()
	limiter := NewDialLimiter(slots)
	var sessions []*Session
	for i := range nodes {
		node := fmt.Sprintf("pbx%d", i)
		p := testenv.ServeTCP(t, func(c net.Conn) {
			n := open.Add(1)
			for {
				old := maxOpen.Load()
				if n <= old || maxOpen.CompareAndSwap(old, n) {
					break
				}
			}
			accepted <- node
			<-release
			open.Add(-1)
		})
		s, err := New(node, p.Addr(), WithCredentials("ami", "amisecret"),
			WithDialLimiter(limiter), WithMetrics(m), WithBannerTimeout(time.Minute),
			WithBackoff(10*time.Millisecond, 50*time.Millisecond))
		if err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, s)
	}
	defer func() {
		close(release)
		for _, s := range sessions {
			s.Close()
		}
	}()
	for _, s := range sessions {
		if err := s.Start(); err != nil {
			t.Fatal(err)
		}
	}
	take := func() {
		select {
		case node := <-accepted:
			seen[node] = true
		case <-time.After(waitLimit):
			t.Fatal("no connection attempt arrived")
		}
	}
	take()
	take()
	eventually(t, "3 attempts waiting for the limiter", func() bool {
		return testutil.ToFloat64(m.DialsWaiting) == nodes-slots
	})
	if got := len(accepted); got != 0 {
		t.Fatalf("%d attempts got past a full limiter", got)
	}
	// Free one slot at a time: each time exactly one more attempt comes.
	for i := 0; len(seen) < nodes; i++ {
		if i > 4*nodes {
			t.Fatalf("only %d of %d nodes ever got a slot", len(seen), nodes)
		}
		release <- struct{}{}
		take()
	}
	if got := maxOpen.Load(); got != slots {
		t.Errorf("at most %d attempts were open at once, want exactly %d", got, slots)
	}
}
