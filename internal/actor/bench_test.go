package actor_test

import (
	"context"
	"encoding/json"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.uber.org/zap"

	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
	"github.com/amibus/amibus/pkg/session"
)

// sessionVariants are the actor settings compared side by side in one
// run: one AMI session per node (the actor before issue 14) and the
// default sessions_per_node.
var sessionVariants = []struct{ name, yaml string }{
	{"sessions=1", "actor:\n  sessions_per_node: 1\n"},
	{"sessions=default", ""},
}

// benchEnv is NATS, one simulated PBX that records nothing, and an actor
// for node pbx1 with the extra configuration, logging nowhere.
func benchEnv(b *testing.B, extra string) (*amisim.Server, string) {
	b.Helper()
	ns := testenv.StartNATS(b)
	sim := testenv.StartSim(b, amisim.Config{Node: "pbx1", RecordLimit: -1})
	startActorConfig(b, actorConfig(b, ns.ClientURL(), []node{{"pbx1", sim.Addr()}}, extra), zap.NewNop(), "pbx1")
	return sim, ns.ClientURL()
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(p*float64(len(sorted))))]
}

// BenchmarkAddedLatency measures what ami-actor adds to an AMI action: a
// Ping through NATS and the actor against a Ping sent directly on an AMI
// session of its own to the same simulator, both paced at 1,000 per second
// side by side, b.N of each. It reports p50 and p99 of both and their
// difference (target: p99 added under 1 ms). Run with -benchtime=5000x or
// more for a stable p99.
func BenchmarkAddedLatency(b *testing.B) {
	for _, v := range sessionVariants {
		b.Run(v.name, func(b *testing.B) { benchAddedLatency(b, v.yaml) })
	}
}

func benchAddedLatency(b *testing.B, extra string) {
	sim, url := benchEnv(b, extra)
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()

	up := make(chan struct{}, 1)
	direct, err := session.New("direct", sim.Addr(),
		session.WithCredentials("ami2", "amisecret2"), session.WithEvents("off"),
		session.WithMetrics(metrics.New()),
		session.WithOnUp(func(context.Context, *session.Session, string) {
			select {
			case up <- struct{}{}:
			default:
			}
		}))
	if err != nil {
		b.Fatal(err)
	}
	if err := direct.Start(); err != nil {
		b.Fatal(err)
	}
	defer direct.Close()
	select {
	case <-up:
	case <-time.After(waitLimit):
		b.Fatal("direct session not up")
	}

	const interval = time.Millisecond // 1,000 requests per second each
	viaActor := make([]time.Duration, 0, b.N)
	viaAMI := make([]time.Duration, 0, b.N)
	var failed atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	wg.Add(2)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		var r struct {
			OK bool `json:"ok"`
		}
		for range b.N {
			<-tick.C
			start := time.Now()
			msg, err := nc.Request("ami.action.pbx1.Ping", nil, 5*time.Second)
			d := time.Since(start)
			if err != nil || json.Unmarshal(msg.Data, &r) != nil || !r.OK {
				failed.Add(1)
				continue
			}
			viaActor = append(viaActor, d)
		}
	}()
	go func() {
		defer wg.Done()
		tick := time.NewTicker(interval)
		defer tick.Stop()
		for range b.N {
			<-tick.C
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			start := time.Now()
			_, err := direct.Send(ctx, session.Action{Name: "Ping"})
			d := time.Since(start)
			cancel()
			if err != nil {
				failed.Add(1)
				continue
			}
			viaAMI = append(viaAMI, d)
		}
	}()
	wg.Wait()
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d Pings failed", n)
	}
	slices.Sort(viaActor)
	slices.Sort(viaAMI)
	us := func(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
	a50, a99 := percentile(viaActor, .50), percentile(viaActor, .99)
	d50, d99 := percentile(viaAMI, .50), percentile(viaAMI, .99)
	b.ReportMetric(us(a50), "actor_p50_us")
	b.ReportMetric(us(a99), "actor_p99_us")
	b.ReportMetric(us(d50), "direct_p50_us")
	b.ReportMetric(us(d99), "direct_p99_us")
	b.ReportMetric(us(a50-d50), "added_p50_us")
	b.ReportMetric(us(a99-d99), "added_p99_us")
}

// BenchmarkThroughput measures the actions per second one actor sustains
// against the simulator with 64 requesters each waiting for its reply
// before sending the next (target: at least 20,000/s with the default
// sessions_per_node).
func BenchmarkThroughput(b *testing.B) {
	for _, v := range sessionVariants {
		b.Run(v.name, func(b *testing.B) { benchThroughput(b, v.yaml) })
	}
}

func benchThroughput(b *testing.B, extra string) {
	const requesters = 64
	_, url := benchEnv(b, extra)
	// A few connections, as independent requesters would have.
	conns := make([]*nats.Conn, 4)
	for i := range conns {
		nc, err := nats.Connect(url)
		if err != nil {
			b.Fatal(err)
		}
		defer nc.Close()
		conns[i] = nc
	}
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for g := range requesters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			nc := conns[g%len(conns)]
			var r struct {
				OK bool `json:"ok"`
			}
			for next.Add(1) <= int64(b.N) {
				msg, err := nc.Request("ami.action.pbx1.Ping", nil, 10*time.Second)
				if err != nil || json.Unmarshal(msg.Data, &r) != nil || !r.OK {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if n := failed.Load(); n > 0 {
		b.Fatalf("%d of %d requests failed", n, b.N)
	}
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "actions/s")
}
