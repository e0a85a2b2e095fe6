package integration

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/testcontainers/testcontainers-go"

	"github.com/amibus/amibus/internal/state"
	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// stateHTTP is ami-state's HTTP port in its container (the file's
// http.listen, as for ami-ingest: each container has its own address).
const stateHTTP = ingestHTTP

// startState starts ami-state replica i on the NATS network, with the
// cluster's file (Spec.State: leases on, the bucket R3), and waits for its
// /readyz.
func (c *Cluster) startState(ctx context.Context, i int) (*Box, error) {
	b, err := c.run(ctx, "state", fmt.Sprintf("state%d", i), stateHTTP, testcontainers.ContainerRequest{
		Entrypoint:   []string{"/ami-state"},
		Cmd:          []string{"--config", configPath},
		ExposedPorts: []string{stateHTTP},
		Networks:     []string{c.natsNet.Name},
		Files: []testcontainers.ContainerFile{{
			Reader: strings.NewReader(c.config("state")), ContainerFilePath: configPath, FileMode: 0o444,
		}},
	})
	if err != nil {
		return nil, err
	}
	return b, b.waitHTTP(ctx, "/readyz")
}

// SetMixedTraffic starts a seeded mix of hard calls (transfers, Local
// channels, masquerades, hold, queues) at cps per node; node i is seeded
// seed+i-1.
func (s *Sim) SetMixedTraffic(ctx context.Context, cps float64, seed uint64) error {
	return s.post(ctx, fmt.Sprintf("/traffic?calls_per_second=%g&mix=default&seed=%d", cps, seed))
}

// Truth is amisim's truth of node now: its channels, bridges and queues.
func (s *Sim) Truth(ctx context.Context, node string) (amisim.Truth, error) {
	var tr amisim.Truth
	return tr, s.get(ctx, "/truth?node="+url.QueryEscape(node), &tr)
}

// TestStateReplicas: two ami-state replicas share the nodes through their
// leases while the PBXs carry a seeded mix of hard calls; one replica is
// killed (SIGKILL: no last flush, no lease released). The survivor takes
// every node, and once the calls have ended the ami_state bucket equals
// amisim's truth, node by node, key by key, each node's status fresh.
func TestStateReplicas(t *testing.T) {
	c := StartCluster(t, Spec{Nodes: 4, Ingest: 2, Actors: 1, State: true})
	ctx := context.Background()
	sctx, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	if err := c.Ctl.SetMixedTraffic(sctx, 3, 17); err != nil {
		t.Fatal(err)
	}
	// One after the other: the first creates the bucket.
	states := make([]*Box, 2)
	for i := range states {
		var err error
		if states[i], err = c.startState(sctx, i+1); err != nil {
			t.Fatal(err)
		}
	}
	owned := func(b *Box) (float64, error) {
		m, err := b.Metrics(sctx)
		if err != nil {
			return 0, err
		}
		return m.Sum("ami_ownership_nodes_owned"), nil
	}
	// Both replicas write: the nodes are shared.
	err := pollUntil(sctx, "the nodes shared by the ami-state replicas", func() error {
		var n [2]float64
		for i, b := range states {
			var err error
			if n[i], err = owned(b); err != nil {
				return err
			}
		}
		if n[0] == 0 || n[1] == 0 || n[0]+n[1] != float64(len(c.Nodes)) {
			return fmt.Errorf("nodes owned: %v", n)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	c.WaitEvents(sctx, 200) // steady traffic, both replicas writing

	victim, survivor := states[0], states[1]
	if err := victim.Kill(sctx); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	err = pollUntil(sctx, "the survivor owning every node", func() error {
		n, err := owned(survivor)
		if err != nil {
			return err
		}
		if n != float64(len(c.Nodes)) {
			return fmt.Errorf("%s owns %v nodes of %d", survivor.Name, n, len(c.Nodes))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s owns every node %v after %s was killed (lease ttl %v)",
		survivor.Name, time.Since(killed).Round(time.Millisecond), victim.Name, c.Spec.TTL)
	c.WaitEvents(sctx, 200) // traffic goes on, the survivor writing alone

	c.Quiesce(sctx)
	kv, err := c.JS.KeyValue(sctx, state.DefaultBucket)
	if err != nil {
		t.Fatal(err)
	}
	stream, err := c.JS.Stream(sctx, streamName)
	if err != nil {
		t.Fatal(err)
	}
	// The last events of the ended calls reach the stream, then the
	// bucket: it equals the truth once the status covers the node's last
	// stream message.
	diffs := map[string]string{}
	err = pollUntil(sctx, "the bucket equal to amisim's truth", func() error {
		for _, n := range c.Nodes {
			last, err := stream.GetLastMsgForSubject(sctx, subjectPrefix+".events."+n+".>")
			if err != nil {
				return err
			}
			got, st, err := bucketOf(sctx, kv, n)
			if err != nil {
				return err
			}
			if st.Seq < last.Sequence {
				return fmt.Errorf("%s: status at %d, the stream at %d", n, st.Seq, last.Sequence)
			}
			tr, err := c.Ctl.Truth(sctx, n)
			if err != nil {
				return err
			}
			want := reduceTruth(tr)
			if len(want) == 0 {
				return fmt.Errorf("%s: empty truth: nothing to compare", n)
			}
			if d := testenv.DiffMaps(got, want, "bucket", "truth"); d != "" || st.Stale {
				diffs[n] = fmt.Sprintf("stale %v (%s)\n%s", st.Stale, st.StaleReason, d)
				return fmt.Errorf("%s differs", n)
			}
			delete(diffs, n)
		}
		return nil
	})
	if err != nil {
		for n, d := range diffs {
			t.Errorf("%s: bucket differs from amisim's truth: %s", n, d)
		}
		t.Fatal(err)
	}
}

// reduced is a key's value reduced to the fields both amisim's truth and
// the bucket know, as strings.
type reduced map[string]map[string]string

func reduceChannel(uid, name string, state int, desc, cidNum, cidName, clNum, clName, linkedid, bridge string, hold bool) map[string]string {
	return map[string]string{"uniqueid": uid, "channel": name, "state": fmt.Sprint(state), "state_desc": desc,
		"caller_id_num": cidNum, "caller_id_name": cidName, "connected_line_num": clNum, "connected_line_name": clName,
		"linkedid": linkedid, "bridge": bridge, "on_hold": fmt.Sprint(hold)}
}

func reduceTruth(tr amisim.Truth) reduced {
	out := reduced{}
	for _, c := range tr.Channels {
		out[state.Key(tr.Node, state.EntityChannel, c.Uniqueid)] = reduceChannel(c.Uniqueid, c.Channel, c.State, c.StateDesc,
			c.CallerIDNum, c.CallerIDName, c.ConnectedLineNum, c.ConnectedLineName, c.Linkedid, c.Bridge, c.OnHold)
	}
	for _, b := range tr.Bridges {
		out[state.Key(tr.Node, state.EntityBridge, b.ID)] = map[string]string{"members": strings.Join(b.Members, ",")}
	}
	for _, q := range tr.Queues {
		v := map[string]string{}
		for _, m := range q.Members {
			v["member "+m.Interface] = fmt.Sprintf("status=%d paused=%v in_call=%v", m.Status, m.Paused, m.InCall)
		}
		for _, c := range q.Callers {
			v["caller "+c.Uniqueid] = fmt.Sprintf("channel=%s position=%d", c.Channel, c.Position)
		}
		out[state.Key(tr.Node, state.EntityQueue, q.Name)] = v
	}
	return out
}

// bucketOf reads node's keys of the bucket, reduced, and its status.
func bucketOf(ctx context.Context, kv jetstream.KeyValue, node string) (reduced, state.Status, error) {
	out := reduced{}
	var st state.Status
	keys, err := kv.ListKeysFiltered(ctx, node+".>")
	if err != nil {
		return nil, st, err
	}
	for k := range keys.Keys() {
		e, err := kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, st, err
		}
		_, kind, _, ok := state.ParseKey(k)
		if k == state.StatusKey(node) {
			err = json.Unmarshal(e.Value(), &st)
		} else if ok {
			switch kind {
			case state.EntityChannel:
				var c state.Channel
				err = json.Unmarshal(e.Value(), &c)
				out[k] = reduceChannel(c.Uniqueid, c.Channel, c.State, c.StateDesc, c.CallerIDNum, c.CallerIDName,
					c.ConnectedLineNum, c.ConnectedLineName, c.Linkedid, c.Bridge, c.OnHold)
			case state.EntityBridge:
				var b state.Bridge
				err = json.Unmarshal(e.Value(), &b)
				out[k] = map[string]string{"members": strings.Join(b.Members, ",")}
			case state.EntityQueue:
				var q state.Queue
				err = json.Unmarshal(e.Value(), &q)
				v := map[string]string{}
				for _, m := range q.Members {
					v["member "+m.Interface] = fmt.Sprintf("status=%s paused=%v in_call=%v", m.Status, m.Paused, m.InCall)
				}
				for _, c := range q.Callers {
					v["caller "+c.Uniqueid] = fmt.Sprintf("channel=%s position=%d", c.Channel, c.Position)
				}
				out[k] = v
			}
		}
		if err != nil {
			return nil, st, fmt.Errorf("%s: %w", k, err)
		}
	}
	return out, st, nil
}
