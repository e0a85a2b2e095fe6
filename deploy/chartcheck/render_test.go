package chartcheck

import (
	"encoding/json"
	"errors"
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
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
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

// checkInventory fails the test unless r rendered exactly the objects want,
// each "apiVersion/Kind name", listed in sorted order.
func checkInventory(t *testing.T, r *rendered, want ...string) {
	t.Helper()
	if got := r.inventory(); got != strings.Join(want, ", ") {
		t.Errorf("rendered\n  %s\nwant\n  %s", got, strings.Join(want, ", "))
	}
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

// kinds is every kind the chart may render, with the type it must decode into.
// A kind not listed here fails the check: nothing is skipped silently.
var kinds = map[string]func() any{
	"apps/v1/Deployment":                      func() any { return &appsv1.Deployment{} },
	"apps/v1/StatefulSet":                     func() any { return &appsv1.StatefulSet{} },
	"v1/Service":                              func() any { return &corev1.Service{} },
	"v1/ConfigMap":                            func() any { return &corev1.ConfigMap{} },
	"v1/Secret":                               func() any { return &corev1.Secret{} },
	"v1/ServiceAccount":                       func() any { return &corev1.ServiceAccount{} },
	"policy/v1/PodDisruptionBudget":           func() any { return &policyv1.PodDisruptionBudget{} },
	"autoscaling/v2/HorizontalPodAutoscaler":  func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	"monitoring.coreos.com/v1/ServiceMonitor": func() any { return &serviceMonitor{} },
}

// serviceMonitor is the part of prometheus-operator's ServiceMonitor
// (monitoring.coreos.com/v1) that the chart uses, with the CRD's field names.
// The operator's Go module is not imported for one type; a field the chart adds
// must be added here, so that the strict decode still catches misspellings.
type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata"`
	Spec              struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector"`
		Endpoints []serviceMonitorEndpoint `json:"endpoints"`
	} `json:"spec"`
}

type serviceMonitorEndpoint struct {
	Port          string `json:"port"`
	Path          string `json:"path,omitempty"`
	Scheme        string `json:"scheme,omitempty"`
	Interval      string `json:"interval,omitempty"`
	ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
	HonorLabels   bool   `json:"honorLabels,omitempty"`
}

// decodeStrict decodes one YAML manifest into its API type, refusing duplicate
// keys, unknown fields and fields whose case differs from the API's (encoding/json
// alone would accept "containerport" for "containerPort").
func decodeStrict(doc []byte) (object, error) {
	j, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return object{}, fmt.Errorf("yaml: %w", err)
	}
	if string(j) == "null" {
		return object{}, errors.New("empty manifest")
	}
	var tm metav1.TypeMeta
	if err := json.Unmarshal(j, &tm); err != nil {
		return object{}, fmt.Errorf("type: %w", err)
	}
	kind := tm.APIVersion + "/" + tm.Kind
	newObj, ok := kinds[kind]
	if !ok {
		return object{}, fmt.Errorf("kind %q is not one the checker knows (%s)", kind, knownKinds())
	}
	v := newObj()
	strict, err := kjson.UnmarshalStrict(j, v, kjson.DisallowDuplicateFields, kjson.DisallowUnknownFields)
	if err != nil {
		return object{}, fmt.Errorf("%s: %w", kind, err)
	}
	if len(strict) > 0 {
		return object{}, fmt.Errorf("%s: %w", kind, errors.Join(strict...))
	}
	meta, ok := v.(metav1.Object)
	if !ok {
		return object{}, fmt.Errorf("%s: %T has no object metadata", kind, v)
	}
	if meta.GetName() == "" {
		return object{}, fmt.Errorf("%s: metadata.name is empty", kind)
	}
	return object{kind: kind, name: meta.GetName(), json: j, typed: v}, nil
}

func knownKinds() string {
	s := make([]string, 0, len(kinds))
	for k := range kinds {
		s = append(s, k)
	}
	sort.Strings(s)
	return strings.Join(s, ", ")
}

// TestDecodeStrictRefuses proves that the decoder the chart checks rely on fails
// on the mistakes it is there to catch.
func TestDecodeStrictRefuses(t *testing.T) {
	const good = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: x
spec:
  selector: {matchLabels: {a: b}}
  template:
    metadata: {labels: {a: b}}
    spec:
      containers:
        - name: c
          image: i
          ports: [{name: http, containerPort: 9090}]
`
	if _, err := decodeStrict([]byte(good)); err != nil {
		t.Fatalf("well-formed Deployment refused: %v", err)
	}
	cases := []struct {
		name, doc, want string
	}{
		{"misspelt field", strings.Replace(good, "containerPort", "containerPorts", 1), `unknown field "spec.template.spec.containers[0].ports[0].containerPorts"`},
		{"field in wrong case", strings.Replace(good, "containerPort", "containerport", 1), `unknown field`},
		{"field at wrong level", strings.Replace(good, "  selector:", "  replica: 2\n  selector:", 1), `unknown field "spec.replica"`},
		{"duplicate key", strings.Replace(good, "  name: x\n", "  name: x\n  name: y\n", 1), `already set`},
		{"wrong type", strings.Replace(good, "containerPort: 9090", "containerPort: http", 1), `cannot unmarshal`},
		{"unknown kind", strings.Replace(good, "kind: Deployment", "kind: Deploymnet", 1), `is not one the checker knows`},
		{"unknown ServiceMonitor field", "apiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\nmetadata: {name: x}\nspec:\n  endpoints: [{port: metrics, intervall: 30s}]\n", `unknown field "spec.endpoints[0].intervall"`},
		{"no name", "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n", `metadata.name is empty`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := decodeStrict([]byte(tc.doc))
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.doc)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}
