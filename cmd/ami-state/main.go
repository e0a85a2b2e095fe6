// Command ami-state keeps the live state of every PBX (channels, bridges,
// queues) in a JetStream KV bucket, rebuilt from the event stream, and
// answers whole-state and time-travel requests over NATS. See docs/state.md.
package main

import (
	"context"
	"os"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/daemon"
	"github.com/amibus/amibus/internal/state"
	"github.com/amibus/amibus/pkg/session"
)

func main() { os.Exit(daemon.Main("ami-state", os.Args[1:], os.Stderr, nil, serve)) }

// serve runs until ctx ends: the service stops reading, flushes once more
// and stops answering (Service.Run), then reloads and HTTP stop, then NATS
// closes.
func serve(ctx context.Context, env *daemon.Env) error {
	cfg := env.Config
	nc, err := env.ConnectNATS(env.NATSURL(), "")
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	storage := jetstream.FileStorage
	if cfg.State.Storage == "memory" {
		storage = jetstream.MemoryStorage
	}
	var ha *state.HA
	if cfg.State.HA.Enabled {
		// The leases on a connection of their own, pinging every TTL/4, as
		// ami-ingest's: a renewal never waits behind state writes.
		lc, err := env.ConnectLeases(env.NATSURL(), cfg.State.HA.TTL)
		if err != nil {
			return err
		}
		defer lc.Close()
		ljs, err := jetstream.New(lc)
		if err != nil {
			return err
		}
		ha = &state.HA{Leases: ljs, Instance: session.ProcessInstance(), Nodes: cfg.NodeNames(),
			Bucket: cfg.State.HA.Bucket, TTL: cfg.State.HA.TTL, Registerer: env.Metrics.Registry}
	}
	svc, err := state.New(nc, js, state.Config{
		Stream: cfg.Stream.Name, Prefix: cfg.NATS.SubjectPrefix,
		Bucket: cfg.State.Bucket, Replicas: cfg.State.Replicas, Storage: storage, History: cfg.State.History,
		FlushInterval: cfg.State.FlushInterval, MaxRequestBytes: cfg.State.MaxRequestBytes,
		MaxReplayEvents: cfg.State.MaxReplayEvents, Logger: env.Log, Metrics: state.NewMetrics(env.Metrics.Registry),
		HA: ha,
	})
	if err != nil {
		return err
	}
	return env.Serve(ctx, svc, config.DefaultStateHTTPListen, daemon.ReloadNodeList(cfg, config.BinaryState, svc),
		zap.String("bucket", cfg.State.Bucket))
}
