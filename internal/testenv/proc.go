package testenv

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// Build builds the main package pkg (an import path, or "." for the
// package under test) as `make build` does (static, trimmed) into a fresh
// temporary directory and returns the binary's path and a function that
// removes the directory. It is meant for TestMain, before any test runs.
func Build(pkg, name string) (bin string, remove func(), err error) {
	dir, err := os.MkdirTemp("", name+"-test-")
	if err != nil {
		return "", nil, err
	}
	remove = func() { _ = os.RemoveAll(dir) }
	bin = filepath.Join(dir, name)
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, pkg)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	out, err := cmd.CombinedOutput()
	if err != nil {
		remove()
		return "", nil, fmt.Errorf("go build %s: %v\n%s", pkg, err, out)
	}
	return bin, remove, nil
}

// maxLines is how many of the last stderr lines a Proc shows; it keeps at
// most twice as many, dropping the older half at once, so that a chatty
// process costs one copy per maxLines lines.
const maxLines = 10000

// Proc is a binary running as a subprocess of the test. Its stderr is read
// line by line as it comes, so a test waits for a line instead of
// sleeping; the reader never falls behind, so the process never blocks on
// its log.
type Proc struct {
	t     testing.TB
	cmd   *exec.Cmd
	exit  chan struct{} // closed when the process has exited
	err   error         // of Wait, set before exit is closed
	start time.Time

	mu      sync.Mutex
	lines   []string      // the last maxLines to 2*maxLines lines
	dropped int           // lines dropped from the front of lines
	changed chan struct{} // capacity 1: a line came
	readers sync.WaitGroup
}

// Run starts bin with args and env added to the test's environment.
// stderr, when not nil, receives the process's stderr instead of the Proc
// (a test of a blocked log). The test's cleanup kills the process if it
// still runs.
func Run(t testing.TB, bin string, env []string, stderr *os.File, args ...string) *Proc {
	t.Helper()
	p := &Proc{t: t, exit: make(chan struct{}), changed: make(chan struct{}, 1)}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	dieWithParent(p.cmd) // a test killed half-way leaves nothing behind
	if stderr != nil {
		p.cmd.Stderr = stderr
	} else {
		r, err := p.cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		p.readers.Add(1)
		go p.read(r)
	}
	p.start = time.Now()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.readers.Wait() // Wait closes the pipe: read it to its end first
		p.err = p.cmd.Wait()
		close(p.exit)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exit:
		default:
			_ = p.cmd.Process.Kill()
			<-p.exit
		}
	})
	return p
}

func (p *Proc) read(r io.Reader) {
	defer p.readers.Done()
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		p.mu.Lock()
		p.lines = append(p.lines, sc.Text())
		if len(p.lines) >= 2*maxLines {
			// A fresh array: WaitLine reads the old one outside the lock.
			n := len(p.lines) - maxLines
			p.lines = append([]string(nil), p.lines[n:]...)
			p.dropped += n
		}
		p.mu.Unlock()
		select {
		case p.changed <- struct{}{}:
		default:
		}
	}
	// A line over 1 MiB ends the scan; drain the rest so that the process
	// never blocks on its stderr.
	_, _ = io.Copy(io.Discard, r)
}

// Stderr is what the process wrote to stderr (its last maxLines lines).
func (p *Proc) Stderr() string { return p.Tail(maxLines) }

// Tail is the last n lines of stderr, for a failure message.
func (p *Proc) Tail(n int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.lines[max(0, len(p.lines)-n):], "\n")
}

// WaitLine waits for a stderr line containing s and each of more, from
// the start of the process, and returns it; the process exiting first or
// WaitLimit fail the test.
func (p *Proc) WaitLine(s string, more ...string) string {
	p.t.Helper()
	deadline := time.NewTimer(WaitLimit)
	defer deadline.Stop()
	next := 0 // the number of the next line to look at, counted from the start
	for {
		p.mu.Lock()
		from := max(next-p.dropped, 0)
		lines := p.lines[from:]
		next = p.dropped + len(p.lines)
		p.mu.Unlock()
		for _, l := range lines {
			if containsAll(l, s, more) {
				return l
			}
		}
		select {
		case <-p.changed:
		case <-p.exit:
			p.mu.Lock()
			done := next == p.dropped+len(p.lines)
			p.mu.Unlock()
			if done {
				p.t.Fatalf("exited (%v) before logging %q; stderr:\n%s", p.err, append([]string{s}, more...), p.Tail(100))
			}
		case <-deadline.C:
			p.t.Fatalf("no stderr line with %q; stderr:\n%s", append([]string{s}, more...), p.Tail(100))
		}
	}
}

func containsAll(l, s string, more []string) bool {
	if !strings.Contains(l, s) {
		return false
	}
	for _, m := range more {
		if !strings.Contains(l, m) {
			return false
		}
	}
	return true
}

// Exited is closed when the process has exited.
func (p *Proc) Exited() <-chan struct{} { return p.exit }

// Wait waits up to within for the exit and returns the exit code and the
// time since the start.
func (p *Proc) Wait(within time.Duration) (int, time.Duration) {
	p.t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	select {
	case <-p.exit:
	case <-timer.C:
		p.t.Fatalf("still running after %v; stderr:\n%s", within, p.Tail(100))
	}
	elapsed := time.Since(p.start)
	var ee *exec.ExitError
	if errors.As(p.err, &ee) {
		return ee.ExitCode(), elapsed
	}
	if p.err != nil {
		p.t.Fatal(p.err)
	}
	return 0, elapsed
}

// Signal sends sig to the process.
func (p *Proc) Signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// Pid is the process id.
func (p *Proc) Pid() int { return p.cmd.Process.Pid }

// MainWithBinary is a whole TestMain for the tests of a main package: it
// builds pkg as name into *bin, runs the tests, fails the run if any of
// their goroutines outlived them (goleak), removes the binary and exits.
func MainWithBinary(m *testing.M, pkg, name string, bin *string) {
	path, remove, err := Build(pkg, name)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = path
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	remove()
	os.Exit(code)
}
