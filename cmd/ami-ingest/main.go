// Command ami-ingest publishes every AMI event of every configured PBX to
// JetStream. See README.md for the contract and config.example.yaml for
// the configuration.
package main

import (
	"context"
	"flag"
	"os"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/daemon"
	"github.com/amibus/amibus/internal/ingest"
)

func main() {
	var dataDir string
	flags := func(fs *flag.FlagSet) {
		fs.StringVar(&dataDir, "data-dir", "", "JetStream storage of the embedded NATS server (default nats.embedded.data_dir)")
	}
	serve := func(ctx context.Context, env *daemon.Env) error { return serve(ctx, env, dataDir) }
	os.Exit(daemon.Main("ami-ingest", os.Args[1:], os.Stderr, flags, serve))
}

// serve runs until ctx ends, then shuts down in order: the service drains
// (Service.Run), HTTP stops (metrics are served through the drain), the
// NATS connections close, and the embedded server stops last so that the
// buffers can be stored.
func serve(ctx context.Context, env *daemon.Env, dataDir string) error {
	cfg := env.Config
	url := cfg.NATS.URL
	if url == "" {
		emb, err := env.StartEmbeddedNATS(dataDir)
		if err != nil {
			return err
		}
		defer emb.Shutdown()
		url = emb.ClientURL()
	}
	dialer := daemon.NewResetDialer()
	// Publishes fail at once while disconnected instead of waiting in
	// nats.go's buffer, so the publisher can retry them in order.
	nc, err := env.ConnectNATS(url, "", nats.ReconnectBufSize(-1), nats.SetCustomDialer(dialer))
	if err != nil {
		return err
	}
	defer nc.Close()
	opts := []ingest.Option{ingest.WithFence(func() { dialer.Reset() })}
	if cfg.Ingest.HA.Enabled {
		lc, err := env.ConnectLeases(url, cfg.Ingest.HA.TTL)
		if err != nil {
			return err
		}
		defer lc.Close()
		opts = append(opts, ingest.WithLeaseConn(lc))
	}
	svc, err := ingest.New(cfg, nc, env.Metrics, env.Log, opts...)
	if err != nil {
		return err
	}
	return env.Serve(ctx, svc, config.DefaultIngestHTTPListen, daemon.ReloadNodes(svc),
		zap.Int("nodes", len(cfg.Nodes)), zap.String("instance", svc.Instance()), zap.Bool("ha", cfg.Ingest.HA.Enabled))
}
