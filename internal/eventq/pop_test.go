package eventq

import (
	"context"
	"time"
)

// Pop is the tests' blocking consumer (the publisher uses TryPop, Notify
// and GapPending in its own loop): it appends up to cap(dst)-len(dst) items
// to dst, oldest first, waiting until at least one is there. After Close it returns what is left, then
// ErrClosed; it returns ctx.Err() if ctx ends first.
func (q *Queue) Pop(ctx context.Context, dst []Item) ([]Item, error) {
	for {
		out, err := q.TryPop(dst)
		if err != nil || len(out) > len(dst) {
			return out, err
		}
		var gapDue <-chan time.Time
		var t *time.Timer
		if at, ok := q.GapPending(); ok {
			t = time.NewTimer(time.Until(at))
			gapDue = t.C
		}
		select {
		case <-q.notify:
		case <-q.done:
		case <-gapDue:
		case <-ctx.Done():
			err = ctx.Err()
		}
		if t != nil {
			t.Stop()
		}
		if err != nil {
			return dst, err
		}
	}
}
