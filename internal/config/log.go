package config

import "go.uber.org/zap/zapcore"

// MarshalLogObject implements zapcore.ObjectMarshaler with the facts worth
// a start-up log line; it holds no credential (only whether one is set).
func (c *Config) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	if c.NATS.URL == "" {
		enc.AddString("nats", "embedded "+c.NATS.Embedded.Listen)
	} else {
		enc.AddString("nats", c.NATS.URL)
	}
	enc.AddString("subject_prefix", c.NATS.SubjectPrefix)
	enc.AddString("stream", c.Stream.Name)
	enc.AddInt("nodes", len(c.Nodes))
	enc.AddString("log_level", c.Log.Level)
	enc.AddBool("ha", c.Ingest.HA.Enabled)
	return nil
}

// MarshalLogObject implements zapcore.ObjectMarshaler; secrets are left out.
func (n *Node) MarshalLogObject(enc zapcore.ObjectEncoder) error {
	enc.AddString("name", n.Name)
	enc.AddString("address", n.Address)
	enc.AddString("username", n.Username)
	enc.AddString("auth", n.Auth)
	enc.AddBool("tls", n.TLS.Enabled)
	if n.ActorUsername != n.Username {
		enc.AddString("actor_username", n.ActorUsername)
	}
	return nil
}
