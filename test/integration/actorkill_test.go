package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/amibus/amibus/internal/testenv"
)

// TestActorKilled is scenario 6: an ami-actor replica is killed (SIGKILL)
// while requests are in flight on both replicas. A request whose replica
// died gets no reply (NATS has no one to send it): the requester sees its
// own timeout. So "exactly one reply" is checked as: no request gets two
// replies, every request the survivor took gets its answer, and no action
// is executed twice on a PBX, nor more actions than were requested.
func TestActorKilled(t *testing.T) {
	c := StartCluster(t, Spec{})
	ctx := context.Background()

	// Answers take 1.5 s, so that every request is pending when the
	// replica dies. A PBX session runs its actions one at a time, so each
	// replica's session to a node holds a short queue.
	const (
		action  = "CoreStatus"
		delay   = 1500 * time.Millisecond
		perNode = 4
		timeout = 8 * time.Second
	)
	if err := c.Ctl.SetAnswerDelay(ctx, action, delay); err != nil {
		t.Fatal(err)
	}

	// One reply subject per request, all on one subscription that counts
	// every message: a second reply to any request would be seen.
	type requestReply struct {
		request string // the id of the request, the last token of its reply subject
		*Reply
	}
	inbox := nats.NewInbox()
	var replies testenv.Log[requestReply]
	testenv.Subscribe(t, c.NC, inbox+".>", func(m *nats.Msg) {
		r, err := decodeReply(m)
		if err != nil {
			t.Errorf("request %s: %v", m.Subject, err)
			return
		}
		replies.Add(requestReply{strings.TrimPrefix(m.Subject, inbox+"."), r})
	})
	body, _ := json.Marshal(map[string]any{"action": action, "timeout_ms": timeout.Milliseconds()})
	var ids []string
	sent := time.Now()
	for _, n := range c.Nodes {
		for k := range perNode {
			id := fmt.Sprintf("%s-%d", n, k)
			ids = append(ids, id)
			if err := c.NC.PublishRequest(subjectPrefix+".action."+n, inbox+"."+id, body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := c.NC.Flush(); err != nil {
		t.Fatal(err)
	}

	// Kill a replica once the PBXs have the first action of both
	// replicas' sessions (one per node per replica) and before any answer.
	executed := func() (map[string]SimAction, int, error) {
		byID := map[string]SimAction{}
		total := 0
		for _, n := range c.Nodes {
			acts, err := c.Ctl.Actions(ctx, n, action)
			if err != nil {
				return nil, 0, err
			}
			for _, a := range acts {
				total++
				byID[a.ActionID] = a
			}
		}
		return byID, total, nil
	}
	wctx, cancel := context.WithTimeout(ctx, delay)
	defer cancel()
	var instancesSeen map[string]int
	err := pollUntil(wctx, "actions of both replicas at the PBXs", func() error {
		byID, _, err := executed()
		if err != nil {
			return err
		}
		instancesSeen = perInstance(byID)
		if len(instancesSeen) < 2 {
			return fmt.Errorf("actions from %d replica(s)", len(instancesSeen))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	victim := c.Actors[0]
	if err := victim.Kill(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("killed %s %v after sending %d requests; actions at the PBXs per replica: %v",
		victim.Name, time.Since(sent).Round(time.Millisecond), len(ids), instancesSeen)

	// Wait until the survivor has nothing pending (its metric) and has
	// answered every action it ran (amisim's record): no reply can come
	// after that, the dead replica sends none. Bounded by the requests'
	// own timeout.
	survivor := c.Actors[1]
	dctx, dcancel := context.WithDeadline(ctx, sent.Add(timeout+5*time.Second))
	defer dcancel()
	err = pollUntil(dctx, "the survivor answered every action it ran", func() error {
		m, err := survivor.Metrics(dctx)
		if err != nil {
			return err
		}
		if p := m.Sum("ami_actions_pending"); p > 0 {
			return fmt.Errorf("%v actions pending", p)
		}
		byID, _, err := executed()
		if err != nil {
			return err
		}
		okBy := map[string]int{}
		for _, r := range replies.All() {
			okBy[instanceOf(r.ActionID)]++
		}
		if len(okBy) == 0 {
			return errors.New("no reply yet")
		}
		ranBy := perInstance(byID)
		for inst, k := range okBy {
			if ranBy[inst] != k {
				return fmt.Errorf("instance %s ran %d actions, %d replies so far", inst, ranBy[inst], k)
			}
		}
		return nil
	})
	if err != nil {
		t.Error(err)
	}

	byID, total, err := executed()
	if err != nil {
		t.Fatal(err)
	}
	if total != len(byID) {
		t.Errorf("the PBXs received %d %s actions but only %d distinct ActionIDs: an action ran twice", total, action, len(byID))
	}
	if total > len(ids) {
		t.Errorf("the PBXs received %d %s actions for %d requests", total, action, len(ids))
	}
	byRequest := map[string][]*Reply{}
	for _, r := range replies.All() {
		byRequest[r.request] = append(byRequest[r.request], r.Reply)
	}
	answered, okBy := 0, map[string]int{}
	for _, id := range ids {
		rs := byRequest[id]
		switch {
		case len(rs) > 1:
			t.Errorf("request %s got %d replies", id, len(rs))
		case len(rs) == 1:
			answered++
			r := rs[0]
			if !r.OK {
				t.Errorf("request %s: error reply %+v from the survivor", id, r.Error)
				continue
			}
			if _, ok := byID[r.ActionID]; !ok {
				t.Errorf("request %s: reply for action %s, which no PBX received", id, r.ActionID)
			}
			okBy[instanceOf(r.ActionID)]++
		}
	}
	// Every action the survivor ran was answered: the replies came from
	// one instance, and it ran exactly as many actions as it answered.
	if len(okBy) != 1 {
		t.Fatalf("answers came from instances %v, want the survivor only", okBy)
	}
	var survivorInst string
	for inst := range okBy {
		survivorInst = inst
	}
	ranBy := perInstance(byID)
	if ranBy[survivorInst] != okBy[survivorInst] {
		t.Errorf("the survivor ran %d actions and answered %d", ranBy[survivorInst], okBy[survivorInst])
	}
	if answered == len(ids) {
		t.Errorf("every request was answered: the killed replica had none in flight, the test proved nothing")
	}
	t.Logf("%d requests: %d answered by the survivor, %d lost with the killed replica (no reply); PBX actions per replica %v",
		len(ids), answered, len(ids)-answered, ranBy)

	// The survivor serves every node alone now.
	if err := c.Ctl.SetAnswerDelay(ctx, action, 0); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.Nodes {
		r, err := c.Request(ctx, n, "Ping", 5000, 10*time.Second)
		if err != nil || !r.OK {
			t.Errorf("%s: Ping after the kill: %+v, %v", n, r, err)
		}
	}
}
