package demo

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
)

// maxLastLine caps the remembered last log line of a process.
const maxLastLine = 512

// proc is one process of the demo: its output goes to its log file, and
// its last line is remembered so that its exit can be explained.
type proc struct {
	name   string
	cmd    *exec.Cmd
	log    *os.File
	last   *lastLine
	exited chan struct{} // closed when the process has exited
	err    error         // of Wait; read after exited is closed
}

// startProc starts path with args, its output in logDir/<name>.log, and a
// goroutine that waits for its exit (ended by the exit, which stop causes).
func startProc(name, path, logDir string, args ...string) (*proc, error) {
	logf, err := os.Create(filepath.Join(logDir, name+".log"))
	if err != nil {
		return nil, err
	}
	p := &proc{name: name, log: logf, last: &lastLine{}, exited: make(chan struct{})}
	out := io.MultiWriter(logf, p.last)
	p.cmd = exec.Command(path, args...)
	p.cmd.Stdout, p.cmd.Stderr = out, out
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		logf.Close()
		close(p.exited)
	}()
	return p, nil
}

// stop asks the process to end and waits until it has.
func (p *proc) stop() {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	<-p.exited
}

// exitedLine is "" while the process runs, else what ended it and its last
// log line.
func (p *proc) exitedLine() string {
	select {
	case <-p.exited:
	default:
		return ""
	}
	how := "exited"
	if p.err != nil {
		how = p.err.Error()
	}
	return fmt.Sprintf("%s stopped (%s); its last log line: %s", p.name, how, p.last.String())
}

// lastLine is an io.Writer that keeps the last complete line written (the
// partial one if none is complete yet), at most maxLastLine bytes of it.
type lastLine struct {
	mu      sync.Mutex
	line    []byte
	partial []byte
}

func (l *lastLine) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			l.partial = appendCapped(l.partial, b)
			break
		}
		l.partial = appendCapped(l.partial, b[:i])
		if len(bytes.TrimSpace(l.partial)) > 0 {
			l.line = append(l.line[:0], l.partial...)
		}
		l.partial = l.partial[:0]
		b = b[i+1:]
	}
	return n, nil
}

func appendCapped(dst, b []byte) []byte {
	if room := maxLastLine - len(dst); len(b) > room {
		b = b[:max(room, 0)]
	}
	return append(dst, b...)
}

// String is the last line: a JSON log line as its message and error.
func (l *lastLine) String() string {
	l.mu.Lock()
	line := l.line
	if len(line) == 0 {
		line = l.partial
	}
	line = bytes.Clone(line)
	l.mu.Unlock()
	if len(line) == 0 {
		return "(none)"
	}
	var j struct {
		Msg   string `json:"msg"`
		Error string `json:"error"`
	}
	if json.Unmarshal(line, &j) == nil && j.Msg != "" {
		if j.Error != "" {
			return j.Msg + ": " + j.Error
		}
		return j.Msg
	}
	return string(line)
}
