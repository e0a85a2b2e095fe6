// Package metrics declares every Prometheus metric amibus exports, so that
// names, labels and help texts are defined once for all binaries.
package metrics

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// Drop reasons used as the "reason" label of EventsDropped and in gap markers.
const (
	ReasonBufferFull    = "buffer_full"
	ReasonPublishFailed = "publish_failed"
	ReasonShutdown      = "shutdown"
	// ReasonOversized: the AMI reader skipped the event for crossing
	// session.max_message_bytes or max_headers.
	ReasonOversized = "oversized"
)

// Metrics holds the collectors. Labels carry bounded values only: node names
// come from configuration, actions from the allow list or "other".
type Metrics struct {
	Registry *prometheus.Registry

	// Sessions.
	SessionUp          *prometheus.GaugeVec   // {node}
	SessionReconnects  *prometheus.CounterVec // {node}
	SessionLoginFailed *prometheus.CounterVec // {node}
	MessagesOversized  *prometheus.CounterVec // {node}: wire messages over a reader cap, skipped
	DialsWaiting       prometheus.Gauge       // connection attempts waiting for the per-process limit

	// Events (ingest).
	EventsReceived  *prometheus.CounterVec // {node}
	EventsPublished *prometheus.CounterVec // {node}
	EventsDropped   *prometheus.CounterVec // {node,reason}
	EventsFiltered  *prometheus.CounterVec // {node}
	EventsRedacted  *prometheus.CounterVec // {node}
	BufferEvents    *prometheus.GaugeVec   // {node}
	BufferBytes     prometheus.Gauge       // whole process
	PublishRetries  *prometheus.CounterVec // {node}
	MetaPublished   *prometheus.CounterVec // {node,type}
	// PublishFences counts NATS sockets reset because a drain ran out of
	// time with publishes that could still reach the stream later.
	PublishFences prometheus.Counter

	// Actions (actor).
	Actions          *prometheus.CounterVec   // {node,action,outcome}
	ActionDuration   *prometheus.HistogramVec // {node,action}
	ActionsPending   *prometheus.GaugeVec     // {node}
	LateResponses    *prometheus.CounterVec   // {node}
	RequestsIgnored  *prometheus.CounterVec   // {reason}
	ActionsOversized *prometheus.CounterVec   // {node}

	// Process.
	LogLinesDropped prometheus.Counter
}

// New creates the collectors and registers them, with the Go runtime and
// process collectors, on a new registry.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	f := func(c prometheus.Collector) { reg.MustRegister(c) }
	cv := func(name, help string, labels ...string) *prometheus.CounterVec {
		c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
		f(c)
		return c
	}
	gv := func(name, help string, labels ...string) *prometheus.GaugeVec {
		g := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
		f(g)
		return g
	}
	m := &Metrics{Registry: reg}
	m.SessionUp = gv("ami_session_up", "1 while the AMI session to the node is logged in.", "node")
	m.SessionReconnects = cv("ami_session_reconnects_total", "AMI sessions started after the first one.", "node")
	m.SessionLoginFailed = cv("ami_session_login_failures_total", "Logins the PBX refused.", "node")
	m.MessagesOversized = cv("ami_messages_oversized_total", "AMI messages over the reader's byte or header cap, skipped.", "node")
	m.DialsWaiting = prometheus.NewGauge(prometheus.GaugeOpts{Name: "ami_dials_waiting", Help: "Connection attempts waiting for the per-process dial limit."})
	f(m.DialsWaiting)

	m.EventsReceived = cv("ami_events_received_total", "AMI events read from the node and accepted by the filter.", "node")
	m.EventsPublished = cv("ami_events_published_total", "Events stored in JetStream (acknowledged).", "node")
	m.EventsDropped = cv("ami_events_dropped_total", "Events never stored, by reason.", "node", "reason")
	m.EventsFiltered = cv("ami_events_filtered_total", "Events left out by the configured include/exclude filter.", "node")
	m.EventsRedacted = cv("ami_events_redacted_total", "Events in which a secret-bearing field was replaced.", "node")
	m.BufferEvents = gv("ami_buffer_events", "Events waiting in the node's buffer.", "node")
	m.BufferBytes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "ami_buffer_bytes", Help: "Bytes held by all node buffers together."})
	f(m.BufferBytes)
	m.PublishRetries = cv("ami_publish_retries_total", "Publishes retried with the same Nats-Msg-Id.", "node")
	m.PublishFences = prometheus.NewCounter(prometheus.CounterOpts{Name: "ami_publish_fences_total",
		Help: "NATS sockets aborted (unsent publishes discarded) because a node was given up with publishes unacknowledged."})
	f(m.PublishFences)
	m.MetaPublished = cv("ami_meta_published_total", "Lifecycle, gap and snapshot messages stored.", "node", "type")

	m.Actions = cv("ami_actions_total", "Action requests answered, by outcome (ok or an error code).", "node", "action", "outcome")
	m.ActionDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ami_action_duration_seconds",
		Help:    "Time from request to reply.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"node", "action"})
	f(m.ActionDuration)
	m.ActionsPending = gv("ami_actions_pending", "Actions written or queued and not yet answered.", "node")
	m.LateResponses = cv("ami_action_late_responses_total", "Answers that came after their action timed out, discarded.", "node")
	m.RequestsIgnored = cv("ami_requests_ignored_total", "NATS requests not executed because nobody could get the reply.", "reason")
	m.ActionsOversized = cv("ami_action_answers_oversized_total", "Answers over the per-answer cap, read and discarded.", "node")

	m.LogLinesDropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "ami_log_lines_dropped_total", Help: "Log lines discarded because the log output was not keeping up."})
	f(m.LogLinesDropped)

	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
