package chartcheck

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	kjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

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
