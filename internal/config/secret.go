package config

import (
	"fmt"
	"io"
	"log/slog"
)

// Redacted is what every printed or marshalled form of a Secret shows.
const Redacted = "[redacted]"

// Secret holds a credential (AMI secret, NATS token or password). Every way
// of printing or encoding it — fmt verbs including %#v and %x, JSON, text,
// YAML, zap (through fmt.Stringer or reflection) and slog — yields
// "[redacted]"; Reveal is the only way to the value. It stays a string type
// so that literals work in tests; a conversion string(s) bypasses the
// protection and must not be written outside the code that sends the
// credential.
//
// Secret deliberately does not implement zapcore.ObjectMarshaler: zap.Any
// prefers that interface to fmt.Stringer and would log an object where a
// plain "[redacted]" string reads better.
type Secret string

// Reveal returns the credential itself, for the code that sends it.
func (s Secret) Reveal() string { return string(s) }

// IsZero reports whether no credential is set.
func (s Secret) IsZero() bool { return s == "" }

// String implements fmt.Stringer; zap.Any and zap.Stringer use it.
func (Secret) String() string { return Redacted }

// GoString implements fmt.GoStringer (%#v).
func (Secret) GoString() string { return Redacted }

// Format implements fmt.Formatter so that no verb (%s, %q, %x, %d ...)
// falls through to the underlying string.
func (Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, Redacted) }

// MarshalJSON implements json.Marshaler (also used by zap.Reflect).
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler.
func (Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// MarshalYAML implements yaml.Marshaler.
func (Secret) MarshalYAML() (any, error) { return Redacted, nil }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }
