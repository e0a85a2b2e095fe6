package daemon

// The operational HTTP endpoints of the binaries: /metrics (Prometheus),
// /healthz (the process is alive) and /readyz (the process can do its job).

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/amibus/amibus/internal/lifecycle"
)

// Bounds of the server. Scrapes and probes are small and infrequent; the
// caps keep a misbehaving client from holding memory or connections.
const (
	readHeaderTimeout = 5 * time.Second
	readTimeout       = 10 * time.Second
	writeTimeout      = 30 * time.Second // a large /metrics page on a busy host
	idleTimeout       = 60 * time.Second
	maxHeaderBytes    = 16 << 10
	// metricsInFlight caps concurrent scrapes; more get 503 from promhttp.
	metricsInFlight = 4
	// maxReasonBytes caps the /readyz body.
	maxReasonBytes = 1024
	// HTTPShutdownTimeout is how long Run waits for requests in progress once
	// its context ends, before closing their connections.
	HTTPShutdownTimeout = 5 * time.Second
)

// HTTPServer serves /metrics, /healthz and /readyz on one address.
type HTTPServer struct {
	listen string
	logger *zap.Logger
	srv    *http.Server

	mu  sync.Mutex
	ln  net.Listener
	run lifecycle.Once
}

// NewHTTPServer prepares a server on listen (host:port; port 0 picks a free one)
// serving reg at /metrics and ready at /readyz. ready may be nil (always
// ready); its error text is sent to the prober, so it must not hold a
// secret. Nothing is bound until Start or Run.
func NewHTTPServer(listen string, reg *prometheus.Registry, ready func() error, logger *zap.Logger) *HTTPServer {
	if logger == nil {
		logger = zap.NewNop()
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{
		ErrorLog:            zap.NewStdLog(logger.With(zap.String("handler", "metrics"))),
		ErrorHandling:       promhttp.ContinueOnError,
		MaxRequestsInFlight: metricsInFlight,
		Timeout:             writeTimeout - time.Second,
	}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		text(w, http.StatusOK, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if ready != nil {
			if err := ready(); err != nil {
				reason := err.Error()
				if len(reason) > maxReasonBytes {
					reason = reason[:maxReasonBytes]
				}
				text(w, http.StatusServiceUnavailable, reason)
				return
			}
		}
		text(w, http.StatusOK, "ok")
	})
	// Connection-level errors (TLS probes, resets) are noise for an
	// operator: debug level only.
	errLog, err := zap.NewStdLogAt(logger.With(zap.String("component", "http")), zapcore.DebugLevel)
	if err != nil {
		errLog = zap.NewStdLog(zap.NewNop())
	}
	return &HTTPServer{
		listen: listen,
		logger: logger,
		srv: &http.Server{
			Handler:           mux,
			ReadHeaderTimeout: readHeaderTimeout,
			ReadTimeout:       readTimeout,
			WriteTimeout:      writeTimeout,
			IdleTimeout:       idleTimeout,
			MaxHeaderBytes:    maxHeaderBytes,
			ErrorLog:          errLog,
		},
	}
}

func text(w http.ResponseWriter, code int, body string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_, _ = w.Write([]byte(body + "\n"))
}

// Start binds the listening socket, so that a bad or busy address fails
// at start-up, before the rest of the process starts.
func (s *HTTPServer) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return fmt.Errorf("http server: Start: %w", lifecycle.ErrStarted)
	}
	ln, err := net.Listen("tcp", s.listen)
	if err != nil {
		return fmt.Errorf("http listen %s: %w", s.listen, err)
	}
	s.ln = ln
	return nil
}

// Addr returns the bound address (the port chosen for port 0), or nil
// before Start.
func (s *HTTPServer) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Run serves until ctx ends, then shuts down: it stops accepting, lets
// requests in progress finish for up to HTTPShutdownTimeout, closes the rest,
// and returns once the server has stopped. It binds first if Start was not
// called. It returns nil after a shutdown requested by ctx, or the error
// that stopped serving.
func (s *HTTPServer) Run(ctx context.Context) error {
	if err := s.run.Start("http server: Run"); err != nil {
		return err
	}
	s.mu.Lock()
	started := s.ln != nil
	s.mu.Unlock()
	if !started {
		if err := s.Start(); err != nil {
			return err
		}
	}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	s.logger.Info("http listening", zap.Stringer("addr", ln.Addr()))

	served := make(chan error, 1)
	go func() { served <- s.srv.Serve(ln) }()

	select {
	case err := <-served:
		// Serve never returns nil, nor ErrServerClosed here: only this
		// function shuts down. Close ends the connections still served.
		_ = s.srv.Close()
		return fmt.Errorf("http serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), HTTPShutdownTimeout)
	defer cancel()
	err := s.srv.Shutdown(sctx)
	if err != nil {
		_ = s.srv.Close()
	}
	if serr := <-served; !errors.Is(serr, http.ErrServerClosed) {
		return fmt.Errorf("http serve: %w", serr)
	}
	if err != nil {
		return fmt.Errorf("http shutdown: %w", err)
	}
	return nil
}

// Endpoints is an HTTPServer serving in the background, started by
// Env.StartHTTP; its owner ends it with Stop.
type Endpoints struct {
	srv    *HTTPServer
	cancel context.CancelFunc
	done   chan struct{}
}

// StartHTTP binds the endpoints on http.listen (defaultListen if unset),
// serving the process's metrics and ready at /readyz, and serves them in a
// goroutine until Stop. A bad or busy address fails here, at start-up.
func (e *Env) StartHTTP(defaultListen string, ready func() error) (*Endpoints, error) {
	// NATS first: a service's own answer ("stream not created yet") would
	// hide the cause (credentials refused ...).
	both := func() error {
		if err := e.NATSReady(); err != nil {
			return err
		}
		if ready != nil {
			return ready()
		}
		return nil
	}
	srv := NewHTTPServer(e.Config.HTTP.ListenOr(defaultListen), e.Metrics.Registry, both, e.Log)
	if err := srv.Start(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	ep := &Endpoints{srv: srv, cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(ep.done)
		if err := srv.Run(ctx); err != nil {
			e.Log.Error("http server", zap.Error(err))
		}
	}()
	return ep, nil
}

// Addr is the bound address.
func (p *Endpoints) Addr() net.Addr { return p.srv.Addr() }

// Stop shuts the endpoints down (see HTTPServer.Run) and waits until they
// have stopped. It may be called more than once.
func (p *Endpoints) Stop() {
	p.cancel()
	<-p.done
}
