package daemon

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestResetAbortsTheSocket: Reset closes with SO_LINGER 0, so the peer sees
// a reset (the kernel discarded whatever was queued), not an orderly end
// that would follow delivery of the queued bytes.
func TestResetAbortsTheSocket(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	d := NewResetDialer()
	if d.Reset() {
		t.Fatal("Reset with nothing dialled reported a socket")
	}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	peer, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	if _, err := c.Write([]byte("PUB x 1\r\n")); err != nil {
		t.Fatal(err)
	}
	if !d.Reset() {
		t.Fatal("Reset found no socket")
	}
	if _, err := c.Write([]byte("PUB y 1\r\n")); err == nil {
		t.Fatal("write on a reset socket succeeded")
	}
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 64)
	var rerr error
	for rerr == nil {
		_, rerr = peer.Read(buf)
	}
	if errors.Is(rerr, io.EOF) || !errors.Is(rerr, syscall.ECONNRESET) {
		t.Fatalf("peer read ended with %v, want a connection reset", rerr)
	}
	if d.Reset() {
		t.Fatal("second Reset found the same socket again")
	}
}
