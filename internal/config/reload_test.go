package config

import (
	"reflect"
	"strings"
	"testing"
)

const reloadBase = `nats: {url: "nats://127.0.0.1:4222", password: s3cret-one, user: u}
nodes:
  - {name: a, address: "10.0.0.1:5038", username: ami, secret: x}
  - {name: b, address: "10.0.0.2:5038", username: ami, secret: x}
  - {name: c, address: "10.0.0.3:5038", username: ami, secret: x}
`

func parseReload(t *testing.T, y string) *Config {
	t.Helper()
	c, err := Parse([]byte(y))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestDiffNodes(t *testing.T) {
	running := parseReload(t, reloadBase)
	next := parseReload(t, `nats: {url: "nats://127.0.0.1:4222", password: s3cret-one, user: u}
nodes:
  - {name: d, address: "10.0.0.4:5038", username: ami, secret: x}
  - {name: b, address: "10.0.0.2:5038", username: ami, secret: new-secret}
  - {name: c, address: "10.0.0.3:5038", username: ami, secret: x}
`)
	got := DiffNodes(running, next, BinaryIngest)
	want := NodeChanges{Added: []string{"d"}, Removed: []string{"a"}, Changed: []string{"b"}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%+v, want %+v", got, want)
	}
	if !DiffNodes(running, parseReload(t, reloadBase), BinaryIngest).Empty() {
		t.Fatal("the same file changes nodes")
	}
	// An inherited filter changes every node that inherits it.
	withFilter := parseReload(t, reloadBase+"ingest: {exclude: [RTCPSent]}\n")
	if got := DiffNodes(running, withFilter, BinaryIngest); len(got.Changed) != 3 {
		t.Fatalf("ingest.exclude: %+v", got)
	}
	// ami-actor's sessions do not filter events: no restart for it.
	if got := DiffNodes(running, withFilter, BinaryActor); !got.Empty() {
		t.Fatalf("ingest.exclude restarts actor sessions: %+v", got)
	}
	// Its own AMI user does.
	actorUser := parseReload(t, strings.Replace(reloadBase, "secret: x}\n  - {name: c", "secret: x, actor_username: ami2, actor_secret: y}\n  - {name: c", 1))
	if got := DiffNodes(running, actorUser, BinaryActor); !reflect.DeepEqual(got.Changed, []string{"b"}) {
		t.Fatalf("actor_username: %+v", got)
	}
	// Each binary's credentials are its own: rotating one never restarts
	// the other's sessions (for ami-ingest, a gap on every node).
	actorRotated := parseReload(t, strings.Replace(reloadBase, "secret: x}\n  - {name: c", "secret: x, actor_username: ami2, actor_secret: z}\n  - {name: c", 1))
	if got := DiffNodes(actorUser, actorRotated, BinaryIngest); !got.Empty() {
		t.Fatalf("actor_secret restarts ingest sessions: %+v", got)
	}
	if got := DiffNodes(actorUser, actorRotated, BinaryActor); !reflect.DeepEqual(got.Changed, []string{"b"}) {
		t.Fatalf("actor_secret: %+v", got)
	}
	ingestRotated := parseReload(t, strings.Replace(reloadBase, "secret: x}\n  - {name: c", "secret: w, actor_username: ami2, actor_secret: y}\n  - {name: c", 1))
	if got := DiffNodes(actorUser, ingestRotated, BinaryActor); !got.Empty() {
		t.Fatalf("the ingest's secret restarts actor sessions with their own user: %+v", got)
	}
	if got := DiffNodes(actorUser, ingestRotated, BinaryIngest); !reflect.DeepEqual(got.Changed, []string{"b"}) {
		t.Fatalf("secret: %+v", got)
	}
	// ami-state reads the names only: nodes come and go, none changes.
	if got := DiffNodes(running, next, BinaryState); len(got.Changed) != 0 || !reflect.DeepEqual(got.Added, []string{"d"}) {
		t.Fatalf("state: %+v; want the names compared only", got)
	}
	// Without actor_username the actor logs in as the node's user.
	if got := DiffNodes(running, next, BinaryActor); !reflect.DeepEqual(got.Changed, []string{"b"}) {
		t.Fatalf("secret without actor_username: %+v", got)
	}
	if f := Fixed(running, withFilter, BinaryIngest); len(f) != 0 {
		t.Fatalf("ingest.exclude refused as %v", f)
	}
}

func TestFixedNamesTheFields(t *testing.T) {
	running := parseReload(t, reloadBase)
	next := parseReload(t, strings.Replace(reloadBase, "s3cret-one", "s3cret-two", 1)+
		"http: {listen: \"127.0.0.1:9999\"}\nstream: {storage: memory}\ningest: {ha: {enabled: true}}\nactor: {max_pending: 7}\n")
	got := Fixed(running, next, BinaryIngest)
	want := []string{"nats.password", "http.listen", "stream.storage", "ingest.ha.enabled"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("ingest: %v, want %v", got, want)
	}
	got = Fixed(running, next, BinaryActor)
	want = []string{"nats.password", "http.listen", "actor.max_pending"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("actor: %v, want %v", got, want)
	}
	for _, f := range got {
		if strings.Contains(f, "s3cret") {
			t.Fatalf("a value in %q", f)
		}
	}
	got = Fixed(running, next, BinaryState)
	want = []string{"nats.password", "http.listen"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("state: %v, want %v", got, want)
	}
	// ami-state opens no AMI session and reads the stream's name only.
	state := parseReload(t, reloadBase+"session: {ping_interval: 7s}\nstream: {name: OTHER}\nstate: {bucket: b2, ha: {enabled: true}}\n")
	got = Fixed(running, state, BinaryState)
	want = []string{"stream.name", "state.bucket", "state.ha.enabled"}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("state: %v, want %v", got, want)
	}
	for goName, want := range map[string]string{"CAFile": "ca_file", "DefaultTimeoutMS": "default_timeout_ms",
		"URL": "url", "NKeyFile": "nkey_file", "InsecureSkipVerify": "insecure_skip_verify", "TTL": "ttl", "HA": "ha"} {
		if got := fieldName(goName); got != want {
			t.Errorf("%s: %s, want %s", goName, got, want)
		}
	}
}
