package daemon

import (
	"context"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/testenv"
)

func TestEmbeddedServesJetStream(t *testing.T) {
	e, err := StartEmbedded("127.0.0.1:0", t.TempDir(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	nc, err := ConnectNATS(e.ClientURL(), config.NATS{}, "test", zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js := testenv.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := js.AccountInfo(ctx); err != nil {
		t.Fatalf("JetStream not enabled on the embedded server: %v", err)
	}
}

func TestEmbeddedBadListen(t *testing.T) {
	for _, l := range []string{"nonsense", "127.0.0.1:notaport"} {
		if _, err := StartEmbedded(l, t.TempDir(), time.Second); err == nil {
			t.Errorf("StartEmbedded(%q) succeeded", l)
		}
	}
}
