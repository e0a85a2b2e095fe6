package chartcheck

import (
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// TestStateOn checks the ami-state workload the default values render: two
// replicas sharing the nodes through leases, rolled one pod at a time, probed
// on their own port, with a PodDisruptionBudget and a metrics Service that
// select its pods only.
func TestStateOn(t *testing.T) {
	r := mustRender(t, defaults)
	checkRendered(t, r, "")
	d := get[*appsv1.Deployment](t, r, "apps/v1/Deployment", "amibus-state")
	ru := d.Spec.Strategy.RollingUpdate
	if *d.Spec.Replicas != 2 || d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil ||
		*ru.MaxUnavailable != intstr.FromInt32(0) || *ru.MaxSurge != intstr.FromInt32(1) {
		t.Errorf("state: %d replicas, strategy %s; want 2, rolling one new pod in before an old one goes",
			*d.Spec.Replicas, jsonString(d.Spec.Strategy))
	}
	cfg, _ := renderedConfig(t, r, "ami-state.yaml")
	if !cfg.State.HA.Enabled || cfg.State.HA.Bucket != "ami_state_owners" || cfg.State.HA.TTL != "10s" {
		t.Errorf("state.ha %s: two replicas without leases would both write every node", jsonString(cfg.State.HA))
	}
	c := d.Spec.Template.Spec.Containers[0]
	if c.Name != "ami-state" || !slices.Equal(c.Args, []string{"--config", "/etc/amibus/config/ami-state.yaml", "--watch-config"}) {
		t.Errorf("state container %q args %q", c.Name, c.Args)
	}
	for _, p := range []struct {
		what, path string
		probe      *corev1.Probe
		period     int32
		failures   int32
	}{{"liveness", "/healthz", c.LivenessProbe, 10, 3}, {"readiness", "/readyz", c.ReadinessProbe, 5, 2}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("state: no %s probe", p.what)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port != intstr.FromString("http") ||
			p.probe.PeriodSeconds != p.period || p.probe.FailureThreshold != p.failures {
			t.Errorf("state %s probe %s, want GET %s on port http every %ds, %d failures", p.what, jsonString(p.probe), p.path, p.period, p.failures)
		}
	}
	if c.Ports[0].ContainerPort != 9092 {
		t.Errorf("state: container port %d, want 9092", c.Ports[0].ContainerPort)
	}
	if got := c.Resources.Limits.Memory().String(); got != "512Mi" {
		t.Errorf("state: memory limit %s, want 512Mi", got)
	}
	if d.Spec.Template.Annotations["checksum/config"] == "" {
		t.Errorf("state: no checksum/config annotation: a configuration change would not restart it")
	}

	pdb := get[*policyv1.PodDisruptionBudget](t, r, "policy/v1/PodDisruptionBudget", "amibus-state")
	if pdb.Spec.MaxUnavailable == nil || *pdb.Spec.MaxUnavailable != intstr.FromInt32(1) {
		t.Errorf("state PDB: maxUnavailable %v, want 1", pdb.Spec.MaxUnavailable)
	}
	stateOnly := func(what string, sel *metav1.LabelSelector) {
		t.Helper()
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		for _, o := range r.find("apps/v1/Deployment") {
			dep := o.typed.(*appsv1.Deployment)
			if got := s.Matches(labels.Set(dep.Spec.Template.Labels)); got != (dep.Name == "amibus-state") {
				t.Errorf("%s: selector %s matches the pods of %s: %v", what, s, dep.Name, got)
			}
		}
	}
	stateOnly("state PDB", pdb.Spec.Selector)
	svc := get[*corev1.Service](t, r, "v1/Service", "amibus-state")
	stateOnly("state Service", &metav1.LabelSelector{MatchLabels: svc.Spec.Selector})
	if svc.Spec.Ports[0].Port != 9092 || svc.Spec.Ports[0].Name != "metrics" {
		t.Errorf("state Service port %s", jsonString(svc.Spec.Ports[0]))
	}
	for _, want := range []string{"ami-state:  2 replica(s)", "leases in ami_state_owners", "nats request ami.state.<node>", "nats kv watch ami_state"} {
		if !strings.Contains(r.notes, want) {
			t.Errorf("NOTES.txt lacks %q:\n%s", want, r.notes)
		}
	}
}

// TestStateOff: state.enabled=false leaves no trace of ami-state and the rest
// of the release as it was.
func TestStateOff(t *testing.T) {
	on := mustRender(t, defaults)
	off := mustRender(t, renderOpts{set: []string{"state.enabled=false"}})
	checkRendered(t, off, "")
	checkInventory(t, off,
		"apps/v1/Deployment amibus-actor", "apps/v1/Deployment amibus-ingest",
		"policy/v1/PodDisruptionBudget amibus-actor", "policy/v1/PodDisruptionBudget amibus-ingest",
		"v1/ConfigMap amibus-config", "v1/Service amibus-actor", "v1/Service amibus-ingest", "v1/ServiceAccount amibus")
	if !strings.Contains(off.notes, "ami-state:  off") || strings.Contains(off.notes, "ami.state.") {
		t.Errorf("state off: NOTES.txt:\n%s", off.notes)
	}
	cm := get[*corev1.ConfigMap](t, off, "v1/ConfigMap", "amibus-config")
	if _, ok := cm.Data["ami-state.yaml"]; ok {
		t.Errorf("state off: the ConfigMap still has ami-state.yaml")
	}
	// The other programs' files do not depend on whether ami-state runs.
	for _, file := range []string{"ami-ingest.yaml", "ami-actor.yaml"} {
		a, _ := renderedConfig(t, on, file)
		b, _ := renderedConfig(t, off, file)
		if jsonString(a) != jsonString(b) {
			t.Errorf("%s changes with state.enabled:\n%s\n%s", file, jsonString(a), jsonString(b))
		}
	}
	// Off, replicas are not checked: nothing would run.
	mustRender(t, renderOpts{set: []string{"state.enabled=false", "state.ha.enabled=false"}})

	noPDB := mustRender(t, renderOpts{set: []string{"state.podDisruptionBudget.enabled=false"}})
	if strings.Contains(noPDB.inventory(), "PodDisruptionBudget amibus-state") || !strings.Contains(noPDB.inventory(), "Deployment amibus-state") {
		t.Errorf("state.podDisruptionBudget.enabled=false: %s", noPDB.inventory())
	}
}

// TestStateWithFeatures: with a chart-made Secret and a ServiceMonitor, ami-state
// mounts the keys its configuration names (the shared loader reads every
// node's secret_file) and is scraped like the others.
func TestStateWithFeatures(t *testing.T) {
	r := mustRender(t, features)
	checkRendered(t, r, "")
	state := get[*appsv1.Deployment](t, r, "apps/v1/Deployment", "amibus-state")
	ingest := get[*appsv1.Deployment](t, r, "apps/v1/Deployment", "amibus-ingest")
	if a, b := secretItems(t, state), secretItems(t, ingest); !slices.Equal(a, b) {
		t.Errorf("state mounts Secret keys %v, ingest %v: the same file needs the same keys", a, b)
	}
	sm := get[*serviceMonitor](t, r, "monitoring.coreos.com/v1/ServiceMonitor", "amibus")
	svc := get[*corev1.Service](t, r, "v1/Service", "amibus-state")
	sel, err := metav1.LabelSelectorAsSelector(&sm.Spec.Selector)
	if err != nil || !sel.Matches(labels.Set(svc.Labels)) {
		t.Errorf("the ServiceMonitor (selector %s) does not scrape Service amibus-state (labels %v)", sel, svc.Labels)
	}
	cfg, _ := renderedConfig(t, r, "ami-state.yaml")
	if cfg.State.FlushInterval != "20ms" || cfg.State.Storage != "memory" || cfg.State.Bucket != "ami_state" {
		t.Errorf("config.state passthrough: %s", jsonString(cfg.State))
	}
}

// TestStateConfigChangeRollsPods: a change of config.state restarts ami-state.
func TestStateConfigChangeRollsPods(t *testing.T) {
	checksum := func(set ...string) string {
		r := mustRender(t, renderOpts{set: set})
		return get[*appsv1.Deployment](t, r, "apps/v1/Deployment", "amibus-state").Spec.Template.Annotations["checksum/config"]
	}
	if a, b := checksum(), checksum("config.state.flush_interval=100ms"); a == "" || a == b {
		t.Errorf("checksum/config %q before and %q after config.state changed", a, b)
	}
}

// TestStateWithoutLeases: state.ha off runs one pod, replaced with Recreate so
// that an old and a new pod never write the bucket together.
func TestStateWithoutLeases(t *testing.T) {
	r := mustRender(t, renderOpts{set: []string{"state.ha.enabled=false", "state.replicas=1"}})
	checkRendered(t, r, "")
	d := get[*appsv1.Deployment](t, r, "apps/v1/Deployment", "amibus-state")
	if *d.Spec.Replicas != 1 || d.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("state without leases: %d replicas, strategy %s; want 1 and Recreate", *d.Spec.Replicas, jsonString(d.Spec.Strategy))
	}
	cfg, _ := renderedConfig(t, r, "ami-state.yaml")
	if cfg.State.HA.Enabled {
		t.Errorf("state.ha.enabled=false rendered %s", jsonString(cfg.State.HA))
	}
	if strings.Contains(r.notes, "leases in ami_state_owners") {
		t.Errorf("NOTES.txt speaks of leases that are off:\n%s", r.notes)
	}
}
