package state

import "github.com/prometheus/client_golang/prometheus"

// Metrics are ami-state's collectors. The node label takes configured or
// stream node names only (bounded by the reader's MaxNodes).
type Metrics struct {
	Applied       prometheus.Counter
	Invalid       prometheus.Counter
	BadEvents     *prometheus.CounterVec // {reason}
	Writes        *prometheus.CounterVec // {op}: put, delete
	WriteErrors   prometheus.Counter
	LiveChannels  *prometheus.GaugeVec // {node}
	StaleNodes    prometheus.Gauge
	Lag           prometheus.Histogram
	LagMessages   prometheus.Gauge
	Requests      *prometheus.CounterVec // {kind,outcome}
	InternResets  prometheus.Counter
	FlushDeferred prometheus.Counter
}

// NewMetrics creates the collectors and registers them on reg (nil: none).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Applied: prometheus.NewCounter(prometheus.CounterOpts{Name: "ami_state_events_applied_total",
			Help: "Stream messages (events and markers) applied to the projection."}),
		Invalid: prometheus.NewCounter(prometheus.CounterOpts{Name: "ami_state_messages_invalid_total",
			Help: "Stream messages that did not decode, skipped."}),
		BadEvents: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ami_state_bad_events_total",
			Help: "Events the projection could not fully apply, by reason (unknown_channel, unknown_bridge, missing_field, bad_node ...)."}, []string{"reason"}),
		Writes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ami_state_kv_writes_total",
			Help: "Key writes sent to the state bucket, by op (put, delete)."}, []string{"op"}),
		WriteErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "ami_state_kv_write_errors_total",
			Help: "Flushes with a key write that failed (retried at the next flush)."}),
		LiveChannels: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "ami_state_live_channels",
			Help: "Live channels per node as last flushed."}, []string{"node"}),
		StaleNodes: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ami_state_stale_nodes",
			Help: "Nodes whose state is stale (after a gap, session change or restart, until a snapshot)."}),
		Lag: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "ami_state_projection_lag_seconds",
			Help:    "From the time of a node's last applied message to its status write acknowledged.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}),
		LagMessages: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ami_state_projection_lag_messages",
			Help: "Stream messages stored and not yet applied (the stream's last sequence minus the last applied), sampled every second."}),
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ami_state_requests_total",
			Help: "State requests answered, by kind (state, at) and outcome (ok or an error code)."}, []string{"kind", "outcome"}),
		InternResets: prometheus.NewCounter(prometheus.CounterOpts{Name: "ami_state_intern_resets_total",
			Help: "Times the table of shared copies of state values reached its cap (16384 values) and was emptied."}),
		FlushDeferred: prometheus.NewCounter(prometheus.CounterOpts{Name: "ami_state_flush_deferred_total",
			Help: "Nodes whose changed keys an interval's flush left to the next one (its budget of 8192 keys spent)."}),
	}
	for _, r := range Reasons() {
		m.BadEvents.WithLabelValues(r.String())
	}
	m.Writes.WithLabelValues("put")
	m.Writes.WithLabelValues("delete")
	if reg != nil {
		reg.MustRegister(m.Applied, m.Invalid, m.BadEvents, m.Writes, m.WriteErrors, m.LiveChannels, m.StaleNodes, m.Lag, m.LagMessages, m.Requests, m.InternResets, m.FlushDeferred)
	}
	return m
}
