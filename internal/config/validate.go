package config

import (
	"errors"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/amibus/amibus/internal/ownership"
	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/command"
	"github.com/amibus/amibus/pkg/session"
)

// MaxNodes caps the node list: one process is sized for about a thousand
// PBXs, and a list ten times longer is a generated file gone wrong.
const MaxNodes = 10000

// MaxSessionsPerNode caps actor.sessions_per_node. Each session is a
// thread in Asterisk and a login of the actor's AMI user; more than this
// many slow actions at once on one PBX is a dialer that should use Async.
const MaxSessionsPerNode = 16

// Bounds of actor.extra_session_idle: under a second an extra session
// would log in and off with every burst; over an hour it is no longer
// "extra".
const (
	MinExtraSessionIdle = time.Second
	MaxExtraSessionIdle = time.Hour
)

// MaxNodeNameLen caps node names so that an ActionID
// ("<instance>.<node>.<epoch>.<counter>") stays within AMI's 64 characters.
const MaxNodeNameLen = 32

// amiClasses are the classes an AMI Events: mask may name (Asterisk's
// manager permission names).
var amiClasses = map[string]bool{
	"system": true, "call": true, "log": true, "verbose": true, "command": true,
	"agent": true, "user": true, "config": true, "dtmf": true, "reporting": true,
	"cdr": true, "dialplan": true, "originate": true, "agi": true, "cc": true,
	"aoc": true, "test": true, "security": true, "message": true, "all": true,
}

// validator checks the decoded configuration and fills in the values that
// depend on other fields.
type validator struct {
	p *problems
}

func (v *validator) add(path, format string, args ...any) { v.p.add(path, format, args...) }

// isName reports whether s can be an AMI event or action name: a token
// that does not start with _ (the ingest's reserved _meta subject).
func isName(s string) bool { return amiwire.ValidName(s) && s[0] != '_' }

func hasControl(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return unicode.IsControl(r) || r == unicode.ReplacementChar }) >= 0
}

func (v *validator) positive(path string, n int64) {
	if n <= 0 {
		v.add(path, "must be positive")
	}
}

// hostPort checks a dial address (needHost: host and port 1-65535) or a
// listen address (empty host for every interface, port 0 for any).
func (v *validator) hostPort(path, s string, needHost bool) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || (needHost && host == "") {
		v.add(path, "%s is not host:port", quote(s))
		return
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 0 || p > 65535 || (needHost && p == 0) {
		v.add(path, "%s has an invalid port", quote(s))
	}
}

// readable checks that a file named in the configuration can be opened, so
// that a wrong path fails at start-up and not at the first reconnect.
func (v *validator) readable(path, file string) {
	if file == "" {
		return
	}
	f, err := os.Open(file)
	if err != nil {
		v.add(path, "%v", err)
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		v.add(path, "%v", err)
		return
	}
	if st.IsDir() {
		v.add(path, "%s is a directory", file)
	}
}

func (v *validator) names(path string, list []string, what string) {
	for i, s := range list {
		if !isName(s) {
			v.add(index(path, i), "%s is not a valid %s", quote(s), what)
		}
	}
}

func (v *validator) config(c *Config, keys []nodeKeys) {
	v.nats(&c.NATS)
	v.stream(&c.Stream)
	v.nodes(c, keys)
	v.session(&c.Session)
	if c.HTTP.Listen != "" {
		v.hostPort("http.listen", c.HTTP.Listen, false)
	}
	switch c.Log.Level {
	case "debug", "info", "warn", "error":
	default:
		v.add("log.level", "must be debug, info, warn or error")
	}
	v.ingest(&c.Ingest)
	v.actor(&c.Actor, &c.Session)
	v.state(&c.State)
}

func (v *validator) state(c *State) {
	if !amiwire.ValidName(c.Bucket) {
		v.add("state.bucket", "%s is not a valid bucket name (letters, digits, _ and -)", quote(c.Bucket))
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		v.add("state.replicas", "must be between 1 and 5")
	}
	if c.Storage != "file" && c.Storage != "memory" {
		v.add("state.storage", "must be file or memory")
	}
	if c.History < 1 || c.History > 64 {
		v.add("state.history", "must be between 1 and 64")
	}
	if c.FlushInterval < 1e6 { // 1ms
		v.add("state.flush_interval", "must be at least 1ms")
	}
	v.positive("state.max_request_bytes", int64(c.MaxRequestBytes))
	v.positive("state.max_replay_events", int64(c.MaxReplayEvents))
	if !amiwire.ValidName(c.HA.Bucket) {
		v.add("state.ha.bucket", "%s is not a valid bucket name (letters, digits, _ and -)", quote(c.HA.Bucket))
	}
	if c.HA.TTL < 1e9 {
		v.add("state.ha.ttl", "must be at least 1s")
	}
}

func (v *validator) nats(c *NATS) {
	if c.URL != "" {
		for _, u := range strings.Split(c.URL, ",") {
			u = strings.TrimSpace(u)
			if strings.Contains(u, "@") {
				// Never quoted: the text may hold a password.
				v.add("nats.url", "must not contain credentials (use nats.user and nats.password, nats.token, nats.nkey_file or nats.creds_file)")
				break
			}
			pu, err := url.Parse(u)
			if err != nil || pu.Host == "" || pu.Hostname() == "" ||
				(pu.Scheme != "nats" && pu.Scheme != "tls" && pu.Scheme != "ws" && pu.Scheme != "wss") {
				v.add("nats.url", "%s is not a nats://, tls://, ws:// or wss:// URL with a host", quote(u))
				break
			}
		}
	}
	if c.SubjectPrefix == "" {
		v.add("nats.subject_prefix", "missing")
	} else {
		for _, t := range strings.Split(c.SubjectPrefix, ".") {
			if !amiwire.ValidName(t) {
				v.add("nats.subject_prefix", "%s is not a valid subject prefix (tokens of letters, digits, _ and - separated by dots)", quote(c.SubjectPrefix))
				break
			}
		}
	}
	// One authentication method: nats.go would send them all and the
	// server would pick one, hiding a mistake.
	var methods []string
	if !c.Token.IsZero() {
		methods = append(methods, "nats.token")
	}
	if c.User != "" {
		methods = append(methods, "nats.user")
	}
	if c.NKeyFile != "" {
		methods = append(methods, "nats.nkey_file")
	}
	if c.CredsFile != "" {
		methods = append(methods, "nats.creds_file")
	}
	for _, m := range methods[min(1, len(methods)):] {
		v.add(m, "conflicts with %s (use one authentication method)", methods[0])
	}
	if c.User != "" && c.Password.IsZero() {
		v.add("nats.password", "missing (nats.user is set)")
	}
	if c.User == "" && !c.Password.IsZero() {
		v.add("nats.user", "missing (nats.password is set)")
	}
	v.readable("nats.nkey_file", c.NKeyFile)
	v.readable("nats.creds_file", c.CredsFile)
	v.readable("nats.tls.ca_file", c.TLS.CAFile)
	v.readable("nats.tls.cert_file", c.TLS.CertFile)
	v.readable("nats.tls.key_file", c.TLS.KeyFile)
	if c.TLS.CertFile != "" && c.TLS.KeyFile == "" {
		v.add("nats.tls.key_file", "missing (nats.tls.cert_file is set)")
	}
	if c.TLS.KeyFile != "" && c.TLS.CertFile == "" {
		v.add("nats.tls.cert_file", "missing (nats.tls.key_file is set)")
	}
	if c.Embedded.Listen == "" {
		v.add("nats.embedded.listen", "missing")
	} else {
		v.hostPort("nats.embedded.listen", c.Embedded.Listen, false)
	}
	if c.Embedded.DataDir == "" {
		v.add("nats.embedded.data_dir", "missing")
	}
}

func (v *validator) stream(c *Stream) {
	switch {
	case c.Name == "":
		v.add("stream.name", "missing")
	case strings.ContainsAny(c.Name, ".*>/\\") || strings.IndexFunc(c.Name, func(r rune) bool {
		return unicode.IsSpace(r) || unicode.IsControl(r) || r == unicode.ReplacementChar
	}) >= 0:
		v.add("stream.name", "%s is not a valid stream name (no spaces, '.', '*', '>', '/' or '\\')", quote(c.Name))
	}
	if c.MaxAge < 0 {
		v.add("stream.max_age", "must not be negative")
	}
	if c.MaxBytes < 0 {
		v.add("stream.max_bytes", "must not be negative")
	}
	if c.Storage != "file" && c.Storage != "memory" {
		v.add("stream.storage", "must be file or memory")
	}
	if c.Replicas < 1 || c.Replicas > 5 {
		v.add("stream.replicas", "must be between 1 and 5")
	}
	switch {
	case c.DuplicateWindow <= 0:
		v.add("stream.duplicate_window", "must be positive")
	case c.MaxAge > 0 && c.DuplicateWindow > c.MaxAge:
		// JetStream refuses such a stream; say so now, not at connect.
		v.add("stream.duplicate_window", "must not exceed stream.max_age")
	}
}

func (v *validator) nodes(c *Config, keys []nodeKeys) {
	if len(c.Nodes) == 0 && !v.p.has("nodes") {
		v.add("nodes", "missing")
	}
	first := make(map[string]int, len(c.Nodes))
	for i := range c.Nodes {
		n := &c.Nodes[i]
		k := keys[i]
		p := index("nodes", i)
		switch {
		case n.Name == "":
			v.add(p+".name", "missing")
		case !amiwire.ValidName(n.Name):
			v.add(p+".name", "%s is not a valid subject token", quote(n.Name))
		case n.Name[0] == '_':
			v.add(p+".name", "%s must not start with _ (reserved)", quote(n.Name))
		case len(n.Name) > MaxNodeNameLen:
			v.add(p+".name", "longer than %d characters", MaxNodeNameLen)
		default:
			if j, dup := first[n.Name]; dup {
				v.add(p+".name", "duplicate of %s", index("nodes", j))
			} else {
				first[n.Name] = i
			}
		}
		if n.Address == "" {
			v.add(p+".address", "missing")
		} else {
			v.hostPort(p+".address", n.Address, true)
		}
		switch {
		case n.Username == "":
			v.add(p+".username", "missing")
		case hasControl(n.Username):
			v.add(p+".username", "must not contain control characters or line breaks")
		}
		v.nodeSecret(p, "secret", "secret_file", &n.Secret, n.SecretFile)
		if n.Auth != "plain" && n.Auth != "md5" {
			v.add(p+".auth", "must be plain or md5")
		}
		v.readable(p+".tls.ca_file", n.TLS.CAFile)

		if hasControl(n.ActorUsername) {
			v.add(p+".actor_username", "must not contain control characters or line breaks")
		}
		hasActorSecret := !n.ActorSecret.IsZero() || n.ActorSecretFile != ""
		switch {
		case n.ActorUsername != "" && !hasActorSecret:
			v.add(p+".actor_secret", "missing (set actor_secret or actor_secret_file with actor_username)")
		case n.ActorUsername == "" && hasActorSecret:
			// The same user cannot have two secrets: this is a mistake.
			v.add(p+".actor_username", "missing (an actor secret is set)")
		case hasActorSecret:
			v.nodeSecret(p, "actor_secret", "actor_secret_file", &n.ActorSecret, n.ActorSecretFile)
		default:
			n.ActorUsername = n.Username
			n.ActorSecret = n.Secret
		}

		if !k["include"] {
			n.Include = append([]string{}, c.Ingest.Include...)
		} else {
			v.names(p+".include", n.Include, "event name")
		}
		if !k["exclude"] {
			n.Exclude = append([]string{}, c.Ingest.Exclude...)
		} else {
			v.names(p+".exclude", n.Exclude, "event name")
		}
	}
}

// nodeSecret enforces exactly one of the inline key and the file key (an
// empty value counts as not set) and reads the file. Messages name the
// keys, never the value.
func (v *validator) nodeSecret(p, key, fileKey string, dst *Secret, file string) {
	switch {
	case !dst.IsZero() && file != "":
		v.add(p+"."+fileKey, "conflicts with %s (set exactly one)", key)
	case file != "":
		s, err := readSecretFile(file)
		if err != nil {
			v.add(p+"."+fileKey, "%v", err)
			return
		}
		*dst = s
	case dst.IsZero():
		v.add(p+"."+key, "missing (set %s or %s)", key, fileKey)
	case strings.ContainsAny(string(*dst), "\r\n"):
		// A line break would end the AMI header and inject another.
		v.add(p+"."+key, "must not contain line breaks")
	}
}

// session checks the session block with the session package's own
// options, so that a rule on a setting is written once.
func (v *validator) session(c *Session) {
	v.settings("session", session.CheckOptions(c.Options()...))
	v.positive("session.max_concurrent_dials", int64(c.MaxConcurrentDials))
}

// settings reports each *session.SettingError joined in err under section
// (session.ping_interval: must be positive).
func (v *validator) settings(section string, err error) {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		for _, e := range j.Unwrap() {
			v.settings(section, e)
		}
		return
	}
	var se *session.SettingError
	switch {
	case err == nil:
	case errors.As(err, &se) && se.Other != "":
		v.add(section+"."+se.Setting, "%s%s.%s", se.Reason, section, se.Other)
	case se != nil:
		v.add(section+"."+se.Setting, "%s", se.Reason)
	default:
		v.add(section, "%v", err)
	}
}

func (v *validator) ingest(c *Ingest) {
	v.positive("ingest.buffer_events", int64(c.BufferEvents))
	v.positive("ingest.buffer_bytes", c.BufferBytes)
	v.names("ingest.exclude", c.Exclude, "event name")
	v.names("ingest.include", c.Include, "event name")
	for i, f := range c.RedactFields {
		if f == "" || strings.ContainsAny(f, ": ") || hasControl(f) {
			v.add(index("ingest.redact_fields", i), "%s is not a valid field name", quote(f))
		}
	}
	v.names("ingest.snapshot_actions", c.SnapshotActions, "action name")
	v.positive("ingest.snapshot_max_items", int64(c.SnapshotMaxItems))
	if c.SnapshotInterval < SnapshotIntervalMin || c.SnapshotInterval > SnapshotIntervalMax {
		v.add("ingest.snapshot_interval", "must be between %v and %v", SnapshotIntervalMin, SnapshotIntervalMax)
	}
	v.positive("ingest.max_inflight", int64(c.MaxInflight))
	v.positive("ingest.drain_timeout", int64(c.DrainTimeout))
	if c.Events != "on" {
		if c.Events == "" || c.Events == "off" {
			v.add("ingest.events", "must be on or a comma-separated list of AMI classes")
		} else {
			for _, cl := range strings.Split(c.Events, ",") {
				if !amiClasses[strings.ToLower(strings.TrimSpace(cl))] {
					v.add("ingest.events", "unknown AMI class %s", quote(strings.TrimSpace(cl)))
					break
				}
			}
		}
	}
	if !amiwire.ValidName(c.HA.Bucket) {
		v.add("ingest.ha.bucket", "%s is not a valid bucket name (letters, digits, _ and -)", quote(c.HA.Bucket))
	}
	if c.HA.TTL < ownership.MinTTL {
		v.add("ingest.ha.ttl", "must be at least %v", ownership.MinTTL)
	}
}

func (v *validator) actor(c *Actor, s *Session) {
	v.names("actor.allow", c.Allow, "action name")
	v.names("actor.deny", c.Deny, "action name")
	denied := make(map[string]bool)
	// The actions ami-actor always refuses (command.DefaultDeny): an
	// actor.allow entry naming one is a mistake worth stopping for.
	for _, a := range command.DefaultDeny() {
		denied[strings.ToLower(a)] = true
	}
	for i, a := range c.Allow {
		if denied[strings.ToLower(a)] {
			v.add(index("actor.allow", i), "%s is always denied", quote(a))
		}
	}
	for _, a := range c.Deny {
		denied[strings.ToLower(a)] = true
	}
	for i, a := range c.Allow {
		if denied[strings.ToLower(a)] {
			v.add(index("actor.allow", i), "%s is also in actor.deny", quote(a))
		}
	}
	v.positive("actor.default_timeout_ms", int64(c.DefaultTimeoutMS))
	v.positive("actor.max_timeout_ms", int64(c.MaxTimeoutMS))
	if c.DefaultTimeoutMS > 0 && c.MaxTimeoutMS > 0 && c.MaxTimeoutMS < c.DefaultTimeoutMS {
		v.add("actor.max_timeout_ms", "must be >= actor.default_timeout_ms")
	}
	v.settings("actor", session.CheckOptions(session.WithMaxPending(c.MaxPending)))
	v.settings("actor", session.CheckOptions(session.WithAnswerLimits(c.MaxAnswerBytes, 1)))
	if c.MaxAnswerBytes > 0 && c.MaxAnswerBytes < s.MaxMessageBytes {
		// Command output and list answers are bigger than any one event.
		v.add("actor.max_answer_bytes", "must be >= session.max_message_bytes")
	}
	v.settings("actor", session.CheckOptions(session.WithAnswerLimits(1, c.MaxListEvents)))
	if !amiwire.ValidName(strings.ReplaceAll(c.QueueGroup, ".", "_")) {
		v.add("actor.queue_group", "%s is not a valid queue group (letters, digits, _, - and .)", quote(c.QueueGroup))
	}
	v.positive("actor.max_request_bytes", int64(c.MaxRequestBytes))
	if c.SessionsPerNode < 1 || c.SessionsPerNode > MaxSessionsPerNode {
		v.add("actor.sessions_per_node", "must be between 1 and %d, got %d", MaxSessionsPerNode, c.SessionsPerNode)
	}
	if c.ExtraSessionIdle < MinExtraSessionIdle || c.ExtraSessionIdle > MaxExtraSessionIdle {
		v.add("actor.extra_session_idle", "must be between %v and %v, got %v", MinExtraSessionIdle, MaxExtraSessionIdle, c.ExtraSessionIdle)
	}
}
