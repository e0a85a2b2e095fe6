package eventq

import "sync/atomic"

// DefaultMaxBytes is the byte budget a Queue creates for itself when it is
// given none (the default of ingest.buffer_bytes).
const DefaultMaxBytes = 64 << 20

// Budget is a byte cap shared by every Queue of a process, so that the sum of
// all node buffers stays bounded however the load is spread. Bytes are taken
// when an item is accepted and given back when the consumer releases it, so
// the budget bounds memory truly in use, including items being published.
type Budget struct {
	max  int64
	used atomic.Int64
}

// NewBudget returns a budget of maxBytes; maxBytes <= 0 is replaced by
// DefaultMaxBytes, as a buffer without a cap is not an option.
func NewBudget(maxBytes int64) *Budget {
	if maxBytes <= 0 {
		maxBytes = DefaultMaxBytes
	}
	return &Budget{max: maxBytes}
}

// Max returns the budget's cap in bytes.
func (b *Budget) Max() int64 { return b.max }

// Used returns the bytes currently held by all queues sharing b.
func (b *Budget) Used() int64 { return b.used.Load() }

// tryAcquire takes n bytes if they fit under the cap. It never blocks: the
// producer is an AMI reader that must keep reading.
func (b *Budget) tryAcquire(n int64) bool {
	for {
		u := b.used.Load()
		if u+n > b.max {
			return false
		}
		if b.used.CompareAndSwap(u, u+n) {
			return true
		}
	}
}

func (b *Budget) release(n int64) { b.used.Add(-n) }
