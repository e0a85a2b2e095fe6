package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/daemon"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
	"github.com/amibus/amibus/pkg/publish"
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

// metaWatcher follows the meta subjects of every node: which nodes have
// published a snapshot (the signal that a node's session is up and its
// events are being stored), and how many markers of each type.
type metaWatcher struct {
	sub   *nats.Subscription
	since time.Time // the watch started or was reset

	mu    sync.Mutex
	snaps map[string]bool
	types map[string]int
}

// watchMeta subscribes (core NATS) to the meta subjects of every node
// under prefix; call it before the ingest starts.
func watchMeta(b *testing.B, nc *nats.Conn, prefix string) *metaWatcher {
	b.Helper()
	w := &metaWatcher{snaps: map[string]bool{}, types: map[string]int{}}
	sub, err := nc.SubscribeSync(prefix + ".events.*._meta")
	if err != nil {
		b.Fatal(err)
	}
	// Three markers and a few snapshots per node, twice, for the largest
	// fleet (BenchmarkIngestIdle10000): room for all.
	if err := sub.SetPendingLimits(20*idleNodes, -1); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	w.sub, w.since = sub, time.Now()
	return w
}

// reset forgets what was seen so far (messages already delivered to the
// subscription are read and forgotten too).
func (w *metaWatcher) reset() {
	for {
		if _, err := w.sub.NextMsg(time.Millisecond); err != nil {
			break
		}
	}
	w.mu.Lock()
	clear(w.snaps)
	clear(w.types)
	w.mu.Unlock()
	w.since = time.Now()
}

// waitSnapshots returns when n nodes have published a snapshot; it fails
// the benchmark if that takes longer than limit from the start of the
// watch (or its reset), with what diag describes.
func (w *metaWatcher) waitSnapshots(b *testing.B, n int, limit time.Duration, diag ...func() string) {
	b.Helper()
	deadline := w.since.Add(limit)
	for len(w.snaps) < n {
		m, err := w.sub.NextMsg(time.Until(deadline))
		if err != nil {
			var d []string
			for _, f := range diag {
				d = append(d, f())
			}
			b.Fatalf("%d of %d nodes published their snapshot within %v: %v\n%s", len(w.snaps), n, limit, err, strings.Join(d, "\n"))
		}
		var meta struct {
			Type string `json:"type"`
		}
		if json.Unmarshal(m.Data, &meta) != nil {
			continue
		}
		w.mu.Lock()
		w.types[meta.Type]++
		if meta.Type == "snapshot" {
			w.snaps[m.Subject] = true
		}
		w.mu.Unlock()
	}
}

func (w *metaWatcher) count(typ string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.types[typ]
}

// eventCounter counts the AMI events published under a prefix (meta
// messages not included) as a core NATS subscriber sees them.
type eventCounter struct {
	n    atomic.Int64
	want int64
	done chan struct{}
	sub  *nats.Subscription
}

// countEvents subscribes (core NATS) to the events under prefix; want is
// how many make the count complete.
func countEvents(b *testing.B, nc *nats.Conn, prefix string, want int) *eventCounter {
	b.Helper()
	c := &eventCounter{want: int64(want), done: make(chan struct{})}
	meta := "." + publish.MetaToken
	sub, err := nc.Subscribe(prefix+".events.>", func(m *nats.Msg) {
		if strings.HasSuffix(m.Subject, meta) {
			return
		}
		if c.n.Add(1) == c.want {
			close(c.done)
		}
	})
	if err != nil {
		b.Fatal(err)
	}
	// Room for every event of the run: a slow moment of this subscriber
	// must not drop what it counts.
	if err := sub.SetPendingLimits(want+1000, -1); err != nil {
		b.Fatal(err)
	}
	c.sub = sub
	b.Cleanup(func() { _ = sub.Unsubscribe() })
	if err := nc.Flush(); err != nil {
		b.Fatal(err)
	}
	return c
}

// wait returns when every event was seen; diag describes the state of
// things when they were not.
func (c *eventCounter) wait(b *testing.B, diag func() string) {
	b.Helper()
	select {
	case <-c.done:
	case <-time.After(waitLimit):
		b.Fatalf("%d of %d events published\n%s", c.n.Load(), c.want, diag())
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

// familySums sums, for a failure or progress message, the non-zero counter
// and gauge samples of g's families that keep accepts, by family and the
// labels other than those named in drop (to sum over the nodes, say): one
// "family label=value ... sum" per label set, in the order gathered.
func familySums(g prometheus.Gatherer, keep func(family string) bool, drop ...string) []string {
	mfs, err := g.Gather()
	if err != nil {
		return []string{err.Error()}
	}
	var keys []string
	sums := map[string]float64{}
	for _, mf := range mfs {
		if !keep(mf.GetName()) {
			continue
		}
		for _, m := range mf.GetMetric() {
			v := m.GetCounter().GetValue() + m.GetGauge().GetValue()
			if v == 0 {
				continue
			}
			k := mf.GetName()
			for _, l := range m.GetLabel() {
				if !slices.Contains(drop, l.GetName()) {
					k += " " + l.GetName() + "=" + l.GetValue()
				}
			}
			if _, ok := sums[k]; !ok {
				keys = append(keys, k)
			}
			sums[k] += v
		}
	}
	out := make([]string, len(keys))
	for i, k := range keys {
		out[i] = fmt.Sprintf("%s %v", k, sums[k])
	}
	return out
}
