package simcmd

// The control endpoint lets a test that runs amisim as a separate process
// (the container suite in test/integration) observe what the simulated PBXs
// saw and steer their traffic. It serves JSON over plain HTTP on --control
// and is off by default: it reveals no secret, but it lets anyone who can
// reach it stop the traffic, so it belongs on a test network only.
//
//	GET  /nodes                         per node: logins, sessions and max concurrent sessions per user, ...
//	GET  /nodes/{node}/actions?action=A actions received (connection, name, ActionID), optionally one name
//	GET  /nodes/{node}/conns            per connection: the user it logged in as and the events written to it
//	POST /traffic?calls_per_second=R    restart (R != 0) or stop (R = 0) the live calls of every node;
//	     [&mix=M&seed=S]                with mix (a --traffic-mix value), a seeded mix of hard calls (R > 0),
//	                                    node i seeded S+i-1
//	POST /answer-delay?action=A&delay=D delay the answers to action A on every node (D = 0 removes it)
//	GET  /truth?node=N                  node N's channels, bridges and queues now (amisim.Truth); without
//	                                    node, every node's, as an object keyed by node name

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/amibus/amibus/pkg/amisim"
)

// controlFlags are the command-line flags of the control endpoint.
type controlFlags struct {
	addr string
	// recordLimit is amisim.Config.RecordLimit: what /actions and /conns
	// can report. A demo fleet runs for hours, so the default records
	// nothing; a test sets a cap that its run stays under.
	recordLimit int
}

func (c *controlFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.addr, "control", "", "host:port of the JSON observation and control endpoint (test networks only); empty: off")
	fs.IntVar(&c.recordLimit, "record-limit", -1, "actions and events recorded per node for --control (< 0: none)")
}

// controlServer serves the endpoint until stop.
type controlServer struct {
	srv   *http.Server
	ln    net.Listener
	nodes map[string]*amisim.Server
	order []string
	users []string
	log   *zap.Logger
	done  chan struct{}
}

// start listens on c.addr and serves in the background; with no
// address it returns a stop function that does nothing.
func (c *controlFlags) start(fleet *amisim.Fleet, users []string, log *zap.Logger) (stop func(), err error) {
	if c.addr == "" {
		return func() {}, nil
	}
	ln, err := net.Listen("tcp", c.addr)
	if err != nil {
		return nil, fmt.Errorf("--control: %w", err)
	}
	cs := &controlServer{ln: ln, nodes: map[string]*amisim.Server{}, users: users, log: log, done: make(chan struct{})}
	for _, s := range fleet.Servers() {
		cs.nodes[s.Node()] = s
		cs.order = append(cs.order, s.Node())
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /nodes", cs.handleNodes)
	mux.HandleFunc("GET /nodes/{node}/actions", cs.handleActions)
	mux.HandleFunc("GET /nodes/{node}/conns", cs.handleConns)
	mux.HandleFunc("POST /traffic", cs.handleTraffic)
	mux.HandleFunc("POST /answer-delay", cs.handleAnswerDelay)
	mux.HandleFunc("GET /truth", cs.handleTruth)
	cs.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		defer close(cs.done)
		if err := cs.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("control endpoint", zap.Error(err))
		}
	}()
	log.Info("control endpoint listening", zap.String("addr", ln.Addr().String()))
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = cs.srv.Shutdown(ctx)
		<-cs.done
	}, nil
}

// nodeStatus is one element of GET /nodes.
type nodeStatus struct {
	Node        string         `json:"node"`
	Addr        string         `json:"addr"`
	Logins      int            `json:"logins"`
	Connections int            `json:"connections"`
	Active      map[string]int `json:"active"`         // logged-in sessions now, per user
	MaxActive   map[string]int `json:"max_concurrent"` // most at once, per user
	LiveCalls   int            `json:"live_calls"`
	SentEvents  int            `json:"sent_events"`
	Stats       amisim.Stats   `json:"stats"`
}

func (cs *controlServer) handleNodes(w http.ResponseWriter, _ *http.Request) {
	out := make([]nodeStatus, 0, len(cs.order))
	for _, name := range cs.order {
		s := cs.nodes[name]
		st := nodeStatus{Node: name, Addr: s.Addr(), Logins: s.Logins(), Connections: s.Connections(),
			Active: map[string]int{}, MaxActive: map[string]int{}, LiveCalls: s.LiveCalls(),
			SentEvents: s.SentEventCount(), Stats: s.Stats()}
		for _, u := range cs.users {
			st.Active[u] = s.ActiveSessions(u)
			st.MaxActive[u] = s.MaxConcurrentLogins(u)
		}
		out = append(out, st)
	}
	writeJSON(w, out)
}

// action is one element of GET /nodes/{node}/actions. Only these three
// fields: a Login's headers carry its secret.
type action struct {
	Conn     int    `json:"conn"`
	Name     string `json:"action"`
	ActionID string `json:"action_id"`
}

func (cs *controlServer) handleActions(w http.ResponseWriter, r *http.Request) {
	s, ok := cs.node(w, r)
	if !ok {
		return
	}
	want := r.URL.Query().Get("action")
	out := []action{}
	for _, a := range s.Received() {
		if want == "" || strings.EqualFold(a.Name, want) {
			out = append(out, action{Conn: a.Conn, Name: a.Name, ActionID: a.ActionID})
		}
	}
	writeJSON(w, out)
}

// connStatus is one element of GET /nodes/{node}/conns: a connection that
// sent a Login, the user it named (lower case), the first ActionID it sent
// (a client that builds its ActionIDs from its session id lets a test map
// the connection to that session), and the events written whole to it.
type connStatus struct {
	Conn     int    `json:"conn"`
	User     string `json:"user"`
	ActionID string `json:"action_id"`
	Events   int    `json:"events"`
}

func (cs *controlServer) handleConns(w http.ResponseWriter, r *http.Request) {
	s, ok := cs.node(w, r)
	if !ok {
		return
	}
	byConn := map[int]*connStatus{}
	firstID := map[int]string{}
	for _, a := range s.Received() {
		if _, seen := firstID[a.Conn]; !seen && a.ActionID != "" {
			firstID[a.Conn] = a.ActionID
		}
		if !strings.EqualFold(a.Name, "Login") {
			continue
		}
		if u, ok := a.Header("Username"); ok {
			byConn[a.Conn] = &connStatus{Conn: a.Conn, User: strings.ToLower(u)}
		}
	}
	for _, e := range s.SentEvents() {
		if c := byConn[e.Conn]; c != nil {
			c.Events++
		}
	}
	out := make([]connStatus, 0, len(byConn))
	for _, c := range byConn {
		c.ActionID = firstID[c.Conn]
		out = append(out, *c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Conn < out[j].Conn })
	writeJSON(w, out)
}

func (cs *controlServer) handleTraffic(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	rate, err := strconv.ParseFloat(q.Get("calls_per_second"), 64)
	if err != nil {
		http.Error(w, "calls_per_second: not a number", http.StatusBadRequest)
		return
	}
	var mix map[amisim.Scenario]int
	var seed uint64 = 1
	if m := q.Get("mix"); m != "" {
		if m == "default" {
			m = ""
		}
		if mix, err = amisim.ParseMix(m); err != nil {
			http.Error(w, "mix: "+err.Error(), http.StatusBadRequest)
			return
		}
		if rate < 0 {
			http.Error(w, "mix needs calls_per_second > 0", http.StatusBadRequest)
			return
		}
	}
	if v := q.Get("seed"); v != "" {
		if seed, err = strconv.ParseUint(v, 10, 64); err != nil {
			http.Error(w, "seed: not an unsigned integer", http.StatusBadRequest)
			return
		}
	}
	// StopTraffic waits for each generator, so the nodes are stopped in
	// parallel: a test waits for all of them, not one after the other.
	var wg sync.WaitGroup
	for i, name := range cs.order {
		s := cs.nodes[name]
		wg.Add(1)
		go func() {
			defer wg.Done()
			switch {
			case rate == 0:
				s.StopTraffic()
			case mix != nil:
				// Checked above: the rate is > 0 and the mix valid.
				_ = s.StartMixedTraffic(amisim.Traffic{CallsPerSecond: rate, Seed: seed + uint64(i), Mix: mix})
			default:
				s.StartTraffic(rate)
			}
		}()
	}
	wg.Wait()
	cs.log.Info("traffic changed by the control endpoint", zap.Float64("calls_per_second", rate),
		zap.String("mix", q.Get("mix")), zap.Uint64("seed", seed))
	w.WriteHeader(http.StatusNoContent)
}

func (cs *controlServer) handleAnswerDelay(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	name := q.Get("action")
	d, err := time.ParseDuration(q.Get("delay"))
	if name == "" || err != nil || d < 0 {
		http.Error(w, "want action=<name>&delay=<duration >= 0>", http.StatusBadRequest)
		return
	}
	for _, s := range cs.nodes {
		s.SetAnswerDelay(name, d)
	}
	w.WriteHeader(http.StatusNoContent)
}

func (cs *controlServer) handleTruth(w http.ResponseWriter, r *http.Request) {
	name := r.URL.Query().Get("node")
	if name == "" {
		out := make(map[string]amisim.Truth, len(cs.nodes))
		for n, s := range cs.nodes {
			out[n] = s.Truth()
		}
		writeJSON(w, out)
		return
	}
	s, ok := cs.nodes[name]
	if !ok {
		http.Error(w, "unknown node", http.StatusNotFound)
		return
	}
	writeJSON(w, s.Truth())
}

func (cs *controlServer) node(w http.ResponseWriter, r *http.Request) (*amisim.Server, bool) {
	s, ok := cs.nodes[r.PathValue("node")]
	if !ok {
		http.Error(w, "unknown node", http.StatusNotFound)
	}
	return s, ok
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
