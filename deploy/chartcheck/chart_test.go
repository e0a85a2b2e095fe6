package chartcheck

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Value sets the chart is checked with.
var (
	defaults = renderOpts{}
	haValues = renderOpts{valueFiles: []string{chartDir + "/values-ha.yaml"}}
	features = renderOpts{
		valueFiles:  []string{"testdata/features.yaml"},
		apiVersions: []string{serviceMonitorAPI},
	}
	existingCreds = renderOpts{set: []string{
		"secrets.existingSecret=amibus-creds",
		"nats.auth=creds",
		"nats.tls.ca=true",
		"nodes[0].name=pbx1", "nodes[0].address=pbx1:5038", "nodes[0].username=ami",
	}}
)

func TestLint(t *testing.T) {
	for name, o := range map[string]renderOpts{"defaults": defaults, "values-ha": haValues, "features": features, "existing-creds": existingCreds} {
		t.Run(name, func(t *testing.T) {
			vals, err := mergedValues(o)
			if err != nil {
				t.Fatal(err)
			}
			l := lint.AllWithKubeVersion(chartDir, vals, namespace, kubeVersion)
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("lint: %s", m)
				} else {
					t.Logf("lint: %s", m)
				}
			}
		})
	}
	// The linter checks values against values.schema.json. (It runs the templates
	// in lint mode, where fail and required only log: TestRefused covers those.)
	vals, err := mergedValues(renderOpts{set: []string{"ingest.replica=2"}})
	if err != nil {
		t.Fatal(err)
	}
	if l := lint.AllWithKubeVersion(chartDir, vals, namespace, kubeVersion); l.HighestSeverity < support.ErrorSev {
		t.Errorf("lint passed a misspelt values key: %v", l.Messages)
	}
}

func TestDefaults(t *testing.T) {
	r := mustRender(t, defaults)
	checkRendered(t, r, "")
	checkInventory(t, r,
		"apps/v1/Deployment amibus-actor", "apps/v1/Deployment amibus-ingest", "apps/v1/Deployment amibus-state",
		"policy/v1/PodDisruptionBudget amibus-actor", "policy/v1/PodDisruptionBudget amibus-ingest", "policy/v1/PodDisruptionBudget amibus-state",
		"v1/ConfigMap amibus-config", "v1/Service amibus-actor", "v1/Service amibus-ingest", "v1/Service amibus-state", "v1/ServiceAccount amibus")
	ingest := get[*appsv1.Deployment](t, r, "apps/v1/Deployment", "amibus-ingest")
	if *ingest.Spec.Replicas != 1 || ingest.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		t.Errorf("ingest: %d replicas, strategy %s; want 1 and Recreate: without leases old and new pod must never overlap",
			*ingest.Spec.Replicas, ingest.Spec.Strategy.Type)
	}
	for name, port := range map[string]int32{"amibus-ingest": binaries["ami-ingest"], "amibus-actor": binaries["ami-actor"], "amibus-state": binaries["ami-state"]} {
		d := get[*appsv1.Deployment](t, r, "apps/v1/Deployment", name)
		if got := d.Spec.Template.Spec.Containers[0].Ports[0].ContainerPort; got != port {
			t.Errorf("%s: port %d, want %d", name, got, port)
		}
		s := get[*corev1.Service](t, r, "v1/Service", name)
		if s.Spec.Ports[0].Port != port || s.Spec.Ports[0].Name != "metrics" {
			t.Errorf("Service %s: port %s, want metrics %d", name, jsonString(s.Spec.Ports[0]), port)
		}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.Secret != nil {
				t.Errorf("%s mounts Secret %s although nothing needs one", name, v.Secret.SecretName)
			}
		}
	}
	cfg, keys := renderedConfig(t, r, "ami-ingest.yaml")
	if want := []string{"actor", "http", "ingest", "log", "nats", "nodes", "state", "stream"}; !slices.Equal(keys, want) {
		t.Errorf("configuration keys %v, want %v", keys, want)
	}
	if cfg.NATS.URL != "nats://nats:4222" || cfg.NATS.SubjectPrefix != "ami" || cfg.NATS.Token != "" {
		t.Errorf("nats: %s", jsonString(cfg.NATS))
	}
	if cfg.HTTP.Listen != "0.0.0.0:9090" || cfg.Ingest.HA.Enabled || cfg.Ingest.HA.Bucket != "ami_owners" || cfg.Ingest.HA.TTL != "10s" {
		t.Errorf("http/ha: %s %s", cfg.HTTP.Listen, jsonString(cfg.Ingest.HA))
	}
	if cfg.Ingest.BufferBytes != 64<<20 || cfg.Ingest.BufferEvents != 100000 || cfg.Stream.Replicas != 1 || cfg.Stream.MaxAge != "72h" {
		t.Errorf("ingest/stream: %s %s", jsonString(cfg.Ingest), jsonString(cfg.Stream))
	}
	if len(cfg.Nodes) != 0 || !strings.Contains(r.notes, "no nodes are configured") {
		t.Errorf("no nodes: %d nodes, NOTES:\n%s", len(cfg.Nodes), r.notes)
	}
	actorCfg, _ := renderedConfig(t, r, "ami-actor.yaml")
	if actorCfg.HTTP.Listen != "0.0.0.0:9091" || actorCfg.Actor.QueueGroup != "ami-actor" {
		t.Errorf("actor: http.listen %q, queue_group %q", actorCfg.HTTP.Listen, actorCfg.Actor.QueueGroup)
	}
	// ami-state's defaults are internal/config's (docs/state.md).
	stateCfg, _ := renderedConfig(t, r, "ami-state.yaml")
	wantState := cfg.State
	wantState.Bucket, wantState.Replicas, wantState.Storage, wantState.History = "ami_state", 1, "file", 1
	wantState.FlushInterval, wantState.MaxRequestBytes, wantState.MaxReplayEvents = "50ms", 4096, 2000000
	wantState.HA.Enabled, wantState.HA.Bucket, wantState.HA.TTL = true, "ami_state_owners", "10s"
	if stateCfg.HTTP.Listen != "0.0.0.0:9092" || stateCfg.State != wantState || cfg.State != wantState {
		t.Errorf("state: http.listen %q, state %s (ingest's file: %s), want %s",
			stateCfg.HTTP.Listen, jsonString(stateCfg.State), jsonString(cfg.State), jsonString(wantState))
	}
}

func TestHAValues(t *testing.T) {
	r := mustRender(t, haValues)
	checkRendered(t, r, "amibus-ami")
	if len(r.find("v1/Secret")) != 0 {
		t.Errorf("values-ha uses an existing Secret, yet the chart renders one")
	}
	ingest := get[*appsv1.Deployment](t, r, "apps/v1/Deployment", "amibus-ingest")
	ru := ingest.Spec.Strategy.RollingUpdate
	if *ingest.Spec.Replicas != 3 || ingest.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType ||
		ru == nil || *ru.MaxUnavailable != intstr.FromInt32(0) {
		t.Errorf("ingest: %d replicas, strategy %s", *ingest.Spec.Replicas, jsonString(ingest.Spec.Strategy))
	}
	if actor := get[*appsv1.Deployment](t, r, "apps/v1/Deployment", "amibus-actor"); *actor.Spec.Replicas != 2 {
		t.Errorf("actor: %d replicas, want 2", *actor.Spec.Replicas)
	}
	cfg, _ := renderedConfig(t, r, "ami-ingest.yaml")
	if !cfg.Ingest.HA.Enabled || cfg.Ingest.HA.TTL != "10s" || cfg.Stream.Replicas != 3 || strings.Count(cfg.NATS.URL, "nats://") != 3 {
		t.Errorf("ha %s, stream replicas %d, nats.url %q", jsonString(cfg.Ingest.HA), cfg.Stream.Replicas, cfg.NATS.URL)
	}
	if cfg.Stream.Name != "AMI_EVENTS" || cfg.Stream.Storage != "file" {
		t.Errorf("values-ha lost the default stream keys: %s", jsonString(cfg.Stream))
	}
	var names []string
	for _, n := range cfg.Nodes {
		names = append(names, n.Name)
	}
	if !slices.Equal(names, []string{"pbx1", "pbx2", "pbx3"}) || cfg.Nodes[2].ActorUsername != "ami-actor" {
		t.Errorf("nodes %v (%s)", names, jsonString(cfg.Nodes))
	}
	keys := secretItems(t, ingest)
	if want := []string{"pbx1.secret", "pbx2.secret", "pbx3.actor_secret", "pbx3.secret"}; !slices.Equal(keys, want) {
		t.Errorf("ingest mounts Secret keys %v, want %v", keys, want)
	}
	for _, k := range keys {
		if !strings.Contains(r.notes, k) {
			t.Errorf("NOTES.txt does not name the Secret key %s the pods need:\n%s", k, r.notes)
		}
	}
	if cfg.State.Replicas != 3 || cfg.State.Bucket != "ami_state" {
		t.Errorf("values-ha: state bucket %s, want ami_state with 3 replicas", jsonString(cfg.State))
	}
	if state := get[*appsv1.Deployment](t, r, "apps/v1/Deployment", "amibus-state"); *state.Spec.Replicas != 2 || !cfg.State.HA.Enabled {
		t.Errorf("state: %d replicas, ha %s; want 2 with leases", *state.Spec.Replicas, jsonString(cfg.State.HA))
	}
	// The programs read the same configuration but for their HTTP port.
	for _, file := range []string{"ami-actor.yaml", "ami-state.yaml"} {
		other, _ := renderedConfig(t, r, file)
		other.HTTP.Listen = cfg.HTTP.Listen
		if jsonString(other) != jsonString(cfg) {
			t.Errorf("ami-ingest.yaml and %s differ beyond http.listen:\n%s\n%s", file, jsonString(cfg), jsonString(other))
		}
	}
}

func TestOptionalFeatures(t *testing.T) {
	r := mustRender(t, features)
	checkRendered(t, r, "")
	for _, want := range []string{
		"autoscaling/v2/HorizontalPodAutoscaler amibus-actor",
		"monitoring.coreos.com/v1/ServiceMonitor amibus",
		"v1/ConfigMap amibus-dashboard",
		"v1/Secret amibus-secrets",
	} {
		if !strings.Contains(r.inventory(), want) {
			t.Errorf("%s not rendered: %s", want, r.inventory())
		}
	}
	hpa := get[*autoscalingv2.HorizontalPodAutoscaler](t, r, "autoscaling/v2/HorizontalPodAutoscaler", "amibus-actor")
	if *hpa.Spec.MinReplicas != 2 || hpa.Spec.MaxReplicas != 5 || hpa.Spec.Metrics[0].Resource.Name != corev1.ResourceCPU {
		t.Errorf("HPA: %s", jsonString(hpa.Spec))
	}
	sm := get[*serviceMonitor](t, r, "monitoring.coreos.com/v1/ServiceMonitor", "amibus")
	if sm.Labels["release"] != "kube-prometheus-stack" {
		t.Errorf("ServiceMonitor labels %v lack serviceMonitor.labels", sm.Labels)
	}

	secret := get[*corev1.Secret](t, r, "v1/Secret", "amibus-secrets")
	var keys []string
	for k := range secret.Data {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	want := []string{"nats.ca.crt", "nats.tls.crt", "nats.tls.key", "nats.token", "pbx-2_b.actor_secret", "pbx-2_b.secret", "pbx1.secret"}
	if !slices.Equal(keys, want) {
		t.Errorf("Secret keys %v, want %v", keys, want)
	}
	if got := string(secret.Data["pbx-2_b.secret"]); got != `leak-check-pbx2: with $ and "quotes"` {
		t.Errorf("Secret pbx-2_b.secret = %q: the value must be stored exactly, without a newline", got)
	}
	for _, cm := range r.find("v1/ConfigMap") {
		if strings.Contains(string(cm.json), "leak-check") {
			t.Errorf("ConfigMap %s holds a secret value", cm.name)
		}
	}

	ingest := get[*appsv1.Deployment](t, r, "apps/v1/Deployment", "amibus-ingest")
	env := ingest.Spec.Template.Spec.Containers[0].Env
	if len(env) != 1 || env[0].Name != "NATS_TOKEN" || env[0].ValueFrom.SecretKeyRef.Key != "nats.token" {
		t.Errorf("ingest env %s, want NATS_TOKEN from Secret key nats.token", jsonString(env))
	}
	cfg, _ := renderedConfig(t, r, "ami-ingest.yaml")
	if cfg.NATS.Token != "${NATS_TOKEN}" || cfg.NATS.TLS.CAFile != "/etc/amibus/secrets/nats.ca.crt" || cfg.NATS.TLS.KeyFile != "/etc/amibus/secrets/nats.tls.key" {
		t.Errorf("nats: %s", jsonString(cfg.NATS))
	}
	if cfg.Ingest.Events != "on" || !slices.Equal(cfg.Ingest.Exclude, []string{"RTCPSent", "RTCPReceived"}) || cfg.Session.PingInterval != "15s" {
		t.Errorf("config passthrough: ingest %s, session %s", jsonString(cfg.Ingest), jsonString(cfg.Session))
	}
	n := cfg.Nodes[1]
	if n.Name != "pbx-2_b" || n.SecretFile != "/etc/amibus/secrets/pbx-2_b.secret" || n.ActorSecretFile != "/etc/amibus/secrets/pbx-2_b.actor_secret" ||
		!n.TLS.Enabled || n.TLS.ServerName != "pbx2.example.net" || !slices.Equal(n.Exclude, []string{"VarSet", "Newexten"}) {
		t.Errorf("node passthrough: %s", jsonString(n))
	}

	// The dashboard ConfigMap carries the sidecar's label and the file as it is.
	dash := get[*corev1.ConfigMap](t, r, "v1/ConfigMap", "amibus-dashboard")
	if dash.Labels["grafana_dashboard"] != "1" || dash.Annotations["grafana_folder"] != "amibus" {
		t.Errorf("dashboard ConfigMap labels %v annotations %v", dash.Labels, dash.Annotations)
	}
	file, err := os.ReadFile(filepath.Join(chartDir, "dashboards", "amibus.json"))
	if err != nil {
		t.Fatal(err)
	}
	if got := dash.Data["amibus.json"]; strings.TrimSpace(got) != strings.TrimSpace(string(file)) || !json.Valid([]byte(got)) {
		t.Errorf("dashboard ConfigMap data differs from dashboards/amibus.json or is not JSON")
	}
}

func TestExistingSecret(t *testing.T) {
	t.Run("creds and CA files", func(t *testing.T) {
		r := mustRender(t, existingCreds)
		checkRendered(t, r, "amibus-creds")
		d := get[*appsv1.Deployment](t, r, "apps/v1/Deployment", "amibus-actor")
		if keys := secretItems(t, d); !slices.Equal(keys, []string{"nats.ca.crt", "nats.creds", "pbx1.secret"}) {
			t.Errorf("actor mounts Secret keys %v", keys)
		}
		cfg, _ := renderedConfig(t, r, "ami-actor.yaml")
		if cfg.NATS.CredsFile != "/etc/amibus/secrets/nats.creds" || cfg.NATS.Token != "" {
			t.Errorf("nats: %s", jsonString(cfg.NATS))
		}
		if !strings.Contains(r.notes, "--from-file=nats.creds=") || !strings.Contains(r.notes, "--from-literal=pbx1.secret=") {
			t.Errorf("NOTES.txt does not show how to make the Secret:\n%s", r.notes)
		}
	})
	t.Run("user and password", func(t *testing.T) {
		r := mustRender(t, renderOpts{set: []string{"secrets.existingSecret=mine", "nats.auth=user_password", "nats.user=amibus"}})
		checkRendered(t, r, "mine")
		cfg, _ := renderedConfig(t, r, "ami-ingest.yaml")
		if cfg.NATS.User != "amibus" || cfg.NATS.Password != "${NATS_PASSWORD}" {
			t.Errorf("nats: %s", jsonString(cfg.NATS))
		}
	})
}

func TestServiceMonitorNeedsItsAPI(t *testing.T) {
	r := mustRender(t, renderOpts{set: []string{"serviceMonitor.enabled=true"}})
	if n := len(r.find("monitoring.coreos.com/v1/ServiceMonitor")); n != 0 {
		t.Errorf("%d ServiceMonitors rendered for a cluster without monitoring.coreos.com/v1", n)
	}
	if !strings.Contains(r.notes, "no ServiceMonitor was made") {
		t.Errorf("NOTES.txt does not say the ServiceMonitor was skipped:\n%s", r.notes)
	}
}

func TestConfigChangeRollsPods(t *testing.T) {
	checksum := func(set ...string) string {
		r := mustRender(t, renderOpts{set: set})
		return get[*appsv1.Deployment](t, r, "apps/v1/Deployment", "amibus-ingest").Spec.Template.Annotations["checksum/config"]
	}
	a, b := checksum(), checksum("config.log.level=debug")
	if a == "" || a == b {
		t.Errorf("checksum/config %q before and %q after a configuration change: pods would keep the old file", a, b)
	}
}

// TestNodeListChangeReloads: adding a node (with its secret), or changing
// a node's AMI secret or address, leaves the ingest, actor and state pod
// templates as they are (all reload with --watch-config, their other
// sessions or nodes go on); any other configuration change of theirs, or a
// NATS credential change, still rolls the pods.
func TestNodeListChangeReloads(t *testing.T) {
	one := []string{"nodes[0].name=pbx1", "nodes[0].address=pbx1:5038", "nodes[0].username=ami", "secrets.nodes.pbx1.secret=x",
		"nats.auth=token", "secrets.nats.token=t"}
	two := append(slices.Clone(one), "nodes[1].name=pbx2", "nodes[1].address=pbx2:5038", "nodes[1].username=ami", "secrets.nodes.pbx2.secret=y")
	template := func(name string, set ...string) string {
		r := mustRender(t, renderOpts{set: set})
		return jsonString(get[*appsv1.Deployment](t, r, "apps/v1/Deployment", name).Spec.Template)
	}
	for deploy, own := range map[string]string{"amibus-ingest": "config.ingest.drain_timeout=7s", "amibus-actor": "config.actor.max_pending=7",
		"amibus-state": "config.state.flush_interval=100ms"} {
		base := template(deploy, one...)
		if !strings.Contains(base, "--watch-config") {
			t.Fatalf("%s not run with --watch-config: %s", deploy, base)
		}
		for what, set := range map[string][]string{
			"a node added (or removed)": two,
			"a node's AMI secret":       append(slices.Clone(one), "secrets.nodes.pbx1.secret=changed"),
			"a node's own setting":      append(slices.Clone(one), "nodes[0].address=elsewhere:5038"),
		} {
			if got := template(deploy, set...); got != base {
				t.Errorf("%s: %s changes the pod template (a restart):\n%s\n%s", deploy, what, base, got)
			}
		}
		for what, set := range map[string][]string{
			"log level":      append(slices.Clone(one), "config.log.level=debug"),
			"NATS token":     append(slices.Clone(one), "secrets.nats.token=other"),
			"its own config": append(slices.Clone(one), own),
		} {
			if got := template(deploy, set...); got == base {
				t.Errorf("%s: %s leaves the pod template as it is: the pods would keep the old setting", deploy, what)
			}
		}
	}
}

// TestRefused lists values the chart must refuse with a message naming the problem.
func TestRefused(t *testing.T) {
	node := []string{"nodes[0].name=pbx1", "nodes[0].address=pbx1:5038", "nodes[0].username=ami"}
	withNode := func(s ...string) []string { return append(slices.Clone(node), s...) }
	cases := []struct {
		name string
		set  []string
		want string
	}{
		{"replicas without HA", []string{"ingest.replicas=2"}, "ingest.ha.enabled is false"},
		{"no NATS", []string{"nats.url="}, "/nats/url"},
		{"secret in a node", withNode("nodes[0].secret=x", "secrets.nodes.pbx1.secret=x"), "'secret' not allowed"},
		{"secret_file in a node", withNode("nodes[0].secret_file=/x", "secrets.nodes.pbx1.secret=x"), "'secret_file' not allowed"},
		{"node secret missing", withNode(), "secrets.nodes.pbx1.secret: missing"},
		{"actor secret missing", withNode("nodes[0].actor_username=a", "secrets.nodes.pbx1.secret=x"), "secrets.nodes.pbx1.actor_secret: missing"},
		{"secret for no node", withNode("secrets.nodes.pbx1.secret=x", "secrets.nodes.pbx9.secret=y"), "secrets.nodes.pbx9: no node"},
		{"duplicate node", append(withNode("secrets.nodes.pbx1.secret=x"), "nodes[1].name=pbx1", "nodes[1].address=b:5038", "nodes[1].username=ami"), `"pbx1" is used twice`},
		{"node name not a subject token", []string{"nodes[0].name=pbx.1", "nodes[0].address=a:5038", "nodes[0].username=ami"}, "/nodes/0/name"},
		{"node without address", []string{"nodes[0].name=pbx1", "nodes[0].username=ami"}, "missing property 'address'"},
		{"existing secret and values", withNode("secrets.existingSecret=s", "secrets.nodes.pbx1.secret=x"), "leave secrets.nodes and secrets.nats empty"},
		{"token missing", []string{"nats.auth=token"}, "secrets.nats.token: missing"},
		{"user missing", []string{"nats.auth=user_password", "secrets.nats.password=longpassword"}, "nats.user: missing"},
		{"client cert without key", []string{"nats.tls.client_cert=true", "secrets.nats.cert=c"}, "secrets.nats.key: missing"},
		{"unknown auth", []string{"nats.auth=kerberos"}, "/nats/auth"},
		{"misspelt values key", []string{"ingest.replica=2"}, "'replica' not allowed"},
		{"misspelt config key", []string{"config.ingest.bufer_events=5"}, "'bufer_events' not allowed"},
		{"HA config in the wrong place", []string{"config.ingest.ha.enabled=true"}, "/config/ingest': additional properties 'ha' not allowed"},
		{"HPA without CPU request", []string{"actor.autoscaling.enabled=true", "actor.resources.requests.cpu=null"}, "requests.cpu"},
		{"HPA max below min", []string{"actor.autoscaling.enabled=true", "actor.autoscaling.minReplicas=4", "actor.autoscaling.maxReplicas=2"}, "maxReplicas"},
		{"bad duration", []string{"ingest.ha.ttl=10 seconds"}, "/ingest/ha/ttl"},
		{"state replicas without leases", []string{"state.ha.enabled=false"}, "state.replicas is 2 but state.ha.enabled is false"},
		{"state HA config in the wrong place", []string{"config.state.ha.enabled=true"}, "/config/state': additional properties 'ha' not allowed"},
		{"bad state lease ttl", []string{"state.ha.ttl=10"}, "/state/ha/ttl"},
		{"misspelt state config key", []string{"config.state.flush_intervall=10ms"}, "'flush_intervall' not allowed"},
		{"state bucket not a key token", []string{"config.state.bucket=ami.state"}, "/config/state/bucket"},
		{"misspelt state values key", []string{"state.replica=1"}, "'replica' not allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderChart(t, renderOpts{set: tc.set})
			if err == nil {
				t.Fatalf("values %v rendered", tc.set)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error does not mention %q:\n%v", tc.want, err)
			}
		})
	}
}

// TestRefusedWithoutSchema checks the templates' own guards, which still stand
// when values.schema.json is skipped (--skip-schema-validation).
func TestRefusedWithoutSchema(t *testing.T) {
	node := []string{"nodes[0].name=pbx1", "nodes[0].address=pbx1:5038", "nodes[0].username=ami", "secrets.nodes.pbx1.secret=x"}
	cases := []struct {
		name string
		set  []string
		want string
	}{
		{"secret in a node", append(slices.Clone(node), "nodes[0].secret=x"), "nodes[0].secret: secrets do not belong in nodes"},
		{"actor secret file in a node", append(slices.Clone(node), "nodes[0].actor_secret_file=/x"), "nodes[0].actor_secret_file: secrets do not belong in nodes"},
		{"node name not a subject token", []string{"nodes[0].name=pbx.1", "nodes[0].address=a:5038", "nodes[0].username=ami"}, `"pbx.1" is not a NATS subject token`},
		{"node without address", []string{"nodes[0].name=pbx1", "nodes[0].username=ami"}, "nodes[0].address: missing"},
		{"no NATS", []string{"nats.url="}, "nats.url is required"},
		{"state replicas without leases", []string{"state.replicas=3", "state.ha.enabled=false"}, "state.replicas is 3 but state.ha.enabled is false"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := renderChart(t, renderOpts{set: tc.set, skipSchema: true})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("values %v: error %v, want one mentioning %q", tc.set, err, tc.want)
			}
		})
	}
}

// renderedConfig parses one configuration file of the chart's ConfigMap.
func renderedConfig(t *testing.T, r *rendered, key string) (*fileConfig, []string) {
	t.Helper()
	cm := get[*corev1.ConfigMap](t, r, "v1/ConfigMap", "amibus-config")
	text, ok := cm.Data[key]
	if !ok {
		t.Fatalf("ConfigMap amibus-config has no %s", key)
	}
	cfg, keys, err := parseConfig(text)
	if err != nil {
		t.Fatalf("%s: %v\n%s", key, err, text)
	}
	return cfg, keys
}

// secretItems lists the Secret keys a Deployment mounts, sorted.
func secretItems(t *testing.T, d *appsv1.Deployment) []string {
	t.Helper()
	var keys []string
	for _, v := range d.Spec.Template.Spec.Volumes {
		if v.Secret != nil {
			for _, it := range v.Secret.Items {
				keys = append(keys, it.Key)
			}
		}
	}
	sort.Strings(keys)
	return keys
}
