package ownership

import (
	"context"
	"errors"
	"strings"
	"sync"

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
