package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/lifecycle"
	"github.com/amibus/amibus/internal/testenv"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// client keeps no idle connections, so no client goroutine outlives a test.
var httpClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

func get(t *testing.T, method, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(body)
}

// startHTTP runs a server on a free port and returns its base URL and a
// stop function that cancels Run and returns its error.
func startHTTP(t *testing.T, s *HTTPServer) (string, func() error) {
	t.Helper()
	if err := s.Start(); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return "http://" + s.Addr().String(), testenv.Go(t, "HTTPServer.Run", s.Run)
}

func TestEndpoints(t *testing.T) {
	reg := prometheus.NewRegistry()
	events := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "ami_events_received_total", Help: "h"}, []string{"node"})
	reg.MustRegister(events)
	events.WithLabelValues("pbx1").Add(42)

	var notReady atomic.Pointer[error]
	ready := func() error {
		if p := notReady.Load(); p != nil {
			return *p
		}
		return nil
	}
	s := NewHTTPServer("127.0.0.1:0", reg, ready, zap.NewNop())
	base, stop := startHTTP(t, s)

	if code, body := get(t, "GET", base+"/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz = %d %q", code, body)
	}
	if code, body := get(t, "GET", base+"/readyz"); code != 200 || body != "ok\n" {
		t.Errorf("/readyz ready = %d %q", code, body)
	}
	reason := errors.New("nats: not connected")
	notReady.Store(&reason)
	if code, body := get(t, "GET", base+"/readyz"); code != 503 || body != "nats: not connected\n" {
		t.Errorf("/readyz not ready = %d %q", code, body)
	}
	long := errors.New(strings.Repeat("x", 5000))
	notReady.Store(&long)
	if code, body := get(t, "GET", base+"/readyz"); code != 503 || len(body) != maxReasonBytes+1 {
		t.Errorf("/readyz long reason = %d, %d bytes", code, len(body))
	}
	notReady.Store(nil)
	if code, _ := get(t, "GET", base+"/readyz"); code != 200 {
		t.Errorf("/readyz ready again = %d", code)
	}

	code, body := get(t, "GET", base+"/metrics")
	if code != 200 || !strings.Contains(body, `ami_events_received_total{node="pbx1"} 42`) {
		t.Errorf("/metrics = %d:\n%s", code, body)
	}
	if code, _ := get(t, "HEAD", base+"/healthz"); code != 200 {
		t.Errorf("HEAD /healthz = %d", code)
	}
	if code, _ := get(t, "POST", base+"/healthz"); code != http.StatusMethodNotAllowed {
		t.Errorf("POST /healthz = %d, want 405", code)
	}
	if code, _ := get(t, "GET", base+"/nope"); code != 404 {
		t.Errorf("/nope = %d, want 404", code)
	}

	if err := stop(); err != nil {
		t.Fatalf("Run returned %v after cancel, want nil", err)
	}
	if _, err := httpClient.Get(base + "/healthz"); err == nil {
		t.Error("server still answering after Run returned")
	}
}

func TestNilReadyIsReady(t *testing.T) {
	s := NewHTTPServer("127.0.0.1:0", prometheus.NewRegistry(), nil, nil)
	base, _ := startHTTP(t, s)
	if code, _ := get(t, "GET", base+"/readyz"); code != 200 {
		t.Errorf("/readyz with nil ready = %d", code)
	}
}

func TestStartFailsFast(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, addr := range []string{busy.Addr().String(), "127.0.0.1:notaport", "256.0.0.1:80"} {
		s := NewHTTPServer(addr, prometheus.NewRegistry(), nil, nil)
		err := s.Start()
		if err == nil || !strings.HasPrefix(err.Error(), "http listen "+addr+": ") {
			t.Errorf("Start(%q) = %v", addr, err)
		}
		// Run on an unbindable address returns the same error at once.
		if err := s.Run(context.Background()); err == nil {
			t.Errorf("Run(%q) = nil", addr)
		}
	}
}

func TestRunTwiceAndStartTwice(t *testing.T) {
	s := NewHTTPServer("127.0.0.1:0", prometheus.NewRegistry(), nil, nil)
	base, _ := startHTTP(t, s)
	// An answer means the first Run is serving.
	if code, _ := get(t, "GET", base+"/healthz"); code != 200 {
		t.Fatalf("/healthz = %d", code)
	}
	if err := s.Start(); !errors.Is(err, lifecycle.ErrStarted) {
		t.Errorf("second Start = %v", err)
	}
	if err := s.Run(context.Background()); !errors.Is(err, lifecycle.ErrStarted) {
		t.Errorf("second Run = %v", err)
	}
}

// TestShutdownWaitsForRequest: Run returns only after a request in
// progress has been answered.
func TestShutdownWaitsForRequest(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	ready := func() error {
		close(entered)
		<-release
		return nil
	}
	s := NewHTTPServer("127.0.0.1:0", prometheus.NewRegistry(), ready, nil)
	shuttingDown := make(chan struct{})
	s.srv.RegisterOnShutdown(func() { close(shuttingDown) })
	base, stop := startHTTP(t, s)
	got := make(chan int, 1)
	go func() {
		resp, err := httpClient.Get(base + "/readyz")
		if err != nil {
			got <- 0
			return
		}
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	<-shuttingDown
	select {
	case err := <-stopped:
		t.Fatalf("Run returned (%v) with a request in progress", err)
	default:
	}
	close(release)
	if err := <-stopped; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if code := <-got; code != 200 {
		t.Fatalf("request in progress got %d, want 200", code)
	}
}
