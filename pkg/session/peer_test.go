package session

import (
	"bufio"
	"net"
	"strings"
	"sync"
	"testing"
)

// peer is a scripted TCP peer for the few low-level cases amisim does not
// model (a listener that accepts and never speaks). Every accepted
// connection runs handle in its own goroutine; Close stops them all.
type peer struct {
	ln     net.Listener
	handle func(net.Conn)
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	wg     sync.WaitGroup
}

func newPeer(t *testing.T, handle func(net.Conn)) *peer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &peer{ln: ln, handle: handle, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.Close)
	return p
}

func (p *peer) Addr() string { return p.ln.Addr().String() }

func (p *peer) acceptLoop() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer func() {
				c.Close()
				p.mu.Lock()
				delete(p.conns, c)
				p.mu.Unlock()
			}()
			p.handle(c)
		}()
	}
}

// Close stops accepting, closes every connection and waits for handlers.
func (p *peer) Close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.conns {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// readAction reads one action's headers as key/value pairs, or returns
// false at EOF.
func readAction(br *bufio.Reader) ([][2]string, bool) {
	var hs [][2]string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			return nil, false
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			if len(hs) == 0 {
				continue
			}
			return hs, true
		}
		k, v, _ := strings.Cut(line, ": ")
		hs = append(hs, [2]string{k, v})
	}
}

func header(hs [][2]string, key string) string {
	for _, h := range hs {
		if strings.EqualFold(h[0], key) {
			return h[1]
		}
	}
	return ""
}
