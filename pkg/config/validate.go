package config

import (
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"
	"unicode"

	"github.com/amibus/amibus/pkg/amiwire"
)

// MaxNodes caps the node list: one process is sized for about a thousand
// PBXs, and a list ten times longer is a generated file gone wrong.
const MaxNodes = 10000

// MaxPendingLimit caps actor.max_pending, the actions one node's session may
// have waiting for an answer.
const MaxPendingLimit = 100000

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

// isToken reports whether s is a NATS subject token amibus accepts:
// letters, digits, _ and -, nothing that NATS treats specially.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == '-' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// isName reports whether s can be an AMI event or action name: a token
// that does not start with _ (the ingest's reserved _meta subject).
func isName(s string) bool { return isToken(s) && s[0] != '_' }

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
			if !isToken(t) {
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
		case !isToken(n.Name):
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

func (v *validator) session(c *Session) {
	for _, d := range []struct {
		path string
		val  int64
	}{
		{"session.dial_timeout", int64(c.DialTimeout)},
		{"session.banner_timeout", int64(c.BannerTimeout)},
		{"session.login_timeout", int64(c.LoginTimeout)},
		{"session.ping_interval", int64(c.PingInterval)},
		{"session.ping_timeout", int64(c.PingTimeout)},
		{"session.backoff_initial", int64(c.BackoffInitial)},
		{"session.backoff_max", int64(c.BackoffMax)},
		{"session.auth_failure_backoff", int64(c.AuthFailureBackoff)},
		{"session.healthy_after", int64(c.HealthyAfter)},
		{"session.max_concurrent_dials", int64(c.MaxConcurrentDials)},
		{"session.max_message_bytes", int64(c.MaxMessageBytes)},
		{"session.max_headers", int64(c.MaxHeaders)},
	} {
		v.positive(d.path, d.val)
	}
	if c.BackoffInitial > 0 && c.BackoffMax < c.BackoffInitial {
		v.add("session.backoff_max", "must be >= session.backoff_initial")
	}
	v.atMost("session.max_message_bytes", int64(c.MaxMessageBytes), amiwire.MaxBytesLimit)
}

// atMost refuses a cap larger than what the code below it can honour.
func (v *validator) atMost(path string, n, limit int64) {
	if n > limit {
		v.add(path, "must be at most %d", limit)
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
	if !isToken(c.HA.Bucket) {
		v.add("ingest.ha.bucket", "%s is not a valid bucket name (letters, digits, _ and -)", quote(c.HA.Bucket))
	}
	if c.HA.TTL < 1e9 {
		v.add("ingest.ha.ttl", "must be at least 1s")
	}
}

func (v *validator) actor(c *Actor, s *Session) {
	v.names("actor.allow", c.Allow, "action name")
	v.names("actor.deny", c.Deny, "action name")
	denied := make(map[string]bool)
	for _, a := range DefaultActorDeny {
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
	v.positive("actor.max_pending", int64(c.MaxPending))
	// Each pending action holds a slot in the session and in the command
	// server; a bound keeps their memory and the shutdown's wait finite.
	v.atMost("actor.max_pending", int64(c.MaxPending), MaxPendingLimit)
	v.positive("actor.max_answer_bytes", int64(c.MaxAnswerBytes))
	v.atMost("actor.max_answer_bytes", int64(c.MaxAnswerBytes), amiwire.MaxBytesLimit)
	if c.MaxAnswerBytes > 0 && c.MaxAnswerBytes < s.MaxMessageBytes {
		// Command output and list answers are bigger than any one event.
		v.add("actor.max_answer_bytes", "must be >= session.max_message_bytes")
	}
	v.positive("actor.max_list_events", int64(c.MaxListEvents))
	if !isToken(strings.ReplaceAll(c.QueueGroup, ".", "_")) {
		v.add("actor.queue_group", "%s is not a valid queue group (letters, digits, _, - and .)", quote(c.QueueGroup))
	}
	v.positive("actor.max_request_bytes", int64(c.MaxRequestBytes))
}
