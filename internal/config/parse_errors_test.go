package config

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// node1 is a valid node list entry for building bad files around it.
const node1 = `
  - name: pbx1
    address: 127.0.0.1:5038
    username: ami
    secret: s3cr3t-node-one
`

const validNodes = "nodes:" + node1

// nodeA is a file whose one node, a, is at h:1 as user u, with more of its
// fields (flow mapping entries such as "secret: s"; "" for none).
func nodeA(more string) string {
	if more != "" {
		more = ", " + more
	}
	return "nodes:\n  - {name: a, address: 'h:1', username: u" + more + "}\n"
}

// noEnv is a lookup where only AMI_SET is set.
func noEnv(name string) (string, bool) {
	if name == "AMI_SET" {
		return "value", true
	}
	return "", false
}

func TestParseErrors(t *testing.T) {
	multiLine := writeFile(t, "multi", "line1\nline2\n")
	empty := writeFile(t, "empty", "\n")
	missing := filepath.Join(t.TempDir(), "nope")

	type badFile struct {
		name string
		yaml string
		want []string // every FieldError, in order
	}
	tests := []badFile{
		{"unknown key in section", validNodes + "ingest:\n  bufer_events: 10\n",
			[]string{"ingest.bufer_events: unknown key"}},
		{"unknown key in state", validNodes + "state:\n  flush: 10ms\n",
			[]string{"state.flush: unknown key"}},
		{"bad state section", validNodes + "state: {bucket: 'a.b', replicas: 0, storage: disk, history: 65, flush_interval: 0s, max_request_bytes: 0, max_replay_events: -1}\n",
			[]string{`state.bucket: "a.b" is not a valid bucket name (letters, digits, _ and -)`, "state.replicas: must be between 1 and 5",
				"state.storage: must be file or memory", "state.history: must be between 1 and 64", "state.flush_interval: must be at least 1ms", "state.max_request_bytes: must be positive",
				"state.max_replay_events: must be positive"}},
		{"unknown top-level key", validNodes + "ingset: {}\n",
			[]string{"ingset: unknown key"}},
		{"unknown key deep", validNodes + "nats:\n  tls:\n    ca_fle: x\n",
			[]string{"nats.tls.ca_fle: unknown key"}},
		{"unknown key in node", "nodes:" + node1 + "    adress: x\n",
			[]string{"nodes[0].adress: unknown key"}},
		{"missing address of third node", "nodes:" + node1 +
			"  - {name: pbx2, address: 'h:1', username: u, secret: s}\n" +
			"  - {name: pbx3, username: u, secret: s}\n",
			[]string{"nodes[2].address: missing"}},
		{"no nodes", "http: {listen: '127.0.0.1:1'}\n", []string{"nodes: missing"}},
		{"empty file", "", []string{"nodes: missing"}},
		{"nodes not a list", "nodes: pbx1\n", []string{"nodes: must be a list"}},
		{"root not a mapping", "- a\n- b\n", []string{"the file must be a mapping of sections (nats:, nodes: ...)"}},
		{"section not a mapping", validNodes + "ingest: 5\n", []string{"ingest: must be a mapping"}},
		{"integer type", validNodes + "ingest:\n  buffer_events: lots\n",
			[]string{"ingest.buffer_events: must be an integer"}},
		{"integer given a list", validNodes + "ingest:\n  buffer_events: [1]\n",
			[]string{"ingest.buffer_events: must be an integer"}},
		{"integer out of range", validNodes + "stream:\n  max_bytes: 99999999999999999999\n",
			[]string{"stream.max_bytes: is out of range"}},
		{"duration type", validNodes + "session:\n  dial_timeout: 5\n",
			[]string{"session.dial_timeout: must be a duration such as 10s, 1m30s or 250ms"}},
		{"bool type", validNodes + "ingest:\n  ha: {enabled: yes}\n",
			[]string{"ingest.ha.enabled: must be true or false"}},
		{"list type", validNodes + "ingest:\n  exclude: VarSet\n",
			[]string{"ingest.exclude: must be a list"}},
		{"list item type", validNodes + "ingest:\n  exclude: [VarSet, {a: b}]\n",
			[]string{"ingest.exclude[1]: must be a string"}},
		{"storage", validNodes + "stream:\n  storage: disk\n",
			[]string{"stream.storage: must be file or memory"}},
		{"node name with space", "nodes:" + node1 +
			"  - {name: pbx 1, address: 'h:1', username: u, secret: s}\n",
			[]string{`nodes[1].name: "pbx 1" is not a valid subject token`}},
		{"node name with dot", "nodes:\n  - {name: pbx.1, address: 'h:1', username: u, secret: s}\n",
			[]string{`nodes[0].name: "pbx.1" is not a valid subject token`}},
		{"node name wildcard", "nodes:\n  - {name: '>', address: 'h:1', username: u, secret: s}\n",
			[]string{`nodes[0].name: ">" is not a valid subject token`}},
		{"node name reserved", "nodes:\n  - {name: _meta, address: 'h:1', username: u, secret: s}\n",
			[]string{`nodes[0].name: "_meta" must not start with _ (reserved)`}},
		{"node name too long", "nodes:\n  - {name: " + strings.Repeat("a", 33) + ", address: 'h:1', username: u, secret: s}\n",
			[]string{"nodes[0].name: longer than 32 characters"}},
		{"duplicate node", "nodes:" + node1 +
			"  - {name: pbx2, address: 'h:1', username: u, secret: s}\n" +
			"  - {name: pbx3, address: 'h:1', username: u, secret: s}\n" +
			"  - {name: pbx1, address: 'h:1', username: u, secret: s}\n",
			[]string{"nodes[3].name: duplicate of nodes[0]"}},
		{"missing name and username", "nodes:\n  - {address: 'h:1', secret: s}\n",
			[]string{"nodes[0].name: missing", "nodes[0].username: missing"}},
		{"address without port", "nodes:\n  - {name: a, address: pbx1, username: u, secret: s}\n",
			[]string{`nodes[0].address: "pbx1" is not host:port`}},
		{"address without host", "nodes:\n  - {name: a, address: ':5038', username: u, secret: s}\n",
			[]string{`nodes[0].address: ":5038" is not host:port`}},
		{"address bad port", "nodes:\n  - {name: a, address: 'pbx:70000', username: u, secret: s}\n",
			[]string{`nodes[0].address: "pbx:70000" has an invalid port`}},
		{"subject prefix", validNodes + "nats: {subject_prefix: 'ami..x'}\n",
			[]string{`nats.subject_prefix: "ami..x" is not a valid subject prefix (tokens of letters, digits, _ and - separated by dots)`}},
		{"subject prefix wildcard", validNodes + "nats: {subject_prefix: 'ami.*'}\n",
			[]string{`nats.subject_prefix: "ami.*" is not a valid subject prefix (tokens of letters, digits, _ and - separated by dots)`}},
		{"nats url scheme", validNodes + "nats: {url: 'http://h:4222'}\n",
			[]string{`nats.url: "http://h:4222" is not a nats://, tls://, ws:// or wss:// URL with a host`}},
		{"nats url credentials", validNodes + "nats: {url: 'nats://u:hunter2@h:4222'}\n",
			[]string{"nats.url: must not contain credentials (use nats.user and nats.password, nats.token, nats.nkey_file or nats.creds_file)"}},
		{"nats two auth methods", validNodes + "nats: {token: t, user: u, password: p}\n",
			[]string{"nats.user: conflicts with nats.token (use one authentication method)"}},
		{"nats user without password", validNodes + "nats: {user: u}\n",
			[]string{"nats.password: missing (nats.user is set)"}},
		{"nats creds file missing", validNodes + "nats: {creds_file: " + missing + "}\n",
			[]string{"nats.creds_file: open " + missing + ": no such file or directory"}},
		{"nats cert without key", validNodes + "nats: {tls: {cert_file: " + empty + "}}\n",
			[]string{"nats.tls.key_file: missing (nats.tls.cert_file is set)"}},
		{"stream name", validNodes + "stream: {name: AMI.EVENTS}\n",
			[]string{`stream.name: "AMI.EVENTS" is not a valid stream name (no spaces, '.', '*', '>', '/' or '\')`}},
		{"stream replicas", validNodes + "stream: {replicas: 7}\n",
			[]string{"stream.replicas: must be between 1 and 5"}},
		{"duplicate window over max age", validNodes + "stream: {max_age: 1m, duplicate_window: 2m}\n",
			[]string{"stream.duplicate_window: must not exceed stream.max_age"}},
		{"negative max age", validNodes + "stream: {max_age: -1h}\n",
			[]string{"stream.max_age: must not be negative"}},
		{"snapshot interval one below the minimum", validNodes + "ingest: {snapshot_interval: 999ms}\n",
			[]string{"ingest.snapshot_interval: must be between 1s and 1h0m0s"}},
		{"snapshot interval one past the maximum", validNodes + "ingest: {snapshot_interval: 3600001ms}\n",
			[]string{"ingest.snapshot_interval: must be between 1s and 1h0m0s"}},
		{"snapshot interval zero", validNodes + "ingest: {snapshot_interval: 0s}\n",
			[]string{"ingest.snapshot_interval: must be between 1s and 1h0m0s"}},
		{"zero buffer", validNodes + "ingest: {buffer_events: 0}\n",
			[]string{"ingest.buffer_events: must be positive"}},
		{"negative duration", validNodes + "session: {ping_interval: -5s}\n",
			[]string{"session.ping_interval: must be positive"}},
		{"answer cap over the reader's limit", validNodes + "actor: {max_answer_bytes: 2147483648}\n",
			[]string{"actor.max_answer_bytes: must be at most 1073741824"}},
		{"message cap over the reader's limit", validNodes + "session: {max_message_bytes: 2147483648}\nactor: {max_answer_bytes: 1073741824}\n",
			[]string{"session.max_message_bytes: must be at most 1073741824",
				"actor.max_answer_bytes: must be >= session.max_message_bytes"}},
		{"pending cap", validNodes + "actor: {max_pending: 1000001}\n",
			[]string{"actor.max_pending: must be at most 100000"}},
		{"backoff max below initial", validNodes + "session: {backoff_initial: 5s, backoff_max: 1s}\n",
			[]string{"session.backoff_max: must be >= session.backoff_initial"}},
		{"http listen", validNodes + "http: {listen: 'localhost'}\n",
			[]string{`http.listen: "localhost" is not host:port`}},
		{"log level", validNodes + "log: {level: verbose}\n",
			[]string{"log.level: must be debug, info, warn or error"}},
		{"exclude bad event", validNodes + "ingest: {exclude: [VarSet, 'New*']}\n",
			[]string{`ingest.exclude[1]: "New*" is not a valid event name`}},
		{"redact field", validNodes + "ingest: {redact_fields: ['Expected: Response']}\n",
			[]string{`ingest.redact_fields[0]: "Expected: Response" is not a valid field name`}},
		{"events class", validNodes + "ingest: {events: 'call,sytem'}\n",
			[]string{`ingest.events: unknown AMI class "sytem"`}},
		{"events off", validNodes + "ingest: {events: 'off'}\n",
			[]string{"ingest.events: must be on or a comma-separated list of AMI classes"}},
		{"ha bucket", validNodes + "ingest: {ha: {bucket: 'a.b'}}\n",
			[]string{`ingest.ha.bucket: "a.b" is not a valid bucket name (letters, digits, _ and -)`}},
		{"max timeout below default", validNodes + "actor: {default_timeout_ms: 5000, max_timeout_ms: 1000}\n",
			[]string{"actor.max_timeout_ms: must be >= actor.default_timeout_ms"}},
		{"deny bad action", validNodes + "actor: {deny: ['Orig inate']}\n",
			[]string{`actor.deny[0]: "Orig inate" is not a valid action name`}},
		{"allow default-denied action", validNodes + "actor: {allow: [Ping, logoff]}\n",
			[]string{`actor.allow[1]: "logoff" is always denied`}},
		{"allow and deny", validNodes + "actor: {allow: [Ping, Command], deny: [command]}\n",
			[]string{`actor.allow[1]: "Command" is also in actor.deny`}},
		{"answer cap below message cap", validNodes + "actor: {max_answer_bytes: 1000}\n",
			[]string{"actor.max_answer_bytes: must be >= session.max_message_bytes"}},
		{"queue group", validNodes + "actor: {queue_group: 'a b'}\n",
			[]string{`actor.queue_group: "a b" is not a valid queue group (letters, digits, _, - and .)`}},
		{"duplicate key", validNodes + "log:\n  level: info\n  level: debug\n",
			[]string{"log.level: duplicate key"}},
		{"several problems in file order", "nodes:\n  - {name: 'a b', username: u, secret: s}\n" +
			"ingest: {bufer_events: 1, buffer_bytes: -1}\nlog: {level: loud}\n",
			[]string{
				"ingest.bufer_events: unknown key",
				`nodes[0].name: "a b" is not a valid subject token`,
				"nodes[0].address: missing",
				"log.level: must be debug, info, warn or error",
				"ingest.buffer_bytes: must be positive",
			}},
	}
	// Node a's own fields, alone in the file: one error each.
	for _, c := range []struct{ name, fields, want string }{
		{"no secret", "", "nodes[0].secret: missing (set secret or secret_file)"},
		{"empty secret", "secret: ''", "nodes[0].secret: missing (set secret or secret_file)"},
		{"secret and secret_file", "secret: s, secret_file: /x", "nodes[0].secret_file: conflicts with secret (set exactly one)"},
		{"secret_file missing", "secret_file: " + missing, "nodes[0].secret_file: open " + missing + ": no such file or directory"},
		{"secret_file empty", "secret_file: " + empty, "nodes[0].secret_file: " + empty + " is empty"},
		{"secret_file two lines", "secret_file: " + multiLine, "nodes[0].secret_file: " + multiLine + " must hold one line"},
		{"secret with line break", "secret: \"a\\r\\nAction: Originate\"", "nodes[0].secret: must not contain line breaks"},
		{"auth", "secret: s, auth: sha", "nodes[0].auth: must be plain or md5"},
		{"actor_username without secret", "secret: s, actor_username: u2", "nodes[0].actor_secret: missing (set actor_secret or actor_secret_file with actor_username)"},
		{"actor_secret without username", "secret: s, actor_secret: s2", "nodes[0].actor_username: missing (an actor secret is set)"},
		{"node include bad event", "secret: s, include: [Newchannel, 'Var Set']", `nodes[0].include[1]: "Var Set" is not a valid event name`},
		{"env unset", "secret: '${AMI_SECRET_PBX1}'", "nodes[0].secret: environment variable AMI_SECRET_PBX1 is not set"},
		{"env unterminated", "secret: 'ab${AMI_SET'", "nodes[0].secret: unterminated ${ (write $$ for a literal $)"},
		{"env bad name", "secret: 'x${A-B}'", "nodes[0].secret: invalid ${...} reference: only ${NAME} with letters, digits and _ is supported (write $$ for a literal $)"},
	} {
		tests = append(tests, badFile{c.name, nodeA(c.fields), []string{c.want}})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Parse([]byte(tt.yaml), WithEnv(noEnv))
			if err == nil {
				t.Fatalf("Parse succeeded (%+v), want %q", c, tt.want)
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("error %T %q is not a *ValidationError", err, err)
			}
			var got []string
			for _, fe := range ve.Errors {
				got = append(got, fe.Error())
			}
			if strings.Join(got, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors:\n got %q\nwant %q", got, tt.want)
			}
			if strings.Contains(err.Error(), "s3cr3t") {
				t.Errorf("a secret leaked into %q", err)
			}
			if len(tt.want) == 1 && err.Error() != tt.want[0] {
				t.Errorf("Error() = %q, want %q", err.Error(), tt.want[0])
			}
		})
	}
}

func TestParseYAMLSyntaxError(t *testing.T) {
	_, err := Parse([]byte("nodes:\n\t- name: a\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "yaml: line 2:") {
		t.Fatalf("err = %v, want the YAML parser's line-numbered error", err)
	}
	_, err = Parse([]byte(validNodes + "---\nlog: {level: info}\n"))
	if err == nil || err.Error() != "more than one YAML document" {
		t.Fatalf("err = %v, want more than one YAML document", err)
	}
}

func TestParseErrorCap(t *testing.T) {
	var b strings.Builder
	b.WriteString(validNodes + "ingest:\n")
	for i := range 30 {
		b.WriteString("  typo" + string(rune('a'+i/26)) + string(rune('a'+i%26)) + ": 1\n")
	}
	_, err := Parse([]byte(b.String()))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want *ValidationError", err)
	}
	if len(ve.Errors) != MaxErrors || ve.Omitted != 30-MaxErrors {
		t.Fatalf("%d errors, %d omitted; want %d and %d", len(ve.Errors), ve.Omitted, MaxErrors, 30-MaxErrors)
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "30 problems:\n  ingest.typoaa: unknown key\n") || !strings.HasSuffix(msg, "\n  ... and 10 more") {
		t.Fatalf("message:\n%s", msg)
	}
}

func TestParseAliasBomb(t *testing.T) {
	// Merge keys make each level merge the previous one ten times: 10^9
	// mappings if walked naively. The walk must stop at its cap.
	var b strings.Builder
	b.WriteString(validNodes + "x0: &a0 {level: info}\n")
	for i := 1; i <= 9; i++ {
		refs := strings.TrimSuffix(strings.Repeat("*a"+strconv.Itoa(i-1)+", ", 10), ", ")
		b.WriteString("x" + strconv.Itoa(i) + ": &a" + strconv.Itoa(i) + " {<<: [" + refs + "]}\n")
	}
	b.WriteString("log: {<<: *a9}\n")
	_, err := Parse([]byte(b.String()))
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err = %v, want *ValidationError", err)
	}
	last := ve.Errors[len(ve.Errors)-1].Error()
	if last != "too many YAML nodes after expanding aliases" {
		t.Fatalf("last error %q, want the alias cap", last)
	}
}

func TestLoadFileWrapsErrors(t *testing.T) {
	path := writeFile(t, "amibus.yaml", "nodes:\n  - {name: a, username: u, secret: s}\n")
	_, err := LoadFile(path)
	if want := "config " + path + ": nodes[0].address: missing"; err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("errors.As(*ValidationError) failed on %v", err)
	}
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Path != "nodes[0].address" {
		t.Fatalf("errors.As(*FieldError) = %v", fe)
	}

	missing := filepath.Join(t.TempDir(), "missing.yaml")
	_, err = LoadFile(missing)
	if want := "config " + missing + ": no such file or directory"; err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("errors.Is(err, os.ErrNotExist) = false for %v", err)
	}

	big := writeFile(t, "big.yaml", string(make([]byte, MaxFileBytes+1)))
	_, err = LoadFile(big)
	if want := "config " + big + ": larger than 8388608 bytes"; err == nil || err.Error() != want {
		t.Fatalf("err = %v, want %q", err, want)
	}
}
