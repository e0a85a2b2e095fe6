// Package daemon holds what ami-ingest and ami-actor do alike as processes:
// flags, loading the configuration, the non-blocking logger, metrics, the
// HTTP endpoints and signal handling, so that the mains only wire.
package daemon

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/amibus/amibus/pkg/config"
	"github.com/amibus/amibus/pkg/logging"
	"github.com/amibus/amibus/pkg/metrics"
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
	sink    *logging.Sink
}

// Setup parses args, loads and validates the configuration file and starts
// the logger. Errors are meant for stderr as they are: they name the field
// at fault and never hold a secret. extra registers binary-specific flags.
func Setup(binary string, args []string, stderr io.Writer, extra func(*flag.FlagSet)) (*Env, error) {
	fs := flag.NewFlagSet(binary, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("config", "", "configuration file (YAML), shared by ami-ingest and ami-actor")
	level := fs.String("log-level", "", "debug, info, warn or error (default: log.level of the file, else info)")
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
	m := metrics.New()
	log, sink, err := logging.New(cfg.Log.Level, logging.WithDropCounter(m.LogLinesDropped), logging.WithWriter(stderr))
	if err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	log = log.With(zap.String("binary", binary))
	return &Env{Binary: binary, Config: cfg, Log: log, Metrics: m, sink: sink}, nil
}

// Close flushes the log, giving a stuck stderr at most two seconds.
func (e *Env) Close() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = e.sink.Close(ctx)
}

// SignalContext returns a context cancelled by the first SIGINT or SIGTERM,
// which starts a graceful shutdown; a second signal exits at once with
// ExitFailed. stop releases the signal handler.
func SignalContext(log *zap.Logger, exit func(int)) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 2)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
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
		cancel()
	}
}
