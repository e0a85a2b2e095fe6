package natsconn

import (
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/amibus/amibus/pkg/config"
)

// Options returns the nats.go options for cfg: authentication (token,
// user/password, NKey seed file or credentials file), TLS, and a reconnect
// policy that never gives up, since the binaries are meant to ride out NATS
// outages. Connection events are logged once each, never per message.
func Options(cfg config.NATS, name string, log *zap.Logger) ([]nats.Option, error) {
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
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: our own Close
				log.Warn("nats disconnected", zap.Error(err))
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info("nats reconnected", zap.String("server", nc.ConnectedUrlRedacted()))
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
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

// Connect dials url with Options, then extra (which win: the ingest turns
// the reconnect buffer off so that publishes fail in order during an outage).
// Because RetryOnFailedConnect is set, a NATS that is down at start-up does
// not fail the process: the connection is made in the background and
// readiness reports it.
func Connect(url string, cfg config.NATS, name string, log *zap.Logger, extra ...nats.Option) (*nats.Conn, error) {
	opts, err := Options(cfg, name, log)
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
