package layout

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// load is the module's import graph as `go list` reports it.
func load(t *testing.T) (module string, pkgs []Package) {
	t.Helper()
	out, err := exec.Command("go", "list", "-m").Output()
	if err != nil {
		t.Fatalf("go list -m: %v", err)
	}
	module = strings.TrimSpace(string(out))
	// -e: a package that does not build is still listed with its imports.
	cmd := exec.Command("go", "list", "-e", "-json=ImportPath,Name,Standard,Imports,Deps", module+"/...")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err = cmd.Output()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, stderr.String())
	}
	dec := json.NewDecoder(bytes.NewReader(out))
	for {
		var p Package
		if err := dec.Decode(&p); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		pkgs = append(pkgs, p)
	}
	return module, pkgs
}

// TestImportRules checks the module's own import graph.
func TestImportRules(t *testing.T) {
	module, pkgs := load(t)
	// The rules must have something to read: a graph without these would
	// pass vacuously.
	for _, want := range []string{"pkg/amiwire", "pkg/amisim", "pkg/publish", "cmd/ami-ingest", "cmd/ami-actor", "internal/testenv"} {
		if !slices.ContainsFunc(pkgs, func(p Package) bool { return p.ImportPath == module+"/"+want && len(p.Imports) > 0 }) {
			t.Fatalf("go list did not report %s with its imports", want)
		}
	}
	for _, v := range Check(module, pkgs) {
		t.Error(v)
	}
}

// TestCheckCatchesBrokenRules feeds the checker a made-up graph that keeps
// every rule, then breaks each rule in turn.
func TestCheckCatchesBrokenRules(t *testing.T) {
	const mod = "example.com/ami"
	good := func() []Package {
		return []Package{
			{ImportPath: mod + "/pkg/amiwire", Name: "amiwire", Imports: []string{"bufio"}},
			{ImportPath: mod + "/pkg/amisim", Name: "amisim", Imports: []string{"net", "go.uber.org/zap"}},
			{ImportPath: mod + "/pkg/session", Name: "session", Imports: []string{mod + "/pkg/amiwire"}},
			{ImportPath: mod + "/pkg/publish", Name: "publish", Imports: []string{mod + "/internal/eventq"},
				Deps: []string{mod + "/internal/eventq", mod + "/pkg/amiwire"}},
			{ImportPath: mod + "/internal/eventq", Name: "eventq", Imports: []string{mod + "/pkg/amiwire"}},
			{ImportPath: mod + "/internal/testenv", Name: "testenv", Imports: []string{"testing", mod + "/pkg/amisim"}},
			{ImportPath: mod + "/cmd/ami-ingest", Name: "main",
				Imports: []string{"flag", "os", "go.uber.org/zap", mod + "/internal/eventq", mod + "/pkg/session"}},
			{ImportPath: "fmt", Name: "fmt", Standard: true},
			{ImportPath: "other.org/utils", Name: "utils"}, // not ours
		}
	}
	if v := Check(mod, good()); len(v) != 0 {
		t.Fatalf("a graph that keeps the rules: %v", v)
	}
	set := func(pkgs []Package, path string, f func(*Package)) []Package {
		for i := range pkgs {
			if pkgs[i].ImportPath == mod+"/"+path {
				f(&pkgs[i])
				return pkgs
			}
		}
		t.Fatalf("no %s", path)
		return nil
	}
	addImport := func(path, imp string) []Package {
		return set(good(), path, func(p *Package) { p.Imports = append(p.Imports, imp) })
	}
	cases := []struct {
		name string
		pkgs []Package
		pkg  string
		rule string
	}{
		{"amiwire imports amibus", addImport("pkg/amiwire", mod+"/internal/eventq"), "pkg/amiwire", RuleStandalone},
		{"amisim imports amibus", addImport("pkg/amisim", mod+"/pkg/amiwire"), "pkg/amisim", RuleStandalone},
		{"amisim imports testenv", addImport("pkg/amisim", mod+"/internal/testenv"), "pkg/amisim", RuleStandalone},
		{"publish reaches session", set(good(), "pkg/publish", func(p *Package) {
			p.Deps = append(p.Deps, mod+"/pkg/session")
		}), "pkg/publish", RuleNoSession},
		{"a main imports a third-party package", addImport("cmd/ami-ingest", "github.com/nats-io/nats.go/jetstream"), "cmd/ami-ingest", RuleWiring},
		{"a main imports another main", addImport("cmd/ami-ingest", mod+"/cmd/amisim"), "cmd/ami-ingest", RuleWiring},
		{"a main imports test code", addImport("cmd/ami-ingest", mod+"/test/integration"), "cmd/ami-ingest", RuleWiring},
		{"a main imports testenv", addImport("cmd/ami-ingest", mod+"/internal/testenv"), "cmd/ami-ingest", RuleWiring},
		{"a utils package", append(good(), Package{ImportPath: mod + "/internal/utils", Name: "utils"}), "internal/utils", RuleName},
		{"a common package", append(good(), Package{ImportPath: mod + "/pkg/common", Name: "common"}), "pkg/common", RuleName},
		{"non-test code imports testenv", addImport("internal/eventq", mod+"/internal/testenv"), "internal/eventq", RuleTestenv},
		{"testenv imports more of amibus", addImport("internal/testenv", mod+"/pkg/session"), "internal/testenv", RuleTestenv},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got := Check(mod, c.pkgs)
			if !slices.ContainsFunc(got, func(v Violation) bool { return v.Package == c.pkg && v.Rule == c.rule }) {
				t.Fatalf("want a %q violation of %s, got %v", c.rule, c.pkg, got)
			}
		})
	}
}
