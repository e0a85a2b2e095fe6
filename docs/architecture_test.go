// Package docs holds the check that docs/architecture.md matches the code.
package docs

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const module = "github.com/amibus/amibus/"

// documented reads the package table of architecture.md: package path ->
// the amibus packages it imports, as the table lists them.
func documented(t *testing.T) map[string][]string {
	t.Helper()
	raw, err := os.ReadFile("architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	table := map[string][]string{}
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "| `pkg/") && !strings.HasPrefix(line, "| `internal/") && !strings.HasPrefix(line, "| `cmd/") {
			continue
		}
		cols := strings.Split(line, "|")
		if len(cols) != 5 {
			t.Fatalf("package table row without three columns: %s", line)
		}
		pkg := strings.Trim(strings.TrimSpace(cols[1]), "`")
		var imports []string
		for _, f := range strings.Fields(cols[3]) {
			if f != "-" {
				imports = append(imports, strings.Trim(f, "`"))
			}
		}
		if _, dup := table[pkg]; dup {
			t.Errorf("%s is in the table twice", pkg)
		}
		table[pkg] = imports
	}
	return table
}

// listed asks go list for every package of the module but the test suites
// (test/...) and this one: package path -> its amibus imports.
func listed(t *testing.T) map[string][]string {
	t.Helper()
	cmd := exec.Command("go", "list", "-e", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", "./...")
	cmd.Dir = ".."
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string][]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		fs := strings.Fields(line)
		path, ok := strings.CutPrefix(fs[0], module)
		if !ok || strings.HasPrefix(path, "test/") || path == "docs" {
			continue
		}
		var imports []string
		for _, imp := range fs[1:] {
			if p, ok := strings.CutPrefix(imp, module); ok {
				imports = append(imports, p)
			}
		}
		pkgs[path] = imports
	}
	return pkgs
}

// TestPackageTableMatchesGoList: the package table of architecture.md
// lists exactly the module's packages, each with exactly the amibus
// packages it imports.
func TestPackageTableMatchesGoList(t *testing.T) {
	doc, code := documented(t), listed(t)
	if len(code) == 0 {
		t.Fatal("go list found no package")
	}
	for pkg, imports := range code {
		dimports, ok := doc[pkg]
		if !ok {
			t.Errorf("%s is missing from the package table of docs/architecture.md", pkg)
			continue
		}
		slices.Sort(imports)
		slices.Sort(dimports)
		if !slices.Equal(imports, dimports) {
			t.Errorf("docs/architecture.md says %s imports %v; it imports %v", pkg, dimports, imports)
		}
	}
	for pkg := range doc {
		if _, ok := code[pkg]; !ok {
			t.Errorf("docs/architecture.md lists %s, which go list does not know", pkg)
		}
	}
}

// TestMainsAreWiring: every main stays short wiring of its internal/
// package (internal/daemon and a service, internal/simcmd, internal/demo):
// under 80 lines each.
func TestMainsAreWiring(t *testing.T) {
	files, err := filepath.Glob("../cmd/*/main.go")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 5 {
		t.Fatalf("found only %v", files)
	}
	for _, f := range files {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if n := strings.Count(string(raw), "\n"); n >= 80 {
			t.Errorf("%s has %d lines; a main only wires (put the code in a package under internal/)", f, n)
		}
	}
}
