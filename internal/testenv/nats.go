package testenv

import (
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// NATS is an embedded nats-server on a loopback port, with JetStream unless
// told otherwise. A test can stop it and start it again on the same port
// and store directory (an outage); the test's cleanup stops it.
type NATS struct {
	t    testing.TB
	opts server.Options
	srv  *server.Server
}

// NATSOption changes the server's options before it starts.
type NATSOption func(*server.Options)

// MaxPayload sets the server's max_payload; 0 keeps the 1 MiB default.
func MaxPayload(n int32) NATSOption { return func(o *server.Options) { o.MaxPayload = n } }

// NoJetStream runs core NATS only, as a request/reply test needs.
func NoJetStream() NATSOption { return func(o *server.Options) { o.JetStream = false } }

// StoreDir puts the JetStream store in dir instead of a fresh temporary one.
func StoreDir(dir string) NATSOption { return func(o *server.Options) { o.StoreDir = dir } }

// Port listens on port instead of a free one (a server that comes later
// where the clients already try).
func Port(port int) NATSOption { return func(o *server.Options) { o.Port = port } }

// ServerOptions lets a test set any other server option (accounts, auth).
func ServerOptions(f func(*server.Options)) NATSOption { return NATSOption(f) }

// StartNATS starts the server and returns once it accepts connections.
func StartNATS(t testing.TB, opts ...NATSOption) *NATS {
	t.Helper()
	n := &NATS{t: t, opts: server.Options{
		Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		NoLog: true, NoSigs: true,
	}}
	for _, o := range opts {
		o(&n.opts)
	}
	if n.opts.JetStream && n.opts.StoreDir == "" {
		n.opts.StoreDir = t.TempDir()
	}
	n.Start()
	// A restart must come back where the clients reconnect to.
	n.opts.Port = n.srv.Addr().(*net.TCPAddr).Port
	t.Cleanup(n.Stop)
	return n
}

// Start starts the server again after Stop, on the same port and store.
func (n *NATS) Start() {
	n.t.Helper()
	opts := n.opts // the server keeps and changes what it is given
	srv, err := server.NewServer(&opts)
	if err != nil {
		n.t.Fatal(err)
	}
	srv.Start()
	if !srv.ReadyForConnections(WaitLimit) {
		srv.Shutdown()
		srv.WaitForShutdown()
		n.t.Fatal("nats-server not ready")
	}
	n.srv = srv
}

// Stop shuts the server down and waits until it has stopped; stopping a
// stopped server does nothing.
func (n *NATS) Stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv.WaitForShutdown()
		n.srv = nil
	}
}

// ClientURL is the client URL, the same across a restart.
func (n *NATS) ClientURL() string { return "nats://127.0.0.1:" + strconv.Itoa(n.opts.Port) }

// Server is the running server (nil while stopped).
func (n *NATS) Server() *server.Server { return n.srv }

// StoreDir is where JetStream stores its data.
func (n *NATS) StoreDir() string { return n.opts.StoreDir }

// Connect connects to url, reconnecting forever and quickly (a test's
// server comes back at once), plus opts, which win; the test's cleanup
// closes the connection.
func Connect(t testing.TB, url string, opts ...nats.Option) *nats.Conn {
	t.Helper()
	base := []nats.Option{nats.MaxReconnects(-1), nats.ReconnectWait(20 * time.Millisecond), nats.ReconnectJitter(0, 0)}
	nc, err := nats.Connect(url, append(base, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// JetStream is the JetStream API on nc.
func JetStream(t testing.TB, nc *nats.Conn) jetstream.JetStream {
	t.Helper()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// Subscribe subscribes handle to subject on nc and flushes, so the server
// has the interest before the test goes on to cause the messages; the
// test's cleanup unsubscribes.
func Subscribe(t testing.TB, nc *nats.Conn, subject string, handle nats.MsgHandler) *nats.Subscription {
	t.Helper()
	sub, err := nc.Subscribe(subject, handle)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sub.Unsubscribe() })
	return sub
}
