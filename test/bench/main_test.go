package bench

import (
	"os"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	// Every simulator, NATS server, ingest service and subprocess a
	// benchmark starts is stopped by its cleanup; goleak checks that none of
	// their goroutines outlives it.
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		removeBinaries()
		os.Exit(code)
	}))
}
