package daemon

// The embedded NATS server of the zero-config default.

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/zap"
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

// embeddedReadyTimeout bounds the embedded server's start-up.
const embeddedReadyTimeout = 10 * time.Second

// StartEmbeddedNATS starts the embedded server of the zero-config default
// on nats.embedded.listen, storing under dataDir (nats.embedded.data_dir if
// empty).
func (e *Env) StartEmbeddedNATS(dataDir string) (*Embedded, error) {
	if dataDir == "" {
		dataDir = e.Config.NATS.Embedded.DataDir
	}
	emb, err := StartEmbedded(e.Config.NATS.Embedded.Listen, dataDir, embeddedReadyTimeout)
	if err != nil {
		return nil, err
	}
	e.Log.Info("embedded NATS server with JetStream started", zap.String("url", emb.ClientURL()), zap.String("data_dir", dataDir))
	return emb, nil
}
