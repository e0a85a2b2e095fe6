package integration

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// natsServerPkg is built into the image from the module cache: it is a
// dependency of this module (the embedded server), so the version is the
// one go.mod pins.
const natsServerPkg = "github.com/nats-io/nats-server/v2"

// binaries are the image's programs, each at /<name>.
var binaries = []string{"nats-server", "amisim", "ami-ingest", "ami-actor", "ami-state"}

// dockerfile is the image: the static binaries on an empty base, run as an
// unprivileged user like the shipped image (Dockerfile at the repository
// root). nats-server containers run as root instead (cluster.go), because
// JetStream needs a writable store and scratch has no writable directory.
const dockerfile = `FROM scratch
COPY nats-server amisim ami-ingest ami-actor ami-state /
USER 65532:65532
`

// buildImage builds the binaries and the image, and returns the
// image's tag. The build context holds only the binaries and the
// Dockerfile.
func buildImage(ctx context.Context, p *testcontainers.DockerProvider) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	dir, err := os.MkdirTemp("", "amibus-it-image-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)

	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("go tool not found: %w", err)
	}
	args := []string{"build", "-trimpath", "-ldflags=-s -w", "-o", dir + string(filepath.Separator),
		"./cmd/amisim", "./cmd/ami-ingest", "./cmd/ami-actor", "./cmd/ami-state", natsServerPkg}
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	for _, b := range binaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			return "", fmt.Errorf("binary %s not built: %w", b, err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "Dockerfile"), []byte(dockerfile), 0o644); err != nil {
		return "", err
	}
	built := time.Since(start)

	tag := fmt.Sprintf("it-%d", time.Now().UnixNano())
	var log bytes.Buffer
	ref, err := p.BuildImage(ctx, &testcontainers.ContainerRequest{FromDockerfile: testcontainers.FromDockerfile{
		Context:        dir,
		Repo:           "amibus-it",
		Tag:            tag,
		BuildLogWriter: &log,
	}})
	if err != nil {
		return "", fmt.Errorf("docker build: %w\n%s", err, log.String())
	}
	fmt.Fprintf(os.Stderr, "integration: binaries built in %v, image %s in %v\n",
		built.Round(time.Millisecond), ref, (time.Since(start) - built).Round(time.Millisecond))
	return ref, nil
}

// removeImage deletes the suite's image (there is no reaper to do it).
func removeImage(ctx context.Context, p *testcontainers.DockerProvider, ref string) error {
	_, err := p.Client().ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	return err
}

// moduleRoot is the directory of the go.mod holding this package: the tests
// run in test/integration, two levels below it.
func moduleRoot() (string, error) {
	dir, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		return "", err
	}
	mod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("module root not found from the test's directory: %w", err)
	}
	if !bytes.Contains(mod, []byte("module github.com/amibus/amibus")) {
		return "", fmt.Errorf("%s/go.mod is not amibus's", dir)
	}
	return dir, nil
}
