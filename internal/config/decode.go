package config

import (
	"errors"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"
)

// maxVisits caps the YAML nodes the decoder walks, aliases followed. A
// file is at most MaxFileBytes, but aliases can make a small file
// describe a huge tree ("billion laughs"); past the cap decoding stops.
const maxVisits = 1 << 20

// errTooManyNodes stops decoding once maxVisits is exceeded.
var errTooManyNodes = errors.New("too many YAML nodes after expanding aliases")

// field decodes the value of one known key into its destination.
type field func(path string, n *yaml.Node)

// decoder walks the yaml.Node tree itself, rather than yaml.Unmarshal into
// structs, to name every problem by its path, to report unknown keys at any
// depth, to expand ${VAR} in every scalar and to know which keys were
// present (a node's include: [] overrides ingest.include, absence inherits).
type decoder struct {
	p      *problems
	lookup func(string) (string, bool)
	visits int
	abort  bool
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func index(path string, i int) string { return path + "[" + strconv.Itoa(i) + "]" }

// resolve follows aliases and counts the visit against maxVisits.
func (d *decoder) resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	d.visits++
	if d.visits > maxVisits && !d.abort {
		d.abort = true
		d.p.add("", "%v", errTooManyNodes)
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == 0 || (n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null")
}

type pair struct{ key, val *yaml.Node }

// pairs lists a mapping's entries in file order, explicit keys first and
// then those brought in by merge keys (<<: *anchor) that the mapping does
// not set itself. Duplicate explicit keys are reported.
func (d *decoder) pairs(path string, n *yaml.Node, depth int) []pair {
	var out, merged []pair
	seen := make(map[string]bool, len(n.Content)/2)
	for i := 0; i+1 < len(n.Content) && !d.abort; i += 2 {
		k, v := d.resolve(n.Content[i]), n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			d.p.add(path, "keys must be strings")
			continue
		}
		if k.ShortTag() == "!!merge" && depth < 10 {
			merged = append(merged, d.mergeSources(path, v, depth)...)
			continue
		}
		if seen[k.Value] {
			d.p.add(join(path, k.Value), "duplicate key")
			continue
		}
		seen[k.Value] = true
		out = append(out, pair{k, v})
	}
	for _, m := range merged {
		if !seen[m.key.Value] {
			seen[m.key.Value] = true
			out = append(out, m)
		}
	}
	return out
}

func (d *decoder) mergeSources(path string, v *yaml.Node, depth int) []pair {
	v = d.resolve(v)
	switch v.Kind {
	case yaml.MappingNode:
		return d.pairs(path, v, depth+1)
	case yaml.SequenceNode:
		var out []pair
		for _, item := range v.Content {
			if d.abort {
				break
			}
			item = d.resolve(item)
			if item.Kind != yaml.MappingNode {
				d.p.add(path, "merge key (<<) needs a mapping or a list of mappings")
				continue
			}
			out = append(out, d.pairs(path, item, depth+1)...)
		}
		return out
	}
	d.p.add(path, "merge key (<<) needs a mapping or a list of mappings")
	return nil
}

// mapping decodes the known keys of a mapping with fs, reports the others
// as unknown and returns the set of keys present. A null value counts as an
// empty mapping.
func (d *decoder) mapping(path string, n *yaml.Node, fs map[string]field) map[string]bool {
	n = d.resolve(n)
	present := map[string]bool{}
	if d.abort || isNull(n) {
		return present
	}
	if n.Kind != yaml.MappingNode {
		if path == "" {
			d.p.add(path, "the file must be a mapping of sections (nats:, nodes: ...)")
		} else {
			d.p.add(path, "must be a mapping")
		}
		return present
	}
	for _, kv := range d.pairs(path, n, 0) {
		if d.abort {
			break
		}
		key := kv.key.Value
		p := join(path, key)
		f, ok := fs[key]
		if !ok {
			d.p.add(p, "unknown key")
			continue
		}
		present[key] = true
		f(p, kv.val)
	}
	return present
}

// scalar returns a scalar's text with environment references expanded;
// null is "". what completes "must be ..." when n is not a scalar.
func (d *decoder) scalar(path string, n *yaml.Node, what string) (string, bool) {
	n = d.resolve(n)
	if isNull(n) {
		return "", true
	}
	if n.Kind != yaml.ScalarNode {
		d.p.add(path, "must be %s", what)
		return "", false
	}
	v, err := expandEnv(n.Value, d.lookup)
	if err != nil {
		d.p.add(path, "%v", err)
		return "", false
	}
	return v, true
}

func (d *decoder) str(dst *string) field {
	return func(path string, n *yaml.Node) {
		if v, ok := d.scalar(path, n, "a string"); ok {
			*dst = v
		}
	}
}

func (d *decoder) secret(dst *Secret) field {
	return func(path string, n *yaml.Node) {
		if v, ok := d.scalar(path, n, "a string"); ok {
			*dst = Secret(v)
		}
	}
}

func (d *decoder) boolean(dst *bool) field {
	return func(path string, n *yaml.Node) {
		v, ok := d.scalar(path, n, "true or false")
		if !ok {
			return
		}
		// YAML 1.2 core booleans only: yes/no/on/off are rejected rather
		// than guessed, as a typo must not pass silently.
		switch v {
		case "true", "True", "TRUE":
			*dst = true
		case "false", "False", "FALSE":
			*dst = false
		default:
			d.p.add(path, "must be true or false")
		}
	}
}

func (d *decoder) int64v(path string, n *yaml.Node) (int64, bool) {
	v, ok := d.scalar(path, n, "an integer")
	if !ok {
		return 0, false
	}
	i, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			d.p.add(path, "is out of range")
		} else {
			d.p.add(path, "must be an integer")
		}
		return 0, false
	}
	return i, true
}

func (d *decoder) integer(dst *int) field {
	return func(path string, n *yaml.Node) {
		if i, ok := d.int64v(path, n); ok {
			if int64(int(i)) != i {
				d.p.add(path, "is out of range")
				return
			}
			*dst = int(i)
		}
	}
}

func (d *decoder) integer64(dst *int64) field {
	return func(path string, n *yaml.Node) {
		if i, ok := d.int64v(path, n); ok {
			*dst = i
		}
	}
}

func (d *decoder) duration(dst *time.Duration) field {
	return func(path string, n *yaml.Node) {
		v, ok := d.scalar(path, n, "a duration")
		if !ok {
			return
		}
		t, err := time.ParseDuration(v)
		if err != nil {
			d.p.add(path, "must be a duration such as 10s, 1m30s or 250ms")
			return
		}
		*dst = t
	}
}

// strings decodes a list of strings; null is an empty list.
func (d *decoder) strings(dst *[]string) field {
	return func(path string, n *yaml.Node) {
		n = d.resolve(n)
		if isNull(n) {
			*dst = []string{}
			return
		}
		if n.Kind != yaml.SequenceNode {
			d.p.add(path, "must be a list")
			return
		}
		out := make([]string, 0, len(n.Content))
		ok := true
		for i, item := range n.Content {
			v, good := d.scalar(index(path, i), item, "a string")
			ok = ok && good
			out = append(out, v)
		}
		if ok {
			*dst = out
		}
	}
}

// sub decodes a nested mapping.
func (d *decoder) sub(fs map[string]field) field {
	return func(path string, n *yaml.Node) { d.mapping(path, n, fs) }
}

// nodeKeys records which optional keys a node set, for inheritance and
// the secret/secret_file rules.
type nodeKeys map[string]bool

func (d *decoder) root(n *yaml.Node, c *Config) []nodeKeys {
	var keys []nodeKeys
	d.mapping("", n, map[string]field{
		"nats":    d.sub(d.natsFields(&c.NATS)),
		"stream":  d.sub(d.streamFields(&c.Stream)),
		"nodes":   func(p string, v *yaml.Node) { keys = d.nodes(p, v, &c.Nodes) },
		"session": d.sub(d.sessionFields(&c.Session)),
		"http":    d.sub(map[string]field{"listen": d.str(&c.HTTP.Listen)}),
		"log":     d.sub(map[string]field{"level": d.str(&c.Log.Level)}),
		"ingest":  d.sub(d.ingestFields(&c.Ingest)),
		"actor":   d.sub(d.actorFields(&c.Actor)),
		"state":   d.sub(d.stateFields(&c.State)),
	})
	return keys
}

func (d *decoder) natsFields(c *NATS) map[string]field {
	return map[string]field{
		"url":            d.str(&c.URL),
		"subject_prefix": d.str(&c.SubjectPrefix),
		"name":           d.str(&c.Name),
		"token":          d.secret(&c.Token),
		"user":           d.str(&c.User),
		"password":       d.secret(&c.Password),
		"nkey_file":      d.str(&c.NKeyFile),
		"creds_file":     d.str(&c.CredsFile),
		"tls": d.sub(map[string]field{
			"ca_file":              d.str(&c.TLS.CAFile),
			"cert_file":            d.str(&c.TLS.CertFile),
			"key_file":             d.str(&c.TLS.KeyFile),
			"insecure_skip_verify": d.boolean(&c.TLS.InsecureSkipVerify),
		}),
		"embedded": d.sub(map[string]field{
			"listen":   d.str(&c.Embedded.Listen),
			"data_dir": d.str(&c.Embedded.DataDir),
		}),
	}
}

func (d *decoder) streamFields(c *Stream) map[string]field {
	return map[string]field{
		"name":             d.str(&c.Name),
		"max_age":          d.duration(&c.MaxAge),
		"max_bytes":        d.integer64(&c.MaxBytes),
		"storage":          d.str(&c.Storage),
		"replicas":         d.integer(&c.Replicas),
		"duplicate_window": d.duration(&c.DuplicateWindow),
	}
}

func (d *decoder) sessionFields(c *Session) map[string]field {
	return map[string]field{
		"dial_timeout":         d.duration(&c.DialTimeout),
		"banner_timeout":       d.duration(&c.BannerTimeout),
		"login_timeout":        d.duration(&c.LoginTimeout),
		"ping_interval":        d.duration(&c.PingInterval),
		"ping_timeout":         d.duration(&c.PingTimeout),
		"backoff_initial":      d.duration(&c.BackoffInitial),
		"backoff_max":          d.duration(&c.BackoffMax),
		"auth_failure_backoff": d.duration(&c.AuthFailureBackoff),
		"healthy_after":        d.duration(&c.HealthyAfter),
		"max_concurrent_dials": d.integer(&c.MaxConcurrentDials),
		"max_message_bytes":    d.integer(&c.MaxMessageBytes),
		"max_headers":          d.integer(&c.MaxHeaders),
	}
}

func (d *decoder) ingestFields(c *Ingest) map[string]field {
	return map[string]field{
		"buffer_events":      d.integer(&c.BufferEvents),
		"buffer_bytes":       d.integer64(&c.BufferBytes),
		"exclude":            d.strings(&c.Exclude),
		"include":            d.strings(&c.Include),
		"redact_fields":      d.strings(&c.RedactFields),
		"snapshot_actions":   d.strings(&c.SnapshotActions),
		"snapshot_max_items": d.integer(&c.SnapshotMaxItems),
		"snapshot_interval":  d.duration(&c.SnapshotInterval),
		"max_inflight":       d.integer(&c.MaxInflight),
		"drain_timeout":      d.duration(&c.DrainTimeout),
		"events":             d.str(&c.Events),
		"ha":                 d.sub(d.haFields(&c.HA)),
	}
}

func (d *decoder) haFields(c *HA) map[string]field {
	return map[string]field{
		"enabled": d.boolean(&c.Enabled),
		"bucket":  d.str(&c.Bucket),
		"ttl":     d.duration(&c.TTL),
	}
}

func (d *decoder) actorFields(c *Actor) map[string]field {
	return map[string]field{
		"allow":              d.strings(&c.Allow),
		"deny":               d.strings(&c.Deny),
		"default_timeout_ms": d.integer(&c.DefaultTimeoutMS),
		"max_timeout_ms":     d.integer(&c.MaxTimeoutMS),
		"max_pending":        d.integer(&c.MaxPending),
		"max_answer_bytes":   d.integer(&c.MaxAnswerBytes),
		"max_list_events":    d.integer(&c.MaxListEvents),
		"queue_group":        d.str(&c.QueueGroup),
		"max_request_bytes":  d.integer(&c.MaxRequestBytes),
		"sessions_per_node":  d.integer(&c.SessionsPerNode),
		"extra_session_idle": d.duration(&c.ExtraSessionIdle),
		"body_form":          d.boolean(&c.BodyForm),
	}
}

func (d *decoder) stateFields(c *State) map[string]field {
	return map[string]field{
		"bucket":            d.str(&c.Bucket),
		"replicas":          d.integer(&c.Replicas),
		"storage":           d.str(&c.Storage),
		"history":           d.integer(&c.History),
		"flush_interval":    d.duration(&c.FlushInterval),
		"max_request_bytes": d.integer(&c.MaxRequestBytes),
		"max_replay_events": d.integer(&c.MaxReplayEvents),
		// state.ha has ingest.ha's keys (StateHA is HA's twin).
		"ha": d.sub(d.haFields((*HA)(&c.HA))),
	}
}

// nodes decodes the node list and returns, per node, the keys it set.
func (d *decoder) nodes(path string, n *yaml.Node, dst *[]Node) []nodeKeys {
	n = d.resolve(n)
	if isNull(n) {
		return nil
	}
	if n.Kind != yaml.SequenceNode {
		d.p.add(path, "must be a list")
		return nil
	}
	if len(n.Content) > MaxNodes {
		d.p.add(path, "more than %d nodes", MaxNodes)
		return nil
	}
	nodes := make([]Node, len(n.Content))
	keys := make([]nodeKeys, len(n.Content))
	for i, item := range n.Content {
		nd := &nodes[i]
		*nd = defaultNode()
		keys[i] = d.mapping(index(path, i), item, map[string]field{
			"name":     d.str(&nd.Name),
			"address":  d.str(&nd.Address),
			"username": d.str(&nd.Username),
			"secret":   d.secret(&nd.Secret),
			// The path is read after decoding, once the secret/secret_file
			// exclusivity is known.
			"secret_file": d.str(&nd.SecretFile),
			"auth":        d.str(&nd.Auth),
			"tls": d.sub(map[string]field{
				"enabled":              d.boolean(&nd.TLS.Enabled),
				"ca_file":              d.str(&nd.TLS.CAFile),
				"server_name":          d.str(&nd.TLS.ServerName),
				"insecure_skip_verify": d.boolean(&nd.TLS.InsecureSkipVerify),
			}),
			"actor_username":    d.str(&nd.ActorUsername),
			"actor_secret":      d.secret(&nd.ActorSecret),
			"actor_secret_file": d.str(&nd.ActorSecretFile),
			"include":           d.strings(&nd.Include),
			"exclude":           d.strings(&nd.Exclude),
		})
	}
	*dst = nodes
	return keys
}
