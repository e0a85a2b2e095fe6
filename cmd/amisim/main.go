// Command amisim runs simulated Asterisk AMI endpoints (pkg/amisim): one or
// more nodes on consecutive ports, with optional live call traffic and a
// raw event flood, until SIGINT or SIGTERM. Its flags, run and control
// endpoint are internal/simcmd.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/amibus/amibus/internal/simcmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(simcmd.Run(ctx, os.Args[1:], os.Stderr, nil))
}
