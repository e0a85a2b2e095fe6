package amisim

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"go.uber.org/zap"
)

// Defaults, each the value real Asterisk 20 used when the transcripts were
// captured unless said otherwise.
const (
	DefaultAddr            = "127.0.0.1:0"
	DefaultVersion         = "9.0.0"
	DefaultAsteriskVersion = "20.20.1"
	DefaultAuthFailDelay   = time.Second
	DefaultAuthTimeout     = 30 * time.Second
	// DefaultWriteTimeout is manager.conf's built-in writetimeout.
	DefaultWriteTimeout = 100 * time.Millisecond
	// DefaultRecordLimit caps recorded actions and sent events. At ~380 B
	// per event the sent-event record holds up to ~400 MB at this cap; a
	// benchmark sets RecordLimit < 0 to record nothing.
	DefaultRecordLimit = 1_000_000
	// DefaultQueueBytes caps one connection's queue of unwritten bytes.
	// Real Asterisk absorbed ~3 MB of kernel buffers before it dropped a
	// stalled reader (transcript 10); this queue sits in front of those.
	DefaultQueueBytes = 4 << 20
	// DefaultMaxCalls is Asterisk's CoreMaxCalls as captured.
	DefaultMaxCalls = 2000
	// DefaultMaxConns caps concurrent client connections per Server.
	DefaultMaxConns = 4096
	// DefaultMaxFilters caps Filter entries per session.
	DefaultMaxFilters = 256
	// DefaultBootDelay is how long after a Restart the simulated PBX takes
	// to finish booting (FullyBooted came ~0.1 s after the banner in 11).
	DefaultBootDelay = 100 * time.Millisecond
)

// DefaultUsers are the manager.conf users of the transcripts' peer with
// read=all, write=all.
func DefaultUsers() map[string]string {
	return map[string]string{"ami": "amisecret", "ami2": "amisecret2"}
}

// DefaultExtensions is the transcripts' dialplan: a Local channel to any
// other extension fails as Local/999@demo did in 07b.
func DefaultExtensions() []string {
	return []string{"100@demo", "199@demo", "200@demo", "300@demo", "301@demo",
		"500@demo", "600@demo", "700@demo", "800@demo"}
}

// DefaultRingingExtensions is the transcripts' extension that rings
// without ever answering (Local/199@demo rang 60 s in the real setup).
func DefaultRingingExtensions() []string { return []string{"199@demo"} }

// DefaultOriginateTimeout is Asterisk's Originate Timeout when the action
// sets none: how long a synchronous Originate to a channel that does not
// answer holds its session.
const DefaultOriginateTimeout = 30 * time.Second

// Permission is a user's manager.conf read= and write= class lists
// ("all", "system,call", "reporting" ...).
type Permission struct {
	Read  string
	Write string
}

// Config configures one simulated Asterisk. The zero value of every field
// selects its default.
type Config struct {
	// Addr is the listen address; default "127.0.0.1:0".
	Addr string
	// Users maps username (matched case-insensitively, as Asterisk does) to
	// secret; default DefaultUsers().
	Users map[string]string
	// Permissions optionally restricts users (default read=all, write=all),
	// e.g. {"amiro": {Read: "system,call", Write: "reporting"}} as in 06b.
	Permissions map[string]Permission
	// Version is the AMI version in the banner; default "9.0.0".
	Version string
	// AsteriskVersion is reported by CoreSettings and "core show version";
	// default "20.20.1".
	AsteriskVersion string
	// LegacyCommand answers Command in the Asterisk 13 format.
	LegacyCommand bool
	// TLSConfig, when set, serves TLS (Asterisk's port 5039).
	TLSConfig *tls.Config
	// RecordLimit caps recorded actions and sent events (each); default
	// DefaultRecordLimit; < 0 records nothing. Beyond it recording stops and
	// the overflow is counted in Stats.
	RecordLimit int
	// Node is the PBX's systemname: it prefixes Uniqueid and Linkedid
	// ("pbx1-1795398116.4") and is CoreSettings' SystemName.
	Node string
	// AuthFailDelay is the wait before "Authentication failed"; default 1s.
	AuthFailDelay time.Duration
	// AuthTimeout closes a connection that has not logged in; default 30s.
	AuthTimeout time.Duration
	// WriteTimeout is Asterisk's writetimeout: a client whose socket accepts
	// no byte for this long is dropped mid-message; default 100ms.
	WriteTimeout time.Duration
	// QueueBytes caps each connection's unwritten bytes; default 4 MiB.
	QueueBytes int
	// TimestampEvents adds "Timestamp:" after Privilege in broadcast events
	// (manager.conf timestampevents=yes, transcript 12).
	TimestampEvents bool
	// CallDuration is how long a simulated call lasts from Originate to
	// hangup; default the 3.007 s of transcript 07. The call's events keep
	// their relative timing, scaled.
	CallDuration time.Duration
	// MaxCalls caps concurrent calls (CoreMaxCalls); default 2000. Beyond it
	// Originate fails and traffic skips calls, counted in Stats.
	MaxCalls int
	// MaxConns caps concurrent connections; default 4096. Beyond it a new
	// connection is closed at once, counted in Stats.
	MaxConns int
	// Extensions lists the "exten@context" a Local channel can reach;
	// default DefaultExtensions().
	Extensions []string
	// SingleLogin is manager.conf's allowmultiplelogin = no: a user who
	// has a session logged in cannot log in a second one ("Authentication
	// failed" after AuthFailDelay, as for a wrong secret).
	SingleLogin bool
	// RingingExtensions lists the "exten@context" that ring and never
	// answer: a synchronous Originate to one holds its connection for the
	// Originate's Timeout (default 30 s), then answers "Originate failed".
	// Default DefaultRingingExtensions(); an empty non-nil list has none.
	RingingExtensions []string
	// BootDelay is the time from accepting connections again after a
	// Restart to FullyBooted; default 100ms.
	BootDelay time.Duration
	// Logger receives the simulator's own few log lines; default none.
	Logger *zap.Logger
}

// withDefaults returns c with every zero field replaced by its default, or
// an error naming the first invalid field.
func (c Config) withDefaults() (Config, error) {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return c, fmt.Errorf("amisim: Addr %q: %w", c.Addr, err)
	}
	if c.Users == nil {
		c.Users = DefaultUsers()
	}
	users := make(map[string]string, len(c.Users))
	for u, secret := range c.Users {
		if u == "" || strings.ContainsAny(u, "\r\n") {
			return c, errors.New("amisim: Users: empty or multi-line username")
		}
		users[strings.ToLower(u)] = secret
	}
	c.Users = users
	perms := make(map[string]Permission, len(c.Permissions))
	for u, p := range c.Permissions {
		perms[strings.ToLower(u)] = p
	}
	c.Permissions = perms
	if c.Version == "" {
		c.Version = DefaultVersion
	}
	if c.AsteriskVersion == "" {
		c.AsteriskVersion = DefaultAsteriskVersion
	}
	if c.RecordLimit == 0 {
		c.RecordLimit = DefaultRecordLimit
	}
	if c.AuthFailDelay <= 0 {
		c.AuthFailDelay = DefaultAuthFailDelay
	}
	if c.AuthTimeout <= 0 {
		c.AuthTimeout = DefaultAuthTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.QueueBytes <= 0 {
		c.QueueBytes = DefaultQueueBytes
	}
	if c.CallDuration <= 0 {
		c.CallDuration = answeredTemplate.duration
	}
	if c.MaxCalls <= 0 {
		c.MaxCalls = DefaultMaxCalls
	}
	if c.MaxConns <= 0 {
		c.MaxConns = DefaultMaxConns
	}
	if c.Extensions == nil {
		c.Extensions = DefaultExtensions()
	}
	if c.RingingExtensions == nil {
		c.RingingExtensions = DefaultRingingExtensions()
	}
	if c.BootDelay <= 0 {
		c.BootDelay = DefaultBootDelay
	}
	if c.Logger == nil {
		c.Logger = zap.NewNop()
	}
	if strings.ContainsAny(c.Node, "\r\n") {
		return c, errors.New("amisim: Node: contains CR or LF")
	}
	return c, nil
}
