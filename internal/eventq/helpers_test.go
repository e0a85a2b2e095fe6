package eventq

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/amibus/amibus/pkg/amiwire"
)

var t0 = time.Date(2026, 11, 23, 1, 41, 56, 154000000, time.UTC)

func event(name string, kv ...string) *amiwire.Message {
	m := &amiwire.Message{}
	m.Add("Event", name)
	for i := 0; i+1 < len(kv); i += 2 {
		m.Add(kv[i], kv[i+1])
	}
	return m
}

func newQ(t *testing.T, opts ...Option) *Queue {
	t.Helper()
	q, err := New("pbx1", opts...)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// drain pops everything that is there now and releases it, returning a
// compact description of each item.
func drain(t *testing.T, q *Queue) []string {
	t.Helper()
	var out []string
	buf := make([]Item, 0, 7) // smaller than the tests' item counts: several pops
	for {
		got, err := q.TryPop(buf[:0])
		if err != nil && !errors.Is(err, ErrClosed) {
			t.Fatal(err)
		}
		if len(got) == 0 {
			return out
		}
		for i := range got {
			out = append(out, describe(&got[i]))
			q.Release(&got[i])
		}
	}
}

func describe(it *Item) string {
	switch it.Kind {
	case KindEvent:
		return fmt.Sprintf("ev %s/%d", it.Session, it.Seq)
	case KindSessionStart:
		return fmt.Sprintf("start %s %s %s", it.Session, it.Version, it.Owner)
	case KindSessionEnd:
		return fmt.Sprintf("end %s %s %d", it.Session, it.Reason, it.LastSeq)
	case KindGap:
		return fmt.Sprintf("gap %s %d-%d/%d %s", it.Session, it.FirstSeq, it.LastSeq, it.Count, it.Reason)
	case KindSnapshot:
		return fmt.Sprintf("snap %s %s %d/%d after %d", it.Session, it.Action, len(it.Items), it.Total, it.Seq)
	}
	return "?"
}
