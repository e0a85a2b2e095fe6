package chartcheck

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

// dashboard is the part of a Grafana dashboard model the checks read.
type dashboard struct {
	UID        string  `json:"uid"`
	Title      string  `json:"title"`
	Panels     []panel `json:"panels"`
	Templating struct {
		List []struct {
			Name       string `json:"name"`
			Type       string `json:"type"`
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

type panel struct {
	ID         int    `json:"id"`
	Type       string `json:"type"`
	Title      string `json:"title"`
	Datasource *struct {
		UID string `json:"uid"`
	} `json:"datasource"`
	GridPos struct {
		X, Y, W, H int
	} `json:"gridPos"`
	Targets []struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	} `json:"targets"`
}

var (
	// metricName matches the amibus metric names a query uses.
	metricName = regexp.MustCompile(`\bami_[a-z0-9_]+`)
	// declaredMetric matches a name given to a collector in internal/metrics or
	// internal/state.
	declaredMetric = regexp.MustCompile(`"(ami_[a-z0-9_]+)"`)
	// templateVar matches $name in a query, Grafana's built-ins aside.
	templateVar = regexp.MustCompile(`\$(\{)?([a-z_]+)`)
)

func TestDashboard(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(chartDir, "dashboards", "amibus.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !json.Valid(raw) {
		t.Fatal("dashboards/amibus.json is not valid JSON")
	}
	var d dashboard
	if err := json.Unmarshal(raw, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Errorf("uid %q title %q: both are needed for provisioning", d.UID, d.Title)
	}
	vars := map[string]bool{}
	for _, v := range d.Templating.List {
		vars[v.Name] = true
		// $job lists the jobs of every program: from a metric without labels that
		// each exports (ami_session_up, say, would leave out ami-state, which has
		// no AMI session, and "All" would hide its panels).
		if v.Name == "job" && v.Definition != "label_values(ami_log_lines_dropped_total, job)" {
			t.Errorf("variable job: %q, want label_values(ami_log_lines_dropped_total, job)", v.Definition)
		}
	}
	if !vars["datasource"] {
		t.Errorf("no datasource variable: the dashboard would be tied to one Prometheus")
	}
	declared := declaredMetrics(t)

	ids := map[int]bool{}
	var exprs []string
	for _, p := range d.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		if p.GridPos.W <= 0 || p.GridPos.H <= 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
		}
		if p.Type == "row" {
			continue
		}
		if p.Datasource == nil || p.Datasource.UID != "${datasource}" {
			t.Errorf("panel %q: datasource is not ${datasource}", p.Title)
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no queries", p.Title)
		}
		for _, q := range p.Targets {
			exprs = append(exprs, q.Expr)
			if strings.Count(q.Expr, "(") != strings.Count(q.Expr, ")") || strings.Count(q.Expr, "{") != strings.Count(q.Expr, "}") ||
				strings.Count(q.Expr, "[") != strings.Count(q.Expr, "]") || strings.Count(q.Expr, `"`)%2 != 0 {
				t.Errorf("panel %q: unbalanced query %s", p.Title, q.Expr)
			}
			for _, m := range metricName.FindAllString(q.Expr, -1) {
				base := strings.TrimSuffix(strings.TrimSuffix(strings.TrimSuffix(m, "_bucket"), "_sum"), "_count")
				if !declared[m] && !declared[base] {
					t.Errorf("panel %q: %s is not a metric declared in %s or %s", p.Title, m, metricsSource, stateMetricsSource)
				}
			}
			for _, m := range templateVar.FindAllStringSubmatch(q.Expr, -1) {
				if name := m[2]; !strings.HasPrefix(name, "__") && !vars[name] {
					t.Errorf("panel %q: variable $%s is not defined", p.Title, name)
				}
			}
		}
	}
	// The panels the operations team asked for, by the query that makes each.
	for what, want := range map[string]string{
		"session up per node":    "ami_session_up{",
		"events/s received":      "rate(ami_events_received_total{",
		"events/s published":     "rate(ami_events_published_total{",
		"drops by reason":        "by (node, reason) (rate(ami_events_dropped_total{",
		"buffer depth":           "ami_buffer_events{",
		"reconnects":             "ami_session_reconnects_total{",
		"action rate by outcome": "by (outcome) (rate(ami_actions_total{",
		"action latency p50":     "histogram_quantile(0.5, sum by (le) (rate(ami_action_duration_seconds_bucket{",
		"action latency p99":     "histogram_quantile(0.99, sum by (le) (rate(ami_action_duration_seconds_bucket{",
		"pending actions":        "ami_actions_pending{",
		"log lines dropped":      "rate(ami_log_lines_dropped_total{",
		// ami-state.
		"projection lag p50":     "histogram_quantile(0.5, sum by (le) (rate(ami_state_projection_lag_seconds_bucket{",
		"projection lag p99":     "histogram_quantile(0.99, sum by (le) (rate(ami_state_projection_lag_seconds_bucket{",
		"projection lag in seqs": "ami_state_projection_lag_messages{",
		"stale nodes":            "ami_state_stale_nodes{",
		"live channels per node": "sum by (node) (ami_state_live_channels{",
		"bad events by reason":   "by (reason) (rate(ami_state_bad_events_total{",
	} {
		if !slices.ContainsFunc(exprs, func(e string) bool { return strings.Contains(e, want) }) {
			t.Errorf("no panel for %s (a query containing %s)", what, want)
		}
	}
}

// declaredMetrics reads the metric names internal/metrics and internal/state
// declare, so that a renamed metric breaks this test instead of leaving an
// empty panel.
func declaredMetrics(t *testing.T) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	for file, atLeast := range map[string]int{metricsSource: 10, stateMetricsSource: 5} {
		src, err := os.ReadFile(file)
		if err != nil {
			t.Fatalf("read the metric declarations: %v", err)
		}
		found := declaredMetric.FindAllStringSubmatch(string(src), -1)
		if len(found) < atLeast {
			t.Fatalf("found only %d metric names in %s", len(found), file)
		}
		for _, m := range found {
			names[m[1]] = true
		}
	}
	return names
}
