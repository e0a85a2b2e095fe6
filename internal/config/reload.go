package config

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"unicode"
)

// Binary says which sections of the shared file a process reads, so that
// a reload compares only those: ami-ingest ignores actor:, ami-actor
// ignores ingest: and stream:, ami-state reads of the nodes their names
// only and ignores session:, ingest: and actor:.
type Binary int

// The binaries that reload their configuration.
const (
	BinaryIngest Binary = iota
	BinaryActor
	BinaryState
)

// NodeChanges is what a reload does to the node list.
type NodeChanges struct {
	// Added, Removed and Changed name nodes in the order of the file that
	// has them (the new one for Added and Changed, the running one for
	// Removed). Changed nodes are in both files with different settings.
	Added, Removed, Changed []string
}

// Empty reports whether nothing changes.
func (c NodeChanges) Empty() bool {
	return len(c.Added) == 0 && len(c.Removed) == 0 && len(c.Changed) == 0
}

// DiffNodes compares the nodes of running and next as b sees them: the
// address, auth and TLS for both; for ami-ingest its credentials and the
// event filters it inherits (ingest.include and exclude); for ami-actor the
// actor's effective credentials. Each ignores the other's credentials, so
// that rotating the actor's AMI secret does not restart (and gap) every
// ingest session, nor the ingest's every actor session. Only the sessions
// of the nodes named need to start, stop or restart. ami-state reads a
// node's name only: for it no node changes, nodes are added or removed.
func DiffNodes(running, next *Config, b Binary) NodeChanges {
	old := make(map[string]*Node, len(running.Nodes))
	for i := range running.Nodes {
		old[running.Nodes[i].Name] = &running.Nodes[i]
	}
	var c NodeChanges
	seen := make(map[string]bool, len(next.Nodes))
	for i := range next.Nodes {
		n := &next.Nodes[i]
		seen[n.Name] = true
		o, ok := old[n.Name]
		switch {
		case !ok:
			c.Added = append(c.Added, n.Name)
		case !sameNode(*o, *n, b):
			c.Changed = append(c.Changed, n.Name)
		}
	}
	for _, n := range running.Nodes {
		if !seen[n.Name] {
			c.Removed = append(c.Removed, n.Name)
		}
	}
	return c
}

// sameNode reports whether o and n are the same node for b.
func sameNode(o, n Node, b Binary) bool {
	if b == BinaryState {
		return true // DiffNodes pairs them by name
	}
	for _, x := range []*Node{&o, &n} {
		switch b {
		case BinaryActor:
			// Its sessions log in as the actor user (ActorUsername is
			// Username when unset) and filter no events.
			x.Username, x.Secret, x.SecretFile = "", "", ""
			x.Include, x.Exclude = nil, nil
		case BinaryIngest:
			x.ActorUsername, x.ActorSecret, x.ActorSecretFile = "", "", ""
		}
	}
	return reflect.DeepEqual(o, n)
}

// NodeNames returns the names of the configured nodes, in the file's order.
func (c *Config) NodeNames() []string {
	names := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		names[i] = n.Name
	}
	return names
}

// ErrReloadRefused: a new configuration changes a setting that the running
// process cannot apply; nothing was changed. The error names the fields.
var ErrReloadRefused = errors.New("reload refused")

// CheckReload is the refusal both binaries apply before anything changes:
// nil when next differs from running in b's node list only, else an
// ErrReloadRefused naming every field that differs (Fixed).
func CheckReload(running, next *Config, b Binary) error {
	if fixed := Fixed(running, next, b); len(fixed) > 0 {
		return fmt.Errorf("%w: cannot change while running (restart to apply): %s",
			ErrReloadRefused, strings.Join(fixed, ", "))
	}
	return nil
}

// Fixed returns the fields, by their path in the file (nats.url,
// http.listen ...), that differ between running and next and that b does
// not apply while it runs: everything it reads but the node list. The NATS
// connection, the stream, http.listen, ingest.ha.enabled and
// state.ha.enabled cannot change under a running process; the other
// process-wide settings (session timings, buffers ...) are applied by a
// restart, not a reload, so that a reload never changes anything but the
// nodes it names. ingest.include and exclude are compared through the nodes
// that inherit them. The paths name fields only, never values.
func Fixed(running, next *Config, b Binary) []string {
	var out []string
	add := func(prefix string, a, c any) { out = diffFields(out, prefix, reflect.ValueOf(a), reflect.ValueOf(c)) }
	add("nats", running.NATS, next.NATS)
	add("http", running.HTTP, next.HTTP)
	add("log", running.Log, next.Log)
	if b != BinaryState { // ami-state opens no AMI session
		add("session", running.Session, next.Session)
	}
	switch b {
	case BinaryState:
		add("stream.name", running.Stream.Name, next.Stream.Name)
		add("state", running.State, next.State)
	case BinaryIngest:
		add("stream", running.Stream, next.Stream)
		ri, ni := running.Ingest, next.Ingest
		ri.Include, ri.Exclude, ni.Include, ni.Exclude = nil, nil, nil, nil
		add("ingest", ri, ni)
		// The ingest's sessions collect snapshot answers up to it.
		add("actor.max_answer_bytes", running.Actor.MaxAnswerBytes, next.Actor.MaxAnswerBytes)
	case BinaryActor:
		add("actor", running.Actor, next.Actor)
	}
	return out
}

// diffFields appends the paths of the leaf fields that differ.
func diffFields(out []string, path string, a, b reflect.Value) []string {
	if a.Kind() == reflect.Struct {
		for i := 0; i < a.NumField(); i++ {
			out = diffFields(out, path+"."+fieldName(a.Type().Field(i).Name), a.Field(i), b.Field(i))
		}
		return out
	}
	if !reflect.DeepEqual(a.Interface(), b.Interface()) {
		out = append(out, path)
	}
	return out
}

// fieldName is the file's name of a Config field: CAFile is ca_file,
// DefaultTimeoutMS default_timeout_ms.
func fieldName(goName string) string {
	if goName == "NKeyFile" {
		return "nkey_file"
	}
	r := []rune(goName)
	var b strings.Builder
	for i, c := range r {
		if i > 0 && unicode.IsUpper(c) && (unicode.IsLower(r[i-1]) || i+1 < len(r) && unicode.IsLower(r[i+1])) {
			b.WriteByte('_')
		}
		b.WriteRune(unicode.ToLower(c))
	}
	return b.String()
}
