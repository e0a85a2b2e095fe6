package session

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/amibus/amibus/internal/lifecycle"
)

// ErrNodeExists is returned by Pool.Add for a node the pool already runs.
var ErrNodeExists = errors.New("session: node already in the pool")

// Pool runs one Session per node. Each session has its own supervisor, so a
// node that is down never delays the others; they share one DialLimiter, so
// a fleet-wide reconnect is paced. Nodes can be added and removed while it
// runs (the HA lease manager starts and stops node sessions as it gains and
// loses leases).
type Pool struct {
	base []Option

	mu       sync.Mutex
	sessions map[string]*Session // one per node; bounded by the configuration
	closed   bool
}

// NewPool returns an empty pool whose sessions all get opts (Add may add
// more per node). Unless opts hold a WithDialLimiter, the sessions share
// ProcessDialLimiter.
func NewPool(opts ...Option) *Pool {
	return &Pool{
		// A WithDialLimiter in opts comes later and wins.
		base:     append([]Option{WithDialLimiter(ProcessDialLimiter())}, opts...),
		sessions: make(map[string]*Session),
	}
}

// Add creates and starts the session for node at addr, with the pool's
// options followed by opts.
func (p *Pool) Add(node, addr string, opts ...Option) (*Session, error) {
	all := append(slices.Clip(p.base), opts...)
	s, err := New(node, addr, all...)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, ErrClosed
	}
	if _, ok := p.sessions[node]; ok {
		return nil, fmt.Errorf("%w: %s", ErrNodeExists, node)
	}
	if err := s.Start(); err != nil {
		return nil, err
	}
	p.sessions[node] = s
	return s, nil
}

// Get returns node's session.
func (p *Pool) Get(node string) (*Session, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s, ok := p.sessions[node]
	return s, ok
}

// Nodes returns the pool's node names, sorted.
func (p *Pool) Nodes() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	nodes := make([]string, 0, len(p.sessions))
	for n := range p.sessions {
		nodes = append(nodes, n)
	}
	slices.Sort(nodes)
	return nodes
}

// Remove closes node's session and returns when it has stopped (logged
// off, every goroutine ended). It reports whether the node was in the pool.
// Other nodes are not held up meanwhile.
func (p *Pool) Remove(node string) bool {
	return p.RemoveWithReason(node, ReasonClosed)
}

// RemoveWithReason is Remove, the session's end being reported with reason
// (see Session.CloseWithReason).
func (p *Pool) RemoveWithReason(node, reason string) bool {
	p.mu.Lock()
	s, ok := p.sessions[node]
	delete(p.sessions, node)
	p.mu.Unlock()
	if ok {
		s.CloseWithReason(reason)
	}
	return ok
}

// Close closes every session, all at once, and returns when all have
// stopped. Add fails afterwards.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	all := make([]*Session, 0, len(p.sessions))
	for _, s := range p.sessions {
		all = append(all, s)
	}
	clear(p.sessions)
	p.mu.Unlock()
	lifecycle.CloseAll(all, (*Session).Close)
}
