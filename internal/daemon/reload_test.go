package daemon

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/config"
	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
)

// TestReloaderFollowsSecretFiles: with --watch-config, a node's secret
// file changing (a Secret volume update) reloads, and so does a secret
// file appearing after the configuration that names it (first invalid,
// then applied), the configuration file itself unchanged meanwhile.
func TestReloaderFollowsSecretFiles(t *testing.T) {
	cfgDir, secDir := t.TempDir(), t.TempDir()
	write := func(path, s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	node := func(name string) string {
		return "  - {name: " + name + ", address: \"127.0.0.1:1\", username: ami, secret_file: " + filepath.Join(secDir, name+".secret") + "}\n"
	}
	path := filepath.Join(cfgDir, "ami.yaml")
	write(filepath.Join(secDir, "pbx1.secret"), "one")
	write(path, "nodes:\n"+node("pbx1"))
	env, next := watchReloads(t, path)

	write(filepath.Join(secDir, "pbx1.secret"), "two")
	if c := next("the secret changed"); c.Nodes[0].Secret.Reveal() != "two" {
		t.Fatal("reloaded with the old secret")
	}
	write(path, "nodes:\n"+node("pbx1")+node("pbx2"))
	// No signal for a reload that applies nothing: its count.
	testenv.Poll(t, "a file naming a missing secret file found invalid", func() bool {
		return testutil.ToFloat64(env.Metrics.ConfigReloads.WithLabelValues(ReloadInvalid)) >= 1
	})
	write(filepath.Join(secDir, "pbx2.secret"), "three")
	if c := next("the missing secret file appeared"); len(c.Nodes) != 2 || c.Nodes[1].Secret.Reveal() != "three" {
		t.Fatalf("reloaded %d nodes", len(c.Nodes))
	}
}

// TestReloaderWatchesAddedSecretDirs: a node added by a reload whose
// secret file lives in a directory of its own (a Secret volume of its own)
// has that secret followed too.
func TestReloaderWatchesAddedSecretDirs(t *testing.T) {
	cfgDir, secDir, newDir := t.TempDir(), t.TempDir(), t.TempDir()
	write := func(path, s string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	node := func(name, dir string) string {
		return "  - {name: " + name + ", address: \"127.0.0.1:1\", username: ami, secret_file: " + filepath.Join(dir, name+".secret") + "}\n"
	}
	path := filepath.Join(cfgDir, "ami.yaml")
	write(filepath.Join(secDir, "pbx1.secret"), "one")
	write(filepath.Join(newDir, "pbx2.secret"), "two")
	write(path, "nodes:\n"+node("pbx1", secDir))
	_, next := watchReloads(t, path)
	write(path, "nodes:\n"+node("pbx1", secDir)+node("pbx2", newDir))
	if c := next("pbx2 added"); len(c.Nodes) != 2 {
		t.Fatalf("reloaded %d nodes", len(c.Nodes))
	}
	write(filepath.Join(newDir, "pbx2.secret"), "rotated")
	if c := next("the added node's secret changed"); c.Nodes[1].Secret.Reveal() != "rotated" {
		t.Fatal("reloaded with the old secret")
	}
}

// watchReloads starts a reloader with --watch-config on the file at path
// (stopped at the test's end) and returns a wait for its next
// configuration, failing the test if none comes within 10 s.
func watchReloads(t *testing.T, path string) (*Env, func(what string) *config.Config) {
	t.Helper()
	cfg, err := config.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	env := &Env{Binary: "test", Config: cfg, Log: zap.NewNop(), Metrics: metrics.New(), ConfigPath: path, WatchConfig: true}
	got := make(chan *config.Config, 4)
	stop, err := env.StartReloader(func(_ context.Context, next *config.Config) (bool, error) {
		got <- next
		return true, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return env, func(what string) *config.Config {
		t.Helper()
		select {
		case c := <-got:
			return c
		case <-time.After(10 * time.Second):
			t.Fatalf("no reload after %s", what)
			return nil
		}
	}
}
