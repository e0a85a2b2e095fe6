package state

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/publish"
)

type env struct {
	t  *testing.T
	nc *nats.Conn
	js jetstream.JetStream
	// file: the stream and the bucket on disk (a server restarted in the
	// test keeps them); otherwise in memory.
	file bool
}

func newEnv(t *testing.T) *env {
	t.Helper()
	nc := testenv.Connect(t, testenv.StartNATS(t).ClientURL())
	js := testenv.JetStream(t, nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := publish.EnsureStream(ctx, js, publish.StreamConfig{Storage: jetstream.MemoryStorage}); err != nil {
		t.Fatal(err)
	}
	return &env{t: t, nc: nc, js: js}
}

// pbx writes one node's messages to the stream as ami-ingest does.
type pbx struct {
	e       *env
	node    string
	session string
	seq     uint64
	last    uint64 // stream sequence of the last message written
	clock   time.Time
}

func (e *env) pbx(node string) *pbx {
	return &pbx{e: e, node: node, session: "sess-" + node + "-1", clock: time.Now().UTC().Add(-time.Hour)}
}

func (p *pbx) publish(subject, id string, v any) {
	p.e.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		p.e.t.Fatal(err)
	}
	msg := &nats.Msg{Subject: subject, Data: b, Header: nats.Header{jetstream.MsgIDHeader: []string{id}}}
	ack, err := p.e.js.PublishMsg(context.Background(), msg)
	if err != nil {
		p.e.t.Fatal(err)
	}
	p.last = ack.Sequence
}

func (p *pbx) tick() string {
	p.clock = p.clock.Add(time.Millisecond)
	return p.clock.Format(time.RFC3339Nano)
}

func (p *pbx) ev(name string, kv ...string) {
	p.seq++
	fields := map[string]any{"Event": name}
	for i := 0; i+1 < len(kv); i += 2 {
		fields[kv[i]] = kv[i+1]
	}
	p.publish("ami.events."+p.node+"."+name, fmt.Sprintf("%s-%d", p.session, p.seq), map[string]any{
		"node": p.node, "event": name, "session": p.session, "seq": p.seq, "time": p.tick(), "fields": fields})
}

func (p *pbx) start() {
	p.seq = 0
	p.publish("ami.events."+p.node+"._meta", p.session+"-start", map[string]any{
		"node": p.node, "type": "session_start", "session": p.session, "time": p.tick(), "version": "9.0.0", "owner": "test"})
}

func (p *pbx) gap(n uint64) {
	first := p.seq + 1
	p.seq += n
	p.publish("ami.events."+p.node+"._meta", fmt.Sprintf("%s-gap-%d", p.session, first), map[string]any{
		"node": p.node, "type": "gap", "session": p.session, "time": p.tick(), "first_seq": first, "last_seq": p.seq, "count": n, "reason": "buffer_full"})
}

func (p *pbx) snapshot(action string, items ...map[string]string) {
	its := make([]map[string]any, len(items))
	for i, it := range items {
		its[i] = map[string]any{}
		for k, v := range it {
			its[i][k] = v
		}
	}
	p.publish("ami.events."+p.node+"._meta", fmt.Sprintf("%s-snap-%s-%d", p.session, action, p.seq), map[string]any{
		"node": p.node, "type": "snapshot", "session": p.session, "time": p.tick(), "action": action, "items": its})
}

func (p *pbx) newchannel(uid string) { p.ev("Newchannel", chanBlock(uid, "PJSIP/"+uid, 0)...) }

// running is a Service run by a test.
type running struct {
	s      *Service
	cancel context.CancelFunc
	done   chan error
}

func (e *env) run(cfg Config) *running { return e.runOn(e.nc, e.js, cfg) }

// runOn is run on a NATS connection of the caller's.
func (e *env) runOn(nc *nats.Conn, js jetstream.JetStream, cfg Config) *running {
	e.t.Helper()
	if cfg.FlushInterval == 0 {
		cfg.FlushInterval = 10 * time.Millisecond
	}
	cfg.Storage = jetstream.MemoryStorage
	if e.file {
		cfg.Storage = jetstream.FileStorage
	}
	s, err := New(nc, js, cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{s: s, cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- s.Run(ctx) }()
	var once sync.Once
	e.t.Cleanup(func() { once.Do(func() { r.stop(e.t) }) })
	return r
}

func (r *running) stop(t *testing.T) {
	t.Helper()
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	r.done <- nil // a second stop returns at once
}

// waitFlushed waits until the bucket holds every node's state up to stream
// sequence pos.
func (r *running) waitFlushed(t *testing.T, pos uint64) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		ch, at := r.s.Flushed()
		if at >= pos && r.s.Ready() == nil {
			return
		}
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("bucket not flushed to %d (at %d)", pos, at)
		}
	}
}

func (e *env) kv(bucket string) jetstream.KeyValue {
	kv, err := e.js.KeyValue(context.Background(), bucket)
	if err != nil {
		e.t.Fatal(err)
	}
	return kv
}

// bucketState reads the bucket's live keys of node as key -> decoded value.
func (e *env) bucketState(bucket, node string) map[string]any {
	e.t.Helper()
	kv := e.kv(bucket)
	out := map[string]any{}
	keys, err := kv.ListKeysFiltered(context.Background(), node+".>")
	if err != nil {
		e.t.Fatal(err)
	}
	for k := range keys.Keys() {
		v, err := kv.Get(context.Background(), k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			e.t.Fatal(err)
		}
		var x any
		if err := json.Unmarshal(v.Value(), &x); err != nil {
			e.t.Fatal(err)
		}
		out[k] = x
	}
	return out
}

// snapshotKeys renders a whole-state answer as the keys it stands for.
func snapshotKeys(s Snapshot) map[string]any {
	out := map[string]any{}
	add := func(k string, v any) {
		b, _ := json.Marshal(v)
		var x any
		_ = json.Unmarshal(b, &x)
		out[k] = x
	}
	for _, c := range s.Channels {
		add(Key(s.Node, EntityChannel, c.Uniqueid), c)
	}
	for _, b := range s.Bridges {
		add(Key(s.Node, EntityBridge, b.ID), b)
	}
	for _, q := range s.Queues {
		add(Key(s.Node, EntityQueue, q.Name), q)
	}
	return out
}

func withoutStatus(m map[string]any, node string) map[string]any {
	delete(m, StatusKey(node))
	return m
}

func TestServiceWritesKeysAndDeletes(t *testing.T) {
	e := newEnv(t)
	p := e.pbx("pbx1")
	p.start()
	p.snapshot("CoreShowChannels")
	p.newchannel("1.1")
	p.newchannel("1.2")
	p.ev("BridgeCreate", "BridgeUniqueid", "b1", "BridgeType", "basic")
	p.ev("BridgeEnter", append([]string{"BridgeUniqueid", "b1"}, chanBlock("1.1", "PJSIP/1.1", 6)...)...)
	p.ev("BridgeEnter", append([]string{"BridgeUniqueid", "b1"}, chanBlock("1.2", "PJSIP/1.2", 6)...)...)
	r := e.run(Config{})
	r.waitFlushed(t, p.last)

	kv := e.kv(DefaultBucket)
	w, err := kv.Watch(context.Background(), "pbx1.channel.1_1", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
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
				if _, err := kv.Get(context.Background(), "pbx1.channel.1_1"); !errors.Is(err, jetstream.ErrKeyNotFound) {
					t.Fatalf("hung-up channel key: %v", err)
				}
				return
			}
		case <-time.After(10 * time.Second):
			t.Fatal("watcher saw no delete of the hung-up channel")
		}
	}
}

func TestServiceRequests(t *testing.T) {
	e := newEnv(t)
	p := e.pbx("pbx1")
	p.start()
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
	e := newEnv(t)
	p := e.pbx("pbx1")
	p.start()
	p.newchannel("1.1")
	r := e.run(Config{FlushInterval: 200 * time.Millisecond})
	r.waitFlushed(t, p.last)
	kv := e.kv(DefaultBucket)
	w, err := kv.Watch(context.Background(), "pbx1.channel.1_1", jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = w.Stop() }()
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
	e := newEnv(t)
	p := e.pbx("pbx1")
	p.start()
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
	e := newEnv(t)
	p := e.pbx("pbx1")
	p.start()
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
	e := newEnv(t)
	good := e.pbx("pbx1")
	good.start()
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
