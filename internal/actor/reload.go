package actor

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"

	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/pkg/command"
)

// Reload applies next, a configuration parsed and validated as at start-up,
// to the running actor, changing only its node list (config.DiffNodes):
//   - a node added starts its sessions and is served at once (unavailable
//     until its first login, like any node that is down);
//   - a node removed is unknown_node to requests arriving afterwards; its
//     requests that were not yet sent (waiting for a session to open) are
//     answered unavailable, never disconnected; the actions already sent
//     keep their normal outcome: its sessions log off only once those have
//     returned (each by its request's deadline) or after the shutdown bound
//     of actor.max_timeout_ms plus 5 s;
//   - a node whose own settings changed (address, credentials, TLS, auth,
//     its actor user) ends the same way, then its new sessions start: the
//     old ones log off first, so that a PBX allowing one login per user
//     takes the new one; meanwhile it answers unavailable;
//   - every other node keeps its sessions untouched.
//
// A change to anything else ami-actor reads (config.Fixed: nats, http, log,
// session, actor) refuses the whole reload (config.ErrReloadRefused, naming
// the fields) and changes nothing; so does a node whose sessions cannot be
// built (a TLS CA file). Reloads run one at a time; Reload returns once the
// removed and reconfigured nodes have ended and their replacements started.
func (s *Service) Reload(ctx context.Context, next *config.Config) (config.NodeChanges, error) {
	if err := config.CheckReload(s.cfg, next, config.BinaryActor); err != nil {
		return config.NodeChanges{}, err
	}
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	s.mu.Lock()
	stopping, applied := s.stopping, s.applied
	s.mu.Unlock()
	if stopping {
		return config.NodeChanges{}, fmt.Errorf("%w: shutting down", config.ErrReloadRefused)
	}
	ch := config.DiffNodes(applied, next, config.BinaryActor)
	if ch.Empty() {
		s.mu.Lock()
		s.applied = next
		s.mu.Unlock()
		return ch, nil
	}

	// Every new node's sessions are built before anything changes.
	fresh := make(map[string]*nodeSessions, len(ch.Added)+len(ch.Changed))
	discard := func() {
		for _, ns := range fresh {
			ns.Close() // never started: nothing to log off
		}
	}
	for i, n := range next.Nodes {
		if !slices.Contains(ch.Added, n.Name) && !slices.Contains(ch.Changed, n.Name) {
			continue
		}
		ns, err := s.newNode(n)
		if err != nil {
			discard()
			return config.NodeChanges{}, fmt.Errorf("%w: nodes[%d]: %w", config.ErrReloadRefused, i, err)
		}
		fresh[n.Name] = ns
	}

	s.mu.Lock()
	old := s.byName
	list := make([]*nodeSessions, 0, len(next.Nodes))
	byName := make(map[string]*nodeSessions, len(next.Nodes))
	senders := make(command.Nodes, len(next.Nodes))
	for _, n := range next.Nodes {
		ns := fresh[n.Name]
		if ns == nil {
			ns = old[n.Name]
		}
		list = append(list, ns)
		byName[n.Name] = ns
		senders[n.Name] = ns
	}
	// From here requests find the new list: a removed node is unknown, a
	// changed one is its new (not yet started) sessions.
	if err := s.srv.SetNodes(senders); err != nil {
		s.mu.Unlock()
		discard()
		return config.NodeChanges{}, fmt.Errorf("%w: nodes: %w", config.ErrReloadRefused, err)
	}
	s.nodes, s.byName, s.applied = list, byName, next
	running := s.running
	s.mu.Unlock()

	var errs []error
	start := func(name string) {
		if !running {
			return // Run starts every node of the list
		}
		if err := fresh[name].start(); err != nil {
			errs = append(errs, fmt.Errorf("node %s: %w", name, err))
		}
	}
	for _, name := range ch.Added {
		start(name)
	}
	// The removed and reconfigured nodes end together, each once its
	// requests have returned; bounded like the shutdown.
	dctx, cancel := context.WithTimeout(ctx, s.shutdownTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for _, name := range slices.Concat(ch.Removed, ch.Changed) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			old[name].retire(dctx)
		}()
	}
	wg.Wait()
	for _, name := range ch.Removed {
		s.m.ExtraSessionsRefused.DeleteLabelValues(name)
	}
	for _, name := range ch.Changed {
		start(name)
	}
	s.log.Info("configuration reloaded", zap.Strings("added", ch.Added), zap.Strings("removed", ch.Removed),
		zap.Strings("restarted", ch.Changed))
	return ch, errors.Join(errs...)
}
