//go:build linux

package main

import (
	"testing"

	"github.com/amibus/amibus/internal/testenv"
)

// TestNATSCredentialsRefused: with a wrong NATS password, or a wrong token,
// ami-state says within seconds, in its log and on /readyz, that the NATS
// server refused the credentials, counts the failure by cause, and never
// shows the credential.
func TestNATSCredentialsRefused(t *testing.T) {
	testenv.CheckCredentialsRefused(t, binary, "ami-state started")
}
