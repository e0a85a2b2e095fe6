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

// Family is a group of metric families, by the binary that exports it.
type Family uint8

// The groups. New registers the collectors of the groups it is given: each
// binary exports only its own families, so that ami-ingest's /metrics does
// not list action metrics at zero for every node.
const (
	// FamilySession: AMI sessions and the process (both binaries).
	FamilySession Family = 1 << iota
	// FamilyIngest: events, buffers, publishing.
	FamilyIngest
	// FamilyActor: action requests and the actor's sessions per node.
	FamilyActor
	// FamilyAll: every family (tests, tools).
	FamilyAll = FamilySession | FamilyIngest | FamilyActor
)

// Exports reports whether m registered the collectors of every family in
// f (New's families).
func (m *Metrics) Exports(f Family) bool { return m.families&f == f }

// Sink returns a counter and a gauge shared by all callers and registered
// nowhere: code shared between binaries (a session's action metrics in
// ami-ingest) counts into them instead of creating a labelled series per
// node that no registry exports (a few hundred bytes each, 10,000 nodes).
func (m *Metrics) Sink() (prometheus.Counter, prometheus.Gauge) { return m.sinkCounter, m.sinkGauge }

// ForBinary returns the families the named binary exports: ami-ingest
// sessions and ingest, ami-actor sessions and actor, anything else all.
func ForBinary(binary string) Family {
	switch binary {
	case "ami-ingest":
		return FamilySession | FamilyIngest
	case "ami-actor":
		return FamilySession | FamilyActor
	}
	return FamilyAll
}

// Snapshot triggers, the "trigger" label of Snapshots.
const (
	SnapshotLogin = "login"
	SnapshotGap   = "gap"
)

// Metrics holds the collectors. Labels carry bounded values only: node names
// come from configuration, actions from the allow list or "other".
type Metrics struct {
	Registry *prometheus.Registry

	// families are those New registered (Exports).
	families Family
	// sinkCounter and sinkGauge are unregistered: see Sink.
	sinkCounter prometheus.Counter
	sinkGauge   prometheus.Gauge

	// Sessions.
	SessionUp          *GaugeVec          // {node}
	SessionReconnects  *CounterVec        // {node}
	SessionLoginFailed *CounterVec        // {node}
	MessagesOversized  *CounterVec        // {node}: wire messages over a reader cap, skipped
	DialsWaiting       prometheus.Gauge   // connection attempts waiting for the per-process limit
	DialsInProgress    prometheus.Gauge   // connection attempts holding a slot of the per-process limit
	DialAttempts       prometheus.Counter // connection attempts started (slot taken)

	// Events (ingest).
	EventsReceived  *CounterVec      // {node}
	EventsPublished *CounterVec      // {node}
	EventsDropped   *CounterVec      // {node,reason}
	EventsFiltered  *CounterVec      // {node}
	EventsRedacted  *CounterVec      // {node}
	BufferEvents    *GaugeVec        // {node}
	BufferBytes     prometheus.Gauge // whole process
	PublishRetries  *CounterVec      // {node}
	MetaPublished   *CounterVec      // {node,type}
	// Snapshots counts snapshots queued, by trigger (SnapshotLogin,
	// SnapshotGap); SnapshotsSkipped counts gaps that asked for one within
	// ingest.snapshot_interval of the last, which the next one covers.
	Snapshots        *CounterVec // {node,trigger}
	SnapshotsSkipped *CounterVec // {node}
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
	// ExtraSessionsRefused counts extra actor sessions the PBX refused to
	// log in (allowmultiplelogin = no, a session limit).
	ExtraSessionsRefused *prometheus.CounterVec // {node}

	// Process.
	LogLinesDropped prometheus.Counter

	// Operations (issue 18).
	// StreamRecreations counts events streams recreated after publishes
	// found none (deleted, or a NATS server back without its storage).
	StreamRecreations prometheus.Counter
	// NATSConnFailures counts NATS connection failures by cause
	// (natsconn.Cause*: a fixed set).
	NATSConnFailures *prometheus.CounterVec // {cause}
	// ConfigReloads counts configuration reloads by result (applied,
	// unchanged, invalid, refused).
	ConfigReloads *prometheus.CounterVec // {result}
}

// New creates every collector and registers those of the given families
// (none given: FamilyAll), with the Go runtime and process collectors, on
// a new registry. A collector outside them still counts, unexported, so
// that shared code (a session's action counters in ami-ingest) needs no
// nil checks.
func New(families ...Family) *Metrics {
	var want Family
	for _, f := range families {
		want |= f
	}
	if want == 0 {
		want = FamilyAll
	}
	reg := prometheus.NewRegistry()
	family := FamilySession
	f := func(c prometheus.Collector) {
		if want&family != 0 {
			reg.MustRegister(c)
		}
	}
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
	pairs := newPairCache()
	ncv := func(name, help string, labels ...string) *CounterVec {
		c := newCounterVec(pairs, name, help, labels...)
		f(c)
		return c
	}
	ngv := func(name, help string, labels ...string) *GaugeVec {
		g := newGaugeVec(pairs, name, help, labels...)
		f(g)
		return g
	}
	m := &Metrics{Registry: reg, families: want,
		sinkCounter: prometheus.NewCounter(prometheus.CounterOpts{Name: "ami_unexported_total", Help: "Counts nothing anyone reads."}),
		sinkGauge:   prometheus.NewGauge(prometheus.GaugeOpts{Name: "ami_unexported", Help: "Holds nothing anyone reads."}),
	}
	m.SessionUp = ngv("ami_session_up", "AMI sessions to the node logged in right now (ami-ingest: 0 or 1; ami-actor: up to actor.sessions_per_node).", "node")
	m.SessionReconnects = ncv("ami_session_reconnects_total", "AMI sessions started after the first one.", "node")
	m.SessionLoginFailed = ncv("ami_session_login_failures_total", "Logins the PBX refused.", "node")
	m.MessagesOversized = ncv("ami_messages_oversized_total", "AMI messages over the reader's byte or header cap, skipped.", "node")
	m.DialsWaiting = prometheus.NewGauge(prometheus.GaugeOpts{Name: "ami_dials_waiting", Help: "Connection attempts waiting for the per-process dial limit."})
	f(m.DialsWaiting)
	m.DialsInProgress = prometheus.NewGauge(prometheus.GaugeOpts{Name: "ami_dials_in_progress",
		Help: "Connection attempts (dial to login outcome) running now; at most session.max_concurrent_dials."})
	f(m.DialsInProgress)
	m.DialAttempts = prometheus.NewCounter(prometheus.CounterOpts{Name: "ami_dial_attempts_total",
		Help: "Connection attempts started (dial, banner and login), successful or not."})
	f(m.DialAttempts)

	family = FamilyIngest
	m.EventsReceived = ncv("ami_events_received_total", "AMI events read from the node and accepted by the filter.", "node")
	m.EventsPublished = ncv("ami_events_published_total", "Events stored in JetStream (acknowledged).", "node")
	m.EventsDropped = ncv("ami_events_dropped_total", "Events never stored, by reason.", "node", "reason")
	m.EventsFiltered = ncv("ami_events_filtered_total", "Events left out by the configured include/exclude filter.", "node")
	m.EventsRedacted = ncv("ami_events_redacted_total", "Events in which a secret-bearing field was replaced.", "node")
	m.BufferEvents = ngv("ami_buffer_events", "Events waiting in the node's buffer.", "node")
	m.BufferBytes = prometheus.NewGauge(prometheus.GaugeOpts{Name: "ami_buffer_bytes", Help: "Bytes held by all node buffers together."})
	f(m.BufferBytes)
	m.PublishRetries = ncv("ami_publish_retries_total", "Publishes retried with the same Nats-Msg-Id.", "node")
	m.PublishFences = prometheus.NewCounter(prometheus.CounterOpts{Name: "ami_publish_fences_total",
		Help: "NATS sockets aborted (unsent publishes discarded) because a node was given up with publishes unacknowledged."})
	f(m.PublishFences)
	m.MetaPublished = ncv("ami_meta_published_total", "Lifecycle, gap and snapshot messages stored.", "node", "type")
	m.Snapshots = ncv("ami_snapshots_total", "Snapshot list answers queued for publishing, by trigger (login or gap).", "node", "trigger")
	m.SnapshotsSkipped = ncv("ami_snapshots_skipped_total",
		"Gaps that asked for a snapshot within ingest.snapshot_interval of the previous one; one snapshot when the interval has passed covers them.", "node")

	family = FamilyActor
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
	m.ExtraSessionsRefused = cv("ami_actor_extra_sessions_refused_total",
		"Extra AMI sessions to the node that the PBX refused to log in (the node goes on with the sessions it has).", "node")

	family = FamilySession

	m.StreamRecreations = prometheus.NewCounter(prometheus.CounterOpts{Name: "ami_stream_recreations_total",
		Help: "Events streams recreated with their configured settings after publishes found none."})
	f(m.StreamRecreations)
	m.NATSConnFailures = cv("ami_nats_connection_failures_total", "NATS connection failures, by cause.", "cause")
	m.ConfigReloads = cv("ami_config_reloads_total", "Configuration reloads, by result.", "result")

	m.LogLinesDropped = prometheus.NewCounter(prometheus.CounterOpts{Name: "ami_log_lines_dropped_total", Help: "Log lines discarded because the log output was not keeping up."})
	f(m.LogLinesDropped)

	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}
