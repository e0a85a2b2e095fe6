package integration

import (
	"context"
	"fmt"
	"net/http"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Metrics is one scrape of a Prometheus /metrics endpoint.
type Metrics map[string][]Sample

// Sample is one series: its labels and value.
type Sample struct {
	Labels map[string]string
	Value  float64
}

// scrape reads url (a /metrics endpoint) once.
func scrape(ctx context.Context, url string) (Metrics, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	m := Metrics{}
	for name, f := range fams {
		for _, s := range f.GetMetric() {
			labels := map[string]string{}
			for _, l := range s.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			var v float64
			switch {
			case s.GetCounter() != nil:
				v = s.GetCounter().GetValue()
			case s.GetGauge() != nil:
				v = s.GetGauge().GetValue()
			case s.GetUntyped() != nil:
				v = s.GetUntyped().GetValue()
			default:
				continue // histograms and summaries: not used here
			}
			m[name] = append(m[name], Sample{Labels: labels, Value: v})
		}
	}
	return m, nil
}

// Sum adds the samples of name whose labels include every pair of
// kv ("node", "pbx1", ...); a missing series counts 0.
func (m Metrics) Sum(name string, kv ...string) float64 {
	var sum float64
next:
	for _, s := range m[name] {
		for i := 0; i+1 < len(kv); i += 2 {
			if s.Labels[kv[i]] != kv[i+1] {
				continue next
			}
		}
		sum += s.Value
	}
	return sum
}
