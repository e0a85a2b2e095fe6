package amisim

import (
	"errors"
	"fmt"
	"net"
	"strconv"
)

// Fleet is a set of simulated PBXs (nodes), one Server each.
type Fleet struct {
	servers []*Server
}

// StartFleet starts n Servers from base. With a fixed port in base.Addr the
// nodes listen on consecutive ports from it, otherwise each on an ephemeral
// port. Node names are base.Node followed by 1..n ("pbx" when base.Node is
// empty: pbx1, pbx2 ...). On any failure the nodes started are closed.
func StartFleet(n int, base Config) (*Fleet, error) {
	if n < 1 {
		return nil, fmt.Errorf("amisim: StartFleet: n = %d, want at least 1", n)
	}
	if base.Addr == "" {
		base.Addr = DefaultAddr
	}
	host, portStr, err := net.SplitHostPort(base.Addr)
	if err != nil {
		return nil, fmt.Errorf("amisim: StartFleet: Addr %q: %w", base.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 0 || port+n-1 > 65535 {
		return nil, fmt.Errorf("amisim: StartFleet: port %q does not fit %d nodes", portStr, n)
	}
	prefix := base.Node
	if prefix == "" {
		prefix = "pbx"
	}
	f := &Fleet{}
	for i := 0; i < n; i++ {
		cfg := base
		cfg.Node = prefix + strconv.Itoa(i+1)
		if port != 0 {
			cfg.Addr = net.JoinHostPort(host, strconv.Itoa(port+i))
		}
		s, err := Start(cfg)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("amisim: StartFleet: node %d: %w", i+1, err), f.Close())
		}
		f.servers = append(f.servers, s)
	}
	return f, nil
}

// Servers returns the fleet's nodes in order.
func (f *Fleet) Servers() []*Server {
	return append([]*Server(nil), f.servers...)
}

// StartMixedTraffic starts t on every node, node i (from 0) seeded
// t.Seed+i so that the nodes differ and a run repeats.
func (f *Fleet) StartMixedTraffic(t Traffic) error {
	for i, s := range f.servers {
		ti := t
		ti.Seed = t.Seed + uint64(i)
		if err := s.StartMixedTraffic(ti); err != nil {
			f.StopTraffic()
			return err
		}
	}
	return nil
}

// StopTraffic stops every node's traffic; calls in progress play to their
// end.
func (f *Fleet) StopTraffic() {
	for _, s := range f.servers {
		s.StopTraffic()
	}
}

// Close closes every node and waits for all their goroutines.
func (f *Fleet) Close() error {
	for _, s := range f.servers {
		_ = s.Close()
	}
	return nil
}
