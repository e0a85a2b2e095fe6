// Package simcmd is the amisim command (cmd/amisim): its flags, the
// simulated fleet run until the context ends, and the --control HTTP
// endpoint that lets a test observe and steer the fleet.
package simcmd

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/amibus/amibus/pkg/amisim"
)

// options are the command line.
type options struct {
	listen          string
	nodes           int
	users           string
	callsPerSecond  float64
	trafficMix      string
	mix             map[amisim.Scenario]int // parsed --traffic-mix; nil: transcript 07's call only
	trafficSeed     uint64
	eventsPerSecond float64
	callDuration    time.Duration
	legacyCommand   bool
	tlsCert, tlsKey string
	nodePrefix      string
	logLevel        string
	ctl             controlFlags // control.go
}

func parse(args []string, stderr io.Writer) (options, error) {
	var o options
	fs := flag.NewFlagSet("amisim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.listen, "listen", "127.0.0.1:5038", "host:port of the first node (port 0: ephemeral ports)")
	fs.IntVar(&o.nodes, "nodes", 1, "number of nodes, on consecutive ports")
	fs.StringVar(&o.users, "users", "ami:amisecret,ami2:amisecret2", "AMI users, user:secret,...")
	fs.Float64Var(&o.callsPerSecond, "calls-per-second", 0, "live calls started per second per node (about 85 events each); < 0: as fast as possible (transcript 07's call only)")
	fs.StringVar(&o.trafficMix, "traffic-mix", "", "make the calls a seeded random mix of scenarios, weighted: \"basic=4,queue=3,...\" or \"default\" (template, basic, failed, hold, blind, attended, local, masquerade, queue, pause); empty: transcript 07's call only")
	fs.Uint64Var(&o.trafficSeed, "traffic-seed", 1, "seed of the --traffic-mix choices; node i uses seed+i-1")
	fs.Float64Var(&o.eventsPerSecond, "events-per-second", 0, "raw event flood per node; < 0: as fast as possible")
	fs.DurationVar(&o.callDuration, "call-duration", 0, "length of a simulated call (default 3.007s, as recorded)")
	fs.BoolVar(&o.legacyCommand, "legacy-command", false, "answer Command in the Asterisk 13 format")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "serve TLS with this certificate (PEM)")
	fs.StringVar(&o.tlsKey, "tls-key", "", "private key of --tls-cert (PEM)")
	fs.StringVar(&o.nodePrefix, "node-prefix", "pbx", "node names are this prefix and 1..n")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	o.ctl.register(fs)
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.nodes < 1 {
		return o, fmt.Errorf("--nodes: %d, want at least 1", o.nodes)
	}
	if o.trafficMix != "" {
		mix := o.trafficMix
		if mix == "default" {
			mix = ""
		}
		var err error
		if o.mix, err = amisim.ParseMix(mix); err != nil {
			return o, fmt.Errorf("--traffic-mix: %w", err)
		}
		if o.callsPerSecond < 0 {
			return o, errors.New("--traffic-mix needs --calls-per-second > 0")
		}
	}
	if (o.tlsCert == "") != (o.tlsKey == "") {
		return o, errors.New("--tls-cert and --tls-key go together")
	}
	return o, nil
}

// parseUsers reads user:secret,... The error never contains a secret.
func parseUsers(s string) (map[string]string, error) {
	users := map[string]string{}
	for i, pair := range strings.Split(s, ",") {
		u, secret, ok := strings.Cut(strings.TrimSpace(pair), ":")
		if !ok || u == "" || secret == "" {
			return nil, fmt.Errorf("--users: entry %d is not user:secret", i+1)
		}
		users[u] = secret
	}
	return users, nil
}

// Run runs amisim with the command-line args until ctx ends, logs to
// stderr and returns the exit code. onReady, when set, is called once the
// nodes listen.
func Run(ctx context.Context, args []string, stderr io.Writer, onReady func(*amisim.Fleet)) int {
	o, err := parse(args, stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintln(stderr, "amisim:", err)
		return 2
	}
	var level zapcore.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		fmt.Fprintln(stderr, "amisim: --log-level:", err)
		return 2
	}
	log := zap.New(zapcore.NewCore(zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig()),
		zapcore.Lock(zapcore.AddSync(stderr)), level))
	defer func() { _ = log.Sync() }()
	users, err := parseUsers(o.users)
	if err != nil {
		log.Error("bad flag", zap.Error(err))
		return 2
	}
	cfg := amisim.Config{
		Addr:          o.listen,
		Users:         users,
		LegacyCommand: o.legacyCommand,
		CallDuration:  o.callDuration,
		Node:          o.nodePrefix,
		Logger:        log.Named("node"),
		// A demo fleet runs for hours: record nothing unless asked.
		RecordLimit: o.ctl.recordLimit,
	}
	if o.tlsCert != "" {
		cert, err := tls.LoadX509KeyPair(o.tlsCert, o.tlsKey)
		if err != nil {
			log.Error("cannot load the TLS certificate", zap.String("cert", o.tlsCert), zap.Error(err))
			return 1
		}
		cfg.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	fleet, err := amisim.StartFleet(o.nodes, cfg)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		return 1
	}
	userNames := make([]string, 0, len(users))
	for u := range users {
		userNames = append(userNames, u)
	}
	sort.Strings(userNames)
	addrs := make([]string, 0, o.nodes)
	for _, s := range fleet.Servers() {
		addrs = append(addrs, s.Node()+"="+s.Addr())
	}
	log.Info("amisim ready", zap.Strings("nodes", addrs), zap.Strings("users", userNames),
		zap.Float64("calls_per_second", o.callsPerSecond), zap.String("traffic_mix", o.trafficMix),
		zap.Uint64("traffic_seed", o.trafficSeed), zap.Float64("events_per_second", o.eventsPerSecond),
		zap.Bool("tls", cfg.TLSConfig != nil), zap.Bool("legacy_command", o.legacyCommand))

	var wg sync.WaitGroup
	for i, s := range fleet.Servers() {
		switch {
		case o.callsPerSecond != 0 && o.mix != nil:
			if err := s.StartMixedTraffic(amisim.Traffic{CallsPerSecond: o.callsPerSecond,
				Seed: o.trafficSeed + uint64(i), Mix: o.mix}); err != nil {
				log.Error("cannot start traffic", zap.Error(err))
			}
		case o.callsPerSecond != 0:
			s.StartTraffic(o.callsPerSecond)
		}
		if o.eventsPerSecond != 0 {
			rate := o.eventsPerSecond
			if rate < 0 {
				rate = 0
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.EmitEvents(math.MaxInt, rate) // until the node closes
			}()
		}
	}
	stopControl, err := o.ctl.start(fleet, userNames, log)
	if err != nil {
		log.Error("cannot start", zap.Error(err))
		_ = fleet.Close()
		wg.Wait()
		return 1
	}
	if onReady != nil {
		onReady(fleet)
	}
	<-ctx.Done()
	log.Info("stopping")
	stopControl()
	_ = fleet.Close()
	wg.Wait()
	log.Info("stopped")
	return 0
}
