package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/amibus/amibus/internal/testenv"
)

// userHZ is the unit of utime and stime in /proc/<pid>/stat: USER_HZ, fixed
// at 100 by the Linux ABI whatever the kernel's internal tick.
const userHZ = 100

// tailLines is how many of the subprocess's last log lines are kept for the
// failure message of a benchmark.
const tailLines = 40

// builtMain is one main of cmd/ built for the benchmarks.
type builtMain struct {
	once   sync.Once
	path   string
	remove func()
	err    error
}

var (
	builtMu sync.Mutex
	built   = map[string]*builtMain{} // by command name; a handful at most
)

// mainBinary builds cmd/<name> once per test binary, as `make build` does
// (static, trimmed), and returns its path.
func mainBinary(b *testing.B, name string) string {
	b.Helper()
	builtMu.Lock()
	m := built[name]
	if m == nil {
		m = &builtMain{remove: func() {}}
		built[name] = m
	}
	builtMu.Unlock()
	m.once.Do(func() {
		var remove func()
		m.path, remove, m.err = testenv.Build("github.com/amibus/amibus/cmd/"+name, name)
		if m.err == nil {
			m.remove = remove
		}
	})
	if m.err != nil {
		b.Fatal(m.err)
	}
	return m.path
}

// ingestBinary is cmd/ami-ingest built once (mainBinary).
func ingestBinary(b *testing.B) string { return mainBinary(b, "ami-ingest") }

// removeBinaries deletes what mainBinary built (from TestMain).
func removeBinaries() {
	builtMu.Lock()
	defer builtMu.Unlock()
	for _, m := range built {
		m.remove()
	}
}

// mainProc is a main of cmd/ (ami-ingest, ami-state, amisim) running as a
// subprocess of the benchmark.
type mainProc struct {
	*testenv.Proc
	name string // the command, for messages
	http string // host:port of /metrics
}

// startIngestProc writes yaml to a file and runs ami-ingest on it (see
// startMain; AMIBUS_BENCH_INGEST_BIN names another build to run, to compare
// two in one run).
func startIngestProc(b *testing.B, yaml string) *mainProc {
	b.Helper()
	dir := b.TempDir()
	return startMain(b, "ami-ingest", nil, yaml, "--data-dir", filepath.Join(dir, "data"))
}

// startMain writes yaml to a file and runs cmd/<name> on it (runMain); it
// returns once the process logged that it started (its HTTP address
// known).
func startMain(b *testing.B, name string, env []string, yaml string, args ...string) *mainProc {
	b.Helper()
	path := filepath.Join(b.TempDir(), name+".yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	p := runMain(b, name, env, append([]string{"--config", path}, args...)...)
	line := p.WaitLine(`"msg":"` + name + ` started"`)
	var started struct {
		HTTP string `json:"http"`
	}
	if err := json.Unmarshal([]byte(line), &started); err != nil || started.HTTP == "" {
		b.Fatalf("no HTTP address in %s", line)
	}
	p.http = started.HTTP
	return p
}

// runMain runs cmd/<name> (for ami-ingest, the build
// AMIBUS_BENCH_INGEST_BIN names, if set) with args, and env added to the
// environment. The benchmark's cleanup stops it.
func runMain(b *testing.B, name string, env []string, args ...string) *mainProc {
	b.Helper()
	bin := ""
	if name == "ami-ingest" {
		bin = os.Getenv("AMIBUS_BENCH_INGEST_BIN")
	}
	if bin == "" {
		bin = mainBinary(b, name)
	}
	p := &mainProc{name: name, Proc: testenv.Run(b, bin, env, nil, args...)}
	b.Cleanup(func() { p.stop(b) })
	return p
}

// waitReady returns once ready reports true, checked every every: another
// process's listener has no signal to wait on. The process exiting first,
// or waitLimit, is an error.
func (p *mainProc) waitReady(what string, every time.Duration, ready func() bool) error {
	deadline := time.Now().Add(waitLimit)
	for {
		select {
		case <-p.Exited():
			return fmt.Errorf("%s exited before %s:\n%s", p.name, what, p.lastLines())
		default:
		}
		if ready() {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not %s after %v:\n%s", p.name, what, waitLimit, p.lastLines())
		}
		<-time.After(every)
	}
}

// lastLines is the end of the process's log, for a failure message.
func (p *mainProc) lastLines() string { return p.Tail(tailLines) }

// stop sends SIGTERM (graceful shutdown) and waits; a process that is not
// gone within waitLimit (its drain time plus a margin, with 10,000
// sessions to close) fails the benchmark and is killed.
func (p *mainProc) stop(b *testing.B) {
	select {
	case <-p.Exited():
		return
	default:
	}
	p.Signal(syscall.SIGTERM)
	if code, _ := p.Wait(waitLimit); code != 0 {
		b.Errorf("%s exited %d\n%s", p.name, code, p.lastLines())
	}
}

// measureWindow measures process pid for d with the benchmark's timer
// running: the CPU time it used, the wall time and its memory at the end.
func measureWindow(b *testing.B, pid int, d time.Duration) (cpu, wall time.Duration, mem procMem) {
	b.Helper()
	b.ResetTimer()
	c0, t0 := mustCPU(b, pid), time.Now()
	<-time.After(d)
	c1, t1 := mustCPU(b, pid), time.Now()
	b.StopTimer()
	mem, err := readProcMem(pid)
	if err != nil {
		b.Fatal(err)
	}
	return c1 - c0, t1.Sub(t0), mem
}

// idleWindow is measureWindow on the process, with its metrics at the end.
func (p *mainProc) idleWindow(b *testing.B, d time.Duration) (cpu, wall time.Duration, mem procMem, text string) {
	b.Helper()
	cpu, wall, mem = measureWindow(b, p.Pid(), d)
	return cpu, wall, mem, p.metrics(b)
}

// finishMemory stops rss and returns the largest RSS it saw, the
// process's memory now and its metrics.
func (p *mainProc) finishMemory(b *testing.B, rss *sampler) (maxSampled int64, mem procMem, text string) {
	b.Helper()
	sampled, err := rss.finish()
	if err != nil {
		b.Fatal(err)
	}
	maxSampled = int64(sampled)
	if mem, err = readProcMem(p.Pid()); err != nil {
		b.Fatal(err)
	}
	return maxSampled, mem, p.metrics(b)
}

// metrics returns the text of the process's /metrics.
func (p *mainProc) metrics(b *testing.B) string {
	b.Helper()
	text, err := p.fetch("/metrics")
	if err != nil {
		b.Fatal(err)
	}
	return text
}

// fetch returns the body of path on the process's HTTP server.
func (p *mainProc) fetch(path string) (string, error) {
	// Gathering the metrics of 10,000 nodes (a name[] filter applies
	// after) takes seconds on a loaded machine.
	c := http.Client{Timeout: waitLimit}
	resp, err := c.Get("http://" + p.http + path)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("%s: %s", path, resp.Status)
	}
	return string(body), nil
}

// sumMetric adds the values of every sample of metric name in Prometheus
// text whose labels contain all of the given label pairs (`reason="x"`).
func sumMetric(text, name string, labels ...string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if line == "" || line[0] == '#' || !strings.HasPrefix(line, name) {
			continue
		}
		rest := line[len(name):]
		if rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue // a longer name with this prefix
		}
		ok := true
		for _, l := range labels {
			if !strings.Contains(rest, l) {
				ok = false
				break
			}
		}
		sp := strings.LastIndexByte(rest, ' ')
		if !ok || sp < 0 {
			continue
		}
		v, err := strconv.ParseFloat(rest[sp+1:], 64)
		if err == nil {
			sum += v
		}
	}
	return sum
}

// procMem is a process's resident memory from /proc/<pid>/status.
type procMem struct {
	RSS, HWM int64 // VmRSS and its peak VmHWM, bytes
}

func readProcMem(pid int) (procMem, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return procMem{}, err
	}
	return parseProcStatus(data)
}

func parseProcStatus(data []byte) (procMem, error) {
	var m procMem
	found := 0
	for _, line := range bytes.Split(data, []byte("\n")) {
		var dst *int64
		switch {
		case bytes.HasPrefix(line, []byte("VmRSS:")):
			dst = &m.RSS
		case bytes.HasPrefix(line, []byte("VmHWM:")):
			dst = &m.HWM
		default:
			continue
		}
		f := strings.Fields(string(line))
		if len(f) != 3 || f[2] != "kB" {
			return m, fmt.Errorf("proc status: unexpected line %q", line)
		}
		kb, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return m, fmt.Errorf("proc status: %q: %w", line, err)
		}
		*dst = kb << 10
		found++
	}
	if found != 2 {
		return m, errors.New("proc status: VmRSS or VmHWM missing")
	}
	return m, nil
}

// cpuTime is the user plus system CPU time the process has used.
func cpuTime(pid int) (time.Duration, error) {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseProcStat(data)
}

// parseProcStat reads utime and stime (fields 14 and 15) from a
// /proc/<pid>/stat line; the command name in parentheses may hold spaces
// and parentheses, so fields are counted after its last ')'.
func parseProcStat(data []byte) (time.Duration, error) {
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0, errors.New("proc stat: no command name")
	}
	f := strings.Fields(string(data[i+1:]))
	// f[0] is field 3 (state): utime is field 14, stime field 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("proc stat: %d fields after the name", len(f))
	}
	var ticks int64
	for _, s := range f[11:13] {
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("proc stat: %q: %w", s, err)
		}
		ticks += v
	}
	return time.Duration(ticks) * time.Second / userHZ, nil
}

// sampler records the largest value a probe returns, sampled on a ticker
// until finish.
type sampler struct {
	stop chan struct{}
	done chan struct{}
	max  float64
	err  error
}

// sampleMax probes every every until finish; an error of probe ends the
// sampling, and finish returns it.
func sampleMax(every time.Duration, probe func() (float64, error)) *sampler {
	s := &sampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			v, err := probe()
			if err != nil {
				s.err = err
				return
			}
			s.max = max(s.max, v)
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// finish stops sampling and returns the largest value seen.
func (s *sampler) finish() (float64, error) {
	close(s.stop)
	<-s.done
	return s.max, s.err
}

// sampleRSS records the largest VmRSS of a process (the kernel's VmHWM
// gives the exact peak; the samples show it was not a start-up spike).
func sampleRSS(pid int, every time.Duration) *sampler {
	return sampleMax(every, func() (float64, error) {
		m, err := readProcMem(pid)
		return float64(m.RSS), err
	})
}

const mib = 1 << 20
