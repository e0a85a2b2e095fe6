package ownership

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// lossyJS hands out a bucket whose first write of one node entry (a
// publish: entries carry their own TTL header) is stored but answered with
// a timeout, as when the answer is lost on the way back.
type lossyJS struct {
	jetstream.JetStream
	key string
	// staleCreate makes Create over a delete marker fail with "key exists",
	// as nats.go's Create does when its read of the marker is served by a
	// stream follower that has not applied the delete yet.
	staleCreate bool

	// beforeUpdate, if set, runs before each Update with the real bucket;
	// an error it returns is Update's, and the Update is not made.
	beforeUpdate func(ctx context.Context, kv jetstream.KeyValue, key string) error
	// onPut, if set, sees the key of each Put (a new incarnation's
	// liveness) and Update (liveness renewals: one per round).
	onPut func(key string)
	// onEntry, if set, sees the key of each node entry write.
	onEntry func(key string)

	mu      sync.Mutex
	lost    bool // the lost-answer Create happened
	deletes int  // Deletes of key
}

func (j *lossyJS) PublishMsg(ctx context.Context, msg *nats.Msg, opts ...jetstream.PublishOpt) (*jetstream.PubAck, error) {
	key := strings.TrimPrefix(msg.Subject, "$KV."+DefaultBucket+".")
	if f := j.onEntry; f != nil {
		f(key)
	}
	ack, err := j.JetStream.PublishMsg(ctx, msg, opts...)
	j.mu.Lock()
	defer j.mu.Unlock()
	if err == nil && key == j.key && !j.lost {
		j.lost = true
		return nil, context.DeadlineExceeded
	}
	return ack, err
}

func (j *lossyJS) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := j.JetStream.KeyValue(ctx, bucket)
	if err != nil {
		return nil, err
	}
	return &lossyKV{KeyValue: kv, j: j}, nil
}

func (j *lossyJS) CreateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := j.JetStream.CreateKeyValue(ctx, cfg)
	if err != nil {
		return nil, err
	}
	return &lossyKV{KeyValue: kv, j: j}, nil
}

type lossyKV struct {
	jetstream.KeyValue
	j *lossyJS
}

func (k *lossyKV) Create(ctx context.Context, key string, value []byte, opts ...jetstream.KVCreateOpt) (uint64, error) {
	if k.j.staleCreate {
		if _, err := k.KeyValue.Get(ctx, key); errors.Is(err, jetstream.ErrKeyNotFound) {
			return 0, jetstream.ErrKeyExists
		}
	}
	return k.KeyValue.Create(ctx, key, value, opts...)
}

func (k *lossyKV) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if f := k.j.beforeUpdate; f != nil {
		if err := f(ctx, k.KeyValue, key); err != nil {
			return 0, err
		}
	}
	rev, err := k.KeyValue.Update(ctx, key, value, rev)
	if f := k.j.onPut; f != nil {
		f(key)
	}
	return rev, err
}

func (k *lossyKV) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	rev, err := k.KeyValue.Put(ctx, key, value)
	if f := k.j.onPut; f != nil {
		f(key)
	}
	return rev, err
}

func (k *lossyKV) Delete(ctx context.Context, key string, opts ...jetstream.KVDeleteOpt) error {
	if key == k.j.key {
		k.j.mu.Lock()
		k.j.deletes++
		k.j.mu.Unlock()
	}
	return k.KeyValue.Delete(ctx, key, opts...)
}

// TestCreateWithLostAnswerIsAdopted: an entry write the server stored but whose
// answer timed out shows up on the watch with this replica's value; the
// replica takes the node on it, rather than deleting its own lease (or,
// with the delete failing too, leaving the node without a session for a
// TTL).
func TestCreateWithLostAnswerIsAdopted(t *testing.T) {
	js := startJS(t)
	ljs := &lossyJS{JetStream: js, key: leaseKey("pbx2")}
	c := newChecker(t)
	nodes := []string{"pbx1", "pbx2", "pbx3"}
	r := start(t, ljs, "a", nodes, c, WithTTL(30*time.Second))
	// Well within the TTL: the watch shows the stored Create at once.
	c.waitFor(t, 10*time.Second, "a owns all 3 nodes", split(3, map[string]int{"a": 3}))

	ljs.mu.Lock()
	lost, deletes := ljs.lost, ljs.deletes
	ljs.mu.Unlock()
	if !lost {
		t.Fatal("the Create of pbx2 was never made")
	}
	if deletes != 0 {
		t.Fatalf("the replica deleted its own stored lease %d times instead of taking the node", deletes)
	}
	if got := kvValue(t, testKV(t, js), leaseKey("pbx2")); !strings.HasPrefix(got, "a/") {
		t.Fatalf("lease of pbx2 holds %q, want a", got)
	}
	if err := r.stop(); err != nil {
		t.Fatal(err)
	}
}

// TestFreedNodeTakenDespiteStaleCreate: a lease deleted by its owner is
// taken at once by its revision on the watch, even when Create would claim
// the key still exists (a follower's stale read); otherwise the node would
// wait for the delete marker to expire, a whole TTL.
func TestFreedNodeTakenDespiteStaleCreate(t *testing.T) {
	js := startJS(t)
	ljs := &lossyJS{JetStream: js, staleCreate: true}
	c := newChecker(t)
	m, err := New(ljs, "a", []string{"pbx1"},
		WithTTL(time.Minute),
		WithAcquire(c.acquire("a")), WithRelease(c.release("a")))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.CreateKeyValue(ctx, m.bucketConfig())
	if err != nil {
		t.Fatal(err)
	}
	// A previous owner held pbx1 and handed it over.
	if _, err := kv.Put(ctx, leaseKey("pbx1"), []byte("z")); err != nil {
		t.Fatal(err)
	}
	if err := kv.Delete(ctx, leaseKey("pbx1")); err != nil {
		t.Fatal(err)
	}
	runManager(t, m)
	c.waitFor(t, 10*time.Second, "a owns pbx1 long before the marker expires", split(1, map[string]int{"a": 1}))
}
