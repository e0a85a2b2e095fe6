package integration

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/testcontainers/testcontainers-go"
)

// suite is what the tests share: the Docker provider and the image, made
// once by the first test that needs them.
var suite struct {
	once     sync.Once
	provider *testcontainers.DockerProvider
	noDocker error // no Docker engine answered: every test skips
	image    string
	err      error // the image could not be built: every test fails

	hostMu sync.Mutex
	host   string // where the containers' mapped ports answer
}

// setup returns the provider and the image, skipping the test when no
// Docker engine answers.
func setup(t *testing.T) (*testcontainers.DockerProvider, string) {
	t.Helper()
	if testing.Short() {
		t.Skip("container integration suite skipped in -short mode")
	}
	suite.once.Do(func() {
		p, err := testcontainers.NewDockerProvider()
		if err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			err = p.Health(ctx)
			cancel()
			if err != nil {
				_ = p.Close()
			}
		}
		if err != nil {
			suite.noDocker = err
			return
		}
		suite.provider = p
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		suite.image, suite.err = buildImage(ctx, p)
	})
	if suite.noDocker != nil {
		t.Skipf("docker not available: container integration suite skipped (%v)", suite.noDocker)
	}
	if suite.err != nil {
		t.Fatalf("building the suite's image: %v", suite.err)
	}
	return suite.provider, suite.image
}

// publishedHost returns the host on which the containers' mapped ports
// answer, trying port (a mapped port) on each candidate once.
//
// testcontainers guesses that host, and inside a container (as on this CI
// machine, where dockerd runs in the same container as the tests) it
// guesses the default gateway, which is not where dockerd publishes. So
// unless TESTCONTAINERS_HOST_OVERRIDE says where, the suite tries
// testcontainers' guess and then the loopback, and keeps the first that
// accepts a connection.
func publishedHost(ctx context.Context, p *testcontainers.DockerProvider, port string) (string, error) {
	suite.hostMu.Lock()
	defer suite.hostMu.Unlock()
	if suite.host != "" {
		return suite.host, nil
	}
	var candidates []string
	if h := os.Getenv("TESTCONTAINERS_HOST_OVERRIDE"); h != "" {
		candidates = []string{h}
	} else {
		if h, err := p.DaemonHost(ctx); err == nil {
			candidates = append(candidates, h)
		}
		candidates = append(candidates, "127.0.0.1")
	}
	var errs []error
	for _, h := range candidates {
		d := net.Dialer{Timeout: time.Second}
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(h, port))
		if err != nil {
			errs = append(errs, err)
			continue
		}
		conn.Close()
		suite.host = h
		return h, nil
	}
	return "", fmt.Errorf("no host answers on the mapped port %s: %w", port, errors.Join(errs...))
}
