package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// httpClient is the suite's client for every HTTP endpoint of the
// containers; the timeout bounds a request to a container that froze.
var httpClient = &http.Client{Timeout: 10 * time.Second}

// Sim is a client of amisim's control endpoint (internal/simcmd/control.go).
type Sim struct {
	base func(ctx context.Context) (string, error) // http://host:port
}

// SimNode is what GET /nodes reports about one simulated PBX.
type SimNode struct {
	Node        string         `json:"node"`
	Logins      int            `json:"logins"`
	Connections int            `json:"connections"`
	Active      map[string]int `json:"active"`
	MaxActive   map[string]int `json:"max_concurrent"`
	LiveCalls   int            `json:"live_calls"`
	SentEvents  int            `json:"sent_events"`
}

// SimConn is one connection that sent a Login (GET /nodes/{node}/conns).
type SimConn struct {
	Conn     int    `json:"conn"`
	User     string `json:"user"`
	ActionID string `json:"action_id"`
	Events   int    `json:"events"`
}

// SimAction is one action the PBX received.
type SimAction struct {
	Conn     int    `json:"conn"`
	Action   string `json:"action"`
	ActionID string `json:"action_id"`
}

// Nodes returns every node's counters, in node order.
func (s *Sim) Nodes(ctx context.Context) ([]SimNode, error) {
	var out []SimNode
	return out, s.get(ctx, "/nodes", &out)
}

// Conns returns the connections that logged in to node (or tried).
func (s *Sim) Conns(ctx context.Context, node string) ([]SimConn, error) {
	var out []SimConn
	return out, s.get(ctx, "/nodes/"+url.PathEscape(node)+"/conns", &out)
}

// Actions returns the actions node received, only those named action if
// it is not empty.
func (s *Sim) Actions(ctx context.Context, node, action string) ([]SimAction, error) {
	var out []SimAction
	return out, s.get(ctx, "/nodes/"+url.PathEscape(node)+"/actions?action="+url.QueryEscape(action), &out)
}

// SetTraffic restarts every node's live calls at cps per node, or stops
// them (cps 0; calls in progress play to their end).
func (s *Sim) SetTraffic(ctx context.Context, cps float64) error {
	return s.post(ctx, fmt.Sprintf("/traffic?calls_per_second=%g", cps))
}

// SetAnswerDelay delays every node's answers to action by d (0: none).
func (s *Sim) SetAnswerDelay(ctx context.Context, action string, d time.Duration) error {
	return s.post(ctx, "/answer-delay?action="+url.QueryEscape(action)+"&delay="+d.String())
}

func (s *Sim) get(ctx context.Context, path string, v any) error {
	base, err := s.base(ctx)
	if err != nil {
		return err
	}
	return call(ctx, http.MethodGet, base, path, http.StatusOK, v)
}

func (s *Sim) post(ctx context.Context, path string) error {
	base, err := s.base(ctx)
	if err != nil {
		return err
	}
	return call(ctx, http.MethodPost, base, path, http.StatusNoContent, nil)
}

// call sends an HTTP request without a body to base+path and wants the
// status want; the JSON answer is decoded into v unless v is nil.
func call(ctx context.Context, method, base, path string, want int, v any) error {
	req, err := http.NewRequestWithContext(ctx, method, base+path, nil)
	if err != nil {
		return err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != want {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return fmt.Errorf("%s %s%s: %s: %s", method, base, path, resp.Status, b)
	}
	if v == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(v)
}
