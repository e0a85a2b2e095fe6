package lifecycle

import (
	"errors"
	"sync"
	"testing"
	"time"
)

// TestOnceStartsOnce: of many concurrent starts exactly one succeeds; the
// others name the component and match ErrStarted.
func TestOnceStartsOnce(t *testing.T) {
	var o Once
	if o.Started() {
		t.Fatal("a zero Once reports started")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- o.Start("thing")
		}()
	}
	wg.Wait()
	close(errs)
	ok := 0
	for err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrStarted) || err.Error() != "thing: already started":
			t.Errorf("second start: %v", err)
		}
	}
	if ok != 1 || !o.Started() {
		t.Fatalf("%d starts succeeded, want 1", ok)
	}
}

// TestCloseAllAtOnce: every close runs at the same time (each waits until
// all have started, which one after another never reaches), and CloseAll
// returns only after every close has returned.
func TestCloseAllAtOnce(t *testing.T) {
	const n = 8
	var started sync.WaitGroup
	started.Add(n)
	var mu sync.Mutex
	done := 0
	items := make([]int, n)
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		CloseAll(items, func(int) {
			started.Done()
			started.Wait()
			mu.Lock()
			done++
			mu.Unlock()
		})
		mu.Lock()
		defer mu.Unlock()
		if done != n {
			t.Errorf("CloseAll returned after %d of %d closes", done, n)
		}
	}()
	select {
	case <-finished:
	case <-time.After(10 * time.Second):
		t.Fatal("closes did not run at once: each waits for all the others to start")
	}
}
