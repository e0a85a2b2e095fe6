package daemon

import (
	"net"
	"sync"
	"time"
)

// NATSDialTimeout bounds one TCP dial to a NATS server (nats.go's own default).
const NATSDialTimeout = 2 * time.Second

// ResetDialer is a nats.CustomDialer that remembers the socket it dialled
// last, so that Reset can abort that socket with everything still queued on
// it.
//
// Why: a publish handed to nats.go is written to its buffer and then to the
// kernel's socket buffer. If the network to NATS is cut, those bytes wait
// there and reach the server when the network heals, possibly long after
// ami-ingest gave the node up and another replica started publishing it:
// the node's history would interleave two sessions. Closing the socket with
// SO_LINGER 0 discards the kernel's queue (the peer gets a reset, never the
// data), and nats.go drops its own buffer on the write error and reconnects
// with a fresh socket.
type ResetDialer struct {
	d net.Dialer

	mu   sync.Mutex
	conn net.Conn // the latest socket; older ones nats.go has closed itself
}

// NewResetDialer returns a ResetDialer with NATSDialTimeout.
func NewResetDialer() *ResetDialer {
	return &ResetDialer{d: net.Dialer{Timeout: NATSDialTimeout}}
}

// Dial dials a NATS server for nats.go.
func (r *ResetDialer) Dial(network, address string) (net.Conn, error) {
	c, err := r.d.Dial(network, address)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	r.conn = c
	r.mu.Unlock()
	return c, nil
}

// Reset aborts the current socket: its unsent bytes are discarded, and a
// write that nats.go has blocked on it returns at once. It reports whether
// there was a socket to reset.
func (r *ResetDialer) Reset() bool {
	r.mu.Lock()
	c := r.conn
	r.conn = nil
	r.mu.Unlock()
	if c == nil {
		return false
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = c.Close()
	return true
}
