package config

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.yaml.in/yaml/v3"
)

// The secrets below share the marker "HUSH" so one search finds any leak.
const secretsYAML = `
nats:
  token: tokenHUSH1
nodes:
  - name: pbx1
    address: 127.0.0.1:5038
    username: ami
    secret: nodeHUSH2
    actor_username: ami2
    actor_secret: actorHUSH3
`

func TestSecretNeverPrinted(t *testing.T) {
	c := mustParse(t, secretsYAML)
	if c.NATS.Token.Reveal() != "tokenHUSH1" || c.Nodes[0].Secret.Reveal() != "nodeHUSH2" || c.Nodes[0].ActorSecret.Reveal() != "actorHUSH3" {
		t.Fatal("Reveal does not return the values")
	}
	c.NATS.Password = "passwordHUSH4" // not valid with a token, but worth printing

	var outputs []string
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10.3s"} {
		outputs = append(outputs,
			fmt.Sprintf(verb, c), fmt.Sprintf(verb, *c), fmt.Sprintf(verb, c.Nodes),
			fmt.Sprintf(verb, c.Nodes[0].Secret), fmt.Sprintf(verb, &c.Nodes[0].Secret))
	}
	outputs = append(outputs, fmt.Sprint(c.NATS), fmt.Sprintln(c.Nodes[0]), c.NATS.Token.String(), c.NATS.Token.GoString())

	j, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, string(j))
	y, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	outputs = append(outputs, string(y))
	txt, _ := c.NATS.Password.MarshalText()
	outputs = append(outputs, string(txt))

	var zbuf bytes.Buffer
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	zl := zap.New(zapcore.NewCore(enc, zapcore.AddSync(&zbuf), zapcore.DebugLevel))
	zl.Info("config",
		zap.Any("any", c), zap.Object("object", c), zap.Reflect("reflect", c),
		zap.Any("nodes", c.Nodes), zap.Object("node", &c.Nodes[0]), zap.Any("node_value", c.Nodes[0]),
		zap.Any("secret", c.Nodes[0].Secret), zap.Stringer("stringer", c.NATS.Token),
		zap.Reflect("secret_reflect", c.NATS.Password), zap.Any("nats", c.NATS))
	outputs = append(outputs, zbuf.String())

	var sbuf bytes.Buffer
	slog.New(slog.NewJSONHandler(&sbuf, nil)).Info("config", "secret", c.NATS.Token, "nodes", c.Nodes)
	outputs = append(outputs, sbuf.String())

	for _, out := range outputs {
		if strings.Contains(out, "HUSH") {
			t.Errorf("secret leaked: %s", out)
		}
	}
	if !strings.Contains(zbuf.String(), `"secret":"[redacted]"`) {
		t.Errorf("zap.Any(secret) should log [redacted]: %s", zbuf.String())
	}
}

// TestSecretNotInErrors parses broken files whose nodes carry secrets, in
// every place a secret can sit, and checks no message repeats one.
func TestSecretNotInErrors(t *testing.T) {
	bad := []string{
		// A node with a secret and other problems.
		"nodes:\n  - {name: 'p b x', address: nowhere, username: u, secret: HUSHa, auth: x}\n",
		// A secret that breaks the header it would be written in.
		nodeA("secret: \"HUSHb\\r\\nAction: Originate\""),
		// Both forms of the secret.
		nodeA("secret: HUSHc, secret_file: /nonexistent"),
		// Broken environment references inside a secret.
		nodeA("secret: 'HUSHd${'"),
		nodeA("secret: 'HUSHe${X-HUSHf}'"),
		// A secret of the wrong type, and NATS credentials in bad places.
		nodeA("secret: [HUSHh]"),
		nodeA("secret: s, actor_secret: HUSHi"),
		"nats: {url: 'nats://user:HUSHj@h:4222', token: HUSHk, user: u, password: HUSHl}\n" + validNodes,
		"nats: {url: 'nats://HUSHm@h:4222'}\n" + validNodes,
		"nats: {password: HUSHn}\n" + validNodes,
	}
	for i, y := range bad {
		_, err := Parse([]byte(y), WithEnv(noEnv))
		if err == nil {
			t.Errorf("case %d: no error", i)
			continue
		}
		if strings.Contains(err.Error(), "HUSH") || strings.Contains(fmt.Sprintf("%+v %#v", err, err), "HUSH") {
			t.Errorf("case %d: secret in error: %s", i, err)
		}
	}
}
