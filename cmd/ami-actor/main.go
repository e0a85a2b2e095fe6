// Command ami-actor runs AMI actions requested over NATS on the configured
// PBXs and replies exactly once to each request. See docs/actor.md and
// schemas/actions.md for the contract, config.example.yaml for the
// configuration.
package main

import (
	"context"
	"os"

	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/actor"
	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/daemon"
)

func main() { os.Exit(daemon.Main("ami-actor", os.Args[1:], os.Stderr, nil, serve)) }

// serve runs until ctx ends, then shuts down in order: the actor answers
// everything in flight and closes its AMI sessions (Service.Run), then the
// NATS connection closes (the replies of the drain are flushed by then),
// then HTTP stops, so that /metrics is served through the drain.
func serve(ctx context.Context, env *daemon.Env) error {
	cfg, log := env.Config, env.Log
	nc, err := env.ConnectNATS(env.NATSURL(), "")
	if err != nil {
		return err
	}
	defer nc.Close()
	svc, err := actor.New(cfg, nc, env.Metrics, log)
	if err != nil {
		return err
	}
	http, err := env.StartHTTP(config.DefaultActorHTTPListen, svc.Ready)
	if err != nil {
		return err
	}
	defer http.Stop()
	stopReload, err := env.StartReloader(daemon.ReloadNodes(svc))
	if err != nil {
		return err
	}
	defer stopReload()
	log.Info("ami-actor started", zap.Int("nodes", len(cfg.Nodes)), zap.String("http", http.Addr().String()))
	runErr := svc.Run(ctx)
	nc.Close()
	log.Info("ami-actor stopped")
	return runErr
}
