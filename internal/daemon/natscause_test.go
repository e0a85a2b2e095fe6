package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"testing"

	"github.com/nats-io/nats.go"
)

// TestNATSFailureCause: the errors nats.go reports for refused credentials,
// a TLS mismatch and an unreachable server, bare or wrapped, each map to
// their cause; anything else is CauseOther. Readiness and the failure
// counter are labelled by it.
func TestNATSFailureCause(t *testing.T) {
	for _, c := range []struct {
		err  error
		want string
	}{
		{nats.ErrAuthorization, CauseAuthorization},
		{errors.New("nats: Authorization Violation"), CauseAuthorization},
		{nats.ErrAuthExpired, CauseAuthorization},
		{nats.ErrSecureConnWanted, CauseTLS},
		{nats.ErrSecureConnRequired, CauseTLS},
		{fmt.Errorf("wrapped: %w", x509.UnknownAuthorityError{}), CauseTLS},
		{&tls.CertificateVerificationError{Err: errors.New("bad")}, CauseTLS},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connect: connection refused")}, CauseNoRoute},
		{&net.DNSError{Err: "no such host", Name: "nats.invalid"}, CauseNoRoute},
		{nats.ErrNoServers, CauseNoRoute},
		{errors.New("nats: stale connection"), CauseOther},
	} {
		if got := NATSFailureCause(c.err); got != c.want {
			t.Errorf("%v: cause %q, want %q", c.err, got, c.want)
		}
	}
}
