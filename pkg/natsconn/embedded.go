// Package natsconn connects amibus to NATS: it builds client options from the
// configuration (auth, TLS, reconnect policy) and, for the zero-config
// default, starts an embedded nats-server with JetStream.
package natsconn

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Embedded is an in-process nats-server with JetStream enabled.
type Embedded struct {
	srv *server.Server
}

// StartEmbedded starts a nats-server with JetStream storing under dataDir and
// listening on listen (host:port; port 0 or -1 picks a free one). It returns
// once the server accepts connections, or an error within readyTimeout.
func StartEmbedded(listen, dataDir string, readyTimeout time.Duration) (*Embedded, error) {
	host, portStr, err := net.SplitHostPort(listen)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: listen %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: listen %q: bad port", listen)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName: "amibus-embedded",
		Host:       host,
		Port:       port,
		JetStream:  true,
		StoreDir:   dataDir,
		// The process owns signals; the embedded server must not install
		// its own handlers or it would race the mains' graceful shutdown.
		NoSigs: true,
		NoLog:  true,
		// The default 1 MiB max payload matches nats-server's and keeps large
		// action answers within what clients expect.
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		return nil, fmt.Errorf("embedded nats: %w", err)
	}
	srv.Start()
	if !srv.ReadyForConnections(readyTimeout) {
		srv.Shutdown()
		srv.WaitForShutdown()
		return nil, errors.New("embedded nats: not ready for connections (port in use or data dir not writable?)")
	}
	return &Embedded{srv: srv}, nil
}

// ClientURL is the URL clients use to reach the embedded server.
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Shutdown stops the server and waits until it has stopped.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}
