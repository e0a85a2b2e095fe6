package metrics

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// CounterVec and GaugeVec are the per-node metric families: label sets of
// bounded values (node names from the configuration, a fixed set of
// reasons, types and triggers), created once each and never deleted.
//
// Why not prometheus.CounterVec: a client_golang child costs about 400
// bytes (its own copy of every label pair, a created timestamp, an
// exemplar slot, the vector's map entry) and ami-ingest holds about 20 per
// node, so 80 MiB of live heap at 10,000 idle nodes, twice that in RSS under
// the default GOGC. A child here is its value, the label pairs it shares
// with every other series of the same node (one pair per distinct name and
// value, interned per Metrics), and its map entry: about 100 bytes. The
// exposition is the same; only the counters' created timestamps are not
// exported.
//
// WithLabelValues has client_golang's contract: it panics on a wrong number
// of values or a value that is not valid UTF-8, and a hot path resolves its
// child once.
type CounterVec struct{ vec }

// GaugeVec is CounterVec for gauges.
type GaugeVec struct{ vec }

// WithLabelValues returns the counter of values (created at 0 on first
// use, as in client_golang, so that its series exists before it counts).
func (v *CounterVec) WithLabelValues(values ...string) prometheus.Counter {
	return (*counter)(v.child(values))
}

// WithLabelValues returns the gauge of values (created at 0 on first use).
func (v *GaugeVec) WithLabelValues(values ...string) prometheus.Gauge {
	return (*gauge)(v.child(values))
}

// vec is the family shared by CounterVec and GaugeVec.
type vec struct {
	desc  *prometheus.Desc
	names []string
	typ   prometheus.ValueType
	pairs *pairCache

	mu   sync.RWMutex
	kids map[string]*child // by the label values joined with 0xff (not valid UTF-8)
}

func newVec(pairs *pairCache, typ prometheus.ValueType, name, help string, labels []string) vec {
	return vec{
		desc:  prometheus.NewDesc(name, help, labels, nil),
		names: labels,
		typ:   typ,
		pairs: pairs,
		kids:  make(map[string]*child),
	}
}

func newCounterVec(pairs *pairCache, name, help string, labels ...string) *CounterVec {
	return &CounterVec{newVec(pairs, prometheus.CounterValue, name, help, labels)}
}

func newGaugeVec(pairs *pairCache, name, help string, labels ...string) *GaugeVec {
	return &GaugeVec{newVec(pairs, prometheus.GaugeValue, name, help, labels)}
}

// Describe implements prometheus.Collector.
func (v *vec) Describe(ch chan<- *prometheus.Desc) { ch <- v.desc }

// Collect implements prometheus.Collector: every child, as it is now.
func (v *vec) Collect(ch chan<- prometheus.Metric) {
	v.mu.RLock()
	defer v.mu.RUnlock()
	for _, c := range v.kids {
		if v.typ == prometheus.CounterValue {
			ch <- (*counter)(c)
		} else {
			ch <- (*gauge)(c)
		}
	}
}

func (v *vec) child(values []string) *child {
	if len(values) != len(v.names) {
		panic(fmt.Sprintf("metrics: %s: %d label values for %d labels", v.desc, len(values), len(v.names)))
	}
	key := strings.Join(values, "\xff")
	v.mu.RLock()
	c := v.kids[key]
	v.mu.RUnlock()
	if c != nil {
		return c
	}
	for _, val := range values {
		if !utf8.ValidString(val) {
			panic(fmt.Sprintf("metrics: %s: label value %q is not valid UTF-8", v.desc, val))
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if c = v.kids[key]; c == nil {
		c = &child{v: v, pairs: v.pairs.get(v.names, values)}
		v.kids[key] = c
	}
	return c
}

// child is one series. Its value is valInt (whole increments: Inc, the hot
// path, is one atomic add) plus the float64 in valBits (everything else).
type child struct {
	valBits atomic.Uint64
	valInt  atomic.Uint64
	v       *vec
	pairs   []*dto.LabelPair // shared, read-only; len == cap
}

func (c *child) value() float64 {
	return math.Float64frombits(c.valBits.Load()) + float64(c.valInt.Load())
}

func (c *child) addFloat(f float64) {
	for {
		old := c.valBits.Load()
		if c.valBits.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+f)) {
			return
		}
	}
}

func (c *child) write(out *dto.Metric) error {
	// Shared: the registry and the encoders only read label pairs, and
	// cap == len keeps an append by a wrapper from writing into them.
	out.Label = c.pairs
	if c.v.typ == prometheus.CounterValue {
		out.Counter = &dto.Counter{Value: proto.Float64(c.value())}
	} else {
		out.Gauge = &dto.Gauge{Value: proto.Float64(c.value())}
	}
	return nil
}

// counter is a child of a CounterVec.
type counter child

func (c *counter) Desc() *prometheus.Desc              { return c.v.desc }
func (c *counter) Write(out *dto.Metric) error         { return (*child)(c).write(out) }
func (c *counter) Describe(ch chan<- *prometheus.Desc) { ch <- c.v.desc }
func (c *counter) Collect(ch chan<- prometheus.Metric) { ch <- c }
func (c *counter) Inc()                                { c.valInt.Add(1) }

// Add panics if f < 0, as a client_golang counter does.
func (c *counter) Add(f float64) {
	if f < 0 {
		panic("metrics: counter cannot decrease in value")
	}
	if u := uint64(f); float64(u) == f {
		c.valInt.Add(u)
		return
	}
	(*child)(c).addFloat(f)
}

// gauge is a child of a GaugeVec; only valBits is used.
type gauge child

func (g *gauge) Desc() *prometheus.Desc              { return g.v.desc }
func (g *gauge) Write(out *dto.Metric) error         { return (*child)(g).write(out) }
func (g *gauge) Describe(ch chan<- *prometheus.Desc) { ch <- g.v.desc }
func (g *gauge) Collect(ch chan<- prometheus.Metric) { ch <- g }
func (g *gauge) Set(f float64)                       { g.valBits.Store(math.Float64bits(f)) }
func (g *gauge) Inc()                                { (*child)(g).addFloat(1) }
func (g *gauge) Dec()                                { (*child)(g).addFloat(-1) }
func (g *gauge) Add(f float64)                       { (*child)(g).addFloat(f) }
func (g *gauge) Sub(f float64)                       { (*child)(g).addFloat(-f) }
func (g *gauge) SetToCurrentTime()                   { g.Set(float64(time.Now().UnixNano()) / 1e9) }

// pairCache interns label pairs, one per name and value for all the
// families of one Metrics: a node's name pair is shared by its 20 series.
// It grows with the label values ever used, which are bounded (see
// Metrics).
type pairCache struct {
	mu    sync.Mutex
	pairs map[[2]string]*dto.LabelPair
}

func newPairCache() *pairCache { return &pairCache{pairs: make(map[[2]string]*dto.LabelPair)} }

// get returns the pairs of names and values, sorted by name (the order of
// the exposition), in a slice whose cap is its length.
func (p *pairCache) get(names, values []string) []*dto.LabelPair {
	out := make([]*dto.LabelPair, len(names))
	p.mu.Lock()
	for i, n := range names {
		k := [2]string{n, values[i]}
		lp := p.pairs[k]
		if lp == nil {
			lp = &dto.LabelPair{Name: proto.String(n), Value: proto.String(values[i])}
			p.pairs[k] = lp
		}
		out[i] = lp
	}
	p.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}
