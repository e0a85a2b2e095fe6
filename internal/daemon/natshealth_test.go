package daemon

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
)

// connectWatched connects as Env.ConnectNATS does, with an observed log and
// fresh metrics.
func connectWatched(t *testing.T, url string, cfg config.NATS) (*nats.Conn, *natsHealth, *observer.ObservedLogs, *metrics.Metrics) {
	t.Helper()
	core, logs := observer.New(zapcore.InfoLevel)
	m := metrics.New()
	h := newNATSHealth(zap.New(core), m.NATSConnFailures)
	nc, err := connectNATS(url, cfg, "health-test", zap.NewNop(), h,
		nats.ReconnectWait(20*time.Millisecond), nats.ReconnectJitter(0, 0))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		nc.Close()
		h.stop()
	})
	return nc, h, logs, m
}

// waitNotReady waits until check names want, which must happen within
// seconds; nats.go gives no signal for a silent retry, so this polls.
func waitNotReady(t *testing.T, nc *nats.Conn, h *natsHealth, want string) error {
	t.Helper()
	var err error
	testenv.Poll(t, "readiness to say "+want, func() bool {
		err = h.check(nc)
		return err != nil && strings.Contains(err.Error(), want)
	})
	return err
}

// TestNATSHealthNamesTheCause: no route and a TLS mismatch are each named
// in readiness, logged once plus coalesced repeats, and counted by cause.
func TestNATSHealthNamesTheCause(t *testing.T) {
	t.Run("no route", func(t *testing.T) {
		nc, h, logs, m := connectWatched(t, "nats://"+testenv.DeadAddr(t), config.NATS{})
		err := waitNotReady(t, nc, h, "no route to the NATS server")
		t.Log(err)
		// Some 20 ms apart: several failures, one line at once and the
		// rest coalesced (30 s interval).
		testenv.Poll(t, "repeated dial failures counted", func() bool {
			return testutil.ToFloat64(m.NATSConnFailures.WithLabelValues(CauseNoRoute)) >= 5
		})
		if n := logs.FilterMessageSnippet("no route to the NATS server").Len(); n > 2 {
			t.Fatalf("%d lines for repeated failures, want them coalesced", n)
		}
	})
	t.Run("TLS", func(t *testing.T) {
		srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
		if err != nil {
			t.Fatal(err)
		}
		srv.Start()
		defer func() { srv.Shutdown(); srv.WaitForShutdown() }()
		if !srv.ReadyForConnections(10 * time.Second) {
			t.Fatal("not ready")
		}
		// The client insists on TLS; the server offers none.
		nc, h, logs, m := connectWatched(t, srv.ClientURL(), config.NATS{TLS: config.NATSTLS{InsecureSkipVerify: true}})
		err = waitNotReady(t, nc, h, "TLS with the NATS server failed")
		t.Log(err)
		if n := testutil.ToFloat64(m.NATSConnFailures.WithLabelValues(CauseTLS)); n < 1 {
			t.Fatalf("tls failures counted %v", n)
		}
		if logs.FilterMessageSnippet("TLS with the NATS server failed").Len() == 0 {
			t.Fatal("no log line naming TLS")
		}
	})
}

// TestNATSHealthCoalescesAlternatingCauses: servers of a pool failing
// differently alternate the cause on every reconnect attempt; that is one
// line per cause and interval, not one per attempt. After a connection
// the next failure is logged at once.
func TestNATSHealthCoalescesAlternatingCauses(t *testing.T) {
	core, logs := observer.New(zapcore.InfoLevel)
	m := metrics.New()
	h := newNATSHealth(zap.New(core), m.NATSConnFailures)
	defer h.stop()
	noRoute := &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}
	for range 10 {
		h.failed(noRoute)
		h.failed(nats.ErrAuthorization)
	}
	if n := logs.FilterMessageSnippet("NATS connection failed").Len(); n != 2 {
		t.Fatalf("%d lines for 20 failures alternating between 2 causes, want 2", n)
	}
	if n := testutil.ToFloat64(m.NATSConnFailures.WithLabelValues(CauseAuthorization)); n != 10 {
		t.Fatalf("authorization failures counted %v, want 10", n)
	}
	h.connected()
	h.failed(noRoute)
	if n := logs.FilterMessageSnippet("NATS connection failed").Len(); n != 3 {
		t.Fatalf("%d lines; the failure after a connection was not logged at once", n)
	}
}
