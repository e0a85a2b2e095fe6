// Command ami-actor runs AMI actions requested over NATS on the configured
// PBXs and replies exactly once to each request. See docs/actor.md and
// schemas/actions.md for the contract, config.example.yaml for the
// configuration.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sync"

	"go.uber.org/zap"

	"github.com/amibus/amibus/pkg/actor"
	"github.com/amibus/amibus/pkg/config"
	"github.com/amibus/amibus/pkg/daemon"
	"github.com/amibus/amibus/pkg/httpserver"
	"github.com/amibus/amibus/pkg/natsconn"
	"github.com/amibus/amibus/pkg/session"
)

func main() { os.Exit(run(os.Args[1:], os.Stderr)) }

func run(args []string, stderr io.Writer) int {
	env, err := daemon.Setup("ami-actor", args, stderr, nil)
	if errors.Is(err, flag.ErrHelp) {
		return daemon.ExitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, "ami-actor:", err)
		return daemon.ExitUsage
	}
	defer env.Close()
	if err := serve(env); err != nil {
		env.Log.Error("ami-actor failed", zap.Error(err))
		return daemon.ExitFailed
	}
	return daemon.ExitOK
}

// serve runs the process until the first SIGINT or SIGTERM, then shuts
// down in order: the actor answers everything in flight and closes its AMI
// sessions (Service.Run), then the NATS connection closes, then HTTP stops,
// so that /metrics is served through the drain.
func serve(env *daemon.Env) error {
	cfg, log := env.Config, env.Log
	ctx, stop := daemon.SignalContext(log, os.Exit)
	defer stop()

	url := cfg.NATS.URL
	if url == "" {
		// No URL: the NATS server that ami-ingest embeds by default.
		url = "nats://" + cfg.NATS.Embedded.Listen
	}
	name := cfg.NATS.Name
	if name == "" {
		// As ami-ingest's: replicas are told apart in the server's
		// connection list by the process instance.
		name = "ami-actor-" + session.ProcessInstance()
	}
	nc, err := natsconn.Connect(url, cfg.NATS, name, log)
	if err != nil {
		return err
	}
	defer nc.Close() // after Run: the replies of the drain are flushed by then

	svc, err := actor.New(cfg, nc, env.Metrics, log)
	if err != nil {
		return err
	}
	hs := httpserver.New(cfg.HTTP.ListenOr(config.DefaultActorHTTPListen), env.Metrics.Registry, svc.Ready, log)
	if err := hs.Start(); err != nil {
		return err
	}
	httpCtx, httpStop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer wg.Wait()
	defer httpStop()
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := hs.Run(httpCtx); err != nil {
			log.Error("http server", zap.Error(err))
		}
	}()
	log.Info("ami-actor started", zap.Int("nodes", len(cfg.Nodes)), zap.String("http", hs.Addr().String()))
	runErr := svc.Run(ctx)
	nc.Close()
	log.Info("ami-actor stopped")
	return runErr
}
