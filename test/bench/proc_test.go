package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// userHZ is the unit of utime and stime in /proc/<pid>/stat: USER_HZ, fixed
// at 100 by the Linux ABI whatever the kernel's internal tick.
const userHZ = 100

// tailLines is how many of the subprocess's last log lines are kept for the
// failure message of a benchmark.
const tailLines = 40

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// ingestBinary builds cmd/ami-ingest once per test binary, as `make build`
// does (static, trimmed), and returns its path.
func ingestBinary(b *testing.B) string {
	b.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "amibus-bench-")
		if binErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-trimpath", "-o", binDir, "github.com/amibus/amibus/cmd/ami-ingest")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build ami-ingest: %v\n%s", err, out)
		}
	})
	if binErr != nil {
		b.Fatal(binErr)
	}
	return filepath.Join(binDir, "ami-ingest")
}

// removeBinaries deletes what ingestBinary built (from TestMain).
func removeBinaries() {
	if binDir != "" {
		_ = os.RemoveAll(binDir)
	}
}

// ingestProc is ami-ingest running as a subprocess of the benchmark.
type ingestProc struct {
	cmd  *exec.Cmd
	http string // host:port of /metrics

	logDone chan struct{}
	mu      sync.Mutex
	tail    []string
}

// startIngestProc writes yaml to a file and runs ami-ingest on it; it
// returns once the process logged that it started (its HTTP address
// known). The process is stopped by the benchmark's cleanup.
func startIngestProc(b *testing.B, yaml string) *ingestProc {
	b.Helper()
	bin := ingestBinary(b)
	dir := b.TempDir()
	path := filepath.Join(dir, "ami-ingest.yaml")
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		b.Fatal(err)
	}
	p := &ingestProc{logDone: make(chan struct{})}
	p.cmd = exec.Command(bin, "--config", path, "--data-dir", filepath.Join(dir, "data"))
	// A benchmark killed half-way must not leave an ami-ingest behind.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		b.Fatal(err)
	}
	started := make(chan string, 1)
	// Reads the log until the process exits (the pipe closes); the log is
	// never left unread, so ami-ingest never drops lines because of us.
	go p.readLog(stderr, started)
	b.Cleanup(func() { p.stop(b) })
	select {
	case p.http = <-started:
	case <-p.logDone:
		b.Fatalf("ami-ingest exited before it started:\n%s", p.lastLines())
	case <-time.After(waitLimit):
		b.Fatalf("ami-ingest did not start in %v:\n%s", waitLimit, p.lastLines())
	}
	return p
}

// readLog keeps the last lines of the JSON log and sends the HTTP address
// from the "ami-ingest started" line.
func (p *ingestProc) readLog(r io.Reader, started chan<- string) {
	defer close(p.logDone)
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		p.mu.Lock()
		p.tail = append(p.tail, line)
		if len(p.tail) > tailLines {
			p.tail = p.tail[len(p.tail)-tailLines:]
		}
		p.mu.Unlock()
		var l struct {
			Msg  string `json:"msg"`
			HTTP string `json:"http"`
		}
		if json.Unmarshal([]byte(line), &l) == nil && l.Msg == "ami-ingest started" {
			select {
			case started <- l.HTTP:
			default: // logged once per process; never block the copy
			}
		}
	}
	// Scanner errors (a line over 1 MiB) end the copy; drain the rest so
	// the process is never blocked on its stderr.
	_, _ = io.Copy(io.Discard, r)
}

func (p *ingestProc) lastLines() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.tail, "\n")
}

// stop sends SIGTERM (graceful shutdown) and waits; a process that is not
// gone within its drain time plus a margin is killed.
func (p *ingestProc) stop(b *testing.B) {
	if p.cmd.ProcessState != nil {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	exited := make(chan error, 1)
	go func() {
		<-p.logDone
		exited <- p.cmd.Wait()
	}()
	select {
	case err := <-exited:
		if err != nil {
			b.Errorf("ami-ingest: %v\n%s", err, p.lastLines())
		}
	case <-time.After(30 * time.Second):
		_ = p.cmd.Process.Kill()
		<-exited
		b.Errorf("ami-ingest did not stop on SIGTERM within 30s\n%s", p.lastLines())
	}
}

// pid is the subprocess's process id.
func (p *ingestProc) pid() int { return p.cmd.Process.Pid }

// metrics returns the text of the process's /metrics.
func (p *ingestProc) metrics(b *testing.B) string {
	b.Helper()
	c := http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get("http://" + p.http + "/metrics")
	if err != nil {
		b.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		b.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		b.Fatalf("/metrics: %s", resp.Status)
	}
	return string(body)
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

// rssSampler records the largest VmRSS of a process, sampled on a ticker
// (the kernel's VmHWM gives the exact peak; the samples show it was not a
// start-up spike).
type rssSampler struct {
	stop chan struct{}
	done chan struct{}
	max  int64
	err  error
}

func sampleRSS(pid int, every time.Duration) *rssSampler {
	s := &rssSampler{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(s.done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			m, err := readProcMem(pid)
			if err != nil {
				s.err = err
				return
			}
			s.max = max(s.max, m.RSS)
			select {
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// finish stops sampling and returns the largest RSS seen.
func (s *rssSampler) finish() (int64, error) {
	close(s.stop)
	<-s.done
	return s.max, s.err
}

const mib = 1 << 20
