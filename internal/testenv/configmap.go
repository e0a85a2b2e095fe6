package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// ConfigMap is a directory laid out as Kubernetes mounts a ConfigMap:
// ami.yaml -> ..data/ami.yaml, ..data -> ..<version>; Update writes a new
// version directory and swaps the ..data symlink by a rename, so the file's
// own name never changes (what a config watcher must notice).
type ConfigMap struct {
	t   *testing.T
	dir string
	n   int
}

// NewConfigMap lays out a ConfigMap holding content in a test directory.
func NewConfigMap(t *testing.T, content string) *ConfigMap {
	t.Helper()
	m := &ConfigMap{t: t, dir: t.TempDir()}
	m.Update(content)
	if err := os.Symlink(filepath.Join("..data", "ami.yaml"), filepath.Join(m.dir, "ami.yaml")); err != nil {
		t.Fatal(err)
	}
	return m
}

// Path is the mounted file's path.
func (m *ConfigMap) Path() string { return filepath.Join(m.dir, "ami.yaml") }

// Update replaces the content as a ConfigMap update does.
func (m *ConfigMap) Update(content string) {
	m.t.Helper()
	m.n++
	version := fmt.Sprintf("..2026_12_03_%02d", m.n)
	if err := os.Mkdir(filepath.Join(m.dir, version), 0o755); err != nil {
		m.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(m.dir, version, "ami.yaml"), []byte(content), 0o600); err != nil {
		m.t.Fatal(err)
	}
	tmp := filepath.Join(m.dir, "..data_tmp")
	if err := os.Symlink(version, tmp); err != nil {
		m.t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(m.dir, "..data")); err != nil {
		m.t.Fatal(err)
	}
}
