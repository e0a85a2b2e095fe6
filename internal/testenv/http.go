package testenv

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Get fetches url and returns its status code and body.
func Get(t testing.TB, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, string(b)
}

// Scrape reads the /metrics endpoint at addr into a map from
// `name{label=value}...` (labels in exposition order) to the value of each
// counter and gauge.
func Scrape(t testing.TB, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for name, f := range fams {
		for _, m := range f.Metric {
			key := name
			for _, l := range m.Label {
				key += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			}
		}
	}
	return out
}

// CheckCredentialsRefused runs the main bin against a NATS server that
// refuses its credentials, a wrong password and then a wrong token, and
// checks what every main promises: within seconds a log line and /readyz
// say that the server refused the credentials, with the server's reason;
// the failure is counted by cause; the process still starts (it logs
// started) and ends cleanly on SIGTERM; no credential shows anywhere.
func CheckCredentialsRefused(t *testing.T, bin, started string) {
	const wrongPass, wrongTok = "wr0ng-n4ts-p4ss", "wr0ng-n4ts-t0ken"
	for _, tc := range []struct {
		name, auth string
		opts       func(*server.Options)
	}{
		{"user and password", "user: amibus\n  password: " + wrongPass, func(o *server.Options) { o.Username, o.Password = "amibus", "right-pass" }},
		{"token", "token: " + wrongTok, func(o *server.Options) { o.Authorization = "right-token" }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := StartNATS(t, ServerOptions(tc.opts))
			httpAddr := DeadAddr(t)
			cm := NewConfigMap(t, fmt.Sprintf("nats:\n  url: %s\n  %s\nhttp:\n  listen: %s\n"+
				"nodes:\n  - {name: pbx1, address: %s, username: ami, secret: amisecret}\n",
				ns.ClientURL(), tc.auth, httpAddr, DeadAddr(t)))
			p := Run(t, bin, nil, nil, "--config", cm.Path())
			begin := time.Now()
			line := p.WaitLine("refused the credentials")
			t.Logf("after %v: %s", time.Since(begin), line)
			// "Within seconds": loose, for a loaded machine.
			if d := time.Since(begin); d > 10*time.Second {
				t.Fatalf("said after %v", d)
			}
			if !strings.Contains(line, "authorization violation") {
				t.Fatalf("log line does not give the server's reason: %s", line)
			}
			p.WaitLine(started)
			code, body := Get(t, "http://"+httpAddr+"/readyz")
			if code != http.StatusServiceUnavailable || !strings.Contains(body, "refused the credentials (authorization violation)") {
				t.Fatalf("/readyz %d %q", code, body)
			}
			if n := Scrape(t, httpAddr)["ami_nats_connection_failures_total{cause=authorization}"]; n < 1 {
				t.Fatalf("ami_nats_connection_failures_total{cause=authorization} = %v", n)
			}
			p.Signal(syscall.SIGTERM)
			if code, _ := p.Wait(WaitLimit); code != 0 {
				t.Fatalf("exit %d after SIGTERM; stderr:\n%s", code, p.Stderr())
			}
			out := p.Stderr() + body
			for _, s := range []string{wrongPass, wrongTok, "right-pass", "right-token", "panic", "goroutine "} {
				if strings.Contains(out, s) {
					t.Fatalf("%q shows:\n%s", s, out)
				}
			}
		})
	}
}
