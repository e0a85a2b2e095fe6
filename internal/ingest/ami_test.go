package ingest

// The tests' own AMI peers over real TCP, for what the simulator does not
// do: a PBX that answers exactly as a test scripts it, and a bare client
// for a second login on a simulated PBX.

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/amibus/amibus/internal/testenv"
)

// fakeAction is one action the scripted PBX read, and when.
type fakeAction struct {
	Name, ID string
	At       time.Time
}

// fakePBX is a scripted AMI server over real TCP, for the tests that need
// to place events exactly around a list answer. It serves one connection
// at a time: banner, any Login succeeds, Ping and Logoff are answered, and
// every other action gets what answer returns (written whole, in one
// write, as Asterisk writes a list while it holds its events back). answer
// runs under mu, so that a script may keep state the test reads with
// locked.
type fakePBX struct {
	t      *testing.T
	srv    *testenv.TCPServer
	answer func(a fakeAction) []byte

	// serving is held while a connection is served: a second client
	// waits for the first to end, as it would in the listener's backlog.
	serving sync.Mutex

	wmu  sync.Mutex // every message goes out whole
	conn net.Conn

	mu      sync.Mutex // held by answer
	actions []fakeAction
	changed chan struct{} // capacity 1: an action was recorded
}

func startFakePBX(t *testing.T, answer func(a fakeAction) []byte) *fakePBX {
	t.Helper()
	f := &fakePBX{t: t, answer: answer, changed: make(chan struct{}, 1)}
	f.srv = testenv.ServeTCP(t, f.serve)
	return f
}

func (f *fakePBX) addr() string { return f.srv.Addr() }

// serve makes c the connection writes go to and runs it; the server
// closes c when serve returns.
func (f *fakePBX) serve(c net.Conn) {
	f.serving.Lock()
	defer f.serving.Unlock()
	f.wmu.Lock()
	f.conn = c
	f.wmu.Unlock()
	f.handle(c)
}

// handle runs one connection until it ends; it must not call t.Fatal.
func (f *fakePBX) handle(c net.Conn) {
	f.write([]byte("Asterisk Call Manager/9.0.0\r\n"))
	r := bufio.NewReader(c)
	for {
		h := map[string]string{}
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			line = strings.TrimRight(line, "\r\n")
			if line == "" {
				break
			}
			k, v, _ := strings.Cut(line, ": ")
			h[strings.ToLower(k)] = v
		}
		if len(h) == 0 {
			continue
		}
		a := fakeAction{Name: h["action"], ID: h["actionid"], At: time.Now()}
		var out []byte
		switch strings.ToLower(a.Name) {
		case "login":
			out = amiMsg("Response", "Success", "ActionID", a.ID, "Message", "Authentication accepted")
		case "ping":
			out = amiMsg("Response", "Success", "ActionID", a.ID, "Ping", "Pong", "Timestamp", "1795397676.079634")
		case "logoff":
			out = amiMsg("Response", "Goodbye", "ActionID", a.ID, "Message", "Thanks for all the fish.")
		default:
			f.locked(func() { out = f.answer(a) })
		}
		f.write(out)
		// Recorded once answered: whoever waits for it finds the answer
		// written.
		f.mu.Lock()
		f.actions = append(f.actions, a)
		f.mu.Unlock()
		select {
		case f.changed <- struct{}{}:
		default:
		}
		if strings.EqualFold(a.Name, "logoff") {
			return
		}
	}
}

// write sends b whole; a write error ends the test's connection anyway.
func (f *fakePBX) write(b []byte) {
	f.wmu.Lock()
	defer f.wmu.Unlock()
	if f.conn != nil {
		_, _ = f.conn.Write(b)
	}
}

// locked runs fn under the lock answer runs under.
func (f *fakePBX) locked(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

// received returns the actions named name answered so far.
func (f *fakePBX) received(name string) []fakeAction {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []fakeAction
	for _, a := range f.actions {
		if strings.EqualFold(a.Name, name) {
			out = append(out, a)
		}
	}
	return out
}

// waitActions waits until n actions named name were answered.
func (f *fakePBX) waitActions(name string, n int) []fakeAction {
	f.t.Helper()
	deadline := time.NewTimer(waitLimit)
	defer deadline.Stop()
	for {
		if got := f.received(name); len(got) >= n {
			return got
		}
		select {
		case <-f.changed:
		case <-deadline.C:
			f.t.Fatalf("fake PBX: %d %s actions, waited for %d", len(f.received(name)), name, n)
		}
	}
}

// amiMsg renders one AMI message from key, value pairs.
func amiMsg(kv ...string) []byte {
	var b []byte
	for i := 0; i+1 < len(kv); i += 2 {
		b = append(b, kv[i]...)
		b = append(b, ": "...)
		b = append(b, kv[i+1]...)
		b = append(b, "\r\n"...)
	}
	return append(b, "\r\n"...)
}

// rawAMI is a minimal AMI client for the tests that need a second client
// on a simulated PBX (a failed MD5 login).
type rawAMI struct {
	c   net.Conn
	buf []byte
}

func dialAMI(t *testing.T, addr string) *rawAMI {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(waitLimit))
	a := &rawAMI{c: c}
	if banner := a.line(t); !strings.HasPrefix(banner, "Asterisk Call Manager/") {
		t.Fatalf("banner %q", banner)
	}
	return a
}

func (a *rawAMI) line(t *testing.T) string {
	t.Helper()
	for {
		if i := bytes.Index(a.buf, []byte("\r\n")); i >= 0 {
			l := string(a.buf[:i])
			a.buf = a.buf[i+2:]
			return l
		}
		b := make([]byte, 4096)
		n, err := a.c.Read(b)
		if err != nil && (n == 0 || err != io.EOF) {
			t.Fatalf("AMI read: %v", err)
		}
		a.buf = append(a.buf, b[:n]...)
	}
}

// do sends an action and returns the headers of its response.
func (a *rawAMI) do(t *testing.T, lines ...string) map[string]string {
	t.Helper()
	if _, err := a.c.Write([]byte(strings.Join(lines, "\r\n") + "\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for {
		l := a.line(t)
		if l == "" {
			if out["Response"] != "" {
				return out
			}
			out = map[string]string{} // an event: skip it
			continue
		}
		k, v, _ := strings.Cut(l, ": ")
		out[k] = v
	}
}
