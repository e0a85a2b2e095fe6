package session

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// TestNoWriteAfterDisconnected: an action whose caller was told
// ErrDisconnected is never written, even when it still sits in the write
// queue as the connection fails and a writer runs after that.
func TestNoWriteAfterDisconnected(t *testing.T) {
	leakCheck(t)
	s, err := New("pbx1", "127.0.0.1:1", WithCredentials("ami", "amisecret"))
	if err != nil {
		t.Fatal(err)
	}
	sock, pbx := net.Pipe()
	c := &conn{s: s, nc: sock, ids: newIDs("inst", "pbx1"), pending: make(map[string]*pending)}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	received := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(pbx)
		received <- b
	}()
	p := &pending{id: c.ids.next(), wire: []byte("Action: Ping\r\n\r\n"), done: make(chan struct{})}
	if err := c.register(p); err != nil {
		t.Fatal(err)
	}
	c.mu.Lock()
	c.writeq = append(c.writeq, p) // queued as send queues it
	// What fail does under the lock: the connection is dead and every
	// caller is told so.
	c.dead = true
	c.failAllLocked()
	c.writing = true
	c.mu.Unlock()
	<-p.done
	if !errors.Is(p.err, ErrDisconnected) {
		t.Fatalf("caller told %v, want ErrDisconnected", p.err)
	}
	c.wg.Add(1)
	go c.writeLoop() // a writer that was about to run

	c.cancel()
	c.wg.Wait()
	sock.Close()
	if b := <-received; len(b) != 0 {
		t.Fatalf("written to the dead connection after its caller was told disconnected: %q", b)
	}
}

// TestReconnectBacksOff: a PBX that drops every connection before its
// banner is retried with a growing delay, not every backoff_initial. The
// bounds are lower ones (a busy machine only makes the gaps longer): with
// a 2 ms initial delay, a 1.5 multiplier and ±50 % jitter, the 11th delay
// is at least 57 ms and the 11 together at least 171 ms; retrying at the
// initial delay would take about 2 ms each.
func TestReconnectBacksOff(t *testing.T) {
	leakCheck(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	const attempts = 12
	accepted := make(chan time.Time, attempts)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			nc.Close()
			select {
			case accepted <- time.Now():
			default: // enough seen; the test is ending
			}
		}
	}()
	defer wg.Wait()
	defer ln.Close()

	s, err := New("pbx1", ln.Addr().String(), WithCredentials("ami", "amisecret"),
		WithBackoff(2*time.Millisecond, 10*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var at []time.Time
	timeout := time.After(waitLimit)
	for len(at) < attempts {
		select {
		case ts := <-accepted:
			at = append(at, ts)
		case <-timeout:
			t.Fatalf("%d connection attempts in %v", len(at), waitLimit)
		}
	}
	last := at[attempts-1].Sub(at[attempts-2])
	total := at[attempts-1].Sub(at[0])
	t.Logf("last delay %v, %d delays %v", last, attempts-1, total)
	if last < 57*time.Millisecond || total < 171*time.Millisecond {
		t.Fatalf("no backoff: the last of %d delays %v (want >= 57ms), all %v (want >= 171ms)", attempts-1, last, total)
	}
}
