package demo

import (
	"strings"
	"testing"
	"time"
)

// TestExitedProcessIsNamedWithItsLastLine: a demo process that exits (here
// one that could not bind its port) is reported as stopped, with its exit
// status and its last log line, its message and error read from the JSON.
func TestExitedProcessIsNamedWithItsLastLine(t *testing.T) {
	script := `echo '{"level":"info","msg":"starting"}'; ` +
		`echo '{"level":"error","msg":"ami-actor failed","error":"listen tcp 127.0.0.1:9091: bind: address already in use"}' >&2; exit 1`
	p, err := startProc("ami-actor", "/bin/sh", t.TempDir(), "-c", script)
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		p.stop()
		t.Fatal("the process did not exit")
	}
	got := p.exitedLine()
	for _, want := range []string{"ami-actor stopped", "exit status 1", "ami-actor failed: listen tcp 127.0.0.1:9091: bind: address already in use"} {
		if !strings.Contains(got, want) {
			t.Fatalf("%q does not say %q", got, want)
		}
	}
	p.stop() // already exited: returns at once
}

func TestRunningProcessIsNotReportedAndStops(t *testing.T) {
	p, err := startProc("amisim", "/bin/sh", t.TempDir(), "-c", "echo ready; exec sleep 60")
	if err != nil {
		t.Fatal(err)
	}
	if e := p.exitedLine(); e != "" {
		t.Fatalf("running process reported: %s", e)
	}
	p.stop()
	if !strings.Contains(p.exitedLine(), "amisim stopped") {
		t.Fatalf("after stop: %q", p.exitedLine())
	}
}

func TestLastLineCapped(t *testing.T) {
	var l lastLine
	_, _ = l.Write([]byte("first\nsec"))
	_, _ = l.Write([]byte("ond\n\n"))
	if l.String() != "second" {
		t.Fatalf("%q", l.String())
	}
	_, _ = l.Write([]byte(strings.Repeat("x", 4*maxLastLine) + "\n"))
	if len(l.String()) != maxLastLine {
		t.Fatalf("kept %d bytes", len(l.String()))
	}
}
