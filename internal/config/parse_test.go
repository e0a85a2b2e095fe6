package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func mustParse(t *testing.T, yaml string, opts ...Option) *Config {
	t.Helper()
	c, err := Parse([]byte(yaml), opts...)
	if err != nil {
		t.Fatalf("Parse: %v", err)
	}
	return c
}

// writeFile writes content to a file name in a fresh test directory and
// returns its path.
func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestDefaults(t *testing.T) {
	c := mustParse(t, validNodes)
	want := &Config{
		NATS: NATS{
			SubjectPrefix: "ami",
			Embedded:      Embedded{Listen: "127.0.0.1:4222", DataDir: "./data"},
		},
		Stream: Stream{Name: "AMI_EVENTS", MaxAge: 72 * time.Hour, Storage: "file", Replicas: 1, DuplicateWindow: 2 * time.Minute},
		Nodes: []Node{{
			Name: "pbx1", Address: "127.0.0.1:5038", Username: "ami", Secret: "s3cr3t-node-one", Auth: "plain",
			ActorUsername: "ami", ActorSecret: "s3cr3t-node-one",
			Include: []string{}, Exclude: []string{},
		}},
		Session: Session{
			DialTimeout: 5 * time.Second, BannerTimeout: 5 * time.Second, LoginTimeout: 10 * time.Second,
			PingInterval: 20 * time.Second, PingTimeout: 10 * time.Second,
			BackoffInitial: 100 * time.Millisecond, BackoffMax: 30 * time.Second,
			AuthFailureBackoff: 30 * time.Second, HealthyAfter: 60 * time.Second,
			MaxConcurrentDials: 16, MaxMessageBytes: 1048576, MaxHeaders: 8192,
		},
		Log: Log{Level: "info"},
		Ingest: Ingest{
			BufferEvents: 100000, BufferBytes: 67108864,
			Exclude: []string{}, Include: []string{},
			RedactFields: []string{"ExpectedResponse"}, SnapshotActions: []string{"CoreShowChannels", "BridgeList"},
			SnapshotMaxItems: 10000, SnapshotInterval: 5 * time.Second, MaxInflight: 4096, DrainTimeout: 10 * time.Second, Events: "on",
			HA: HA{Enabled: false, Bucket: "ami_owners", TTL: 10 * time.Second},
		},
		Actor: Actor{
			Allow: []string{}, Deny: []string{},
			DefaultTimeoutMS: 10000, MaxTimeoutMS: 60000, MaxPending: 1000,
			MaxAnswerBytes: 16777216, MaxListEvents: 100000, QueueGroup: "ami-actor", MaxRequestBytes: 1048576,
			SessionsPerNode: 4, ExtraSessionIdle: time.Minute, BodyForm: true,
		},
		State: State{Bucket: "ami_state", Replicas: 1, Storage: "file", History: 1, FlushInterval: 50 * time.Millisecond, MaxRequestBytes: 4096, MaxReplayEvents: 2000000,
			HA: StateHA{Bucket: "ami_state_owners", TTL: 10 * time.Second}},
	}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("defaults:\n got %#v\nwant %#v", *c, *want)
	}
	if got := c.HTTP.ListenOr(DefaultActorHTTPListen); got != "127.0.0.1:9091" {
		t.Errorf("ListenOr(actor) = %q", got)
	}
	c = mustParse(t, validNodes+"http: {listen: ':8080'}\n")
	if got := c.HTTP.ListenOr(DefaultActorHTTPListen); got != ":8080" {
		t.Errorf("ListenOr with listen set = %q", got)
	}
}

// TestExampleFile keeps config.example.yaml parseable and true to the
// defaults it documents.
func TestExampleFile(t *testing.T) {
	c, err := Load(filepath.Join("..", "..", "config.example.yaml"), WithEnv(noEnv))
	if err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	want := Default()
	want.NATS.URL = "nats://127.0.0.1:4222"
	want.Nodes = []Node{{
		Name: "pbx1", Address: "127.0.0.1:5038", Username: "ami", Secret: "amisecret", Auth: "plain",
		ActorUsername: "ami", ActorSecret: "amisecret", Include: []string{}, Exclude: []string{},
	}}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("example differs from the defaults it documents:\n got %#v\nwant %#v", *c, *want)
	}
}

func TestEnvExpansion(t *testing.T) {
	env := map[string]string{"AMI_SECRET_PBX1": "from-env", "HOST": "pbx.example", "EMPTY": "", "N": "42"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	c := mustParse(t, `
nodes:
  - name: pbx1
    address: ${HOST}:5038
    username: ami
    secret: ${AMI_SECRET_PBX1}
    actor_username: a$$b$USER
    actor_secret: p$$w${EMPTY}rd$
ingest:
  buffer_events: ${N}
`, WithEnv(lookup))
	n := c.Nodes[0]
	if n.Address != "pbx.example:5038" || n.Secret.Reveal() != "from-env" {
		t.Errorf("address %q secret %q", n.Address, n.Secret.Reveal())
	}
	// $$ is a literal $; $NAME without braces and a trailing $ stay as written.
	if n.ActorUsername != "a$b$USER" || n.ActorSecret.Reveal() != "p$wrd$" {
		t.Errorf("actor_username %q actor_secret %q", n.ActorUsername, n.ActorSecret.Reveal())
	}
	if c.Ingest.BufferEvents != 42 {
		t.Errorf("buffer_events = %d, want 42 from ${N}", c.Ingest.BufferEvents)
	}
}

func TestEnvExpansionUsesProcessEnvByDefault(t *testing.T) {
	t.Setenv("AMIBUS_TEST_SECRET", "process-env")
	c := mustParse(t, nodeA("secret: '${AMIBUS_TEST_SECRET}'"))
	if c.Nodes[0].Secret.Reveal() != "process-env" {
		t.Fatalf("secret = %q", c.Nodes[0].Secret.Reveal())
	}
}

func TestSecretFile(t *testing.T) {
	lf := writeFile(t, "lf", "one\n")
	crlf := writeFile(t, "crlf", "two\r\n")
	bare := writeFile(t, "bare", "  three  ")
	c := mustParse(t, `
nodes:
  - {name: a, address: 'h:1', username: u, secret_file: `+lf+`}
  - {name: b, address: 'h:1', username: u, secret_file: `+crlf+`, actor_username: act, actor_secret_file: `+bare+`}
`)
	if got := c.Nodes[0].Secret.Reveal(); got != "one" {
		t.Errorf("LF file: %q", got)
	}
	if c.Nodes[0].SecretFile != lf || c.Nodes[0].ActorSecret.Reveal() != "one" {
		t.Errorf("SecretFile %q, ActorSecret %q", c.Nodes[0].SecretFile, c.Nodes[0].ActorSecret.Reveal())
	}
	if got := c.Nodes[1].Secret.Reveal(); got != "two" {
		t.Errorf("CRLF file: %q", got)
	}
	// Only one line break is trimmed, nothing else: spaces are the secret's.
	if got := c.Nodes[1].ActorSecret.Reveal(); got != "  three  " || c.Nodes[1].ActorUsername != "act" {
		t.Errorf("actor secret file: %q user %q", got, c.Nodes[1].ActorUsername)
	}

	big := writeFile(t, "big", string(make([]byte, 5000)))
	_, err := Parse([]byte(nodeA("secret_file: " + big)))
	if want := "nodes[0].secret_file: " + big + " is larger than 4096 bytes"; err == nil || err.Error() != want {
		t.Errorf("err = %v, want %q", err, want)
	}
}

func TestNodeFilterInheritance(t *testing.T) {
	c := mustParse(t, `
ingest:
  include: [Newchannel, Hangup]
  exclude: [VarSet]
nodes:
  - {name: a, address: 'h:1', username: u, secret: s}
  - {name: b, address: 'h:1', username: u, secret: s, exclude: []}
  - {name: c, address: 'h:1', username: u, secret: s, include: [Cdr], exclude: [RTCPSent]}
`)
	check := func(i int, inc, exc []string) {
		t.Helper()
		n := c.Nodes[i]
		if !reflect.DeepEqual(n.Include, inc) || !reflect.DeepEqual(n.Exclude, exc) {
			t.Errorf("node %s: include %q exclude %q, want %q %q", n.Name, n.Include, n.Exclude, inc, exc)
		}
	}
	check(0, []string{"Newchannel", "Hangup"}, []string{"VarSet"})
	check(1, []string{"Newchannel", "Hangup"}, []string{}) // [] overrides
	check(2, []string{"Cdr"}, []string{"RTCPSent"})
	// Inherited lists are copies: changing one node's cannot change another's.
	c.Nodes[0].Include[0] = "X"
	if c.Nodes[1].Include[0] != "Newchannel" || c.Ingest.Include[0] != "Newchannel" {
		t.Error("inherited include lists share storage")
	}
}

func TestExplicitEmptyListsAndNulls(t *testing.T) {
	c := mustParse(t, validNodes+`
nats:
  url:
  tls:
ingest:
  redact_fields: []
  snapshot_actions:
  events: call, system
`)
	if c.NATS.URL != "" || len(c.Ingest.RedactFields) != 0 || len(c.Ingest.SnapshotActions) != 0 {
		t.Errorf("url %q redact %q snapshot %q", c.NATS.URL, c.Ingest.RedactFields, c.Ingest.SnapshotActions)
	}
	if c.Ingest.Events != "call, system" {
		t.Errorf("events %q", c.Ingest.Events)
	}
}

func TestMergeKeysAndAnchors(t *testing.T) {
	c := mustParse(t, `
nodes:
  - &base {name: a, address: 'h:1', username: u, secret: s, auth: md5}
  - {<<: *base, name: b, address: 'h:2'}
`)
	if len(c.Nodes) != 2 {
		t.Fatalf("%d nodes", len(c.Nodes))
	}
	b := c.Nodes[1]
	if b.Name != "b" || b.Address != "h:2" || b.Username != "u" || b.Auth != "md5" || b.Secret.Reveal() != "s" {
		t.Errorf("merged node: %+v", b)
	}
}

func TestNATSValid(t *testing.T) {
	creds := writeFile(t, "x.creds", "creds")
	c := mustParse(t, validNodes+`
nats:
  url: nats://a:4222, tls://b:4443
  subject_prefix: corp.ami
  creds_file: `+creds+`
stream: {max_age: 0, duplicate_window: 1h}
`)
	if c.NATS.CredsFile != creds || c.NATS.SubjectPrefix != "corp.ami" || c.Stream.MaxAge != 0 {
		t.Errorf("%+v %+v", c.NATS, c.Stream)
	}
}

// TestSnapshotIntervalLimits: both ends of ingest.snapshot_interval's range
// are accepted (one past each is refused in TestParseErrors).
func TestSnapshotIntervalLimits(t *testing.T) {
	for _, tc := range []struct {
		yaml string
		want time.Duration
	}{
		{"1s", SnapshotIntervalMin},
		{"1h", SnapshotIntervalMax},
		{"2500ms", 2500 * time.Millisecond},
	} {
		c := mustParse(t, validNodes+"ingest: {snapshot_interval: "+tc.yaml+"}\n")
		if c.Ingest.SnapshotInterval != tc.want {
			t.Errorf("snapshot_interval %s: got %v", tc.yaml, c.Ingest.SnapshotInterval)
		}
	}
}
