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
// everything in flight and closes its AMI sessions (Service.Run), HTTP
// stops (/metrics is served through the drain), then the NATS connection
// closes, flushing the replies of the drain.
func serve(ctx context.Context, env *daemon.Env) error {
	cfg := env.Config
	nc, err := env.ConnectNATS(env.NATSURL(), "")
	if err != nil {
		return err
	}
	defer nc.Close()
	svc, err := actor.New(cfg, nc, env.Metrics, env.Log)
	if err != nil {
		return err
	}
	return env.Serve(ctx, svc, config.DefaultActorHTTPListen, daemon.ReloadNodes(svc), zap.Int("nodes", len(cfg.Nodes)))
}
