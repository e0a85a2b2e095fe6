// Package daemon is the process plumbing that ami-ingest and ami-actor share,
// so that their mains only wire parts:
//
//   - Main: flags, loading the configuration, the non-blocking logger,
//     metrics, signal handling and exit codes;
//   - NATS: client options from the configuration (auth, TLS, reconnect
//     policy), connection names, the embedded nats-server of the zero-config
//     default, and ResetDialer, which aborts a socket with its unsent bytes;
//   - HTTP: the /metrics, /healthz and /readyz endpoints (HTTPServer), run
//     in the background by Env.StartHTTP;
//   - sessions: AMI session options from the configuration, per role
//     (SessionOptions, NodeSessionOptions).
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/logging"
	"github.com/amibus/amibus/internal/metrics"
)

// Exit codes of the binaries.
const (
	ExitOK     = 0
	ExitFailed = 1
	ExitUsage  = 2 // bad flags or configuration
)

// Env is a started process: its configuration, logger and metrics.
type Env struct {
	Binary  string
	Config  *config.Config
	Log     *zap.Logger
	Metrics *metrics.Metrics
	// ConfigPath is the --config file; WatchConfig is --watch-config.
	ConfigPath  string
	WatchConfig bool
	sink        *logging.Sink
	// levelFlag is --log-level, which overrides log.level, also in a
	// reloaded file.
	levelFlag string

	natsMu sync.Mutex
	nats   []natsConn // made by ConnectNATS, for readiness
}

// Setup parses args, loads and validates the configuration file and starts
// the logger. Errors are meant for stderr as they are: they name the field
// at fault and never hold a secret. extra registers binary-specific flags.
func Setup(binary string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*Env, error) {
	fs := flag.NewFlagSet(binary, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (YAML), shared by ami-ingest and ami-actor")
	level := fs.String("log-level", "", "debug, info, warn or error (default: log.level of the file, else info)")
	watch := fs.Bool("watch-config", false, "reload the configuration when its file changes (as on SIGHUP), e.g. a Kubernetes ConfigMap update")
	if extra != nil {
		extra(fs)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *path == "" {
		return nil, errors.New("--config: missing (a YAML file; see config.example.yaml)")
	}
	cfg, err := config.LoadFile(*path)
	if err != nil {
		return nil, err
	}
	if *level != "" {
		cfg.Log.Level = *level
	}
	m := metrics.New(metrics.ForBinary(binary))
	log, sink, err := logging.New(cfg.Log.Level, logging.WithDropCounter(m.LogLinesDropped), logging.WithWriter(stderr))
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	log = log.With(zap.String("binary", binary))
	return &Env{Binary: binary, Config: cfg, Log: log, Metrics: m, sink: sink,
		ConfigPath: *path, WatchConfig: *watch, levelFlag: *level}, nil
}

// Main runs a binary: Setup, then serve with a context that the first
// SIGINT or SIGTERM cancels (a second exits at once), then the log flush.
// It returns the process exit code: ExitUsage for bad flags or
// configuration (printed to stderr), ExitFailed when serve fails (logged),
// else ExitOK. extra registers binary-specific flags, as for Setup.
func Main(binary string, args []string, stderr io.Writer, extra func(*flag.FlagSet),
	serve func(ctx context.Context, env *Env) error) int {
	env, err := Setup(binary, args, stderr, extra)
	if errors.Is(err, flag.ErrHelp) {
		return ExitOK
	}
	if err != nil {
		fmt.Fprintln(stderr, binary+":", err)
		return ExitUsage
	}
	defer env.Close()
	ctx, stop := SignalContext(env.Log, os.Exit)
	defer stop()
	if err := serve(ctx, env); err != nil {
		env.Log.Error(binary+" failed", zap.Error(err))
		return ExitFailed
	}
	return ExitOK
}

// Close flushes the log, giving a stuck stderr at most two seconds.
func (e *Env) Close() {
	e.natsMu.Lock()
	for _, c := range e.nats {
		c.h.stop()
	}
	e.natsMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = e.sink.Close(ctx)
}

// SignalContext returns a context cancelled by the first SIGINT or SIGTERM,
// which starts a graceful shutdown; a second signal exits at once with
// ExitFailed. stop releases the signal handler and waits for its goroutine.
func SignalContext(log *zap.Logger, exit func(int)) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		select {
		case sig := <-ch:
			log.Info("signal received, shutting down gracefully (send again to exit at once)", zap.String("signal", sig.String()))
			cancel()
		case <-done:
			return
		}
		select {
		case sig := <-ch:
			log.Warn("second signal, exiting at once", zap.String("signal", sig.String()))
			exit(ExitFailed)
		case <-done:
		}
	}()
	return ctx, func() {
		signal.Stop(ch)
		close(done)
		<-exited
		cancel()
	}
}
