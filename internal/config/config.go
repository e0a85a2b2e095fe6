// Package config reads the YAML configuration file shared by ami-ingest and
// ami-actor. Parse expands ${VAR} environment references, reads secret
// files, applies defaults and validates every field before anything starts,
// so that a typo or a bad value stops the process with one message per
// problem, each naming the field by its path (nodes[2].address: missing).
package config

import (
	"time"

	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/internal/ownership"
	"github.com/amibus/amibus/pkg/command"
	"github.com/amibus/amibus/pkg/publish"
	"github.com/amibus/amibus/pkg/session"
)

// Per-binary defaults for http.listen. Parse leaves HTTP.Listen empty when
// the file does not set it, because the right default depends on which
// binary reads the file; the main calls HTTP.ListenOr with its own default.
const (
	DefaultIngestHTTPListen = "127.0.0.1:9090"
	DefaultActorHTTPListen  = "127.0.0.1:9091"
	DefaultStateHTTPListen  = "127.0.0.1:9092"
)

// Bounds of ingest.snapshot_interval. Below a second, a node that keeps
// dropping would make its PBX list every channel many times a second (a
// CoreShowChannels of thousands of channels is megabytes); above an hour, a
// consumer would stay blind that long after a gap.
const (
	SnapshotIntervalMin = time.Second
	SnapshotIntervalMax = time.Hour
)

// Config is the whole configuration file after defaults and validation.
type Config struct {
	NATS    NATS
	Stream  Stream
	Nodes   []Node
	Session Session
	HTTP    HTTP
	Log     Log
	Ingest  Ingest
	Actor   Actor
	State   State
}

// NATS is the nats: section: how both binaries reach NATS.
type NATS struct {
	// URL is empty when ami-ingest should start an embedded server; it may
	// be a comma-separated list of servers. It never carries credentials.
	URL           string
	SubjectPrefix string
	// Name is the client connection name; empty lets the main choose.
	Name      string
	Token     Secret
	User      string
	Password  Secret
	NKeyFile  string
	CredsFile string
	TLS       NATSTLS
	Embedded  Embedded
}

// NATSTLS is nats.tls: client-side TLS towards the NATS servers.
type NATSTLS struct {
	CAFile             string
	CertFile           string
	KeyFile            string
	InsecureSkipVerify bool
}

// Embedded is nats.embedded: the in-process server used when NATS.URL is empty.
type Embedded struct {
	Listen  string
	DataDir string
}

// Stream is the stream: section: the JetStream stream holding the events.
type Stream struct {
	Name            string
	MaxAge          time.Duration // 0: unlimited
	MaxBytes        int64         // 0: unlimited
	Storage         string        // "file" or "memory"
	Replicas        int
	DuplicateWindow time.Duration
}

// Node is one entry of nodes: one PBX. Parse resolves the inherited values:
// Include and Exclude hold the node's effective filter, and ActorUsername
// and ActorSecret the actor's effective credentials.
type Node struct {
	Name     string
	Address  string
	Username string
	Secret   Secret
	// SecretFile is the path the secret was read from, empty if it was
	// given inline. Kept for messages only; Secret holds the value.
	SecretFile string
	Auth       string // "plain" or "md5"
	TLS        NodeTLS
	// ActorUsername is actor_username, or Username when that is not set.
	ActorUsername string
	// ActorSecret is actor_secret (or the content of actor_secret_file),
	// or Secret when actor_username is not set.
	ActorSecret     Secret
	ActorSecretFile string
	// Include and Exclude are the node's own lists when the node sets them
	// (even to []), otherwise ingest.include and ingest.exclude.
	Include []string
	Exclude []string
}

// NodeTLS is nodes[].tls: Asterisk's TLS manager interface (usually port 5039).
type NodeTLS struct {
	Enabled            bool
	CAFile             string
	ServerName         string
	InsecureSkipVerify bool
}

// Session is the session: section: timing and caps of every AMI session.
type Session struct {
	DialTimeout        time.Duration
	BannerTimeout      time.Duration
	LoginTimeout       time.Duration
	PingInterval       time.Duration
	PingTimeout        time.Duration
	BackoffInitial     time.Duration
	BackoffMax         time.Duration
	AuthFailureBackoff time.Duration
	HealthyAfter       time.Duration
	MaxConcurrentDials int
	MaxMessageBytes    int
	MaxHeaders         int
}

// Options returns the session options of the session block: every
// session of the process shares them, and Parse validates the block with
// them (session.CheckOptions), so a rule on a setting lives in pkg/session.
func (c Session) Options() []session.Option {
	return []session.Option{
		session.WithDialTimeout(c.DialTimeout),
		session.WithBannerTimeout(c.BannerTimeout),
		session.WithLoginTimeout(c.LoginTimeout),
		session.WithKeepalive(c.PingInterval, c.PingTimeout),
		session.WithBackoff(c.BackoffInitial, c.BackoffMax),
		session.WithAuthFailureBackoff(c.AuthFailureBackoff),
		session.WithHealthyAfter(c.HealthyAfter),
		session.WithReaderLimits(c.MaxMessageBytes, c.MaxHeaders),
	}
}

// HTTP is the http: section.
type HTTP struct {
	// Listen is empty when the file does not set it; see ListenOr.
	Listen string
}

// ListenOr returns Listen, or def (DefaultIngestHTTPListen or
// DefaultActorHTTPListen) when the file left it unset.
func (h HTTP) ListenOr(def string) string {
	if h.Listen == "" {
		return def
	}
	return h.Listen
}

// Log is the log: section.
type Log struct {
	Level string // debug, info, warn or error
}

// Ingest is the ingest: section (ami-ingest only).
type Ingest struct {
	BufferEvents     int
	BufferBytes      int64
	Exclude          []string
	Include          []string
	RedactFields     []string
	SnapshotActions  []string
	SnapshotMaxItems int
	// SnapshotInterval is the shortest time between two snapshots of a
	// node taken after gaps (SnapshotIntervalMin..SnapshotIntervalMax).
	SnapshotInterval time.Duration
	MaxInflight      int
	DrainTimeout     time.Duration
	// Events is the AMI Events: mask of the ingest session: "on" or a
	// comma-separated list of AMI classes.
	Events string
	HA     HA
}

// HA is ingest.ha: node ownership leases in a JetStream key-value bucket.
type HA struct {
	Enabled bool
	Bucket  string
	TTL     time.Duration
}

// Actor is the actor: section (ami-actor only).
type Actor struct {
	Allow            []string
	Deny             []string
	DefaultTimeoutMS int
	MaxTimeoutMS     int
	MaxPending       int
	MaxAnswerBytes   int
	MaxListEvents    int
	QueueGroup       string
	MaxRequestBytes  int
	// SessionsPerNode caps the AMI sessions to one node, opened on demand
	// while every open one owes an answer (1..MaxSessionsPerNode).
	SessionsPerNode int
	// ExtraSessionIdle is how long a session beyond the first stays open
	// with nothing to do before it logs off.
	ExtraSessionIdle time.Duration
	// BodyForm accepts requests on <prefix>.action.<node> that name the
	// action in the body; off, only the subject form is served, so that
	// NATS subject permissions govern every action.
	BodyForm bool
}

// State is the state: section (ami-state only): the KV bucket holding the
// live state and how often it is written.
type State struct {
	Bucket   string
	Replicas int
	Storage  string // "file" or "memory"
	History  int    // values kept per key, 1 to 64
	// FlushInterval is how often dirty keys are written: each key at most
	// once per interval, with its latest value.
	FlushInterval time.Duration
	// MaxRequestBytes caps a request to ami.state.<node>.at.
	MaxRequestBytes int
	// MaxReplayEvents caps the stream messages one time-travel request
	// replays.
	MaxReplayEvents int
	// HA shares the nodes among ami-state replicas through leases.
	HA StateHA
}

// StateHA is state.ha: ami-state's node leases (a bucket of their own).
type StateHA struct {
	Enabled bool
	Bucket  string
	TTL     time.Duration
}

// DefaultSnapshotActions are run after every login of an ingest session and
// after gaps: what channel and bridge state needs (a channel's BridgeId
// alone does not give a bridge's type, technology, creator or name).
var DefaultSnapshotActions = []string{"CoreShowChannels", "BridgeList"}

// Defaults that belong to the file itself: what they govern reads the
// configuration (ingest, daemon) and cannot be imported here. Every other
// default of Default comes from the package whose code it governs.
const (
	DefaultEmbeddedListen  = "127.0.0.1:4222"
	DefaultEmbeddedDataDir = "./data"
	// DefaultStreamMaxAge keeps three days of events; publish.StreamConfig
	// itself keeps them forever.
	DefaultStreamMaxAge  = 72 * time.Hour
	DefaultStreamStorage = "file"
	// DefaultSnapshotInterval: at most one snapshot round per node per
	// interval after gaps.
	DefaultSnapshotInterval = 5 * time.Second
	// DefaultDrainTimeout bounds the ingest's drain on shutdown.
	DefaultDrainTimeout = 10 * time.Second
	DefaultLogLevel     = "info"
	// DefaultEvents is the ingest session's AMI event mask.
	DefaultEvents = "on"
	// DefaultSessionsPerNode and DefaultExtraSessionIdle are the actor's
	// AMI sessions per node at most and the idle time after which an extra
	// one logs off (internal/actor imports this package).
	DefaultSessionsPerNode  = 4
	DefaultExtraSessionIdle = time.Minute
)

// Default returns the configuration of a file that sets nothing but its
// nodes: every default of the documented file format.
func Default() *Config {
	return &Config{
		NATS: NATS{
			SubjectPrefix: publish.DefaultPrefix,
			Embedded:      Embedded{Listen: DefaultEmbeddedListen, DataDir: DefaultEmbeddedDataDir},
		},
		Stream: Stream{
			Name:            publish.DefaultStreamName,
			MaxAge:          DefaultStreamMaxAge,
			Storage:         DefaultStreamStorage,
			Replicas:        publish.DefaultReplicas,
			DuplicateWindow: publish.DefaultDuplicateWindow,
		},
		Session: Session{
			DialTimeout:        session.DefaultDialTimeout,
			BannerTimeout:      session.DefaultBannerTimeout,
			LoginTimeout:       session.DefaultLoginTimeout,
			PingInterval:       session.DefaultPingInterval,
			PingTimeout:        session.DefaultPingTimeout,
			BackoffInitial:     session.DefaultBackoffInitial,
			BackoffMax:         session.DefaultBackoffMax,
			AuthFailureBackoff: session.DefaultAuthFailureBackoff,
			HealthyAfter:       session.DefaultHealthyAfter,
			MaxConcurrentDials: session.DefaultMaxDials,
			MaxMessageBytes:    session.DefaultMaxMessageBytes,
			MaxHeaders:         session.DefaultMaxHeaders,
		},
		Log: Log{Level: DefaultLogLevel},
		Ingest: Ingest{
			BufferEvents:     eventq.DefaultMaxEvents,
			BufferBytes:      eventq.DefaultMaxBytes,
			Exclude:          []string{},
			Include:          []string{},
			RedactFields:     append([]string{}, publish.DefaultRedactFields...),
			SnapshotActions:  append([]string{}, DefaultSnapshotActions...),
			SnapshotMaxItems: publish.DefaultSnapshotMaxItems,
			SnapshotInterval: DefaultSnapshotInterval,
			MaxInflight:      publish.DefaultMaxInflight,
			DrainTimeout:     DefaultDrainTimeout,
			Events:           DefaultEvents,
			HA:               HA{Bucket: ownership.DefaultBucket, TTL: ownership.DefaultTTL},
		},
		Actor: Actor{
			Allow:            []string{},
			Deny:             []string{},
			DefaultTimeoutMS: int(command.DefaultTimeout.Milliseconds()),
			MaxTimeoutMS:     int(command.DefaultMaxTimeout.Milliseconds()),
			MaxPending:       session.DefaultMaxPending,
			MaxAnswerBytes:   session.DefaultMaxAnswerBytes,
			MaxListEvents:    session.DefaultMaxListEvents,
			QueueGroup:       command.DefaultQueueGroup,
			MaxRequestBytes:  command.DefaultMaxRequestBytes,
			SessionsPerNode:  DefaultSessionsPerNode,
			ExtraSessionIdle: DefaultExtraSessionIdle,
			BodyForm:         true,
		},
		// internal/state's defaults (its tests import this package, so it
		// cannot be imported here; TestConfigDefaultsAreTheServices checks).
		State: State{
			Bucket:          "ami_state",
			Replicas:        1,
			Storage:         DefaultStreamStorage,
			History:         1,
			FlushInterval:   50 * time.Millisecond,
			MaxRequestBytes: 4096,
			MaxReplayEvents: 2000000,
			HA:              StateHA{Bucket: "ami_state_owners", TTL: ownership.DefaultTTL},
		},
	}
}

// defaultNode holds the per-node defaults that do not depend on other fields.
func defaultNode() Node {
	return Node{Auth: "plain"}
}
