// Package layout states the import rules that keep amibus's architecture
// readable from its import graph, and checks a graph against them. Its test
// checks the module's own graph (from `go list`), so `make test` fails when
// a rule is broken.
//
// The rules:
//   - pkg/amiwire and pkg/amisim import nothing of amibus: the wire format
//     and the simulator stand alone (other programs import them).
//   - pkg/publish depends on no AMI session code (pkg/session), directly or
//     not: publishing knows no socket.
//   - A main under cmd/ only wires: it imports the standard library, amibus
//     packages under internal/ and pkg/, and the few third-party packages its
//     row of mainImports allows (handles it passes around, such as the
//     logger); never another main, nothing under test/.
//   - No package is named for what it is not about (utils, common ...).
//   - internal/testenv is imported by tests only, and imports nothing of
//     amibus but pkg/amisim, so every package's tests can use it.
package layout

import (
	"fmt"
	"slices"
	"strings"
)

// Package is what the rules read of one package, as `go list -json`
// reports it.
type Package struct {
	ImportPath string
	Name       string
	Standard   bool
	// Imports and Deps are the direct and all dependencies of the
	// package's non-test code.
	Imports []string
	Deps    []string
}

// Violation is one broken rule.
type Violation struct {
	Package string // import path, relative to the module
	Rule    string // one of the Rule* constants
	Detail  string
}

func (v Violation) String() string { return v.Package + ": " + v.Rule + ": " + v.Detail }

// The rules, as Violation.Rule names them.
const (
	RuleStandalone = "imports nothing of amibus"
	RuleNoSession  = "depends on no AMI session code"
	RuleWiring     = "a main only wires"
	RuleName       = "no catch-all package name"
	RuleTestenv    = "internal/testenv only in tests"
)

// standalone packages import nothing of the module.
var standalone = []string{"pkg/amiwire", "pkg/amisim"}

// noSession packages must not depend on pkg/session.
var noSession = []string{"pkg/publish"}

// mainImports is, per main, the third-party packages it may import besides
// the standard library and amibus's internal/ and pkg/ packages. A main
// missing here may import none.
var mainImports = map[string][]string{
	"cmd/ami-ingest": {"go.uber.org/zap", "github.com/nats-io/nats.go"},
	"cmd/ami-actor":  {"go.uber.org/zap", "github.com/nats-io/nats.go"},
	// It hands its service a JetStream on the main connection and one on
	// the lease connection, and picks the bucket's storage.
	"cmd/ami-state": {"go.uber.org/zap", "github.com/nats-io/nats.go", "github.com/nats-io/nats.go/jetstream"},
	// cmd/amisim and cmd/amidemo import none: their code is internal/simcmd
	// and internal/demo.
}

// badNames are package names that say nothing of what a package does.
var badNames = []string{"util", "utils", "common", "helper", "helpers", "misc", "shared", "lib"}

const testenvPath = "internal/testenv"

// testenvMay is what internal/testenv may import of amibus.
var testenvMay = []string{"pkg/amisim"}

// Check returns every rule the packages of module break; pkgs may include
// packages of other modules and the standard library, which are skipped.
func Check(module string, pkgs []Package) []Violation {
	rel := func(path string) (string, bool) {
		if path == module {
			return ".", true
		}
		r, ok := strings.CutPrefix(path, module+"/")
		return r, ok
	}
	var out []Violation
	add := func(pkg, rule, format string, args ...any) {
		out = append(out, Violation{Package: pkg, Rule: rule, Detail: fmt.Sprintf(format, args...)})
	}
	for _, p := range pkgs {
		me, ok := rel(p.ImportPath)
		if !ok || p.Standard {
			continue
		}
		var own []string // what it imports of amibus, relative
		for _, imp := range p.Imports {
			if r, ok := rel(imp); ok {
				own = append(own, r)
			}
		}
		if slices.Contains(standalone, me) && len(own) > 0 {
			add(me, RuleStandalone, "imports %s", strings.Join(own, ", "))
		}
		if slices.Contains(noSession, me) && slices.Contains(p.Deps, module+"/pkg/session") {
			add(me, RuleNoSession, "depends on pkg/session")
		}
		if strings.HasPrefix(me, "cmd/") {
			for _, imp := range p.Imports {
				r, mine := rel(imp)
				switch {
				case mine && (strings.HasPrefix(r, "internal/") || strings.HasPrefix(r, "pkg/")) && r != testenvPath:
				case mine:
					add(me, RuleWiring, "imports %s (only internal/ and pkg/ packages)", r)
				case isStandard(imp), slices.Contains(mainImports[me], imp):
				default:
					add(me, RuleWiring, "imports %s (not in its row of mainImports)", imp)
				}
			}
		}
		last := me[strings.LastIndexByte(me, '/')+1:]
		if slices.Contains(badNames, p.Name) || slices.Contains(badNames, last) {
			add(me, RuleName, "package %s says nothing of what it does", p.Name)
		}
		if slices.Contains(own, testenvPath) {
			add(me, RuleTestenv, "non-test code imports %s", testenvPath)
		}
		if me == testenvPath {
			for _, r := range own {
				if !slices.Contains(testenvMay, r) {
					add(me, RuleTestenv, "imports %s: the tests of that package could not use it", r)
				}
			}
		}
	}
	return out
}

// isStandard tells a standard-library import path by its first element,
// which has no dot.
func isStandard(path string) bool {
	first, _, _ := strings.Cut(path, "/")
	return !strings.Contains(first, ".")
}
