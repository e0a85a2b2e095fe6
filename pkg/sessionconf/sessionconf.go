// Package sessionconf turns the shared configuration file into AMI session
// options, so that ami-ingest and ami-actor connect to a node the same way
// and differ only where their roles do (credentials, event mask, limits).
package sessionconf

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/amibus/amibus/pkg/config"
	"github.com/amibus/amibus/pkg/session"
)

// Role selects the credentials and the event mask of a node's session.
type Role uint8

const (
	// Ingest reads every event: the node's username, the ingest event mask.
	Ingest Role = iota
	// Actor runs actions: actor_username if set, events off (list events of
	// its own actions still come, as answers).
	Actor
)

// Common returns the options every session of the process shares: timeouts,
// backoff and reader caps from the session block.
func Common(c config.Session) []session.Option {
	return []session.Option{
		session.WithDialTimeout(c.DialTimeout),
		session.WithBannerTimeout(c.BannerTimeout),
		session.WithLoginTimeout(c.LoginTimeout),
		session.WithKeepalive(c.PingInterval, c.PingTimeout),
		session.WithBackoff(c.BackoffInitial, c.BackoffMax),
		session.WithAuthFailureBackoff(c.AuthFailureBackoff),
		session.WithHealthyAfter(c.HealthyAfter),
		session.WithReaderLimits(c.MaxMessageBytes, c.MaxHeaders),
	}
}

// Node returns the options of node n's session in role r: credentials,
// authentication method, TLS and event mask.
func Node(cfg *config.Config, n config.Node, r Role) ([]session.Option, error) {
	user, secret := n.Username, n.Secret.Reveal()
	events := cfg.Ingest.Events
	if r == Actor {
		events = "off"
		if n.ActorUsername != "" {
			user, secret = n.ActorUsername, n.ActorSecret.Reveal()
		}
	}
	auth := session.AuthPlain
	if n.Auth == "md5" {
		auth = session.AuthMD5
	}
	opts := []session.Option{
		session.WithCredentials(user, secret),
		session.WithAuth(auth),
		session.WithEvents(events),
	}
	if n.TLS.Enabled {
		tc, err := tlsConfig(n)
		if err != nil {
			return nil, err
		}
		opts = append(opts, session.WithTLS(tc))
	}
	return opts, nil
}

func tlsConfig(n config.Node) (*tls.Config, error) {
	tc := &tls.Config{
		ServerName: n.TLS.ServerName,
		// Operators of self-signed PBXs opt in explicitly; the default verifies.
		InsecureSkipVerify: n.TLS.InsecureSkipVerify, //nolint:gosec // explicit opt-in
		MinVersion:         tls.VersionTLS12,
	}
	if n.TLS.CAFile != "" {
		pem, err := os.ReadFile(n.TLS.CAFile)
		if err != nil {
			return nil, fmt.Errorf("node %s: tls.ca_file: %w", n.Name, err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("node %s: tls.ca_file %s: no PEM certificate in it", n.Name, n.TLS.CAFile)
		}
		tc.RootCAs = pool
	}
	return tc, nil
}
