package config

import (
	"fmt"
	"os"
	"reflect"
	"regexp"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// parsedDefaults parses a file made of body and a valid node list and
// returns it with the node list removed, for comparison with Default.
func parsedDefaults(t *testing.T, what, body string) *Config {
	t.Helper()
	c, err := Parse([]byte(body + "\n" + validNodes))
	if err != nil {
		t.Fatalf("%s does not parse: %v\n%s", what, err, body)
	}
	c.Nodes = nil
	return c
}

func sameAsDefault(t *testing.T, what string, got *Config) {
	t.Helper()
	want := Default()
	for _, s := range []struct {
		name      string
		got, want any
	}{
		{"nats", got.NATS, want.NATS}, {"stream", got.Stream, want.Stream}, {"session", got.Session, want.Session},
		{"http", got.HTTP, want.HTTP}, {"log", got.Log, want.Log}, {"ingest", got.Ingest, want.Ingest},
		{"actor", got.Actor, want.Actor}, {"state", got.State, want.State},
	} {
		if !reflect.DeepEqual(s.got, s.want) {
			t.Errorf("%s documents a %s default that differs from the code's:\n doc  %+v\n code %+v", what, s.name, s.got, s.want)
		}
	}
}

// TestExampleConfigShowsTheDefaults: config.example.yaml shows every key
// with its default, except nats.url (an example; default empty) and nodes.
func TestExampleConfigShowsTheDefaults(t *testing.T) {
	raw, err := os.ReadFile("../../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(raw)
	if err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	c.NATS.URL, c.Nodes = "", nil
	sameAsDefault(t, "config.example.yaml", c)
}

// TestChartValuesShowTheDefaults: the chart renders its config: values
// (and ingest.ha) into the file; each value it shows is the default.
func TestChartValuesShowTheDefaults(t *testing.T) {
	raw, err := os.ReadFile("../../deploy/helm/amibus/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var values struct {
		Config map[string]any `yaml:"config"`
		Ingest struct {
			HA map[string]any `yaml:"ha"`
		} `yaml:"ingest"`
		NATS struct {
			SubjectPrefix string `yaml:"subject_prefix"`
		} `yaml:"nats"`
	}
	if err := yaml.Unmarshal(raw, &values); err != nil {
		t.Fatal(err)
	}
	if len(values.Config) == 0 || len(values.Ingest.HA) == 0 {
		t.Fatal("values.yaml has no config: or ingest.ha: block")
	}
	ingest, _ := values.Config["ingest"].(map[string]any)
	if ingest == nil {
		ingest = map[string]any{}
		values.Config["ingest"] = ingest
	}
	ingest["ha"] = values.Ingest.HA
	values.Config["nats"] = map[string]any{"subject_prefix": values.NATS.SubjectPrefix}
	body, err := yaml.Marshal(values.Config)
	if err != nil {
		t.Fatal(err)
	}
	sameAsDefault(t, "deploy/helm/amibus/values.yaml", parsedDefaults(t, "values.yaml's config", string(body)))
}

// TestReadmeDefaults: every "`key.path` (default V)" in README.md is the
// default.
func TestReadmeDefaults(t *testing.T) {
	raw, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("`([a-z_]+(?:\\.[a-z_]+)+)` \\(default ([^)]+)\\)")
	matches := re.FindAllStringSubmatch(string(raw), -1)
	if len(matches) == 0 {
		t.Fatal("README.md documents no default in the form `key.path` (default V)")
	}
	for _, m := range matches {
		path, val := strings.Split(m[1], "."), strings.ReplaceAll(m[2], " ", "")
		var b strings.Builder
		for i, k := range path {
			fmt.Fprintf(&b, "%s%s:", strings.Repeat("  ", i), k)
			if i < len(path)-1 {
				b.WriteString("\n")
			}
		}
		fmt.Fprintf(&b, " %s\n", val)
		sameAsDefault(t, "README.md ("+m[0]+")", parsedDefaults(t, m[0], b.String()))
	}
}
