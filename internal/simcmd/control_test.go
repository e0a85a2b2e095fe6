package simcmd

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/amibus/amibus/pkg/amisim"
)

// TestControl: the control endpoint reports what a client did on a node
// (login user, ActionIDs, concurrent sessions), never a secret, steers the
// traffic and answer delays, and refuses bad requests; it stops with Run.
func TestControl(t *testing.T) {
	fleet, log, stop := startRun(t, "--listen", "127.0.0.1:0", "--nodes", "2", "--users", "ops:s3cr3t-value",
		"--control", "127.0.0.1:0", "--record-limit", "1000")
	base := "http://" + controlAddr(t, log.String())
	hc := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	call := func(method, path string, want int) string {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, nil)
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want {
			t.Fatalf("%s %s: %s %s, want %d", method, path, resp.Status, b, want)
		}
		if strings.Contains(string(b), "s3cr3t") {
			t.Fatalf("%s %s reveals the secret: %s", method, path, b)
		}
		return string(b)
	}
	get := func(path string, v any) {
		t.Helper()
		if err := json.Unmarshal([]byte(call("GET", path, 200)), v); err != nil {
			t.Fatal(err)
		}
	}

	// A client logs in to pbx2 and pings.
	s := fleet.Servers()[1]
	nc, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	r := bufio.NewReader(nc)
	_, _ = r.ReadString('\n')
	_, _ = nc.Write([]byte("Action: Login\r\nActionID: inst.pbx2.e1.1\r\nUsername: OPS\r\nSecret: s3cr3t-value\r\n\r\n" +
		"Action: Ping\r\nActionID: inst.pbx2.e1.2\r\n\r\n"))
	readUntil(t, r, "Ping: Pong")

	var nodes []nodeStatus
	get("/nodes", &nodes)
	if len(nodes) != 2 || nodes[1].Node != "pbx2" || nodes[1].Logins != 1 || nodes[1].Active["ops"] != 1 ||
		nodes[1].MaxActive["ops"] != 1 || nodes[0].Logins != 0 {
		t.Fatalf("nodes: %+v", nodes)
	}
	var conns []connStatus
	get("/nodes/pbx2/conns", &conns)
	if len(conns) != 1 || conns[0].User != "ops" || conns[0].ActionID != "inst.pbx2.e1.1" {
		t.Fatalf("conns: %+v", conns)
	}
	var acts []action
	get("/nodes/pbx2/actions?action=ping", &acts)
	if len(acts) != 1 || acts[0].Name != "Ping" || acts[0].ActionID != "inst.pbx2.e1.2" || acts[0].Conn != conns[0].Conn {
		t.Fatalf("actions: %+v", acts)
	}
	call("GET", "/nodes/pbx9/conns", 404)
	// Bad rates, delays, mixes and seeds are refused.
	for _, path := range []string{
		"/traffic?calls_per_second=x",
		"/answer-delay?action=Ping&delay=-1s",
		"/traffic?calls_per_second=5&mix=nope=1",
		"/traffic?calls_per_second=-1&mix=default",
		"/traffic?calls_per_second=5&mix=default&seed=x",
	} {
		call("POST", path, 400)
	}
	call("POST", "/traffic?calls_per_second=0", 204)
	call("POST", "/answer-delay?action=Ping&delay=300ms", 204)
	start := time.Now()
	_, _ = nc.Write([]byte("Action: Ping\r\nActionID: inst.pbx2.e1.3\r\n\r\n"))
	readUntil(t, r, "Ping: Pong")
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("Ping answered in %v despite the 300ms delay", d)
	}

	// /truth: one node's state, the same as its Go API; every node's
	// keyed by name; an unknown node is a 404.
	_, _ = nc.Write([]byte("Action: Originate\r\nChannel: Local/200@demo\r\nExten: 100\r\nContext: demo\r\n" +
		"Priority: 1\r\nAsync: true\r\n\r\n"))
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := s.WaitUntil(wctx, func() bool { return len(s.LiveChannels()) == 4 }); err != nil {
		t.Fatal(err)
	}
	s.StopTraffic()
	var got amisim.Truth
	get("/truth?node=pbx2", &got)
	if got.Node != "pbx2" || len(got.Channels) < 2 || len(got.Queues) != 2 {
		t.Fatalf("truth: %+v", got)
	}
	for _, ch := range got.Channels {
		if ch.Uniqueid == "" || !strings.HasPrefix(ch.Channel, "Local/") {
			t.Fatalf("truth channel %+v", ch)
		}
	}
	var all map[string]amisim.Truth
	get("/truth", &all)
	if len(all) != 2 || all["pbx1"].Node != "pbx1" || len(all["pbx1"].Channels) != 0 || all["pbx2"].Node != "pbx2" {
		t.Fatalf("all truths: %+v", all)
	}
	call("GET", "/truth?node=pbx9", 404)

	// Mixed traffic runs the scenarios of the mix only.
	call("POST", "/traffic?calls_per_second=50&mix=hold=1&seed=4", 204)
	p1 := fleet.Servers()[0]
	if err := p1.WaitUntil(wctx, func() bool { return len(p1.LiveChannels()) > 0 }); err != nil {
		t.Fatal(err)
	}
	call("POST", "/traffic?calls_per_second=0", 204)
	for _, ch := range p1.Truth().Channels {
		if !strings.HasPrefix(ch.Channel, "PJSIP/") {
			t.Fatalf("a hold-only mix made %s", ch.Channel)
		}
	}

	if c := stop(); c != 0 {
		t.Fatalf("exit code %d", c)
	}
	if _, err := hc.Get(base + "/nodes"); err == nil {
		t.Error("the control endpoint still answers after Run returned")
	}
}

// controlAddr finds the control endpoint's address in Run's log.
func controlAddr(t *testing.T, log string) string {
	t.Helper()
	for _, line := range strings.Split(log, "\n") {
		if !strings.Contains(line, "control endpoint listening") {
			continue
		}
		var l struct {
			Addr string `json:"addr"`
		}
		if err := json.Unmarshal([]byte(line), &l); err == nil && l.Addr != "" {
			return l.Addr
		}
	}
	t.Fatalf("no control address in the log: %s", log)
	return ""
}
