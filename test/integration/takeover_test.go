package integration

import (
	"context"
	"fmt"
	"sort"
	"time"
)

// nodesOf is the sorted list of the nodes victim owns, which must be want
// of them, and every node's owner before whatever the test does to it.
func (c *Cluster) nodesOf(victim *Box, want int) (orphans []string, owners map[string]string) {
	c.t.Helper()
	owners = c.Owners()
	for _, n := range c.Nodes {
		if owners[n] == victim.Instance() {
			orphans = append(orphans, n)
		}
	}
	sort.Strings(orphans)
	if len(orphans) != want {
		c.t.Fatalf("%s owns %v, want %d nodes", victim.Name, orphans, want)
	}
	return orphans, owners
}

// waitTakeOver waits until each orphan has a session other than its one in
// before, within TTL + 5 s, and returns how long after since the test read
// each one's session_start (an upper bound of the hand-over). It fails the
// test, naming who holds the nodes left, if they are not all taken over.
func (c *Cluster) waitTakeOver(ctx context.Context, victim *Box, orphans []string, before map[string]string,
	since time.Time, survivors []*Box) map[string]time.Duration {
	c.t.Helper()
	deadline := c.Spec.TTL + 5*time.Second
	wctx, cancel := context.WithTimeout(ctx, deadline)
	defer cancel()
	taken := map[string]time.Duration{}
	err := c.Tail.Wait(wctx, func(v View) bool {
		for _, n := range orphans {
			if _, done := taken[n]; done {
				continue
			}
			if r, ok := v.Open(n); ok && r.Session != before[n] {
				taken[n] = r.Received.Sub(since)
			}
		}
		return len(taken) == len(orphans)
	})
	if err != nil {
		var left []string
		for _, n := range orphans {
			if _, ok := taken[n]; !ok {
				left = append(left, n)
			}
		}
		c.failUnowned(fmt.Sprintf("nodes of %s not taken over within TTL + 5 s (%v): taken %v", victim.Name, deadline, taken),
			left, survivors)
	}
	return taken
}
