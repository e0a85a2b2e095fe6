// Package config reads the YAML configuration file shared by ami-ingest and
// ami-actor. Parse expands ${VAR} environment references, reads secret
// files, applies defaults and validates every field before anything starts,
// so that a typo or a bad value stops the process with one message per
// problem, each naming the field by its path (nodes[2].address: missing).
package config

import (
	"time"

	"github.com/amibus/amibus/pkg/amiwire"
)

// Per-binary defaults for http.listen. Parse leaves HTTP.Listen empty when
// the file does not set it, because the right default depends on which
// binary reads the file; the main calls HTTP.ListenOr with its own default.
const (
	DefaultIngestHTTPListen = "127.0.0.1:9090"
	DefaultActorHTTPListen  = "127.0.0.1:9091"
)

// DefaultActorDeny lists the actions ami-actor always refuses: each would
// break or hijack the actor's own AMI session. actor.deny adds to it, and
// Parse rejects an actor.allow entry that names one of them (compared
// without regard to case, as Asterisk compares action names).
var DefaultActorDeny = amiwire.SessionActions()

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
}

// Default returns the configuration of a file that sets nothing but its
// nodes: every default of the documented file format.
func Default() *Config {
	return &Config{
		NATS: NATS{
			SubjectPrefix: "ami",
			Embedded:      Embedded{Listen: "127.0.0.1:4222", DataDir: "./data"},
		},
		Stream: Stream{
			Name:            "AMI_EVENTS",
			MaxAge:          72 * time.Hour,
			Storage:         "file",
			Replicas:        1,
			DuplicateWindow: 2 * time.Minute,
		},
		Session: Session{
			DialTimeout:        5 * time.Second,
			BannerTimeout:      5 * time.Second,
			LoginTimeout:       10 * time.Second,
			PingInterval:       20 * time.Second,
			PingTimeout:        10 * time.Second,
			BackoffInitial:     100 * time.Millisecond,
			BackoffMax:         30 * time.Second,
			AuthFailureBackoff: 30 * time.Second,
			HealthyAfter:       60 * time.Second,
			MaxConcurrentDials: 16,
			MaxMessageBytes:    1 << 20,
			MaxHeaders:         8192,
		},
		Log: Log{Level: "info"},
		Ingest: Ingest{
			BufferEvents:     100000,
			BufferBytes:      64 << 20,
			Exclude:          []string{},
			Include:          []string{},
			RedactFields:     []string{"ExpectedResponse"},
			SnapshotActions:  []string{"CoreShowChannels"},
			SnapshotMaxItems: 10000,
			MaxInflight:      4096,
			DrainTimeout:     10 * time.Second,
			Events:           "on",
			HA:               HA{Bucket: "ami_owners", TTL: 10 * time.Second},
		},
		Actor: Actor{
			Allow:            []string{},
			Deny:             []string{},
			DefaultTimeoutMS: 10000,
			MaxTimeoutMS:     60000,
			MaxPending:       1000,
			MaxAnswerBytes:   16 << 20,
			MaxListEvents:    100000,
			QueueGroup:       "ami-actor",
			MaxRequestBytes:  1 << 20,
		},
	}
}

// defaultNode holds the per-node defaults that do not depend on other fields.
func defaultNode() Node {
	return Node{Auth: "plain"}
}
