package daemon

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/pkg/session"
)

// NATSOptions returns the nats.go options for cfg: authentication (token,
// user/password, NKey seed file or credentials file), TLS, and a reconnect
// policy that never gives up, since the binaries are meant to ride out NATS
// outages. Connection events are logged once each, never per message.
func NATSOptions(cfg config.NATS, name string, log *zap.Logger) ([]nats.Option, error) {
	return natsOptions(cfg, name, log, nil)
}

// natsOptions is NATSOptions reporting failures to h when it is not nil.
func natsOptions(cfg config.NATS, name string, log *zap.Logger, h *natsHealth) ([]nats.Option, error) {
	if h == nil {
		h = newNATSHealth(log, nil)
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.ReconnectJitter(250*time.Millisecond, time.Second),
		// While disconnected, nats.go buffers publishes; a bounded buffer
		// (8 MiB, its default) keeps memory flat during an outage and makes
		// publishes fail fast beyond it, which the publisher counts.
		nats.ReconnectBufSize(8 << 20),
		nats.RetryOnFailedConnect(true),
		// Credentials refused twice would otherwise close the connection
		// for good; the server side may be fixed while the process runs,
		// and readiness says why meanwhile.
		nats.IgnoreAuthErrorAbort(),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own Close
				log.Warn("nats disconnected", zap.Error(err))
			}
		}),
		nats.ConnectHandler(func(*nats.Conn) { h.connected() }),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			h.connected()
			log.Info("nats reconnected", zap.String("server", nc.ConnectedUrlRedacted()))
		}),
		// A failed dial, and the first failure of the initial connection.
		nats.ReconnectErrHandler(func(_ *nats.Conn, err error) { h.failed(err) }),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			if sub == nil && NATSFailureCause(err) != CauseOther {
				h.failed(err) // credentials refused once connected before
				return
			}
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			log.Warn("nats async error", zap.String("subject", subj), zap.Error(err))
		}),
	}
	if t := cfg.Token.Reveal(); t != "" {
		opts = append(opts, nats.Token(t))
	}
	if cfg.User != "" {
		opts = append(opts, nats.UserInfo(cfg.User, cfg.Password.Reveal()))
	}
	if cfg.NKeyFile != "" {
		o, err := nats.NkeyOptionFromSeed(cfg.NKeyFile)
		if err != nil {
			// The nats.go error names the file, never the seed.
			return nil, fmt.Errorf("nats.nkey_file: %w", err)
		}
		opts = append(opts, o)
	}
	if cfg.CredsFile != "" {
		opts = append(opts, nats.UserCredentials(cfg.CredsFile))
	}
	if cfg.TLS.CAFile != "" {
		opts = append(opts, nats.RootCAs(cfg.TLS.CAFile))
	}
	if cfg.TLS.CertFile != "" || cfg.TLS.KeyFile != "" {
		opts = append(opts, nats.ClientCert(cfg.TLS.CertFile, cfg.TLS.KeyFile))
	}
	if cfg.TLS.InsecureSkipVerify {
		opts = append(opts, nats.Secure(&tlsInsecure))
	}
	return opts, nil
}

// ConnectNATS dials url with NATSOptions, then extra (which win: the ingest turns
// the reconnect buffer off so that publishes fail in order during an outage).
// Because RetryOnFailedConnect is set, a NATS that is down at start-up does
// not fail the process: the connection is made in the background and
// readiness reports it.
func ConnectNATS(url string, cfg config.NATS, name string, log *zap.Logger, extra ...nats.Option) (*nats.Conn, error) {
	return connectNATS(url, cfg, name, log, nil, extra...)
}

func connectNATS(url string, cfg config.NATS, name string, log *zap.Logger, h *natsHealth, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := natsOptions(cfg, name, log, h)
	if err != nil {
		return nil, err
	}
	opts = append(opts, extra...)
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return nil, fmt.Errorf("nats connect %s: %w", redactURL(url), err)
	}
	return nc, nil
}

// ConnName is the name of the process's NATS connection with the given
// suffix: nats.name if set, else the binary and the process instance (the
// owner recorded in session_start), so that an operator can tell replicas
// apart in the server's connection list.
func (e *Env) ConnName(suffix string) string {
	if e.Config.NATS.Name != "" {
		return e.Config.NATS.Name + suffix
	}
	return e.Binary + "-" + session.ProcessInstance() + suffix
}

// ConnectNATS connects to url as ConnectNATS does, with the configuration's
// nats block and the connection name ConnName(suffix).
// Its failures are logged by cause, counted in
// ami_nats_connection_failures_total, and make StartHTTP's /readyz answer
// why the connection is down.
func (e *Env) ConnectNATS(url, suffix string, extra ...nats.Option) (*nats.Conn, error) {
	h := newNATSHealth(e.Log.With(zap.String("connection", e.ConnName(suffix))), e.Metrics.NATSConnFailures)
	nc, err := connectNATS(url, e.Config.NATS, e.ConnName(suffix), e.Log, h, extra...)
	if err != nil {
		h.stop()
		return nil, err
	}
	e.natsMu.Lock()
	e.nats = append(e.nats, natsConn{nc: nc, h: h})
	e.natsMu.Unlock()
	return nc, nil
}

// natsConn is a connection made by Env.ConnectNATS and its health.
type natsConn struct {
	nc *nats.Conn
	h  *natsHealth
}

// NATSReady returns nil when every connection made by ConnectNATS is up,
// else why the first one that is not is down.
func (e *Env) NATSReady() error {
	e.natsMu.Lock()
	conns := append([]natsConn(nil), e.nats...)
	e.natsMu.Unlock()
	for _, c := range conns {
		if err := c.h.check(c.nc); err != nil {
			return err
		}
	}
	return nil
}

// NATSURL is nats.url, or when unset the address of the NATS server that
// ami-ingest embeds by default.
func (e *Env) NATSURL() string {
	if e.Config.NATS.URL != "" {
		return e.Config.NATS.URL
	}
	return "nats://" + e.Config.NATS.Embedded.Listen
}

// ConnectLeases connects the ownership leases on a connection of their own
// (name suffix "-leases") that pings every TTL/4: a connection that silently
// stopped answering (a partition) is noticed within about a TTL instead of
// nats.go's default of minutes, and no renewal waits behind other traffic.
func (e *Env) ConnectLeases(url string, ttl time.Duration) (*nats.Conn, error) {
	return e.ConnectNATS(url, "-leases", nats.PingInterval(max(time.Second, ttl/4)))
}
