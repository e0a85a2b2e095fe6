package lifecycle

import (
	"errors"
	"sync"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
