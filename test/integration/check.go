package integration

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// settleTimeout bounds the wait for every node to be owned again after a
// fault: leases expire after the TTL, rebalancing moves a few nodes per
// renew round.
const settleTimeout = 90 * time.Second

// maxReported caps the violations a check prints; the rest are counted.
const maxReported = 25

// OwnerCounts returns, from the stream, how many open sessions each owner
// has, and the nodes without an open session.
func (c *Cluster) OwnerCounts(v View) (byOwner map[string]int, unowned []string) {
	byOwner = map[string]int{}
	for _, n := range c.Nodes {
		if r, ok := v.Open(n); ok {
			byOwner[r.Owner]++
		} else {
			unowned = append(unowned, n)
		}
	}
	return byOwner, unowned
}

// Owners returns each node's owner, from the open session in the stream
// ("" if none).
func (c *Cluster) Owners() map[string]string {
	open := c.openSessions()
	out := make(map[string]string, len(c.Nodes))
	for _, n := range c.Nodes {
		out[n] = open[n].Owner
	}
	return out
}

// openSessions returns the session_start of each node's open session in
// the stream, for the nodes that have one.
func (c *Cluster) openSessions() map[string]Record {
	out := map[string]Record{}
	c.Tail.Read(func(v View) {
		for _, n := range c.Nodes {
			if r, ok := v.Open(n); ok {
				out[n] = r
			}
		}
	})
	return out
}

// settled reports whether every node has an open session owned by one of
// live (instances), none owning more than its fair share.
func (c *Cluster) settled(v View, live map[string]bool) bool {
	byOwner, unowned := c.OwnerCounts(v)
	if len(unowned) > 0 {
		return false
	}
	share := (len(c.Nodes) + len(live) - 1) / len(live)
	for o, k := range byOwner {
		if !live[o] || k > share {
			return false
		}
	}
	return true
}

// WaitSettled waits until the stream shows every node owned by one of the
// given ingest replicas, each with at most its fair share (nodes/replicas
// rounded up), and amisim has exactly one ingest session per node of the
// file and none of the nodes it does not list.
func (c *Cluster) WaitSettled(ctx context.Context, live ...*Box) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, settleTimeout)
	defer cancel()
	inst := instances(live)
	if err := c.Tail.Wait(ctx, func(v View) bool { return c.settled(v, inst) }); err != nil {
		var byOwner map[string]int
		var unowned []string
		c.Tail.Read(func(v View) { byOwner, unowned = c.OwnerCounts(v) })
		c.failUnowned(fmt.Sprintf("nodes not settled on %v within %v: open sessions per owner %v: %v",
			keys(inst), settleTimeout, byOwner, err), unowned, live)
	}
	err := pollUntil(ctx, "one ingest session per node in amisim", func() error {
		nodes, err := c.Ctl.Nodes(ctx)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			want := 0
			if slices.Contains(c.Nodes, n.Node) {
				want = 1
			}
			if n.Active[ingestUser] != want {
				return fmt.Errorf("%s has %d ingest sessions, want %d", n.Node, n.Active[ingestUser], want)
			}
		}
		return nil
	})
	if err != nil {
		c.t.Fatal(err)
	}
}

func instances(boxes []*Box) map[string]bool {
	m := map[string]bool{}
	for _, b := range boxes {
		m[b.Instance()] = true
	}
	return m
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Quiesce stops amisim's traffic and waits until every call in progress
// has played its last event.
func (c *Cluster) Quiesce(ctx context.Context) {
	c.t.Helper()
	if err := c.Ctl.SetTraffic(ctx, 0); err != nil {
		c.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	err := pollUntil(ctx, "amisim calls ended", func() error {
		nodes, err := c.Ctl.Nodes(ctx)
		if err != nil {
			return err
		}
		for _, n := range nodes {
			if n.LiveCalls > 0 {
				return fmt.Errorf("%s has %d live calls", n.Node, n.LiveCalls)
			}
		}
		return nil
	})
	if err != nil {
		c.t.Fatal(err)
	}
}

// ingestConns returns, per node any file listed, amisim's connections of
// the ingest user, each with the session id its ActionIDs carry ("" if
// none).
func (c *Cluster) ingestConns(ctx context.Context) (map[string][]SimConn, error) {
	out := map[string][]SimConn{}
	for _, n := range c.ever {
		conns, err := c.Ctl.Conns(ctx, n)
		if err != nil {
			return nil, err
		}
		for _, cn := range conns {
			if cn.User == ingestUser {
				out[n] = append(out[n], cn)
			}
		}
	}
	return out, nil
}

// Verify is the check every scenario ends with, after Quiesce. It waits
// until each node's open session has stored (or marked missing) every event
// amisim wrote to it, then checks the whole stream:
//
//   - each node's history keeps the contract (CheckNode);
//   - every session in the stream is a connection amisim saw, and the
//     stream never covers more events than amisim wrote to it;
//   - an open session covers exactly what amisim wrote to it: nothing lost
//     unmarked, nothing invented;
//   - amisim never had two ingest sessions of one node logged in at once.
//
// Every node any file listed is checked (SetNodes). It returns the
// histories for the scenario's own assertions.
func (c *Cluster) Verify(ctx context.Context) *StreamHistory {
	c.t.Helper()
	conns, err := c.ingestConns(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	want := map[string]uint64{} // open session -> events amisim wrote to it
	c.Tail.Read(func(v View) {
		for _, n := range c.ever {
			o, ok := v.Open(n)
			if !ok {
				continue
			}
			for _, cn := range conns[n] {
				if sid, _ := sessionOfActionID(cn.ActionID); sid == o.Session {
					want[o.Session] = uint64(cn.Events)
				}
			}
		}
	})
	wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_ = c.Tail.Wait(wctx, func(v View) bool {
		for s, w := range want {
			if v.Covered(s) < w {
				return false
			}
		}
		return true
	})

	// What amisim wrote is final now: the calls ended before Verify.
	if conns, err = c.ingestConns(ctx); err != nil {
		c.t.Fatal(err)
	}
	if n := c.Tail.Resets(); n > 0 {
		c.t.Logf("the stream tail's consumer stalled and was re-created %d times", n)
	}
	var tailErrs []error
	c.Tail.Read(func(v View) { tailErrs = v.Errors() })
	for _, e := range tailErrs {
		c.t.Errorf("undecodable stream message: %v", e)
	}
	h := CheckStream(subjectPrefix, c.ever, c.Tail.Records())
	var problems []string
	problems = append(problems, h.Violations()...)
	problems = append(problems, c.accounting(h, conns)...)

	nodes, err := c.Ctl.Nodes(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	for _, n := range nodes {
		if n.MaxActive[ingestUser] > 1 {
			problems = append(problems, fmt.Sprintf("%s: amisim saw %d ingest sessions logged in at once",
				n.Node, n.MaxActive[ingestUser]))
		}
	}
	for i, p := range problems {
		if i == maxReported {
			c.t.Errorf("... and %d more", len(problems)-maxReported)
			break
		}
		c.t.Error(p)
	}
	var events, gapEvents uint64
	var sessions, gaps, abrupt int
	for _, nh := range h.Nodes {
		e, g, gm, a := nh.Totals()
		events, gapEvents, gaps, abrupt = events+e, gapEvents+g, gaps+gm, abrupt+a
		sessions += len(nh.Sessions)
	}
	c.t.Logf("stream: %d events in %d sessions of %d nodes; %d gap markers for %d events; %d sessions ended without session_end",
		events, sessions, len(c.ever), gaps, gapEvents, abrupt)
	return h
}

// accounting matches each node's sessions in the stream with amisim's
// connections of the ingest user.
func (c *Cluster) accounting(h *StreamHistory, conns map[string][]SimConn) []string {
	var out []string
	var inFlight uint64 // written by amisim to a session that ended before reading them
	for _, n := range c.ever {
		nh := h.Nodes[n]
		seen := map[string]bool{}
		for _, cn := range conns[n] {
			sid, ok := sessionOfActionID(cn.ActionID)
			if !ok {
				if cn.Events > 0 {
					out = append(out, fmt.Sprintf("%s: amisim connection %d of the ingest user got %d events and sent no ingest ActionID",
						n, cn.Conn, cn.Events))
				}
				continue
			}
			seen[sid] = true
			s := nh.Session(sid)
			wrote := uint64(cn.Events)
			switch {
			case s == nil:
				if wrote > 0 {
					out = append(out, fmt.Sprintf("%s: session %s (amisim connection %d, %d events written) is not in the stream",
						n, sid, cn.Conn, wrote))
				}
			case s.Accounted > wrote:
				out = append(out, fmt.Sprintf("%s: session %s covers seq 1..%d but amisim wrote only %d events to it",
					n, sid, s.Accounted, wrote))
			case s.Open() && s.Accounted != wrote:
				out = append(out, fmt.Sprintf("%s: open session %s: amisim wrote %d events, the stream has %d and marks %d missing (%d unaccounted)",
					n, sid, wrote, s.Events, s.GapEvents, wrote-s.Accounted))
			default:
				inFlight += wrote - s.Accounted
			}
		}
		for _, s := range nh.Sessions {
			if !seen[s.ID] {
				out = append(out, fmt.Sprintf("%s: session %s in the stream matches no amisim connection", n, s.ID))
			}
		}
	}
	if inFlight > 0 {
		c.t.Logf("events written by amisim to sessions that ended before reading them: %d", inFlight)
	}
	return out
}

// describe prints one node's sessions compactly, for failure messages.
func describe(nh *NodeHistory) string {
	var b strings.Builder
	for _, s := range nh.Sessions {
		end := "open"
		switch {
		case s.End != nil:
			end = "end(" + s.End.Reason + ")"
		case s.Abrupt:
			end = "abrupt"
		}
		fmt.Fprintf(&b, "[%s owner=%s events=%d gaps=%d/%d %s] ", s.ID, s.Owner, s.Events, s.Gaps, s.GapEvents, end)
	}
	return b.String()
}

// WaitEvents waits until every node of the file has at least n more
// messages in the stream than when it was called.
func (c *Cluster) WaitEvents(ctx context.Context, n int) {
	c.t.Helper()
	c.WaitNodeEvents(ctx, n, c.Nodes)
}

// WaitNodeEvents is WaitEvents for the nodes given.
func (c *Cluster) WaitNodeEvents(ctx context.Context, n int, nodes []string) {
	c.t.Helper()
	base := map[string]int{}
	c.Tail.Read(func(v View) {
		for _, node := range nodes {
			base[node] = v.NodeCount(node)
		}
	})
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	err := c.Tail.Wait(ctx, func(v View) bool {
		for _, node := range nodes {
			if v.NodeCount(node) < base[node]+n {
				return false
			}
		}
		return true
	})
	if err != nil {
		short := map[string]int{}
		c.Tail.Read(func(v View) {
			for _, node := range nodes {
				if d := v.NodeCount(node) - base[node]; d < n {
					short[node] = d
				}
			}
		})
		c.t.Fatalf("not %d new messages on every node: %v: %v", n, short, err)
	}
}

// OpenSessions returns each node's open session id from the stream.
func (c *Cluster) OpenSessions() map[string]string {
	out := map[string]string{}
	for n, r := range c.openSessions() {
		out[n] = r.Session
	}
	return out
}

var errNoLeader = errors.New("no leader, or still the killed server")

// leaseHistory describes the lease key of node in the ownership bucket
// (internal/ownership: "node.<node>"), every revision the bucket keeps, for
// failure messages about hand-overs.
func (c *Cluster) leaseHistory(ctx context.Context, node string) string {
	kv, err := c.JS.KeyValue(ctx, "ami_owners")
	if err != nil {
		return fmt.Sprintf("(lease bucket: %v)", err)
	}
	entries, err := kv.History(ctx, "node."+node)
	if err != nil {
		return fmt.Sprintf("(lease history of %s: %v)", node, err)
	}
	var b strings.Builder
	for _, e := range entries {
		fmt.Fprintf(&b, "[rev %d %s %q at %s] ", e.Revision(), e.Operation(), e.Value(), e.Created().Format("15:04:05.000"))
	}
	return b.String()
}

// ownershipReport describes the lease bucket and each ingest replica's view
// of it, for failure messages about nodes left without an owner.
func (c *Cluster) ownershipReport(ctx context.Context, nodes []string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var b strings.Builder
	if kv, err := c.JS.KeyValue(ctx, "ami_owners"); err != nil {
		fmt.Fprintf(&b, "lease bucket: %v\n", err)
	} else if ks, err := kv.ListKeys(ctx); err != nil {
		fmt.Fprintf(&b, "lease bucket keys: %v\n", err)
	} else {
		var all []string
		for k := range ks.Keys() {
			all = append(all, k)
		}
		sort.Strings(all)
		fmt.Fprintf(&b, "lease bucket keys now: %v\n", all)
	}
	for _, n := range nodes {
		fmt.Fprintf(&b, "lease history of %s: %s\n", n, c.leaseHistory(ctx, n))
		fmt.Fprintf(&b, "lease writes of %s in the last minute: %s\n", n, c.leaseOps("node."+n, time.Now().Add(-time.Minute), time.Now()))
	}
	fmt.Fprintf(&b, "presence writes in the last minute: %s\n", c.presenceOps(time.Now().Add(-time.Minute), time.Now()))
	for _, r := range c.Ingest {
		m, err := r.Metrics(ctx)
		if err != nil {
			fmt.Fprintf(&b, "%s (%s): %v\n", r.Name, r.Instance(), err)
			continue
		}
		fmt.Fprintf(&b, "%s (%s): owns %v, sees %v replicas, kv errors %v, released %v\n", r.Name, r.Instance(),
			m.Sum("ami_ownership_nodes_owned"), m.Sum("ami_ownership_replicas"), m.Sum("ami_ownership_kv_errors_total"),
			m.Sum("ami_ownership_released_total"))
	}
	return b.String()
}

// kvOp is one write to the lease bucket, as seen on its subjects.
type kvOp struct {
	at    time.Time
	key   string
	op    string // PUT, DEL, PURGE (KV-Operation header), or the server's marker reason
	value string
}

// maxKVOps caps the recorded lease-bucket writes (a test makes a few
// thousand: renewals every TTL/3 per node).
const maxKVOps = 200000

// recordLeases records every write to the lease bucket from now on, for
// failure messages about hand-overs; it costs a core subscription.
func (c *Cluster) recordLeases() error {
	sub, err := c.NC.Subscribe("$KV.ami_owners.>", func(m *nats.Msg) {
		op := m.Header.Get("KV-Operation")
		if op == "" {
			op = m.Header.Get("Nats-Marker-Reason")
		}
		if op == "" {
			op = "PUT"
		}
		c.kvMu.Lock()
		if len(c.kvOps) < maxKVOps {
			c.kvOps = append(c.kvOps, kvOp{at: time.Now(), key: strings.TrimPrefix(m.Subject, "$KV.ami_owners."), op: op, value: string(m.Data)})
		}
		c.kvMu.Unlock()
	})
	if err != nil {
		return err
	}
	c.t.Cleanup(func() { _ = sub.Unsubscribe() })
	return c.NC.Flush()
}

// leaseOps describes the recorded writes to key between from and to.
func (c *Cluster) leaseOps(key string, from, to time.Time) string {
	c.kvMu.Lock()
	defer c.kvMu.Unlock()
	var b strings.Builder
	for _, o := range c.kvOps {
		if o.key == key && !o.at.Before(from) && !o.at.After(to) {
			fmt.Fprintf(&b, "[%s %s %q] ", o.at.Format("15:04:05.000"), o.op, o.value)
		}
	}
	return b.String()
}

// presenceOps describes the recorded presence writes between from and to.
func (c *Cluster) presenceOps(from, to time.Time) string {
	c.kvMu.Lock()
	defer c.kvMu.Unlock()
	var b strings.Builder
	for _, o := range c.kvOps {
		if strings.HasPrefix(o.key, "presence.") && o.op != "PUT" && !o.at.Before(from) && !o.at.After(to) {
			fmt.Fprintf(&b, "[%s %s %s] ", o.at.Format("15:04:05.000"), o.op, o.key)
		}
	}
	return b.String()
}

// wroteLeaseEarly reports whether owner sent a write of node's lease (the
// test sees the request, stored or refused) within a second of from, while
// its session only started at to.
func (c *Cluster) wroteLeaseEarly(node, owner string, from, to time.Time) bool {
	c.kvMu.Lock()
	defer c.kvMu.Unlock()
	for _, o := range c.kvOps {
		// Node entries hold owner/incarnation (internal/ownership).
		if o.key == "node."+node && o.op == "PUT" && strings.HasPrefix(o.value, owner+"/") &&
			!o.at.Before(from.Add(-time.Second)) && o.at.Before(from.Add(time.Second)) && to.Sub(o.at) > 5*time.Second {
			return true
		}
	}
	return false
}

// failUnowned ends the test when nodes stayed without an open session. If a
// live replica holds less than its fair share meanwhile, nothing kept it
// from taking them: that is bugFreeNodeNotTaken.
func (c *Cluster) failUnowned(what string, unowned []string, live []*Box) {
	c.t.Helper()
	ctx := context.Background()
	report := c.ownershipReport(ctx, unowned)
	share := (len(c.Nodes) + len(live) - 1) / len(live)
	var under []string
	for _, b := range live {
		if m, err := b.Metrics(ctx); err == nil {
			if owned := m.Sum("ami_ownership_nodes_owned"); len(unowned) > 0 && owned < float64(share) {
				under = append(under, fmt.Sprintf("%s owns %v of its share %d", b.Name, owned, share))
			}
		}
	}
	if len(under) > 0 {
		c.t.Fatalf("%s; without an owner: %v, while live replicas hold less than their share: %v\n%s", what, unowned, under, report)
	}
	c.t.Fatalf("%s; without an owner: %v\n%s", what, unowned, report)
}
