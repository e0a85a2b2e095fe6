package ownership

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// lossyJS hands out a bucket whose first Create of one key is stored but
// answered with a timeout, as when the answer is lost on the way back.
type lossyJS struct {
	jetstream.JetStream
	key string
	// staleCreate makes Create over a delete marker fail with "key exists",
	// as nats.go's Create does when its read of the marker is served by a
	// stream follower that has not applied the delete yet.
	staleCreate bool

	mu      sync.Mutex
	lost    bool // the lost-answer Create happened
	deletes int  // Deletes of key
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
	rev, err := k.KeyValue.Create(ctx, key, value, opts...)
	k.j.mu.Lock()
	defer k.j.mu.Unlock()
	if err == nil && key == k.j.key && !k.j.lost {
		k.j.lost = true
		return 0, context.DeadlineExceeded
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

// TestCreateWithLostAnswerIsAdopted: a Create the server stored but whose
// answer timed out shows up on the watch with this replica's value; the
// replica takes the node on it, rather than deleting its own lease (or,
// with the delete failing too, leaving the node without a session for a
// TTL).
func TestCreateWithLostAnswerIsAdopted(t *testing.T) {
	srv := runServer(t)
	_, js := connect(t, srv.ClientURL())
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
	if got := kvValue(t, testKV(t, js), leaseKey("pbx2")); got != "a" {
		t.Fatalf("lease of pbx2 holds %q, want a", got)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestFreedNodeTakenDespiteStaleCreate: a lease deleted by its owner is
// taken at once by its revision on the watch, even when Create would claim
// the key still exists (a follower's stale read); otherwise the node would
// wait for the delete marker to expire, a whole TTL.
func TestFreedNodeTakenDespiteStaleCreate(t *testing.T) {
	srv := runServer(t)
	_, js := connect(t, srv.ClientURL())
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
