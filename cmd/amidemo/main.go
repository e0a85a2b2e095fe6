// Command amidemo runs the whole amibus pipeline on one machine for `make run`:
// a simulated PBX fleet with live calls (amisim), ami-ingest with its embedded
// NATS server, ami-actor and ami-state, then prints a one-line live status until Ctrl-C.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/amibus/amibus/internal/demo"
)

func main() {
	var o demo.Options
	flag.StringVar(&o.Bin, "bin", "bin", "directory holding amisim, ami-ingest, ami-actor and ami-state")
	flag.IntVar(&o.Nodes, "nodes", 3, "simulated PBXs")
	flag.Float64Var(&o.CallsPerSecond, "calls-per-second", 2, "simulated calls per second per PBX")
	flag.StringVar(&o.DataDir, "data-dir", "data", "JetStream storage of the embedded NATS server")
	flag.IntVar(&o.AMIPort, "ami-port", 15038, "first simulated PBX port")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := demo.Run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "amidemo:", err)
		os.Exit(1)
	}
}
