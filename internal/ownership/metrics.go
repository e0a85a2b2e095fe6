package ownership

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Release reasons, the "reason" label of ami_ownership_released_total.
const (
	reasonRebalance = "rebalance" // more than the fair share
	reasonShutdown  = "shutdown"  // Run's context cancelled
	reasonLost      = "lost"      // another writer changed or deleted the lease
	reasonAtRisk    = "at_risk"   // not renewed in time; may expire soon
	reasonRemoved   = "removed"   // no longer in the configured nodes (SetNodes)
)

// KV operations, the "op" label of ami_ownership_kv_errors_total.
const (
	opBind     = "bind"
	opWatch    = "watch"
	opCreate   = "create"
	opUpdate   = "update" // kept for the series; the per-node renewals it counted are gone
	opDelete   = "delete"
	opPresence = "presence"
)

// metrics are the Manager's collectors. Label values are bounded: node names
// come from the configured list, reasons and ops from the constants above.
type metrics struct {
	owned           prometheus.Gauge
	replicas        prometheus.Gauge
	acquired        *prometheus.CounterVec // {node}
	lost            *prometheus.CounterVec // {node}
	released        *prometheus.CounterVec // {node,reason}
	releaseLate     *prometheus.CounterVec // {node}
	kvErrors        *prometheus.CounterVec // {op}
	presenceIgnored prometheus.Counter
	resyncs         prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, nodes []string) (*metrics, error) {
	m := &metrics{
		owned: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ami_ownership_nodes_owned",
			Help: "Nodes this replica owns (from Acquire until Release returned)."}),
		replicas: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ami_ownership_replicas",
			Help: "Replicas sharing the nodes, seen through their liveness keys, this one included (replicas handing over excluded from the share but counted here)."}),
		acquired: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ami_ownership_acquired_total",
			Help: "Nodes taken by this replica (node entries written: free nodes and take-overs)."}, []string{"node"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ami_ownership_lease_lost_total",
			Help: "Nodes lost: entry changed or deleted by another writer, liveness lost, or liveness not renewed in time."}, []string{"node"}),
		released: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ami_ownership_released_total",
			Help: "Nodes given up, by reason (rebalance, shutdown, lost, at_risk, removed)."}, []string{"node", "reason"}),
		releaseLate: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ami_ownership_release_late_total",
			Help: "Release callbacks that returned after the node's lease may have expired in the store."}, []string{"node"}),
		kvErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ami_ownership_kv_errors_total",
			Help: "Failed key-value operations on the lease bucket, by operation (presence: liveness renewals)."}, []string{"op"}),
		presenceIgnored: prometheus.NewCounter(prometheus.CounterOpts{Name: "ami_ownership_presence_ignored_total",
			Help: "Presence records ignored because the peer table was at its cap."}),
		resyncs: prometheus.NewCounter(prometheus.CounterOpts{Name: "ami_ownership_watch_resyncs_total",
			Help: "Watch restarts because a replica's liveness key was not rewritten for longer than the TTL with no expiry seen, or a node's owner stayed unknown while this replica was below its share."}),
	}
	// Series exist from the start so that rate() and increase() see the
	// first event.
	for _, n := range nodes {
		m.acquired.WithLabelValues(n)
		m.lost.WithLabelValues(n)
	}
	for _, op := range []string{opBind, opWatch, opCreate, opUpdate, opDelete, opPresence} {
		m.kvErrors.WithLabelValues(op)
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{m.owned, m.replicas, m.acquired, m.lost, m.released, m.releaseLate, m.kvErrors, m.presenceIgnored, m.resyncs} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return m, nil
}
