package daemon

// AMI session options from the shared configuration file, so that
// ami-ingest and ami-actor connect to a node the same way and differ only
// where their roles do (credentials, event mask, limits).

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/pkg/session"
)

// SessionRole selects the credentials and the event mask of a node's session.
type SessionRole uint8

const (
	// RoleIngest reads every event: the node's username, the ingest event mask.
	RoleIngest SessionRole = iota
	// RoleActor runs actions: actor_username if set, events off (list events of
	// its own actions still come, as answers).
	RoleActor
)

// NodeSessionOptions returns the options of node n's session in role r: credentials,
// authentication method, TLS and event mask.
func NodeSessionOptions(cfg *config.Config, n config.Node, r SessionRole) ([]session.Option, error) {
	user, secret := n.Username, n.Secret.Reveal()
	events := cfg.Ingest.Events
	if r == RoleActor {
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
		tc, err := nodeTLSConfig(n)
		if err != nil {
			return nil, err
		}
		opts = append(opts, session.WithTLS(tc))
	}
	return opts, nil
}

func nodeTLSConfig(n config.Node) (*tls.Config, error) {
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
