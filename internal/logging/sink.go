package logging

import (
	"context"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

const (
	// DefaultQueueEntries caps the lines waiting for the output: about a
	// second of a very chatty process, a few MB at most.
	DefaultQueueEntries = 4096
	// DefaultQueueBytes caps the bytes waiting for the output, so that a
	// few huge lines cannot hold more memory than the line cap suggests.
	DefaultQueueBytes = 4 << 20
	// maxBatchBytes caps one Write to the output: lines queued together
	// are written together, one system call for many lines.
	maxBatchBytes = 64 << 10
	// maxPooledBytes keeps unusually large line buffers out of the pool.
	maxPooledBytes = 16 << 10
)

// Sink is a zapcore.WriteSyncer that never blocks its caller. Write copies
// the line into a bounded queue (DefaultQueueEntries lines and
// DefaultQueueBytes bytes unless configured); one goroutine, started by New
// and stopped by Close, writes the queue to the output in batches. A line
// that does not fit, arrives after Close, fails to be written or is still
// queued when Close gives up is dropped and counted: every line is either
// written or counted in Dropped.
type Sink struct {
	w        io.Writer
	ch       chan *[]byte
	maxBytes int64
	queued   atomic.Int64 // bytes in ch
	dropped  atomic.Uint64
	drops    prometheus.Counter // may be nil
	pool     sync.Pool

	// mu makes closed and the enqueue in Write atomic with respect to
	// Close: after Close no line can slip into the queue unaccounted.
	// Writers share it; only Close takes it exclusively, briefly.
	mu     sync.RWMutex
	closed bool

	stopOnce    sync.Once
	stop        chan struct{} // closed by Close: write what is queued, then exit
	abandonOnce sync.Once
	abandon     chan struct{} // closed when Close's ctx ends: exit after the current Write
	exited      chan struct{} // closed by the goroutine on exit
}

func newSink(o options) *Sink {
	s := &Sink{
		w:        o.w,
		ch:       make(chan *[]byte, o.queueEntries),
		maxBytes: int64(o.queueBytes),
		drops:    o.drops,
		stop:     make(chan struct{}),
		abandon:  make(chan struct{}),
		exited:   make(chan struct{}),
	}
	go s.run()
	return s
}

// Write queues a copy of p, or drops it when the queue is full or the Sink
// closed. It never blocks on the output and never fails: zap would report a
// failure on its error output, which is this Sink.
func (s *Sink) Write(p []byte) (int, error) {
	n := int64(len(p))
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed {
		s.drop(1)
		return len(p), nil
	}
	if s.queued.Add(n) > s.maxBytes {
		s.queued.Add(-n)
		s.drop(1)
		return len(p), nil
	}
	b := s.get()
	*b = append((*b)[:0], p...)
	select {
	case s.ch <- b:
	default:
		s.queued.Add(-n)
		s.put(b)
		s.drop(1)
	}
	return len(p), nil
}

// Sync returns at once: waiting for the output is what the Sink exists to
// avoid. Close flushes.
func (s *Sink) Sync() error { return nil }

// Dropped returns the number of lines lost so far.
func (s *Sink) Dropped() uint64 { return s.dropped.Load() }

// Close stops taking lines, writes what is queued and stops the goroutine.
// If ctx ends first (the output is blocked), Close returns ctx's error at
// once; the goroutine is then abandoned inside its Write, which Go cannot
// interrupt: it exits as soon as that Write returns, counting the lines
// still queued as dropped. Close may be called again to wait for that.
func (s *Sink) Close(ctx context.Context) error {
	s.stopOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		s.mu.Unlock()
		close(s.stop)
	})
	select {
	case <-s.exited:
		return nil
	case <-ctx.Done():
		s.abandonOnce.Do(func() { close(s.abandon) })
		return fmt.Errorf("logging: output blocked, unwritten lines dropped: %w", ctx.Err())
	}
}

func (s *Sink) drop(n int) {
	s.dropped.Add(uint64(n))
	if s.drops != nil {
		s.drops.Add(float64(n))
	}
}

func (s *Sink) get() *[]byte {
	if b, ok := s.pool.Get().(*[]byte); ok {
		return b
	}
	b := make([]byte, 0, 512)
	return &b
}

func (s *Sink) put(b *[]byte) {
	if cap(*b) <= maxPooledBytes {
		s.pool.Put(b)
	}
}

func (s *Sink) run() {
	defer close(s.exited)
	batch := make([]byte, 0, maxBatchBytes)
	for {
		select {
		case b := <-s.ch:
			if !s.writeBatch(&batch, b) {
				return
			}
		case <-s.stop:
			// Close has set closed under mu: nothing more can be queued,
			// so emptying the channel once is a complete flush.
			for {
				select {
				case b := <-s.ch:
					if !s.writeBatch(&batch, b) {
						return
					}
				default:
					return
				}
			}
		}
	}
}

// writeBatch writes first and whatever else is queued, up to
// maxBatchBytes, in one Write. It reports false once Close has abandoned
// the goroutine; the lines still queued are then counted as dropped.
func (s *Sink) writeBatch(batch *[]byte, first *[]byte) bool {
	*batch = s.take((*batch)[:0], first)
	lines := 1
gather:
	for len(*batch) < maxBatchBytes {
		select {
		case b := <-s.ch:
			*batch = s.take(*batch, b)
			lines++
		default:
			break gather
		}
	}
	if n, err := s.w.Write(*batch); err != nil || n < len(*batch) {
		s.drop(lines)
	}
	if cap(*batch) > 2*maxBatchBytes {
		*batch = make([]byte, 0, maxBatchBytes) // one huge line must not pin its buffer
	}
	select {
	case <-s.abandon:
		for {
			select {
			case b := <-s.ch:
				s.queued.Add(-int64(len(*b)))
				s.put(b)
				s.drop(1)
			default:
				return false
			}
		}
	default:
		return true
	}
}

func (s *Sink) take(batch []byte, b *[]byte) []byte {
	batch = append(batch, *b...)
	s.queued.Add(-int64(len(*b)))
	s.put(b)
	return batch
}
