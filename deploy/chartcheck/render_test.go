package chartcheck

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/cli/values"
	"helm.sh/helm/v3/pkg/getter"
	"helm.sh/helm/v3/pkg/releaseutil"
)

// Paths are relative to this module's directory, where go test runs.
const (
	chartDir      = "../helm/amibus"
	releaseName   = "amibus"
	namespace     = "amibus-test"
	metricsSource = "../../internal/metrics/metrics.go"
	// stateMetricsSource declares ami-state's own metrics.
	stateMetricsSource = "../../internal/state/metrics.go"
)

// kubeVersion is the cluster version the chart is rendered for. Helm's library
// default (v1.20) is what a helm binary built without its release flags reports,
// not a cluster; the chart needs 1.25 or later.
var kubeVersion = &chartutil.KubeVersion{Version: "v1.31.0", Major: "1", Minor: "31"}

// serviceMonitorAPI is what `helm template --api-versions` passes for a cluster
// running prometheus-operator.
const serviceMonitorAPI = "monitoring.coreos.com/v1/ServiceMonitor"

// renderOpts mirrors the `helm template` flags the tests use.
type renderOpts struct {
	valueFiles  []string // -f, relative to this directory
	set         []string // --set
	apiVersions []string // --api-versions
	skipSchema  bool     // --skip-schema-validation
}

// rendered is one `helm template` run: its objects, strictly decoded, and NOTES.txt.
type rendered struct {
	objects []object
	notes   string
}

// object is one rendered manifest.
type object struct {
	source string // template path, from Helm's "# Source:" line
	kind   string // apiVersion/kind, e.g. "apps/v1/Deployment"
	name   string
	json   []byte // the manifest as JSON
	typed  any    // pointer to the Kubernetes API type (or serviceMonitor)
}

var sourceLine = regexp.MustCompile(`(?m)^# Source: (.+)$`)

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load chart: %v", err)
	}
	return c
}

// mergedValues reads the value files and --set strings as helm does.
func mergedValues(o renderOpts) (map[string]any, error) {
	opts := values.Options{ValueFiles: o.valueFiles, Values: o.set}
	return opts.MergeValues(getter.Providers{})
}

// renderChart is `helm template` through Helm's own install action in client-only
// mode. An error is a template failure (fail, required, values schema).
func renderChart(t *testing.T, o renderOpts) (*rendered, error) {
	t.Helper()
	vals, err := mergedValues(o)
	if err != nil {
		return nil, fmt.Errorf("values: %w", err)
	}
	inst := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
	inst.DryRun = true
	inst.DryRunOption = "client"
	inst.ClientOnly = true
	inst.Replace = true
	inst.ReleaseName = releaseName
	inst.Namespace = namespace
	inst.APIVersions = chartutil.VersionSet(o.apiVersions)
	inst.KubeVersion = kubeVersion
	inst.SkipSchemaValidation = o.skipSchema
	rel, err := inst.Run(loadChart(t), vals)
	if err != nil {
		return nil, err
	}
	if len(rel.Hooks) > 0 {
		t.Errorf("chart has %d hooks; the checks do not cover hooks", len(rel.Hooks))
	}
	r := &rendered{notes: rel.Info.Notes}
	docs := releaseutil.SplitManifests(rel.Manifest)
	keys := make([]string, 0, len(docs))
	for k := range docs {
		keys = append(keys, k)
	}
	sort.Sort(releaseutil.BySplitManifestsOrder(keys))
	for _, k := range keys {
		doc := docs[k]
		src := "?"
		if m := sourceLine.FindStringSubmatch(doc); m != nil {
			src = m[1]
		}
		obj, err := decodeStrict([]byte(doc))
		if err != nil {
			t.Errorf("%s: %v", src, err)
			continue
		}
		obj.source = src
		r.objects = append(r.objects, obj)
	}
	return r, nil
}

// mustRender renders and fails the test on a template error.
func mustRender(t *testing.T, o renderOpts) *rendered {
	t.Helper()
	r, err := renderChart(t, o)
	if err != nil {
		t.Fatalf("render %+v: %v", o, err)
	}
	return r
}

// find returns the objects of one kind ("apps/v1/Deployment").
func (r *rendered) find(kind string) []object {
	var out []object
	for _, o := range r.objects {
		if o.kind == kind {
			out = append(out, o)
		}
	}
	return out
}

// get returns the one object of a kind and name, failing the test if absent.
func get[T any](t *testing.T, r *rendered, kind, name string) T {
	t.Helper()
	for _, o := range r.objects {
		if o.kind == kind && o.name == name {
			v, ok := o.typed.(T)
			if !ok {
				t.Fatalf("%s %s decoded as %T", kind, name, o.typed)
			}
			return v
		}
	}
	t.Fatalf("no %s named %q; rendered: %s", kind, name, r.inventory())
	var zero T
	return zero
}

// inventory lists the rendered objects, for failure messages and for exact
// assertions on which objects a set of values produces.
func (r *rendered) inventory() string {
	s := make([]string, len(r.objects))
	for i, o := range r.objects {
		s[i] = o.kind + " " + o.name
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

// jsonString is the JSON text of a value, for failure messages.
func jsonString(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprintf("%v", v)
	}
	return string(b)
}
