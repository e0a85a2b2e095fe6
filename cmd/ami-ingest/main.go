// Command ami-ingest publishes every AMI event of every configured PBX to
// JetStream. See README.md for the contract and config.example.yaml for
// the configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/amibus/amibus/pkg/config"
	"github.com/amibus/amibus/pkg/daemon"
	"github.com/amibus/amibus/pkg/httpserver"
	"github.com/amibus/amibus/pkg/ingest"
	"github.com/amibus/amibus/pkg/natsconn"
	"github.com/amibus/amibus/pkg/session"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	var dataDir string
	env, err := daemon.Setup("ami-ingest", args, stderr, func(fs *flag.FlagSet) {
		fs.StringVar(&dataDir, "data-dir", "", "JetStream storage of the embedded NATS server (default nats.embedded.data_dir)")
	})
	if errors.Is(err, flag.ErrHelp) {
		return daemon.ExitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "ami-ingest:", err)
		return daemon.ExitUsage
	}
	defer env.Close()
	if err := serve(env, dataDir); err != nil {
		env.Log.Error("ami-ingest failed", zap.Error(err))
		return daemon.ExitFailed
	}
	return daemon.ExitOK
}

func serve(env *daemon.Env, dataDir string) error {
	cfg, log := env.Config, env.Log
	ctx, stop := daemon.SignalContext(log, os.Exit)
	defer stop()

	url := cfg.NATS.URL
	if url == "" {
		if dataDir == "" {
			dataDir = cfg.NATS.Embedded.DataDir
		}
		emb, err := natsconn.StartEmbedded(cfg.NATS.Embedded.Listen, dataDir, 10*time.Second)
		if err != nil {
			return err
		}
		// Shut down last, after the drain, so the buffers can be stored.
		defer emb.Shutdown()
		url = emb.ClientURL()
		log.Info("embedded NATS server with JetStream started", zap.String("url", url), zap.String("data_dir", dataDir))
	}
	dialer := natsconn.NewResetDialer()
	nc, err := natsconn.Connect(url, cfg.NATS, name(cfg, "ami-ingest"), log,
		// Publishes fail at once while disconnected instead of waiting in
		// nats.go's buffer, so the publisher can retry them in order.
		nats.ReconnectBufSize(-1),
		nats.SetCustomDialer(dialer))
	if err != nil {
		return err
	}
	defer nc.Close()
	opts := []ingest.Option{ingest.WithFence(func() { dialer.Reset() })}
	if cfg.Ingest.HA.Enabled {
		// Pings every TTL/4: a connection that silently stopped answering
		// (a partition) is noticed within about a TTL instead of nats.go's
		// default of minutes, and no lease call waits on it meanwhile.
		lc, err := natsconn.Connect(url, cfg.NATS, name(cfg, "ami-ingest")+"-leases", log,
			nats.PingInterval(max(time.Second, cfg.Ingest.HA.TTL/4)))
		if err != nil {
			return err
		}
		defer lc.Close()
		opts = append(opts, ingest.WithLeaseConn(lc))
	}

	svc, err := ingest.New(cfg, nc, env.Metrics, log, opts...)
	if err != nil {
		return err
	}
	hs := httpserver.New(cfg.HTTP.ListenOr(config.DefaultIngestHTTPListen), env.Metrics.Registry, svc.Ready, log)
	if err := hs.Start(); err != nil {
		return err
	}
	log.Info("ami-ingest started", zap.Int("nodes", len(cfg.Nodes)), zap.String("instance", svc.Instance()),
		zap.String("http", hs.Addr().String()), zap.Bool("ha", cfg.Ingest.HA.Enabled))

	httpCtx, httpStop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := hs.Run(httpCtx); err != nil {
			log.Error("http server", zap.Error(err))
		}
	}()
	runErr := svc.Run(ctx)
	// Metrics stay served through the drain, then go.
	httpStop()
	wg.Wait()
	log.Info("ami-ingest stopped")
	return runErr
}

// name is the NATS connection name: nats.name, else the binary and the
// process instance (the owner recorded in session_start), so that an
// operator can tell replicas apart in the server's connection list.
func name(cfg *config.Config, binary string) string {
	if cfg.NATS.Name != "" {
		return cfg.NATS.Name
	}
	return binary + "-" + session.ProcessInstance()
}
