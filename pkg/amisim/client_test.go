package amisim

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testTimeout bounds every wait in these tests; none is expected to come
// near it.
const testTimeout = 10 * time.Second

// tmsg is a message as read by the test client: its lines split at the
// first ": " (a line without one has an empty key).
type tmsg [][2]string

func (m tmsg) get(key string) string {
	for _, h := range m {
		if h[0] == key {
			return h[1]
		}
	}
	return ""
}

func (m tmsg) first() string {
	if len(m) == 0 {
		return ""
	}
	return m[0][0] + ": " + m[0][1]
}

func (m tmsg) String() string {
	var b strings.Builder
	for _, h := range m {
		b.WriteString(h[0] + ": " + h[1] + "\n")
	}
	return b.String()
}

// client is an independent AMI client for the tests: it shares no code
// with the simulator's wire code, and it insists on CRLF line ends.
type client struct {
	t  testing.TB
	nc net.Conn
	r  *bufio.Reader
}

func dial(t testing.TB, s *Server) *client {
	t.Helper()
	nc, err := net.DialTimeout("tcp", s.Addr(), testTimeout)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	c := &client{t: t, nc: nc, r: bufio.NewReader(nc)}
	t.Cleanup(func() { _ = nc.Close() })
	return c
}

func dialTLS(t testing.TB, s *Server, cfg *tls.Config) *client {
	t.Helper()
	nc, err := tls.DialWithDialer(&net.Dialer{Timeout: testTimeout}, "tcp", s.Addr(), cfg)
	if err != nil {
		t.Fatalf("dial tls: %v", err)
	}
	c := &client{t: t, nc: nc, r: bufio.NewReader(nc)}
	t.Cleanup(func() { _ = nc.Close() })
	return c
}

// line reads one CRLF-ended line without its terminator.
func (c *client) line() (string, error) {
	_ = c.nc.SetReadDeadline(time.Now().Add(testTimeout))
	l, err := c.r.ReadString('\n')
	if err != nil {
		if l != "" && errors.Is(err, io.EOF) {
			return "", fmt.Errorf("stream ended inside a line %q: %w", l, io.ErrUnexpectedEOF)
		}
		return "", err
	}
	if !strings.HasSuffix(l, "\r\n") || strings.Contains(l[:len(l)-2], "\r") {
		return "", fmt.Errorf("line not ended by a single CRLF: %q", l)
	}
	return l[:len(l)-2], nil
}

// banner reads and checks the banner line.
func (c *client) banner() string {
	c.t.Helper()
	l, err := c.line()
	if err != nil {
		c.t.Fatalf("banner: %v", err)
	}
	if !strings.HasPrefix(l, "Asterisk Call Manager/") {
		c.t.Fatalf("banner = %q", l)
	}
	return l
}

// read reads one message; io.EOF only at a message boundary.
func (c *client) read() (tmsg, error) {
	var m tmsg
	for {
		l, err := c.line()
		if err != nil {
			if errors.Is(err, io.EOF) && len(m) > 0 {
				return nil, fmt.Errorf("stream ended inside a message: %w", io.ErrUnexpectedEOF)
			}
			return nil, err
		}
		if l == "" {
			return m, nil
		}
		k, v, ok := strings.Cut(l, ": ")
		if !ok {
			k, v = "", l
			if strings.HasSuffix(l, ":") {
				k, v = strings.TrimSuffix(l, ":"), ""
			}
		}
		m = append(m, [2]string{k, v})
	}
}

func (c *client) mustRead() tmsg {
	c.t.Helper()
	m, err := c.read()
	if err != nil {
		c.t.Fatalf("read: %v", err)
	}
	return m
}

// readUntil reads messages until one whose first line is want, and
// returns them all (that one last).
func (c *client) readUntil(want string) []tmsg {
	c.t.Helper()
	var out []tmsg
	for {
		m := c.mustRead()
		out = append(out, m)
		if m.first() == want {
			return out
		}
	}
}

// resp reads messages until a response, skipping events.
func (c *client) resp() tmsg {
	c.t.Helper()
	for {
		if m := c.mustRead(); len(m) > 0 && m[0][0] == "Response" {
			return m
		}
	}
}

// expectEOF asserts the server closes the connection at a message boundary.
func (c *client) expectEOF() {
	c.t.Helper()
	_ = c.nc.SetReadDeadline(time.Now().Add(testTimeout))
	if b, err := c.r.ReadByte(); err == nil {
		c.t.Fatalf("expected EOF, got more data starting %q", b)
	} else if !errors.Is(err, io.EOF) {
		c.t.Fatalf("expected EOF, got %v", err)
	}
}

// send writes "Key: Value" CRLF lines and the empty line.
func (c *client) send(headers ...string) {
	c.t.Helper()
	c.write(strings.Join(headers, "\r\n") + "\r\n\r\n")
}

func (c *client) write(s string) {
	c.t.Helper()
	_ = c.nc.SetWriteDeadline(time.Now().Add(testTimeout))
	if _, err := io.WriteString(c.nc, s); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// do sends an action and reads its response.
func (c *client) do(headers ...string) tmsg {
	c.t.Helper()
	c.send(headers...)
	return c.mustRead()
}

// login logs in with events set to ev ("" = no Events header) and reads
// the answer and, with events on, FullyBooted and SuccessfulAuth.
func (c *client) login(user, secret, ev string) {
	c.t.Helper()
	c.banner()
	h := []string{"Action: Login", "Username: " + user, "Secret: " + secret, "ActionID: login"}
	if ev != "" {
		h = append(h, "Events: "+ev)
	}
	r := c.do(h...)
	if r.get("Response") != "Success" {
		c.t.Fatalf("login: %v", r)
	}
	if ev == "" || ev == "on" {
		if m := c.mustRead(); m.first() != "Event: FullyBooted" {
			c.t.Fatalf("after login: %v", m)
		}
		if m := c.mustRead(); m.first() != "Event: SuccessfulAuth" {
			c.t.Fatalf("after login: %v", m)
		}
	}
}

// loggedIn dials s and logs in as ami with events off, as most tests'
// clients begin.
func loggedIn(t testing.TB, s *Server) *client {
	t.Helper()
	c := dial(t, s)
	c.login("ami", "amisecret", "off")
	return c
}

// start starts a Server closed at the end of the test.
func start(t testing.TB, cfg Config) *Server {
	t.Helper()
	s, err := Start(cfg)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// waitFor waits, through Server.WaitUntil, for cond.
func waitFor(t testing.TB, s *Server, what string, cond func() bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if err := s.WaitUntil(ctx, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}
