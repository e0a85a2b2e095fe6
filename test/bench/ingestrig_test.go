package bench

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/ingest"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// This file is the rig of the benchmarks that run ami-ingest in this
// process (latency, throughput), so that a profile sees all of it: the
// internal/ingest Service fed by one simulated PBX, and the checks of what
// it counted.

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
	return strings.Join(familySums(r.m.Registry, func(family string) bool { return strings.HasPrefix(family, "ami_") }), "\n")
}

// checkNoLoss fails the benchmark if the ingest lost an event of node: a
// drop or a reconnect of its AMI session would make the figures
// meaningless.
func (r *ingestRig) checkNoLoss(b *testing.B, node string) {
	b.Helper()
	for _, reason := range []string{metrics.ReasonBufferFull, metrics.ReasonPublishFailed} {
		if n := testutil.ToFloat64(r.m.EventsDropped.WithLabelValues(node, reason)); n != 0 {
			b.Fatalf("the ingest dropped %v events of %s (%s)", n, node, reason)
		}
	}
	if n := testutil.ToFloat64(r.m.SessionReconnects.WithLabelValues(node)); n != 0 {
		b.Fatalf("the AMI session of %s reconnected %v times during the run", node, n)
	}
}

// retries is how many publishes of node's events the ingest retried.
func (r *ingestRig) retries(node string) float64 {
	return testutil.ToFloat64(r.m.PublishRetries.WithLabelValues(node))
}

// oneNode is the set-up the in-process benchmarks share: an embedded
// nats-server, one simulated PBX (pbx1), the benchmark's own connection
// and the ingest Service.
type oneNode struct {
	url string              // the NATS server's client URL
	sim *amisim.Server      // pbx1
	obs *nats.Conn          // the benchmark's connection
	js  jetstream.JetStream // on obs
	ing *ingestRig
}

// startOneNode starts NATS, pbx1 on simCfg, the benchmark's connection and
// the ingest Service with the default configuration (extra options go to
// its NATS connection), and returns once pbx1's session is up: its
// snapshot is published, and its events are being stored.
func startOneNode(b *testing.B, simCfg amisim.Config, extra ...nats.Option) *oneNode {
	b.Helper()
	emb := testenv.StartNATS(b)
	r := &oneNode{url: emb.ClientURL(), sim: startFleetConfig(b, 1, simCfg)[0]}
	r.obs = connect(b, r.url, "bench-observer")
	metas := watchMeta(b, r.obs, "ami")
	r.ing = startIngest(b, configYAML(r.url, []*amisim.Server{r.sim}, ""), extra...)
	metas.waitSnapshots(b, 1, waitLimit, r.ing.diag, func() string { return fmt.Sprintf("simulator: %+v", r.sim.Stats()) })
	r.js = testenv.JetStream(b, r.obs)
	return r
}
