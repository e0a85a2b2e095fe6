package state

import (
	"strings"
	"sync/atomic"
)

// Projection is the state of every node seen, each applied independently:
// bad input of one node never touches another. Not safe for concurrent
// use, except BadCount.
type Projection struct {
	nodes map[string]*Node
	bad   [numReasons]atomic.Uint64
	// strs is the table of value copies shared by the nodes (strings.go):
	// the values that repeat on one PBX repeat on the others.
	strs *strTable
	// OnBad, when set before the first Apply, is told of each bad input
	// (for coalesced logging); it runs on the applying goroutine.
	OnBad func(node string, r Reason)
}

// NewProjection returns an empty projection.
func NewProjection() *Projection {
	return &Projection{nodes: make(map[string]*Node), strs: newStrTable()}
}

// Node answers the state of node name, creating it empty if new; a name
// that is not a valid key token is refused with ErrBadNode and counted.
func (p *Projection) Node(name string) (*Node, error) {
	if n, ok := p.nodes[name]; ok {
		return n, nil
	}
	if !ValidNode(name) {
		p.count(name, ReasonBadNode)
		return nil, ErrBadNode
	}
	name = strings.Clone(name) // kept: not the payload it came in
	n := NewNode(name)
	n.strs = p.strs
	n.onBad = func(r Reason) { p.count(name, r) }
	p.nodes[name] = n
	return n, nil
}

// Lookup answers node name's state if it has one.
func (p *Projection) Lookup(name string) (*Node, bool) {
	n, ok := p.nodes[name]
	return n, ok
}

// Nodes calls f for every node.
func (p *Projection) Nodes(f func(*Node)) {
	for _, n := range p.nodes {
		f(n)
	}
}

func (p *Projection) count(node string, r Reason) {
	p.bad[r].Add(1)
	if p.OnBad != nil {
		p.OnBad(node, r)
	}
}

// BadCount answers how many inputs of reason r were counted across nodes.
func (p *Projection) BadCount(r Reason) uint64 { return p.bad[r].Load() }

// Apply applies m to its node's state (see Node.Apply).
func (p *Projection) Apply(m *Message) error {
	n, err := p.Node(m.Node)
	if err != nil {
		return err
	}
	n.Apply(m)
	return nil
}

// Put installs n as its node's state (a node loaded from the bucket).
func (p *Projection) Put(n *Node) {
	name := n.Name()
	n.strs = p.strs
	n.onBad = func(r Reason) { p.count(name, r) }
	p.nodes[name] = n
}

// Remove forgets node name's state.
func (p *Projection) Remove(name string) { delete(p.nodes, name) }

// InternResets answers how many times the table of shared value copies
// reached its cap (internCap) and was emptied. Safe for concurrent use.
func (p *Projection) InternResets() uint64 { return p.strs.resets.Load() }
