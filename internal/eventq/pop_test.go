package eventq

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
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

func TestPopBlocksUntilItem(t *testing.T) {
	q := newQ(t)
	type res struct {
		items []Item
		err   error
	}
	ch := make(chan res, 1)
	go func() {
		items, err := q.Pop(context.Background(), make([]Item, 0, 4))
		ch <- res{items, err}
	}()
	select {
	case r := <-ch:
		t.Fatalf("Pop returned on an empty queue: %+v", r)
	default:
	}
	q.Event("s", 1, t0, event("A"))
	r := <-ch
	if r.err != nil || len(r.items) != 1 || r.items[0].Seq != 1 {
		t.Fatalf("Pop = %+v", r)
	}
	q.Release(&r.items[0])
}

func TestPopWokenByCloseAndContext(t *testing.T) {
	q := newQ(t)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		_, err := q.Pop(ctx, make([]Item, 0, 4))
		errc <- err
	}()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Pop after cancel: %v", err)
	}

	q.Event("s", 1, t0, event("A"))
	go func() {
		buf := make([]Item, 0, 4)
		items, err := q.Pop(context.Background(), buf)
		if err != nil || len(items) != 1 {
			errc <- fmt.Errorf("first Pop: %d items, %v", len(items), err)
			return
		}
		q.Release(&items[0])
		_, err = q.Pop(context.Background(), buf) // blocks until Close
		errc <- err
	}()
	q.Close()
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Fatalf("Pop after Close: %v", err)
	}
	if _, err := q.Pop(context.Background(), make([]Item, 0)); !errors.Is(err, ErrNoRoom) {
		t.Fatalf("Pop with no room: %v", err)
	}
}

// TestRaceOneProducerOneConsumer runs the reader side and a slow consumer
// concurrently and checks, from what the consumer saw, that order holds, every
// lost seq is covered by exactly one gap, and the accounting is exact.
func TestRaceOneProducerOneConsumer(t *testing.T) {
	const sessions, perSession = 4, 5000
	q := newQ(t, WithMaxEvents(64), WithBudget(NewBudget(64<<10)))
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		ev := event("VarSet", "Variable", "x", "Value", "y")
		for s := range sessions {
			id := fmt.Sprintf("s%d", s)
			q.SessionStarted(id, "9.0.0", t0)
			for i := uint64(1); i <= perSession; i++ {
				q.Event(id, i, t0, ev)
			}
			q.SessionEnded(id, t0, "eof", perSession)
		}
		q.Close()
	}()

	seen := map[string][]bool{}
	var cur string
	var last uint64
	var events, gapped uint64
	buf := make([]Item, 0, 32)
	for {
		items, err := q.Pop(context.Background(), buf[:0])
		if errors.Is(err, ErrClosed) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		for i := range items {
			it := &items[i]
			switch it.Kind {
			case KindSessionStart:
				cur, last = it.Session, 0
				seen[cur] = make([]bool, perSession+1)
			case KindEvent, KindGap:
				first, lst := it.Seq, it.Seq
				if it.Kind == KindGap {
					first, lst = it.FirstSeq, it.LastSeq
					gapped += it.Count
				} else {
					events++
				}
				if it.Session != cur || first != last+1 {
					t.Fatalf("out of order: %s after %s/%d", describe(it), cur, last)
				}
				for s := first; s <= lst; s++ {
					seen[cur][s] = true
				}
				last = lst
			case KindSessionEnd:
				if last != perSession {
					t.Fatalf("session %s ended at %d", cur, last)
				}
			}
			q.Release(it)
		}
	}
	wg.Wait()
	for id, s := range seen {
		for seq := 1; seq <= perSession; seq++ {
			if !s[seq] {
				t.Fatalf("%s/%d neither delivered nor in a gap", id, seq)
			}
		}
	}
	if len(seen) != sessions {
		t.Fatalf("saw %d sessions", len(seen))
	}
	st := q.Stats()
	if st.Received != sessions*perSession || st.Published != events || st.DroppedBufferFull != gapped ||
		st.Received != st.Published+st.Dropped()+st.Buffered || st.Buffered != 0 || st.Bytes != 0 {
		t.Fatalf("accounting: %+v (consumer saw %d events, %d in gaps)", st, events, gapped)
	}
	t.Logf("published %d, dropped %d", st.Published, st.DroppedBufferFull)
}

// TestTrailingGapGoesOutOnItsOwn: drops after the last event taken, with
// nothing after them (the PBX fell silent), still reach the consumer: the
// waiting consumer is woken when the gap opens, and the gap is handed out
// once it is gapDelay old, not held until the next event.
func TestTrailingGapGoesOutOnItsOwn(t *testing.T) {
	const delay = 50 * time.Millisecond
	q := newQ(t, WithMaxEvents(2), WithGapDelay(delay))
	now := time.Now()
	q.Event("a", 1, now, event("Newstate"))
	q.Event("a", 2, now, event("Newstate"))
	got, err := q.TryPop(make([]Item, 0, 8))
	if err != nil || len(got) != 2 {
		t.Fatalf("first pop: %d items, %v", len(got), err)
	}
	// The two events are in flight (popped, not released): the cap holds.
	if more, _ := q.TryPop(make([]Item, 0, 8)); len(more) != 0 {
		t.Fatalf("empty queue gave %d items", len(more))
	}
	select {
	case <-q.Notify():
		t.Fatal("Notify signalled before anything happened")
	default:
	}
	dropped := time.Now()
	for seq := uint64(3); seq <= 5; seq++ {
		q.Event("a", seq, dropped, event("Newstate"))
	}
	select {
	case <-q.Notify():
	default:
		t.Fatal("the waiting consumer was not told of the gap")
	}
	at, ok := q.GapPending()
	if !ok || !at.Equal(dropped.Add(delay)) {
		t.Fatalf("GapPending = %v, %v; want %v, true", at, ok, dropped.Add(delay))
	}
	if early, _ := q.TryPop(make([]Item, 0, 8)); len(early) != 0 && time.Since(dropped) < delay {
		t.Fatalf("gap handed out before its delay: %+v", early[0])
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var gap []Item
	for len(gap) == 0 {
		if gap, err = q.Pop(ctx, make([]Item, 0, 8)); err != nil {
			t.Fatalf("Pop: %v", err)
		}
	}
	if g := gap[0]; g.Kind != KindGap || g.FirstSeq != 3 || g.LastSeq != 5 || g.Count != 3 || g.Reason != "buffer_full" {
		t.Fatalf("got %+v, want the gap of seqs 3-5", g)
	}
	if _, ok := q.GapPending(); ok {
		t.Fatal("gap still pending after it was handed out")
	}
	for i := range got {
		q.Release(&got[i])
	}
	s := q.Stats()
	if s.Received != 5 || s.Published != 2 || s.DroppedBufferFull != 3 || s.Buffered != 0 {
		t.Fatalf("stats %+v", s)
	}
}

// TestWakeCallback: SetWake's callback comes with each Notify signal (an
// item after a TryPop found the queue empty, Close) and not otherwise, and
// an emptied queue gives its ring back and takes one again.
func TestWakeCallback(t *testing.T) {
	q := newQ(t)
	wakes := 0
	q.SetWake(func() { wakes++ }) // under q.mu: no lock of its own needed
	q.Event("s1", 1, t0, event("A"))
	if wakes != 0 {
		t.Fatalf("%d wakes before any TryPop found the queue empty", wakes)
	}
	buf := make([]Item, 0, 8)
	for round := 1; round <= 3; round++ {
		items, err := q.TryPop(buf[:0])
		if err != nil || len(items) == 0 {
			t.Fatalf("round %d: %d items, %v", round, len(items), err)
		}
		for i := range items {
			q.Release(&items[i])
		}
		if items, _ = q.TryPop(buf[:0]); len(items) != 0 {
			t.Fatalf("round %d: %d items left", round, len(items))
		}
		if q.ring != nil {
			t.Fatalf("round %d: an empty queue holds its ring", round)
		}
		q.Event("s1", uint64(2*round), t0, event("A"))
		q.Event("s1", uint64(2*round+1), t0, event("B"))
		if wakes != round {
			t.Fatalf("round %d: %d wakes, want %d (one per emptying)", round, wakes, round)
		}
	}
	q.Close()
	if wakes != 4 {
		t.Fatalf("%d wakes after Close, want 4", wakes)
	}
}
