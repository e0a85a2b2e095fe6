package ownership

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
)

// fakeJS satisfies jetstream.JetStream for New's argument checks; New does
// no I/O, so none of its methods is called.
type fakeJS struct{ jetstream.JetStream }

func TestNewChecksArguments(t *testing.T) {
	acq := WithAcquire(func(string) {})
	rel := WithRelease(func(context.Context, string) {})
	ok := []Option{acq, rel}
	for _, tc := range []struct {
		name     string
		js       jetstream.JetStream
		instance string
		nodes    []string
		opts     []Option
		err      error
		msg      string
	}{
		{"nil js", nil, "a", []string{"n"}, ok, ErrInvalidOption, "nil JetStream"},
		{"empty instance", fakeJS{}, "", []string{"n"}, ok, ErrInvalidName, "instance is empty"},
		{"instance with dot", fakeJS{}, "a.b", []string{"n"}, ok, ErrInvalidName, `instance "a.b" has character '.'`},
		{"long instance", fakeJS{}, strings.Repeat("x", 129), []string{"n"}, ok, ErrInvalidName, "longer than 128"},
		{"no nodes", fakeJS{}, "a", nil, ok, ErrInvalidName, "no nodes"},
		{"node with wildcard", fakeJS{}, "a", []string{"n1", "n*"}, ok, ErrInvalidName, `nodes[1] "n*"`},
		{"repeated node", fakeJS{}, "a", []string{"n1", "n2", "n1"}, ok, ErrInvalidName, `nodes[2] "n1" is repeated`},
		{"no callbacks", fakeJS{}, "a", []string{"n"}, nil, ErrInvalidOption, "WithAcquire and WithRelease are required"},
		{"no release", fakeJS{}, "a", []string{"n"}, []Option{acq}, ErrInvalidOption, "required"},
		{"ttl too short", fakeJS{}, "a", []string{"n"}, append(ok, WithTTL(500*time.Millisecond)), ErrInvalidOption, "below the minimum"},
		{"bad bucket", fakeJS{}, "a", []string{"n"}, append(ok, WithBucket("a b")), ErrInvalidName, "bucket"},
		{"step 0", fakeJS{}, "a", []string{"n"}, append(ok, WithStep(0)), ErrInvalidOption, "step 0"},
		{"replicas 6", fakeJS{}, "a", []string{"n"}, append(ok, WithReplicas(6)), ErrInvalidOption, "replicas 6"},
		{"renew not positive", fakeJS{}, "a", []string{"n"}, append(ok, WithRenewInterval(0)), ErrInvalidOption, "renew interval"},
		{"margin not below ttl", fakeJS{}, "a", []string{"n"}, append(ok, WithTTL(2*time.Second), WithSafetyMargin(2*time.Second)), ErrInvalidOption, "must be below ttl"},
		{"renew too slow for margin", fakeJS{}, "a", []string{"n"}, append(ok, WithTTL(10*time.Second), WithRenewInterval(5*time.Second)), ErrInvalidOption, "renew interval 5s must be below"},
		{"nil logger", fakeJS{}, "a", []string{"n"}, append(ok, WithLogger(nil)), ErrInvalidOption, "nil logger"},
		{"drain timeout", fakeJS{}, "a", []string{"n"}, append(ok, WithDrainTimeout(-time.Second)), ErrInvalidOption, "drain timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, err := New(tc.js, tc.instance, tc.nodes, tc.opts...)
			if !errors.Is(err, tc.err) || !strings.Contains(err.Error(), tc.msg) {
				t.Fatalf("New = %v, %v; want %v containing %q", m, err, tc.err, tc.msg)
			}
		})
	}
}

func TestNewDefaults(t *testing.T) {
	m, err := New(fakeJS{}, "a", []string{"n2", "n1"}, WithAcquire(func(string) {}), WithRelease(func(context.Context, string) {}))
	if err != nil {
		t.Fatal(err)
	}
	c := m.cfg
	if c.bucket != "ami_owners" || c.ttl != 10*time.Second || c.renew != c.ttl/3 || c.margin != c.ttl/2 || c.step != 2 || c.replicas != 1 {
		t.Errorf("defaults: %+v", c)
	}
	if m.nodes[0] != "n1" || m.nodes[1] != "n2" {
		t.Errorf("nodes not sorted: %v", m.nodes)
	}
	kc := m.bucketConfig()
	if kc.TTL != c.ttl || kc.LimitMarkerTTL <= 0 || kc.Storage != jetstream.FileStorage || kc.History != 1 {
		t.Errorf("bucket config %+v", kc)
	}
}

func TestNewRegistersMetricsOnce(t *testing.T) {
	reg := prometheus.NewRegistry()
	opts := []Option{WithAcquire(func(string) {}), WithRelease(func(context.Context, string) {}), WithRegisterer(reg)}
	if _, err := New(fakeJS{}, "a", []string{"n"}, opts...); err != nil {
		t.Fatal(err)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, mf := range mfs {
		names[mf.GetName()] = true
	}
	for _, want := range []string{"ami_ownership_nodes_owned", "ami_ownership_acquired_total", "ami_ownership_lease_lost_total", "ami_ownership_kv_errors_total"} {
		if !names[want] {
			t.Errorf("metric %s not registered; have %v", want, names)
		}
	}
	// A second Manager on the same registry is a configuration mistake.
	if _, err := New(fakeJS{}, "b", []string{"n"}, opts...); err == nil {
		t.Error("second New on the same registry succeeded")
	}
}
