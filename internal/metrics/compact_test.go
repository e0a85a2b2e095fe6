package metrics

import (
	"bytes"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"
)

// exposition is reg's text exposition.
func exposition(t *testing.T, reg *prometheus.Registry) string {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	for _, mf := range mfs {
		if _, err := expfmt.MetricFamilyToText(&b, mf); err != nil {
			t.Fatal(err)
		}
	}
	return b.String()
}

// TestCompactVecsExposeAsClientGolang: the same operations on the compact
// vectors and on client_golang's give the same text exposition (values,
// label order, series at 0 created by WithLabelValues alone).
func TestCompactVecsExposeAsClientGolang(t *testing.T) {
	pairs := newPairCache()
	ours, theirs := prometheus.NewRegistry(), prometheus.NewRegistry()
	oc := newCounterVec(pairs, "x_total", "Help.", "node", "reason")
	og := newGaugeVec(pairs, "y", "Help.", "node")
	tc := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "x_total", Help: "Help."}, []string{"node", "reason"})
	tg := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "y", Help: "Help."}, []string{"node"})
	ours.MustRegister(oc, og)
	theirs.MustRegister(tc, tg)
	for _, n := range []string{"pbx2", "pbx1"} {
		for _, r := range []string{"shutdown", "buffer_full"} {
			oc.WithLabelValues(n, r)
			tc.WithLabelValues(n, r)
		}
		oc.WithLabelValues(n, "buffer_full").Inc()
		tc.WithLabelValues(n, "buffer_full").Inc()
		oc.WithLabelValues(n, "buffer_full").Add(2.5)
		tc.WithLabelValues(n, "buffer_full").Add(2.5)
		oc.WithLabelValues(n, "shutdown").Add(3)
		tc.WithLabelValues(n, "shutdown").Add(3)
		og.WithLabelValues(n).Set(7)
		tg.WithLabelValues(n).Set(7)
		og.WithLabelValues(n).Dec()
		tg.WithLabelValues(n).Dec()
		og.WithLabelValues(n).Sub(0.5)
		tg.WithLabelValues(n).Sub(0.5)
	}
	got, want := exposition(t, ours), exposition(t, theirs)
	if got != want {
		t.Errorf("exposition:\n%s\nclient_golang's:\n%s", got, want)
	}
	if v := testutil.ToFloat64(oc.WithLabelValues("pbx1", "buffer_full")); v != 3.5 {
		t.Errorf("ToFloat64 = %v, want 3.5", v)
	}
	if n := testutil.CollectAndCount(oc); n != 4 {
		t.Errorf("CollectAndCount = %d, want 4", n)
	}
	if !strings.Contains(got, `x_total{node="pbx1",reason="shutdown"} 3`) {
		t.Errorf("exposition lacks a series:\n%s", got)
	}
}

// TestCompactVecsSharePairs: the series of one node share its label pair
// (the point of the compact vectors), whatever the family.
func TestCompactVecsSharePairs(t *testing.T) {
	m := New(ForBinary("ami-ingest"))
	a := m.EventsReceived.WithLabelValues("pbx1").(*counter)
	b := m.EventsDropped.WithLabelValues("pbx1", ReasonBufferFull).(*counter)
	c := m.SessionUp.WithLabelValues("pbx1").(*gauge)
	if a.pairs[0] != b.pairs[0] || a.pairs[0] != c.pairs[0] {
		t.Error("the node's label pair is not shared")
	}
	if cap(b.pairs) != len(b.pairs) {
		t.Errorf("pairs cap %d, len %d: an append could write into shared pairs", cap(b.pairs), len(b.pairs))
	}
}

// TestCompactVecsRefuse: as client_golang, a wrong number of label values,
// invalid UTF-8 and a negative counter increment panic.
func TestCompactVecsRefuse(t *testing.T) {
	v := newCounterVec(newPairCache(), "x_total", "Help.", "node")
	for name, f := range map[string]func(){
		"two values": func() { v.WithLabelValues("a", "b") },
		"bad utf-8":  func() { v.WithLabelValues("\xff") },
		"negative":   func() { v.WithLabelValues("a").Add(-1) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s: no panic", name)
				}
			}()
			f()
		}()
	}
}
