package daemon

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/amibus/amibus/internal/logging"
)

// Causes of a NATS connection failure: the values of the cause label of
// ami_nats_connection_failures_total (a fixed set).
const (
	// CauseAuthorization: the server refused the credentials (wrong user,
	// password, token, NKey or credentials file; expired or revoked).
	CauseAuthorization = "authorization"
	// CauseTLS: the TLS handshake failed, or one side requires TLS and the
	// other does not offer it.
	CauseTLS = "tls"
	// CauseNoRoute: the server could not be reached (refused, unreachable,
	// name not found, dial timeout).
	CauseNoRoute = "no_route"
	// CauseOther: any other failure (the server closed the connection...).
	CauseOther = "other"
)

// natsFailureLogInterval is the shortest time between two lines about the
// same cause of failure; a change of cause is logged at once.
const natsFailureLogInterval = 30 * time.Second

// NATSFailureCause classifies a NATS connection error into one of the
// Cause* values.
func NATSFailureCause(err error) string {
	var (
		opErr   *net.OpError
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		recErr  tls.RecordHeaderError
		unkAuth x509.UnknownAuthorityError
		hostErr x509.HostnameError
		invErr  x509.CertificateInvalidError
	)
	msg := strings.ToLower(err.Error())
	switch {
	case errors.Is(err, nats.ErrAuthorization), errors.Is(err, nats.ErrAuthExpired),
		errors.Is(err, nats.ErrAuthRevoked), errors.Is(err, nats.ErrAccountAuthExpired),
		strings.Contains(msg, "authorization violation"), strings.Contains(msg, "authentication expired"),
		strings.Contains(msg, "authentication revoked"):
		return CauseAuthorization
	case errors.Is(err, nats.ErrSecureConnRequired), errors.Is(err, nats.ErrSecureConnWanted),
		errors.As(err, &certErr), errors.As(err, &recErr), errors.As(err, &unkAuth),
		errors.As(err, &hostErr), errors.As(err, &invErr), strings.Contains(msg, "tls:"):
		return CauseTLS
	case errors.As(err, &dnsErr), errors.As(err, &opErr) && opErr.Op == "dial",
		errors.Is(err, nats.ErrNoServers), strings.Contains(msg, "i/o timeout"):
		return CauseNoRoute
	}
	return CauseOther
}

// describeCause is what /readyz and the log say for a cause.
func describeCause(cause string) string {
	switch cause {
	case CauseAuthorization:
		return "the NATS server refused the credentials (authorization violation)"
	case CauseTLS:
		return "TLS with the NATS server failed"
	case CauseNoRoute:
		return "no route to the NATS server"
	}
	return "connection to the NATS server failed"
}

// natsHealth follows the failures of one NATS connection: it logs them
// coalesced, counts them by cause and tells readiness why the connection
// is down. nats.go reports a failed dial each time, and a refusal of the
// credentials or a TLS failure before the first successful connection only
// once (its later attempts are silent), so readiness also reads the
// connection's last error.
type natsHealth struct {
	log      *zap.Logger
	failures *prometheus.CounterVec

	mu    sync.Mutex
	cause string // "" while connected or before the first failure
	err   string // the last failure's text (nats.go's errors hold no secret)
	coal  map[string]*logging.Coalescer
}

func newNATSHealth(log *zap.Logger, failures *prometheus.CounterVec) *natsHealth {
	return &natsHealth{log: log, failures: failures, coal: map[string]*logging.Coalescer{}}
}

// failed records one failure. The first failure of a cause is logged at
// once, with its error; the later ones once per natsFailureLogInterval
// with a count, also when causes alternate (the servers of a pool failing
// differently), which would otherwise be a line per reconnect attempt.
func (h *natsHealth) failed(err error) {
	if err == nil {
		return
	}
	cause := NATSFailureCause(err)
	if h.failures != nil {
		h.failures.WithLabelValues(cause).Inc()
	}
	h.mu.Lock()
	h.cause, h.err = cause, err.Error()
	c := h.coal[cause]
	if c == nil {
		c = logging.NewCoalescerWith(h.log, "NATS connection failed: "+describeCause(cause), natsFailureLogInterval,
			logging.CoalescerOptions{Level: zapcore.ErrorLevel}, zap.String("cause", cause))
		h.coal[cause] = c
	}
	h.mu.Unlock()
	c.AddWith(1, zap.Error(err))
}

// connected clears the failure: the next one is logged at once.
func (h *natsHealth) connected() {
	h.mu.Lock()
	was := h.cause
	h.cause, h.err = "", ""
	for _, c := range h.coal {
		c.End()
	}
	h.mu.Unlock()
	if was != "" {
		h.log.Info("NATS connection up again after failures", zap.String("last_cause", was))
	}
}

// check returns nil while nc is connected, else why it is not.
func (h *natsHealth) check(nc *nats.Conn) error {
	if nc.IsConnected() {
		return nil
	}
	h.mu.Lock()
	cause, text := h.cause, h.err
	h.mu.Unlock()
	if last := nc.LastError(); last != nil {
		if c := NATSFailureCause(last); c != CauseOther || cause == "" {
			cause, text = c, last.Error()
		}
	}
	if cause == "" {
		return fmt.Errorf("nats: not connected (%s)", strings.ToLower(nc.Status().String()))
	}
	return fmt.Errorf("nats: not connected: %s: %s", describeCause(cause), text)
}

// stop logs what the coalescers still hold and disarms their timers.
func (h *natsHealth) stop() {
	h.mu.Lock()
	cs := make([]*logging.Coalescer, 0, len(h.coal))
	for _, c := range h.coal {
		cs = append(cs, c)
	}
	h.mu.Unlock()
	for _, c := range cs {
		c.Stop()
	}
}
