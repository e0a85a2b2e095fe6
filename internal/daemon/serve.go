package daemon

import (
	"context"

	"go.uber.org/zap"
)

// Service is a binary's long-lived component as its main serves it.
type Service interface {
	// Ready answers /readyz (after the NATS connections' own check).
	Ready() error
	// Run works until ctx ends, then stops gracefully (docs/architecture.md,
	// "Lifecycle").
	Run(ctx context.Context) error
}

// Serve serves svc until ctx ends: the HTTP endpoints on http.listen
// (defaultListen if unset), configuration reloads through apply, and the
// "<binary> started" line (with fields and the HTTP address) and
// "<binary> stopped". HTTP stops only after svc.Run has returned, so that
// /metrics is served through the drain; what the main opened before
// (NATS connections, the embedded server) it closes after Serve returns.
func (e *Env) Serve(ctx context.Context, svc Service, defaultListen string, apply ApplyFunc, fields ...zap.Field) error {
	http, err := e.StartHTTP(defaultListen, svc.Ready)
	if err != nil {
		return err
	}
	defer http.Stop()
	stopReload, err := e.StartReloader(apply)
	if err != nil {
		return err
	}
	defer stopReload()
	e.Log.Info(e.Binary+" started", append(fields, zap.String("http", http.Addr().String()))...)
	defer e.Log.Info(e.Binary + " stopped")
	return svc.Run(ctx)
}
