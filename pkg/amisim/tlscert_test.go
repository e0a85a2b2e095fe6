package amisim

import (
	"crypto/tls"
	"testing"
)

// serverTLS returns a TLS config with a fresh self-signed certificate for
// 127.0.0.1.
func serverTLS(t testing.TB) *tls.Config {
	t.Helper()
	cfg, _, err := SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}
