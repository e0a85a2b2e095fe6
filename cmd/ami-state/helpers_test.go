package main

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/publish"
)

// ensureStream creates the events stream in memory, as ami-ingest would
// before ami-state can become ready.
func ensureStream(t *testing.T, js jetstream.JetStream) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.WaitLimit)
	defer cancel()
	if _, err := publish.EnsureStream(ctx, js, publish.StreamConfig{Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
}

// publishChannel writes a session start and one Newchannel (Uniqueid 1.1)
// of node to the stream, as ami-ingest does.
func publishChannel(t *testing.T, js jetstream.JetStream, node string, i int) {
	t.Helper()
	now := time.Now().UTC().Format(time.RFC3339Nano)
	session := fmt.Sprintf("s%d", i)
	msgs := []struct {
		subject string
		v       map[string]any
	}{
		{"ami.events." + node + "._meta", map[string]any{"node": node, "type": "session_start", "session": session,
			"time": now, "version": "9.0.0", "owner": "test"}},
		{"ami.events." + node + ".Newchannel", map[string]any{"node": node, "event": "Newchannel", "session": session,
			"seq": 1, "time": now, "fields": map[string]string{"Event": "Newchannel", "Uniqueid": "1.1", "Channel": "PJSIP/a"}}},
	}
	for _, m := range msgs {
		b, _ := json.Marshal(m.v)
		if _, err := js.Publish(context.Background(), m.subject, b); err != nil {
			t.Fatal(err)
		}
	}
}

// waitKey waits until key of bucket exists (present) or is gone, watching
// the bucket, which may not exist yet (the process creates it).
func waitKey(t *testing.T, js jetstream.JetStream, bucket, key string, present bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testenv.WaitLimit)
	defer cancel()
	var kv jetstream.KeyValue
	for {
		var err error
		if kv, err = js.KeyValue(ctx, bucket); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("bucket %s: %v", bucket, err)
		case <-time.After(50 * time.Millisecond): // created by the other process: no signal to wait on
		}
	}
	w, err := kv.Watch(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
	seen := false
	for {
		select {
		case e := <-w.Updates():
			if e == nil { // end of the initial values
				if !seen && !present {
					return // none: gone (a delete marker expires with the lease bucket's TTL)
				}
				continue
			}
			seen = true
			if (e.Operation() == jetstream.KeyValuePut) == present {
				return
			}
		case <-ctx.Done():
			t.Fatalf("%s %s: never %s", bucket, key, map[bool]string{true: "written", false: "deleted"}[present])
		}
	}
}
