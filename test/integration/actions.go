package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
)

// Reply is an ami-actor reply (schemas/action-reply.schema.json), the
// fields the suite checks.
type Reply struct {
	OK       bool   `json:"ok"`
	Node     string `json:"node"`
	Action   string `json:"action"`
	ActionID string `json:"action_id"`
	Response string `json:"response"`
	Events   []struct {
		Fields map[string]any `json:"fields"`
	} `json:"events"`
	Error *struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"error"`
}

// Request sends one action request to ami.action.<node> and decodes the
// reply; wait bounds the wait for it.
func (c *Cluster) Request(ctx context.Context, node, action string, timeoutMS int, wait time.Duration) (*Reply, error) {
	body, err := json.Marshal(map[string]any{"action": action, "timeout_ms": timeoutMS})
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	msg, err := c.NC.RequestWithContext(ctx, subjectPrefix+".action."+node, body)
	if err != nil {
		return nil, err
	}
	return decodeReply(msg)
}

func decodeReply(msg *nats.Msg) (*Reply, error) {
	var r Reply
	if err := json.Unmarshal(msg.Data, &r); err != nil {
		return nil, fmt.Errorf("reply %q: %w", msg.Data, err)
	}
	return &r, nil
}

// instanceOf is the ami-actor instance that sent an action to a PBX: the
// first token of its ActionID ("<instance>.<...>").
func instanceOf(actionID string) string {
	inst, _, _ := strings.Cut(actionID, ".")
	return inst
}

// perInstance counts the actions a PBX received (by ActionID) per ami-actor
// instance that sent them.
func perInstance(byID map[string]SimAction) map[string]int {
	n := map[string]int{}
	for id := range byID {
		n[instanceOf(id)]++
	}
	return n
}
