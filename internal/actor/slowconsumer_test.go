package actor

import (
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap/zaptest"

	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
)

// TestSlowConsumerCounted makes a subscription of the connection a slow
// consumer with a real nats-server and checks that the report is counted,
// that the dropped messages are read from the subscription, and that other
// async errors still reach the handler that was installed before.
func TestSlowConsumerCounted(t *testing.T) {
	ns := testenv.StartNATS(t, testenv.NoJetStream())
	prevErrs := make(chan error, 16)
	nc := testenv.Connect(t, ns.ClientURL(), nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
		prevErrs <- err
	}))
	pub := testenv.Connect(t, ns.ClientURL())

	m := metrics.New()
	d, err := newDropCounter(m, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := newDropCounter(m, zaptest.NewLogger(t)); err == nil {
		t.Fatal("a second drop counter on one registry was accepted")
	}
	reported := make(chan struct{}, 16)
	d.testHookReported = func() { reported <- struct{}{} }
	d.install(nc)

	// A channel of one never read: the first message fills it, the next
	// nine are dropped by nats.go.
	ch := make(chan *nats.Msg, 1)
	sub, err := nc.ChanSubscribe("req.slow", ch)
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if err := pub.Publish("req.slow", []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil { // every message has reached nc
		t.Fatal(err)
	}
	select {
	case <-reported:
	case <-time.After(10 * time.Second):
		t.Fatal("no slow-consumer report")
	}
	if got := testutil.ToFloat64(d.reports); got != 1 {
		t.Errorf("%s = %v, want 1 (one streak)", metricSlowConsumers, got)
	}
	if got := testutil.ToFloat64(d); got != 9 {
		t.Errorf("%s = %v, want 9", metricRequestsDropped, got)
	}
	select {
	case err := <-prevErrs:
		t.Errorf("the slow consumer also reached the previous handler: %v", err)
	default:
	}

	// The count survives the subscription's end.
	if err := sub.Unsubscribe(); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(d); got != 9 {
		t.Errorf("%s after unsubscribe = %v, want 9", metricRequestsDropped, got)
	}

	other := errors.New("permissions violation")
	d.handle(nc, nil, other)
	if err := <-prevErrs; !errors.Is(err, other) {
		t.Errorf("previous handler got %v, want %v", err, other)
	}

	// Uninstalled: the previous handler is back for everything.
	d.uninstall(nc)
	sub2, err := nc.ChanSubscribe("req.slow2", make(chan *nats.Msg))
	if err != nil {
		t.Fatal(err)
	}
	defer sub2.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := pub.Publish("req.slow2", []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := pub.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-prevErrs:
		if !errors.Is(err, nats.ErrSlowConsumer) {
			t.Errorf("previous handler got %v, want a slow consumer", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the previous handler was not restored")
	}
	if got := testutil.ToFloat64(d.reports); got != 1 {
		t.Errorf("%s = %v after uninstall, want still 1", metricSlowConsumers, got)
	}
}
