package publish

import (
	"context"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// downJS is a JetStream whose stream look-ups fail as while JetStream is
// unavailable.
type downJS struct{ jetstream.JetStream }

func (downJS) Stream(context.Context, string) (jetstream.Stream, error) {
	return nil, jetstream.ErrJetStreamNotEnabled
}

// TestStreamCheckFailuresCoalesced: while JetStream is unavailable every
// publish finds no stream and each check (about one a second) fails; the
// failures are one line per log interval with a count, not a line each.
func TestStreamCheckFailuresCoalesced(t *testing.T) {
	core, logs := observer.New(zapcore.DebugLevel)
	p := &Publisher{js: downJS{}}
	p.o.stream = &StreamConfig{Name: "AMI_EVENTS"}
	p.o.log = zap.New(core)
	checks := newStreamCheckLogs(p.o.log, DefaultLogInterval)
	for range 5 {
		p.checkStream(context.Background(), checks)
	}
	if n := logs.Len(); n != 1 {
		t.Fatalf("%d lines for 5 failed checks within one interval, want 1", n)
	}
	checks.stop()
	all := logs.All()
	if len(all) != 2 || fmt.Sprint(all[1].ContextMap()["count"]) != "4" || all[1].ContextMap()["error"] == nil {
		t.Fatalf("after stop: %d lines, last %v; want the remaining 4 counted with the error", len(all), all[len(all)-1].ContextMap())
	}
}
