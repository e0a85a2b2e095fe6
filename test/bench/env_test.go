package bench

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/daemon"
	"github.com/amibus/amibus/internal/ingest"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// waitLimit bounds every wait of these benchmarks on something that must
// happen (a login, a round stored): reaching it is a hang and fails the run.
const waitLimit = 60 * time.Second

// window returns the measuring window named by the environment variable
// name (a Go duration), else def, or short under -short.
func window(b *testing.B, name string, def, short time.Duration) time.Duration {
	b.Helper()
	if v := os.Getenv(name); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			b.Fatalf("%s=%q: want a positive Go duration", name, v)
		}
		return d
	}
	if testing.Short() {
		return short
	}
	return def
}

// ctxT is a context that ends at waitLimit or with the benchmark.
func ctxT(b *testing.B) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	b.Cleanup(cancel)
	return ctx
}

// connect connects as ami-ingest does (daemon.NATSOptions, nats.go's reconnect
// buffer off), plus extra.
func connect(b *testing.B, url, name string, extra ...nats.Option) *nats.Conn {
	b.Helper()
	nc, err := daemon.ConnectNATS(url, config.NATS{}, name, zap.NewNop(), append([]nats.Option{nats.ReconnectBufSize(-1)}, extra...)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	return nc
}

// startFleet starts n simulated PBXs pbx1..pbxn that record nothing (a
// benchmark sends millions of events).
func startFleet(b *testing.B, n int) []*amisim.Server {
	b.Helper()
	return startFleetConfig(b, n, amisim.Config{})
}

// floodWriteTimeout replaces Asterisk's 100 ms writetimeout where a
// benchmark floods the ingest as fast as it reads: on this shared 2-core
// machine the reader is sometimes not scheduled for 100 ms, and the drop
// (and reconnect) would measure the machine's load, not the ingest. An
// Asterisk admin can raise writetimeout in manager.conf the same way.
const floodWriteTimeout = 10 * time.Second

// startFleetConfig is startFleet with cfg as the base configuration.
func startFleetConfig(b *testing.B, n int, cfg amisim.Config) []*amisim.Server {
	b.Helper()
	cfg.RecordLimit = -1
	return testenv.StartFleet(b, n, cfg)
}

// configYAML is an ami-ingest configuration file for sims: natsURL (empty
// for none), the nodes, and extra top-level YAML (e.g. an ingest: block).
func configYAML(natsURL string, sims []*amisim.Server, extra string) string {
	var b strings.Builder
	if natsURL != "" {
		fmt.Fprintf(&b, "nats:\n  url: %s\n", natsURL)
	}
	b.WriteString("nodes:\n")
	for _, s := range sims {
		fmt.Fprintf(&b, "  - name: %s\n    address: %s\n    username: ami\n    secret: amisecret\n", s.Node(), s.Addr())
	}
	b.WriteString(extra)
	return b.String()
}

// ingestRig is ami-ingest in this process: the internal/ingest Service on its
// own NATS connection, as cmd/ami-ingest wires it.
type ingestRig struct {
	cfg  *config.Config
	m    *metrics.Metrics
	nc   *nats.Conn
	done chan error
}

// startIngest runs the Service for the configuration file text until the
// benchmark ends; extra options go to its NATS connection.
func startIngest(b *testing.B, yaml string, extra ...nats.Option) *ingestRig {
	b.Helper()
	cfg, err := config.Parse([]byte(yaml))
	if err != nil {
		b.Fatal(err)
	}
	r := &ingestRig{cfg: cfg, m: metrics.New(), done: make(chan error, 1)}
	r.nc = connect(b, cfg.NATS.URL, "bench-ingest", extra...)
	svc, err := ingest.New(cfg, r.nc, r.m, zap.NewNop())
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { r.done <- svc.Run(ctx) }()
	b.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			b.Errorf("ingest service: %v", err)
		}
	})
	return r
}

// diag describes the in-process ingest's state for a failure message.
func (r *ingestRig) diag() string {
	var b strings.Builder
	mfs, err := r.m.Registry.Gather()
	if err != nil {
		return err.Error()
	}
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "ami_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			if v == 0 {
				continue
			}
			fmt.Fprintf(&b, "%s", mf.GetName())
			for _, l := range m.GetLabel() {
				fmt.Fprintf(&b, " %s=%s", l.GetName(), l.GetValue())
			}
			fmt.Fprintf(&b, " %v\n", v)
		}
	}
	return b.String()
}

// snapshotWaiter counts the snapshot markers published on a NATS
// connection: one per node after its login, the signal that the node's
// session is up and its events are being stored.
type snapshotWaiter struct {
	sub  *nats.Subscription
	seen map[string]bool
}

// watchSnapshots subscribes (core NATS) to the meta subjects of every node
// under prefix; call it before the ingest starts.
func watchSnapshots(b *testing.B, nc *nats.Conn, prefix string) *snapshotWaiter {
	b.Helper()
	sub, err := nc.SubscribeSync(prefix + ".events.*._meta")
	if err != nil {
		b.Fatal(err)
	}
	// One marker per node, plus session_start: far below the default
	// pending limits of a subscription.
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	// The server has the subscription before anything is published.
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	return &snapshotWaiter{sub: sub, seen: map[string]bool{}}
}

// wait returns when n distinct nodes have published a snapshot; diag, if
// set, describes the state of things when they do not.
func (w *snapshotWaiter) wait(b *testing.B, n int, diag ...func() string) {
	b.Helper()
	deadline := time.Now().Add(waitLimit)
	for len(w.seen) < n {
		m, err := w.sub.NextMsg(time.Until(deadline))
		if err != nil {
			var d []string
			for _, f := range diag {
				d = append(d, f())
			}
			b.Fatalf("%d of %d nodes published their snapshot: %v\n%s", len(w.seen), n, err, strings.Join(d, "\n"))
		}
		if bytes.Contains(m.Data, []byte(`"type":"snapshot"`)) {
			w.seen[m.Subject] = true
		}
	}
}

// raiseFileLimit lifts the soft limit on open files to at least n (up to
// the hard limit); children inherit it.
func raiseFileLimit(b *testing.B, n uint64) {
	b.Helper()
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur >= n {
		return
	}
	if lim.Max < n {
		b.Skipf("open files hard limit %d, need %d", lim.Max, n)
	}
	old := lim.Cur
	lim.Cur = n
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		lim.Cur = old
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	})
}
