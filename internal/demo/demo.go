// Package demo is amidemo, the demo of `make run` (cmd/amidemo): it starts
// the whole pipeline on one machine as subprocesses (amisim, ami-ingest with
// its embedded NATS server, ami-actor, ami-state) and prints a one-line live
// status until its context ends.
package demo

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Options are amidemo's flags.
type Options struct {
	Bin            string  // directory holding amisim, ami-ingest, ami-actor and ami-state
	Nodes          int     // simulated PBXs
	CallsPerSecond float64 // simulated calls per second per PBX
	DataDir        string  // JetStream storage of the embedded NATS server, the config and the logs
	AMIPort        int     // first simulated PBX port
}

// Run starts the processes, prints how to try them and a status line a
// second until ctx ends, then stops them in reverse order.
func Run(ctx context.Context, o Options) error {
	bin, nodes, cps, dataDir, basePort := o.Bin, o.Nodes, o.CallsPerSecond, o.DataDir, o.AMIPort
	cfgPath := filepath.Join(dataDir, "amidemo.yaml")
	if err := os.MkdirAll(dataDir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(cfgPath, []byte(demoConfig(nodes, basePort, dataDir)), 0o600); err != nil {
		return err
	}
	logDir := filepath.Join(dataDir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return err
	}

	var procs []*proc
	defer func() {
		// Stop in reverse order so the ingest drains while NATS is still up.
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop()
		}
	}()
	start := func(name string, args ...string) error {
		p, err := startProc(name, filepath.Join(bin, name), logDir, args...)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		return nil
	}

	if err := start("amisim", "--listen", fmt.Sprintf("127.0.0.1:%d", basePort),
		"--nodes", fmt.Sprint(nodes), "--calls-per-second", fmt.Sprint(cps)); err != nil {
		return err
	}
	if err := start("ami-ingest", "--config", cfgPath); err != nil {
		return err
	}
	if err := waitReady(ctx, "http://127.0.0.1:9090/readyz", 30*time.Second, procs[len(procs)-1]); err != nil {
		return fmt.Errorf("ami-ingest not ready (see %s): %w", filepath.Join(logDir, "ami-ingest.log"), err)
	}
	if err := start("ami-actor", "--config", cfgPath); err != nil {
		return err
	}
	if err := start("ami-state", "--config", cfgPath); err != nil {
		return err
	}

	fmt.Printf("amibus demo: %d simulated PBXs on 127.0.0.1:%d.., NATS on nats://127.0.0.1:4222, logs in %s\n", nodes, basePort, logDir)
	fmt.Println("try:  go run github.com/nats-io/natscli/nats@v0.5.1 sub 'ami.events.>'")
	fmt.Println("      go run github.com/nats-io/natscli/nats@v0.5.1 request ami.action.pbx1 '{\"action\":\"CoreShowChannels\"}'")
	fmt.Println("      go run github.com/nats-io/natscli/nats@v0.5.1 request ami.state.pbx1 ''")
	fmt.Println("      go run github.com/nats-io/natscli/nats@v0.5.1 kv watch ami_state 'pbx1.>'")
	fmt.Println("Ctrl-C stops everything.")
	return status(ctx, "http://127.0.0.1:9090/metrics", "http://127.0.0.1:9092/metrics", procs)
}

func demoConfig(nodes, basePort int, dataDir string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "nats:\n  url: \"\"\n  embedded:\n    listen: 127.0.0.1:4222\n    data_dir: %q\n", filepath.Join(dataDir, "jetstream"))
	// No http.listen: each binary takes its own default (ingest 9090, actor 9091, state 9092).
	b.WriteString("nodes:\n")
	for i := 0; i < nodes; i++ {
		fmt.Fprintf(&b, "  - name: pbx%d\n    address: 127.0.0.1:%d\n    username: ami\n    secret: amisecret\n    actor_username: ami2\n    actor_secret: amisecret2\n", i+1, basePort+i)
	}
	return b.String()
}

func waitReady(ctx context.Context, url string, within time.Duration, p *proc) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	t := time.NewTicker(200 * time.Millisecond)
	defer t.Stop()
	for {
		if e := p.exitedLine(); e != "" {
			return errors.New(e)
		}
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-p.exited:
		case <-t.C:
		}
	}
}

// status prints one refreshed line a second; a display refresh, not a
// synchronisation, so a ticker is the right tool.
func status(ctx context.Context, url, stateURL string, procs []*proc) error {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var prevRecv float64
	prevAt := time.Now()
	reported := make(map[*proc]bool, len(procs))
	for {
		select {
		case <-ctx.Done():
			fmt.Println()
			return nil
		case <-t.C:
		}
		// A process that exited is said once on a line of its own, with
		// its last log line, and stays named on every status line after.
		var gone []string
		for _, p := range procs {
			e := p.exitedLine()
			if e == "" {
				continue
			}
			gone = append(gone, p.name+" EXITED")
			if !reported[p] {
				reported[p] = true
				fmt.Printf("\r%-120s\n", e)
			}
		}
		prefix := ""
		if len(gone) > 0 {
			prefix = strings.Join(gone, ", ") + " | "
		}
		fams, err := scrape(url)
		if err != nil {
			fmt.Printf("\r%-120s", prefix+"ingest unreachable: "+err.Error())
			continue
		}
		recv := sum(fams["ami_events_received_total"], "")
		now := time.Now()
		rate := (recv - prevRecv) / now.Sub(prevAt).Seconds()
		prevRecv, prevAt = recv, now
		line := prefix + fmt.Sprintf("events/s %6.0f | received %d published %d dropped %d |",
			rate, int64(recv), int64(sum(fams["ami_events_published_total"], "")), int64(sum(fams["ami_events_dropped_total"], "")))
		for _, n := range nodesOf(fams["ami_session_up"]) {
			up := "down"
			if sum(fams["ami_session_up"], n) == 1 {
				up = "up"
			}
			line += fmt.Sprintf(" %s %s %d", n, up, int64(sum(fams["ami_events_published_total"], n)))
		}
		// Live channels per node as ami-state last flushed them.
		if sf, err := scrape(stateURL); err == nil {
			line += " | live channels:"
			for _, n := range nodesOf(sf["ami_state_live_channels"]) {
				line += fmt.Sprintf(" %s %d", n, int64(sum(sf["ami_state_live_channels"], n)))
			}
		} else {
			line += " | ami-state unreachable"
		}
		fmt.Printf("\r%-160s", line)
	}
}

func scrape(url string) (map[string]*dto.MetricFamily, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, errors.New(resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	return p.TextToMetricFamilies(resp.Body)
}

// sum adds a family's samples, of one node if node is not empty.
func sum(f *dto.MetricFamily, node string) float64 {
	if f == nil {
		return 0
	}
	var s float64
	for _, m := range f.Metric {
		if node != "" && label(m, "node") != node {
			continue
		}
		switch {
		case m.Counter != nil:
			s += m.Counter.GetValue()
		case m.Gauge != nil:
			s += m.Gauge.GetValue()
		}
	}
	return s
}

func nodesOf(f *dto.MetricFamily) []string {
	if f == nil {
		return nil
	}
	var out []string
	for _, m := range f.Metric {
		out = append(out, label(m, "node"))
	}
	sort.Strings(out)
	return out
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}
