package testenv

import (
	"net"
	"sync"
	"testing"
)

// TCPServer is a loopback TCP server for the low-level cases a simulator
// does not model (a listener that accepts and never speaks, a proxy that
// can cut its clients off). Every accepted connection runs handle in its
// own goroutine and is closed when handle returns.
type TCPServer struct {
	ln     net.Listener
	handle func(net.Conn)
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

// ServeTCP listens on a free loopback port and serves until Close or the
// end of the test.
func ServeTCP(t testing.TB, handle func(net.Conn)) *TCPServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &TCPServer{ln: ln, handle: handle, conns: make(map[net.Conn]struct{})}
	s.wg.Add(1)
	go s.accept()
	t.Cleanup(s.Close)
	return s
}

// Addr is the host:port the server listens on.
func (s *TCPServer) Addr() string { return s.ln.Addr().String() }

func (s *TCPServer) accept() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer func() {
				c.Close()
				s.mu.Lock()
				delete(s.conns, c)
				s.mu.Unlock()
			}()
			s.handle(c)
		}()
	}
}

// DropAll closes every open connection; the server goes on accepting.
func (s *TCPServer) DropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.Close()
	}
}

// Close stops accepting, closes every connection and waits for the
// handlers; closing twice does nothing more.
func (s *TCPServer) Close() {
	s.ln.Close()
	s.DropAll()
	s.wg.Wait()
}
