// Command ami-actor runs AMI actions requested over NATS on the configured
// PBXs and replies exactly once to each request. See README.md.
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

	"go.uber.org/zap"

	"github.com/amibus/amibus/pkg/command"
	"github.com/amibus/amibus/pkg/config"
	"github.com/amibus/amibus/pkg/daemon"
	"github.com/amibus/amibus/pkg/httpserver"
	"github.com/amibus/amibus/pkg/natsconn"
	"github.com/amibus/amibus/pkg/session"
	"github.com/amibus/amibus/pkg/sessionconf"
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

func serve(env *daemon.Env) error {
	cfg, log, m := env.Config, env.Log, env.Metrics
	ctx, stop := daemon.SignalContext(log, os.Exit)
	defer stop()

	url := cfg.NATS.URL
	if url == "" {
		// No URL: the NATS server that ami-ingest embeds by default.
		url = "nats://" + cfg.NATS.Embedded.Listen
	}
	name := cfg.NATS.Name
	if name == "" {
		name = "ami-actor"
	}
	nc, err := natsconn.Connect(url, cfg.NATS, name, log)
	if err != nil {
		return err
	}
	defer nc.Close()

	// An answer is read whole up to max_answer_bytes, so big Command outputs
	// and lists fit; a header is at least 8 wire bytes, so the header cap
	// follows from the byte cap.
	pool := session.NewPool(append(sessionconf.Common(cfg.Session),
		session.WithInstance(session.ProcessInstance()),
		session.WithMetrics(m),
		session.WithLogger(log),
		session.WithDialLimiter(session.NewDialLimiter(cfg.Session.MaxConcurrentDials)),
		session.WithMaxPending(cfg.Actor.MaxPending),
		session.WithReaderLimits(cfg.Actor.MaxAnswerBytes, cfg.Actor.MaxAnswerBytes/8),
		session.WithAnswerLimits(cfg.Actor.MaxAnswerBytes, cfg.Actor.MaxListEvents),
	)...)
	nodes := make(command.Nodes, len(cfg.Nodes))
	for _, n := range cfg.Nodes {
		opts, err := sessionconf.Node(cfg, n, sessionconf.Actor)
		if err != nil {
			pool.Close()
			return err
		}
		s, err := pool.Add(n.Name, n.Address, opts...)
		if err != nil {
			pool.Close()
			return fmt.Errorf("node %s: %w", n.Name, err)
		}
		nodes[n.Name] = s
	}
	defer pool.Close() // after the command server has answered everything

	policy, err := command.NewPolicy(cfg.Actor.Allow, cfg.Actor.Deny)
	if err != nil {
		return err
	}
	srv, err := command.New(nc, nodes,
		command.WithSubjectPrefix(cfg.NATS.SubjectPrefix),
		command.WithQueueGroup(cfg.Actor.QueueGroup),
		command.WithTimeouts(time.Duration(cfg.Actor.DefaultTimeoutMS)*time.Millisecond,
			time.Duration(cfg.Actor.MaxTimeoutMS)*time.Millisecond),
		command.WithPolicy(policy),
		command.WithMetrics(m),
		command.WithLogger(log),
		// Each node's session caps its own pending actions; this caps the
		// process as a whole at the same total.
		command.WithMaxInflight(max(1, cfg.Actor.MaxPending*len(cfg.Nodes))),
		command.WithMaxRequestBytes(cfg.Actor.MaxRequestBytes),
	)
	if err != nil {
		return err
	}

	listen := cfg.HTTP.Listen
	if listen == "" {
		listen = config.DefaultActorHTTPListen
	}
	ready := func() error {
		if !nc.IsConnected() {
			return errors.New("nats: not connected")
		}
		return nil
	}
	hs := httpserver.New(listen, m.Registry, ready, log)
	if err := hs.Start(); err != nil {
		return err
	}
	httpCtx, httpStop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := hs.Run(httpCtx); err != nil {
			log.Error("http server", zap.Error(err))
		}
	}()
	log.Info("ami-actor started", zap.Int("nodes", len(cfg.Nodes)), zap.String("http", hs.Addr().String()))
	runErr := srv.Run(ctx)
	httpStop()
	wg.Wait()
	log.Info("ami-actor stopped")
	return runErr
}
