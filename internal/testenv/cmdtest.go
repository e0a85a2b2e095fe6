package testenv

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/amibus/amibus/pkg/amisim"
)

// What the tests of the mains (cmd/ami-actor, cmd/ami-ingest, cmd/ami-state)
// share: each runs its binary as a subprocess, and each promises the same
// behaviour on SIGTERM and on a configuration reload.

// WriteFile writes content to a file name in a fresh test directory and
// returns its path.
func WriteFile(t testing.TB, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// Terminate sends SIGTERM and fails the test unless the process exits 0
// within WaitLimit: every main ends cleanly on SIGTERM.
func (p *Proc) Terminate() {
	p.t.Helper()
	p.Signal(syscall.SIGTERM)
	if code, _ := p.Wait(WaitLimit); code != 0 {
		p.t.Fatalf("exit %d after SIGTERM; stderr:\n%s", code, p.Tail(100))
	}
}

// RunWatching runs bin on a ConfigMap holding content, with
// --watch-config, so that the test can update the ConfigMap.
func RunWatching(t *testing.T, bin, content string) (*Proc, *ConfigMap) {
	t.Helper()
	cm := NewConfigMap(t, content)
	return Run(t, bin, nil, nil, "--config", cm.Path(), "--watch-config"), cm
}

// BadReload is a configuration file that a running main must not apply,
// and the field that its log line must name.
type BadReload struct{ File, Field string }

// CheckBadReloads sends the main p, which watches cm, an invalid file as a
// ConfigMap update, then a valid file that changes a setting that cannot
// change while running, written in place and announced by SIGHUP: the
// first is logged as invalid and the second as refused, each naming its
// field. What the main still runs is for the caller to check.
func CheckBadReloads(t *testing.T, p *Proc, cm *ConfigMap, invalid, refused BadReload) {
	t.Helper()
	cm.Update(invalid.File)
	if line := p.WaitLine("invalid file, nothing changed"); !strings.Contains(line, `"field":"`+invalid.Field+`"`) {
		t.Fatalf("invalid reload line does not name %s: %s", invalid.Field, line)
	}
	if err := os.WriteFile(cm.Path(), []byte(refused.File), 0o600); err != nil {
		t.Fatal(err)
	}
	p.Signal(syscall.SIGHUP)
	if line := p.WaitLine("configuration reload refused"); !strings.Contains(line, refused.Field) {
		t.Fatalf("refusal does not name %s: %s", refused.Field, line)
	}
}

// CheckReloadsCounted checks that the /metrics of a main at httpAddr
// counts one reload of each result: one applied, one invalid, one refused
// (what a test that went through CheckBadReloads after one good update
// expects).
func CheckReloadsCounted(t *testing.T, httpAddr string) {
	t.Helper()
	m := Scrape(t, httpAddr)
	for _, result := range []string{"applied", "invalid", "refused"} {
		if got := m["ami_config_reloads_total{result="+result+"}"]; got != 1 {
			t.Errorf("ami_config_reloads_total{result=%s} = %v, want 1", result, got)
		}
	}
}

// ReloadPBXs are three simulated PBXs, pbxa, pbxb and pbxc, for a test of
// a main that talks to PBXs following a change of its nodes: the
// configuration files name some of them, NATS at one URL, the HTTP server
// at HTTPAddr, and sessions that reconnect fast.
type ReloadPBXs struct {
	A, B, C  *amisim.Server
	HTTPAddr string
	natsURL  string
}

// StartReloadPBXs starts the three PBXs, for a main using NATS at natsURL.
func StartReloadPBXs(t *testing.T, natsURL string) *ReloadPBXs {
	t.Helper()
	return &ReloadPBXs{
		A:        StartSim(t, amisim.Config{Node: "pbxa"}),
		B:        StartSim(t, amisim.Config{Node: "pbxb"}),
		C:        StartSim(t, amisim.Config{Node: "pbxc"}),
		HTTPAddr: DeadAddr(t),
		natsURL:  natsURL,
	}
}

// Config is a configuration file whose nodes are nodes.
func (r *ReloadPBXs) Config(nodes ...*amisim.Server) string {
	return r.config(r.HTTPAddr, nodes)
}

func (r *ReloadPBXs) config(httpAddr string, nodes []*amisim.Server) string {
	var b strings.Builder
	fmt.Fprintf(&b, "nats: {url: %s}\nhttp: {listen: %q}\nsession: {backoff_initial: 10ms, backoff_max: 100ms}\nnodes:\n", r.natsURL, httpAddr)
	for _, s := range nodes {
		fmt.Fprintf(&b, "  - {name: %s, address: %q, username: ami, secret: amisecret}\n", s.Node(), s.Addr())
	}
	return b.String()
}

// CheckBadReloads is CheckBadReloads with the main running on A and B:
// the invalid file adds a node without an address, the refused one moves
// http.listen.
func (r *ReloadPBXs) CheckBadReloads(t *testing.T, p *Proc, cm *ConfigMap) {
	t.Helper()
	CheckBadReloads(t, p, cm,
		BadReload{r.Config(r.A, r.B) + "  - {name: pbxd, username: ami, secret: x}\n", "nodes[2].address"},
		BadReload{r.config("127.0.0.1:1", []*amisim.Server{r.A, r.B}), "http.listen"})
}
