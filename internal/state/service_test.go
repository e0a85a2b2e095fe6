package state

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestServiceWritesKeysAndDeletes(t *testing.T) {
	e, p := newStartedPBX(t)
	p.snapshot("CoreShowChannels")
	p.newchannel("1.1")
	p.newchannel("1.2")
	p.ev("BridgeCreate", "BridgeUniqueid", "b1", "BridgeType", "basic")
	p.ev("BridgeEnter", append([]string{"BridgeUniqueid", "b1"}, chanBlock("1.1", "PJSIP/1.1", 6)...)...)
	p.ev("BridgeEnter", append([]string{"BridgeUniqueid", "b1"}, chanBlock("1.2", "PJSIP/1.2", 6)...)...)
	r := e.run(Config{})
	r.waitFlushed(t, p.last)

	w := e.watch(DefaultBucket, "pbx1.channel.1_1")
	got := e.bucketState(DefaultBucket, "pbx1")
	st := got["pbx1.status"].(map[string]any)
	if st["seq"].(float64) != float64(p.last) || st["stale"] != false || st["channels"].(float64) != 2 {
		t.Fatalf("status %v", st)
	}
	b := got["pbx1.bridge.b1"].(map[string]any)
	if !reflect.DeepEqual(b["members"], []any{"1.1", "1.2"}) {
		t.Fatalf("bridge %v", b)
	}
	if c := got["pbx1.channel.1_1"].(map[string]any); c["bridge"] != "b1" || c["state_desc"] != "Up" {
		t.Fatalf("channel %v", c)
	}

	p.ev("BridgeLeave", append([]string{"BridgeUniqueid", "b1"}, chanBlock("1.1", "PJSIP/1.1", 6)...)...)
	p.ev("Hangup", "Uniqueid", "1.1", "Cause", "16")
	r.waitFlushed(t, p.last)
	for {
		select {
		case u := <-w.Updates():
			if u.Operation() == jetstream.KeyValueDelete {
				if _, ok := e.bucketState(DefaultBucket, "pbx1")["pbx1.channel.1_1"]; ok {
					t.Fatal("hung-up channel key still in the bucket")
				}
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("watcher saw no delete of the hung-up channel")
		}
	}
}

func TestServiceRequests(t *testing.T) {
	e, p := newStartedPBX(t)
	p.snapshot("CoreShowChannels")
	p.newchannel("1.1")
	r := e.run(Config{})
	r.waitFlushed(t, p.last)
	req := func(subj, body string) map[string]any {
		t.Helper()
		m, err := e.nc.Request(subj, []byte(body), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		var x map[string]any
		if err := json.Unmarshal(m.Data, &x); err != nil {
			t.Fatal(err)
		}
		return x
	}
	ok := req("ami.state.pbx1", "")
	if ok["ok"] != true || ok["node"] != "pbx1" || len(ok["channels"].([]any)) != 1 {
		t.Fatalf("%v", ok)
	}
	st := ok["status"].(map[string]any)
	if st["session"] != p.session || st["seq"].(float64) != float64(p.last) || st["stale"] != false {
		t.Fatalf("status %v", st)
	}
	ch := ok["channels"].([]any)[0].(map[string]any)
	if ch["uniqueid"] != "1.1" || ch["channel"] != "PJSIP/1.1" || ch["bridge"] != "" || ch["linkedid"] != "1.1" {
		t.Fatalf("channel %v", ch)
	}
	for _, tc := range []struct{ subj, body, code string }{
		{"ami.state.nope", "", "unknown_node"},
		{"ami.state.pbx1.at", "{", "bad_request"},
		{"ami.state.pbx1.at", `{}`, "bad_request"},
		{"ami.state.pbx1.at", `{"seq":1,"time":"2026-01-01T00:00:00Z"}`, "bad_request"},
		{"ami.state.pbx1.at", `{"sequence":1}`, "bad_request"},
		{"ami.state.pbx1.at", string(make([]byte, 5000)), "too_large"},
		{"ami.state.nope.at", `{"seq":1}`, "unknown_node"},
	} {
		x := req(tc.subj, tc.body)
		if x["ok"] != false || x["error"].(map[string]any)["code"] != tc.code {
			t.Errorf("%s %q: %v", tc.subj, tc.body, x)
		}
	}
	at := req("ami.state.pbx1.at", fmt.Sprintf(`{"seq":%d}`, p.last-1))
	if at["ok"] != true || len(at["channels"].([]any)) != 0 {
		t.Fatalf("at before Newchannel: %v", at)
	}
}

// TestServiceCoalescesWrites: a channel changing far faster than the flush
// interval is written at most once per interval, with its latest value.
func TestServiceCoalescesWrites(t *testing.T) {
	e, p := newStartedPBX(t)
	p.newchannel("1.1")
	r := e.run(Config{FlushInterval: 200 * time.Millisecond})
	r.waitFlushed(t, p.last)
	w := e.watch(DefaultBucket, "pbx1.channel.1_1")
	start := time.Now()
	for i := 0; i < 200; i++ {
		p.ev("NewCallerid", "Uniqueid", "1.1", "CallerIDNum", fmt.Sprint(i))
	}
	r.waitFlushed(t, p.last)
	elapsed := time.Since(start)
	writes := 0
	var last map[string]any
	for done := false; !done; {
		select {
		case u := <-w.Updates():
			writes++
			_ = json.Unmarshal(u.Value(), &last)
		case <-time.After(300 * time.Millisecond):
			done = true
		}
	}
	if max := int(elapsed/(200*time.Millisecond)) + 2; writes > max || writes == 0 {
		t.Fatalf("%d writes of one key in %v (at most %d)", writes, elapsed, max)
	}
	if last["caller_id_num"] != "199" {
		t.Fatalf("last value %v", last)
	}
}

// TestServiceResumeAndRepair: a restart resumes from the checkpoint without
// applying anything twice; a crash between a flush's keys and its status
// (simulated by putting back an older checkpoint) is repaired by the next
// start: the bucket equals a rebuild from the stream, key by key.
func TestServiceResumeAndRepair(t *testing.T) {
	e, p := newStartedPBX(t)
	p.snapshot("CoreShowChannels")
	for i := 0; i < 5; i++ {
		p.newchannel(fmt.Sprintf("1.%d", i))
	}
	p.ev("BridgeCreate", "BridgeUniqueid", "b1")
	p.ev("BridgeEnter", append([]string{"BridgeUniqueid", "b1"}, chanBlock("1.0", "PJSIP/1.0", 6)...)...)
	r := e.run(Config{})
	r.waitFlushed(t, p.last)
	r.stop(t)
	kv := e.kv(DefaultBucket)
	oldStatus, err := kv.Get(context.Background(), "pbx1.status")
	if err != nil {
		t.Fatal(err)
	}
	checkpoint := p.last

	// More traffic, applied and flushed by a second run...
	p.ev("BridgeEnter", append([]string{"BridgeUniqueid", "b1"}, chanBlock("1.1", "PJSIP/1.1", 6)...)...)
	p.ev("Hangup", "Uniqueid", "1.2")
	p.ev("NewCallerid", "Uniqueid", "1.3", "CallerIDNum", "777")
	p.ev("BridgeLeave", append([]string{"BridgeUniqueid", "b1"}, chanBlock("1.0", "PJSIP/1.0", 6)...)...)
	p.ev("Hangup", "Uniqueid", "1.0")
	r2 := e.run(Config{})
	r2.waitFlushed(t, p.last)
	if got := testutilCount(r2.s.m); got != 5 {
		t.Fatalf("resumed run applied %d messages, want the 5 after the checkpoint", got)
	}
	r2.stop(t)
	// ...then the checkpoint goes back as if that run had died after its
	// keys and before its status write.
	if _, err := kv.Put(context.Background(), "pbx1.status", oldStatus.Value()); err != nil {
		t.Fatal(err)
	}
	p.ev("Newstate", chanBlock("1.4", "PJSIP/1.4", 6)...)
	r3 := e.run(Config{})
	r3.waitFlushed(t, p.last)
	live, err := r3.s.Current("pbx1")
	if err != nil {
		t.Fatal(err)
	}
	r3.stop(t)
	rebuilt, err := Replay(context.Background(), e.js, ReplayConfig{Stream: "AMI_EVENTS", Prefix: "ami"}, "pbx1", 0, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	got := withoutStatus(e.bucketState(DefaultBucket, "pbx1"), "pbx1")
	if want := snapshotKeys(rebuilt); !reflect.DeepEqual(got, want) {
		t.Fatalf("after repair (checkpoint %d, last %d) the bucket differs from a rebuild:\n got %v\nwant %v", checkpoint, p.last, got, want)
	}
	if !reflect.DeepEqual(snapshotKeys(live), snapshotKeys(rebuilt)) {
		t.Fatalf("live state differs from a rebuild")
	}
}

func testutilCount(m *Metrics) int { return int(testutil.ToFloat64(m.Applied)) }

// TestServiceGapHealing: a gap makes the node stale with what it knew; the
// snapshot after it makes it fresh with the PBX's content, and drops what
// the gap hid the end of.
func TestServiceGapHealing(t *testing.T) {
	e, p := newStartedPBX(t)
	p.snapshot("CoreShowChannels")
	p.newchannel("1.1")
	p.newchannel("1.2")
	r := e.run(Config{})
	r.waitFlushed(t, p.last)
	p.gap(5) // 1.1 hung up and 1.3 came, unseen
	r.waitFlushed(t, p.last)
	status := func() map[string]any {
		return e.bucketState(DefaultBucket, "pbx1")["pbx1.status"].(map[string]any)
	}
	if st := status(); st["stale"] != true || st["stale_reason"] != "gap" {
		t.Fatalf("after the gap: %v", st)
	}
	p.snapshot("CoreShowChannels",
		map[string]string{"Event": "CoreShowChannel", "Uniqueid": "1.2", "Channel": "PJSIP/1.2", "ChannelState": "6", "ChannelStateDesc": "Up"},
		map[string]string{"Event": "CoreShowChannel", "Uniqueid": "1.3", "Channel": "PJSIP/1.3", "ChannelState": "4", "ChannelStateDesc": "Ring"})
	r.waitFlushed(t, p.last)
	got := e.bucketState(DefaultBucket, "pbx1")
	if st := got["pbx1.status"].(map[string]any); st["stale"] != false || st["channels"].(float64) != 2 {
		t.Fatalf("after the snapshot: %v", st)
	}
	if _, ok := got["pbx1.channel.1_1"]; ok {
		t.Fatal("channel hung up during the gap still in the bucket")
	}
	if c, ok := got["pbx1.channel.1_3"].(map[string]any); !ok || c["state_desc"] != "Ring" {
		t.Fatalf("channel from the snapshot: %v", got["pbx1.channel.1_3"])
	}
}

// TestServiceBadInputIsolated: messages naming a node that is not a valid
// key token, and events missing their fields, are counted; the other node's
// state is untouched.
func TestServiceBadInputIsolated(t *testing.T) {
	e, good := newStartedPBX(t)
	good.newchannel("1.1")
	bad := e.pbx("pbx2")
	bad.ev("Hangup", "Uniqueid", "9.9")    // unknown channel
	bad.ev("BridgeEnter", "Uniqueid", "1") // no bridge id
	bad.publish("ami.events.pbx3.Newchannel", "x-1", map[string]any{"node": "pbx 3", "event": "Newchannel", "session": "s",
		"seq": 1, "time": time.Now().UTC().Format(time.RFC3339Nano), "fields": map[string]string{"Uniqueid": "1.1"}})
	good.ev("Newstate", chanBlock("1.1", "PJSIP/1.1", 6)...)
	r := e.run(Config{})
	r.waitFlushed(t, good.last)
	m := r.s.m
	if testutil.ToFloat64(m.BadEvents.WithLabelValues("unknown_channel")) != 1 ||
		testutil.ToFloat64(m.BadEvents.WithLabelValues("missing_field")) != 1 {
		t.Fatalf("bad inputs not counted: unknown_channel %v missing_field %v",
			testutil.ToFloat64(m.BadEvents.WithLabelValues("unknown_channel")), testutil.ToFloat64(m.BadEvents.WithLabelValues("missing_field")))
	}
	if testutil.ToFloat64(m.BadEvents.WithLabelValues("bad_node"))+testutil.ToFloat64(m.Invalid) != 1 {
		t.Fatal("message of an invalid node name not counted")
	}
	c := e.bucketState(DefaultBucket, "pbx1")["pbx1.channel.1_1"].(map[string]any)
	if c["state_desc"] != "Up" {
		t.Fatalf("good node harmed: %v", c)
	}
}

// TestServiceFlushBudget: a flush with a budget of keys drains whole nodes
// until it is spent and leaves the others, counted, for the next; the
// flushed position moves only once nothing is left, and then the bucket
// holds every node's keys and checkpoint.
func TestServiceFlushBudget(t *testing.T) {
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := New(e.nc, e.js, Config{Storage: jetstream.MemoryStorage})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range s.bad {
			c.Stop()
		}
	}()
	if s.kv, err = e.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: DefaultBucket, Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	nodes := []string{"pbx1", "pbx2", "pbx3"}
	seq := uint64(0)
	for _, node := range nodes {
		for i := range 5 {
			seq++
			uid := fmt.Sprintf("%s-%d.1", node, i)
			if err := s.proj.Apply(&Message{StreamSeq: seq, Node: node, Session: "s", Seq: seq, Time: t0, Kind: KindEvent,
				Event: "Newchannel", Fields: blockFields("Newchannel", chanBlock(uid, "PJSIP/"+uid, 6)...)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	s.applied = seq
	keys := func() int {
		n := 0
		for _, node := range nodes {
			n += len(e.bucketState(DefaultBucket, node))
		}
		return n
	}
	// A budget of 4 keys: each flush drains the one node it starts with
	// (5 keys and its status), never two.
	for i := 1; i <= len(nodes); i++ {
		if err := s.flushSome(ctx, 4); err != nil {
			t.Fatal(err)
		}
		_, at := s.Flushed()
		deferred := int(testutil.ToFloat64(s.m.FlushDeferred))
		if got := keys(); got != 6*i {
			t.Fatalf("after flush %d: %d keys in the bucket, want %d", i, got, 6*i)
		}
		if i < len(nodes) && at != 0 {
			t.Fatalf("after flush %d of %d: flushed position %d, want 0 (nodes left)", i, len(nodes), at)
		}
		if want := (len(nodes)-1)*len(nodes)/2 - (len(nodes)-i)*(len(nodes)-i-1)/2; deferred != want {
			t.Fatalf("after flush %d: %d deferred, want %d", i, deferred, want)
		}
		if i == len(nodes) && at != seq {
			t.Fatalf("all flushed: position %d, want %d", at, seq)
		}
	}
}
