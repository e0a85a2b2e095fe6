package chartcheck

import (
	"encoding/json"
	"fmt"
	"net"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
)

const (
	nonRootUID = 65532
	// secretFileMode is 0440: the Secret's files are readable by the pod's group.
	secretFileMode = 0o440
)

// binaries are the programs of the image and the port each listens on by default.
var binaries = map[string]int32{"ami-ingest": 9090, "ami-actor": 9091, "ami-state": 9092}

// envRef matches the ${VAR} expansion of the configuration file.
var envRef = regexp.MustCompile(`^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$`)

// workload is a Deployment or StatefulSet reduced to what the checks need.
type workload struct {
	kind, name string
	replicas   *int32
	selector   *metav1.LabelSelector
	template   corev1.PodTemplateSpec
}

// checkRendered applies the checks every rendering must pass, whatever the values:
// valid names and labels, selectors that select, the security context, probes on
// the program's port, configuration that parses and whose secret references
// resolve to mounted Secret keys or Secret-fed variables, and no secret value
// anywhere but in a Secret. existingSecret is the name given in the values, if any.
func checkRendered(t *testing.T, r *rendered, existingSecret string) {
	t.Helper()
	secrets := map[string]*corev1.Secret{}
	configMaps := map[string]*corev1.ConfigMap{}
	services := map[string]*corev1.Service{}
	var workloads []workload
	for _, o := range r.objects {
		checkMeta(t, o)
		switch v := o.typed.(type) {
		case *corev1.Secret:
			secrets[v.Name] = v
		case *corev1.ConfigMap:
			configMaps[v.Name] = v
		case *corev1.Service:
			services[v.Name] = v
		case *appsv1.Deployment:
			workloads = append(workloads, workload{"Deployment", v.Name, v.Spec.Replicas, v.Spec.Selector, v.Spec.Template})
		case *appsv1.StatefulSet:
			workloads = append(workloads, workload{"StatefulSet", v.Name, v.Spec.Replicas, v.Spec.Selector, v.Spec.Template})
		}
	}
	if existingSecret != "" {
		if _, ok := secrets[existingSecret]; ok {
			t.Errorf("the chart renders Secret %q although it was given as an existing secret", existingSecret)
		}
	}
	// The one Secret every reference must name.
	wantSecret := existingSecret
	if wantSecret == "" {
		for name := range secrets {
			if wantSecret != "" {
				t.Errorf("the chart renders more than one Secret: %s and %s", wantSecret, name)
			}
			wantSecret = name
		}
	}
	for _, w := range workloads {
		checkWorkload(t, w, configMaps, secrets, wantSecret, existingSecret != "")
	}
	// Every selector selects exactly the pods of one workload.
	selects := func(what string, sel *metav1.LabelSelector) *workload {
		t.Helper()
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil || s.Empty() {
			t.Errorf("%s: selector %s: empty or invalid (%v)", what, jsonString(sel), err)
			return nil
		}
		var hit []*workload
		for i := range workloads {
			if s.Matches(labels.Set(workloads[i].template.Labels)) {
				hit = append(hit, &workloads[i])
			}
		}
		if len(hit) != 1 {
			t.Errorf("%s: selector %s matches %d workloads, want 1", what, s, len(hit))
			return nil
		}
		return hit[0]
	}
	for _, s := range services {
		w := selects("Service "+s.Name, &metav1.LabelSelector{MatchLabels: s.Spec.Selector})
		if w == nil {
			continue
		}
		if !s.Spec.PublishNotReadyAddresses {
			t.Errorf("Service %s: publishNotReadyAddresses is false: metrics of a pod without NATS would not be scraped", s.Name)
		}
		for _, p := range s.Spec.Ports {
			if _, ok := containerPort(w.template.Spec.Containers[0], p.TargetPort); !ok {
				t.Errorf("Service %s port %s: targetPort %s is not a port of %s", s.Name, p.Name, p.TargetPort.String(), w.name)
			}
		}
	}
	for _, o := range r.find("policy/v1/PodDisruptionBudget") {
		p := o.typed.(*policyv1.PodDisruptionBudget)
		selects("PodDisruptionBudget "+p.Name, p.Spec.Selector)
		if p.Spec.MinAvailable == nil && p.Spec.MaxUnavailable == nil {
			t.Errorf("PodDisruptionBudget %s: neither minAvailable nor maxUnavailable", p.Name)
		}
	}
	for _, o := range r.find("autoscaling/v2/HorizontalPodAutoscaler") {
		checkHPA(t, o.typed.(*autoscalingv2.HorizontalPodAutoscaler), workloads)
	}
	for _, o := range r.find("monitoring.coreos.com/v1/ServiceMonitor") {
		checkServiceMonitor(t, o.typed.(*serviceMonitor), services)
	}
	checkNoSecretLeak(t, r, secrets)
}

// checkMeta checks names, labels and namespaces as the API server would.
func checkMeta(t *testing.T, o object) {
	t.Helper()
	m := o.typed.(metav1.Object)
	var errs []string
	if o.kind == "v1/Service" {
		errs = validation.IsDNS1035Label(m.GetName())
	} else {
		errs = validation.IsDNS1123Subdomain(m.GetName())
	}
	for _, e := range errs {
		t.Errorf("%s %s: name: %s", o.kind, m.GetName(), e)
	}
	if m.GetNamespace() == "" {
		t.Errorf("%s %s: no namespace", o.kind, m.GetName())
	}
	checkLabels(t, fmt.Sprintf("%s %s metadata.labels", o.kind, m.GetName()), m.GetLabels())
	if len(m.GetLabels()) == 0 {
		t.Errorf("%s %s: no labels", o.kind, m.GetName())
	}
}

func checkLabels(t *testing.T, what string, l map[string]string) {
	t.Helper()
	for k, v := range l {
		for _, e := range validation.IsQualifiedName(k) {
			t.Errorf("%s: key %q: %s", what, k, e)
		}
		for _, e := range validation.IsValidLabelValue(v) {
			t.Errorf("%s: %s=%q: %s", what, k, v, e)
		}
	}
}

// checkWorkload checks one program's pod: identity, security, probes, the
// configuration it reads and the secrets that configuration points at.
func checkWorkload(t *testing.T, w workload, configMaps map[string]*corev1.ConfigMap, secrets map[string]*corev1.Secret, wantSecret string, existing bool) {
	t.Helper()
	where := w.kind + " " + w.name
	sel, err := metav1.LabelSelectorAsSelector(w.selector)
	if err != nil || sel.Empty() {
		t.Errorf("%s: selector empty or invalid: %v", where, err)
	} else if !sel.Matches(labels.Set(w.template.Labels)) {
		t.Errorf("%s: selector %s does not match its pod labels %v", where, sel, w.template.Labels)
	}
	checkLabels(t, where+" pod labels", w.template.Labels)
	pod := w.template.Spec
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("%s: automountServiceAccountToken is not false", where)
	}
	psc := pod.SecurityContext
	switch {
	case psc == nil:
		t.Errorf("%s: no pod securityContext", where)
	default:
		if psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
			t.Errorf("%s: pod runAsNonRoot is not true", where)
		}
		if psc.RunAsUser == nil || *psc.RunAsUser != nonRootUID {
			t.Errorf("%s: pod runAsUser is not %d", where, nonRootUID)
		}
		if psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
			t.Errorf("%s: pod seccompProfile is not RuntimeDefault", where)
		}
	}
	if len(pod.Containers) != 1 || len(pod.InitContainers) != 0 {
		t.Fatalf("%s: %d containers and %d init containers, want exactly one program", where, len(pod.Containers), len(pod.InitContainers))
	}
	c := pod.Containers[0]
	where += " container " + c.Name
	if _, ok := binaries[c.Name]; !ok {
		t.Fatalf("%s: container is not one of the programs %v", where, binaries)
	}
	if !slices.Equal(c.Command, []string{"/" + c.Name}) {
		t.Errorf("%s: command %q, want [/%s]", where, c.Command, c.Name)
	}
	if c.Image == "" || strings.HasSuffix(c.Image, ":latest") || !strings.Contains(c.Image, ":") {
		t.Errorf("%s: image %q: want a pinned tag", where, c.Image)
	}
	checkContainerSecurity(t, where, c.SecurityContext)
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() || c.Resources.Limits.Memory().IsZero() {
		t.Errorf("%s: resources %s: want cpu and memory requests and a memory limit", where, jsonString(c.Resources))
	}
	// The HTTP port: one, named http, probed on the right paths.
	if len(c.Ports) != 1 || c.Ports[0].Name != "http" {
		t.Fatalf("%s: ports %s: want exactly one, named http", where, jsonString(c.Ports))
	}
	port := c.Ports[0].ContainerPort
	for _, p := range []struct {
		name, path string
		probe      *corev1.Probe
	}{{"liveness", "/healthz", c.LivenessProbe}, {"readiness", "/readyz", c.ReadinessProbe}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: no HTTP %s probe", where, p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s: %s probe path %q, want %q", where, p.name, p.probe.HTTPGet.Path, p.path)
		}
		if got, ok := containerPort(c, p.probe.HTTPGet.Port); !ok || got != port {
			t.Errorf("%s: %s probe port %s is not the HTTP port %d", where, p.name, p.probe.HTTPGet.Port.String(), port)
		}
	}
	// Volumes: every mount has its volume; ConfigMaps and Secrets exist and hold
	// the keys the pod reads.
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	mountOf := map[string]corev1.VolumeMount{}
	for _, m := range c.VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			t.Errorf("%s: volumeMount %s has no volume", where, m.Name)
			continue
		}
		mountOf[m.Name] = m
		if (v.ConfigMap != nil || v.Secret != nil) && !m.ReadOnly {
			t.Errorf("%s: volumeMount %s is not read-only", where, m.Name)
		}
	}
	// files maps each path the container can read from a Secret to its key.
	files := map[string]string{}
	for _, v := range pod.Volumes {
		if _, mounted := mountOf[v.Name]; !mounted {
			t.Errorf("%s: volume %s is not mounted", where, v.Name)
			continue
		}
		switch {
		case v.ConfigMap != nil:
			if _, ok := configMaps[v.ConfigMap.Name]; !ok {
				t.Errorf("%s: volume %s: ConfigMap %q is not rendered", where, v.Name, v.ConfigMap.Name)
			}
		case v.Secret != nil:
			checkSecretRef(t, where+" volume "+v.Name, secrets, wantSecret, existing, v.Secret.SecretName, nil)
			if v.Secret.DefaultMode == nil || *v.Secret.DefaultMode != secretFileMode {
				t.Errorf("%s: volume %s: defaultMode is not 0440", where, v.Name)
			}
			if len(v.Secret.Items) == 0 {
				// The chart's own Secret holds only what the configuration
				// reads, and mounting it whole keeps the pod template free
				// of the node list (a node added is a live reload). A
				// Secret of the user's may hold more: name the keys.
				if existing {
					t.Errorf("%s: volume %s mounts the whole existing Secret; want the keys the configuration reads", where, v.Name)
				} else if sec := secrets[v.Secret.SecretName]; sec != nil {
					for k := range sec.Data {
						files[path.Join(mountOf[v.Name].MountPath, k)] = k
					}
				}
			}
			for _, it := range v.Secret.Items {
				checkSecretRef(t, where+" volume "+v.Name, secrets, wantSecret, existing, v.Secret.SecretName, &it.Key)
				files[path.Join(mountOf[v.Name].MountPath, it.Path)] = it.Key
			}
		}
	}
	env := map[string]*corev1.EnvVarSource{}
	for _, e := range c.Env {
		env[e.Name] = e.ValueFrom
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := e.ValueFrom.SecretKeyRef
			checkSecretRef(t, where+" env "+e.Name, secrets, wantSecret, existing, ref.Name, &ref.Key)
		}
	}
	// The configuration file named by --config.
	if !(len(c.Args) == 2 || len(c.Args) == 3 && c.Args[2] == "--watch-config") || c.Args[0] != "--config" {
		t.Fatalf("%s: args %q, want [--config FILE] or [--config FILE --watch-config]", where, c.Args)
	}
	cfg, text := configOf(t, where, c.Args[1], pod.Volumes, mountOf, configMaps)
	if cfg == nil {
		return
	}
	host, p, err := net.SplitHostPort(cfg.HTTP.Listen)
	if err != nil || host != "0.0.0.0" || p != strconv.Itoa(int(port)) {
		t.Errorf("%s: http.listen %q, want 0.0.0.0:%d (the container port)", where, cfg.HTTP.Listen, port)
	}
	if cfg.NATS.URL == "" {
		t.Errorf("%s: nats.url is empty: the program would start an embedded NATS in the pod", where)
	}
	// Every secret in the configuration is a file from the mounted Secret or a
	// variable filled from the Secret, never a value.
	wantFile := func(what, p string) {
		t.Helper()
		if p == "" {
			return
		}
		if _, ok := files[p]; !ok {
			t.Errorf("%s: %s %q is not a mounted Secret key (mounted: %v)", where, what, p, files)
		}
	}
	wantEnv := func(what, v string) {
		t.Helper()
		if v == "" {
			return
		}
		m := envRef.FindStringSubmatch(v)
		if m == nil {
			t.Errorf("%s: %s holds a value, want a ${VAR} reference to the Secret", where, what)
			return
		}
		src := env[m[1]]
		if src == nil || src.SecretKeyRef == nil || src.SecretKeyRef.Name != wantSecret {
			t.Errorf("%s: %s references %s, which is not set from the Secret", where, what, v)
		}
	}
	wantEnv("nats.token", cfg.NATS.Token)
	wantEnv("nats.password", cfg.NATS.Password)
	wantFile("nats.creds_file", cfg.NATS.CredsFile)
	wantFile("nats.nkey_file", cfg.NATS.NKeyFile)
	wantFile("nats.tls.ca_file", cfg.NATS.TLS.CAFile)
	wantFile("nats.tls.cert_file", cfg.NATS.TLS.CertFile)
	wantFile("nats.tls.key_file", cfg.NATS.TLS.KeyFile)
	for i, n := range cfg.Nodes {
		what := fmt.Sprintf("nodes[%d] (%s)", i, n.Name)
		if n.Secret != "" || n.ActorSecret != "" {
			t.Errorf("%s: %s: a secret value is in the ConfigMap", where, what)
		}
		if n.SecretFile == "" {
			t.Errorf("%s: %s: no secret_file", where, what)
		}
		wantFile(what+".secret_file", n.SecretFile)
		if (n.ActorUsername != "") != (n.ActorSecretFile != "") {
			t.Errorf("%s: %s: actor_username %q with actor_secret_file %q", where, what, n.ActorUsername, n.ActorSecretFile)
		}
		wantFile(what+".actor_secret_file", n.ActorSecretFile)
	}
	if strings.Count(text, "${") != countNonEmpty(cfg.NATS.Token, cfg.NATS.Password) {
		t.Errorf("%s: the configuration has ${...} references beyond nats.token and nats.password:\n%s", where, text)
	}
}

func countNonEmpty(s ...string) int {
	n := 0
	for _, v := range s {
		if v != "" {
			n++
		}
	}
	return n
}

func checkContainerSecurity(t *testing.T, where string, sc *corev1.SecurityContext) {
	t.Helper()
	if sc == nil {
		t.Errorf("%s: no securityContext", where)
		return
	}
	if sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("%s: runAsNonRoot is not true", where)
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != nonRootUID {
		t.Errorf("%s: runAsUser is not %d", where, nonRootUID)
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Errorf("%s: readOnlyRootFilesystem is not true", where)
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("%s: allowPrivilegeEscalation is not false", where)
	}
	if sc.Privileged != nil && *sc.Privileged {
		t.Errorf("%s: privileged", where)
	}
	if sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0 {
		t.Errorf("%s: capabilities %s: want drop [ALL], add none", where, jsonString(sc.Capabilities))
	}
	if sc.SeccompProfile == nil || sc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Errorf("%s: seccompProfile is not RuntimeDefault", where)
	}
}

// checkSecretRef checks that a reference names the Secret of the release (the
// chart's or the existing one) and, for the chart's own, that the key is in it.
func checkSecretRef(t *testing.T, where string, secrets map[string]*corev1.Secret, want string, existing bool, name string, key *string) {
	t.Helper()
	if name != want {
		t.Errorf("%s: Secret %q, want %q", where, name, want)
		return
	}
	if existing {
		return
	}
	s, ok := secrets[name]
	if !ok {
		t.Errorf("%s: Secret %q is not rendered", where, name)
		return
	}
	if key == nil {
		return
	}
	if _, ok := s.Data[*key]; !ok {
		t.Errorf("%s: Secret %q has no key %q", where, name, *key)
	}
}

// containerPort resolves a port number or name against the container's ports.
func containerPort(c corev1.Container, p intstr.IntOrString) (int32, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.String && cp.Name == p.StrVal) || (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) {
			return cp.ContainerPort, true
		}
	}
	return 0, false
}

// configOf finds the file passed to --config in the mounted ConfigMap and parses it.
func configOf(t *testing.T, where, file string, volumes []corev1.Volume, mounts map[string]corev1.VolumeMount, configMaps map[string]*corev1.ConfigMap) (*fileConfig, string) {
	t.Helper()
	for _, v := range volumes {
		m, ok := mounts[v.Name]
		if v.ConfigMap == nil || !ok || path.Dir(file) != path.Clean(m.MountPath) {
			continue
		}
		cm := configMaps[v.ConfigMap.Name]
		if cm == nil {
			return nil, ""
		}
		text, ok := cm.Data[path.Base(file)]
		if !ok {
			t.Errorf("%s: --config %s: ConfigMap %s has no key %s", where, file, cm.Name, path.Base(file))
			return nil, ""
		}
		cfg, _, err := parseConfig(text)
		if err != nil {
			t.Errorf("%s: --config %s: %v\n%s", where, file, err, text)
			return nil, ""
		}
		return cfg, text
	}
	t.Errorf("%s: --config %s is not in a mounted ConfigMap", where, file)
	return nil, ""
}

func checkHPA(t *testing.T, h *autoscalingv2.HorizontalPodAutoscaler, workloads []workload) {
	t.Helper()
	ref := h.Spec.ScaleTargetRef
	for _, w := range workloads {
		if ref.APIVersion != "apps/v1" || ref.Kind != w.kind || ref.Name != w.name {
			continue
		}
		if w.replicas != nil {
			t.Errorf("HorizontalPodAutoscaler %s: %s %s sets replicas, which would fight the autoscaler", h.Name, w.kind, w.name)
		}
		if w.template.Spec.Containers[0].Resources.Requests.Cpu().IsZero() {
			t.Errorf("HorizontalPodAutoscaler %s: %s has no CPU request to scale on", h.Name, w.name)
		}
		if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 1 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
			t.Errorf("HorizontalPodAutoscaler %s: replicas %v..%d", h.Name, h.Spec.MinReplicas, h.Spec.MaxReplicas)
		}
		return
	}
	t.Errorf("HorizontalPodAutoscaler %s: target %s %s is not rendered", h.Name, ref.Kind, ref.Name)
}

func checkServiceMonitor(t *testing.T, sm *serviceMonitor, services map[string]*corev1.Service) {
	t.Helper()
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || sel.Empty() {
		t.Errorf("ServiceMonitor %s: selector empty or invalid: %v", sm.Name, err)
		return
	}
	if !slices.Equal(sm.Spec.NamespaceSelector.MatchNames, []string{sm.Namespace}) {
		t.Errorf("ServiceMonitor %s: namespaceSelector %v, want its own namespace", sm.Name, sm.Spec.NamespaceSelector.MatchNames)
	}
	if len(sm.Spec.Endpoints) == 0 {
		t.Errorf("ServiceMonitor %s: no endpoints", sm.Name)
	}
	matched := 0
	for _, s := range services {
		if !sel.Matches(labels.Set(s.Labels)) {
			continue
		}
		matched++
		for _, ep := range sm.Spec.Endpoints {
			if !slices.ContainsFunc(s.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
				t.Errorf("ServiceMonitor %s: Service %s has no port %q", sm.Name, s.Name, ep.Port)
			}
			if ep.Path != "/metrics" {
				t.Errorf("ServiceMonitor %s: path %q, want /metrics", sm.Name, ep.Path)
			}
		}
	}
	if matched != len(services) || matched == 0 {
		t.Errorf("ServiceMonitor %s: selects %d of the %d metrics Services", sm.Name, matched, len(services))
	}
}

// checkNoSecretLeak fails if any value of a rendered Secret appears in any other
// object or in NOTES.txt.
func checkNoSecretLeak(t *testing.T, r *rendered, secrets map[string]*corev1.Secret) {
	t.Helper()
	var values []string
	for _, s := range secrets {
		for k, v := range s.Data {
			if len(v) < 4 {
				t.Errorf("Secret %s key %s: value shorter than 4 bytes; the leak check cannot look for it", s.Name, k)
				continue
			}
			values = append(values, string(v))
		}
	}
	for _, o := range r.objects {
		if o.kind == "v1/Secret" {
			continue
		}
		for _, v := range values {
			if strings.Contains(string(o.json), jsonEscape(v)) {
				t.Errorf("%s %s contains a secret value", o.kind, o.name)
			}
		}
	}
	for _, v := range values {
		if strings.Contains(r.notes, v) {
			t.Errorf("NOTES.txt contains a secret value")
		}
	}
}

// jsonEscape is how a string appears inside a JSON document.
func jsonEscape(s string) string {
	q, _ := json.Marshal(s) // a string always marshals
	return string(q[1 : len(q)-1])
}
