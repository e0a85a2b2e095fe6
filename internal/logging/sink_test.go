package logging

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"go.uber.org/goleak"
	"go.uber.org/zap"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// lineWriter records what the sink writes; it counts Write calls so a test
// can see batching, and can be made to block or fail.
type lineWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	writes  int
	entered chan struct{} // receives once per Write call if not nil
	release chan struct{} // Write waits for it to close if not nil
	err     error
}

func (w *lineWriter) Write(p []byte) (int, error) {
	if w.entered != nil {
		select {
		case w.entered <- struct{}{}:
		default:
		}
	}
	if w.release != nil {
		<-w.release
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.writes++
	if w.err != nil {
		return 0, w.err
	}
	return w.buf.Write(p)
}

func (w *lineWriter) lines() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := strings.TrimSuffix(w.buf.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

func TestParseLevel(t *testing.T) {
	for _, ok := range []string{"debug", "info", "warn", "error"} {
		if _, err := ParseLevel(ok); err != nil {
			t.Errorf("ParseLevel(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"verbose", "INFO", "", "warning", "fatal"} {
		_, err := ParseLevel(bad)
		want := `log level "` + bad + `": must be debug, info, warn or error`
		if err == nil || err.Error() != want || !errors.Is(err, ErrBadLevel) {
			t.Errorf("ParseLevel(%q) = %v, want %q", bad, err, want)
		}
	}
	if _, _, err := New("verbose"); err == nil || err.Error() != `log level "verbose": must be debug, info, warn or error` {
		t.Errorf("New(verbose) = %v", err)
	}
	if _, _, err := New("info", WithQueueEntries(0)); err == nil {
		t.Error("New accepted a zero queue")
	}
}

func TestLoggerWritesJSONLines(t *testing.T) {
	w := &lineWriter{}
	logger, sink, err := New("info", WithWriter(w))
	if err != nil {
		t.Fatal(err)
	}
	logger.Debug("hidden")
	logger.Info("session up", zap.String("node", "pbx1"), zap.Duration("took", 1500*time.Millisecond))
	logger.Warn("multi\nline")
	if err := sink.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
	lines := w.lines()
	if len(lines) != 2 {
		t.Fatalf("got %d lines, want 2 (debug filtered):\n%s", len(lines), strings.Join(lines, "\n"))
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("line 1 is not JSON: %v: %s", err, lines[0])
	}
	if rec["msg"] != "session up" || rec["level"] != "info" || rec["node"] != "pbx1" || rec["took"] != "1.5s" {
		t.Errorf("record: %v", rec)
	}
	if _, err := time.Parse(time.RFC3339Nano, rec["time"].(string)); err != nil {
		t.Errorf("time %v: %v", rec["time"], err)
	}
	if !strings.Contains(lines[1], `"msg":"multi\nline"`) {
		t.Errorf("newline not escaped: %s", lines[1])
	}
	if sink.Dropped() != 0 {
		t.Errorf("dropped %d", sink.Dropped())
	}
}

// TestBlockedOutputNeverBlocksCallers: an output that blocks forever (a
// stderr pipe nobody reads) must not stop logging calls; the lines that do
// not fit are counted; Close gives up at its deadline; and once the output
// returns, the goroutine exits and every line is accounted for.
func TestBlockedOutputNeverBlocksCallers(t *testing.T) {
	w := &lineWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	drops := prometheus.NewCounter(prometheus.CounterOpts{Name: "test_log_lines_dropped_total"})
	logger, sink, err := New("info", WithWriter(w), WithDropCounter(drops))
	if err != nil {
		t.Fatal(err)
	}
	logger.Info("first") // the goroutine takes it and blocks in Write
	<-w.entered

	const calls = 100000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := range calls {
			logger.Info("event dropped", zap.Int("i", i))
		}
	}()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("logging calls blocked behind a blocked output")
	}
	// The queue holds DefaultQueueEntries lines; all others were dropped.
	if got, want := sink.Dropped(), uint64(calls-DefaultQueueEntries); got != want {
		t.Errorf("dropped %d, want %d", got, want)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := sink.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close on a blocked output = %v, want DeadlineExceeded", err)
	}
	logger.Info("after close") // dropped, never blocks, never panics

	close(w.release) // the stuck Write returns; the goroutine must exit now
	if err := sink.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	written := uint64(len(w.lines()))
	if written != 1 || w.writes != 1 {
		t.Errorf("written %d lines in %d writes, want only the line that was in Write", written, w.writes)
	}
	if total := written + sink.Dropped(); total != calls+2 {
		t.Errorf("written %d + dropped %d = %d, want every line accounted for (%d)", written, sink.Dropped(), total, calls+2)
	}
	if got := testutil.ToFloat64(drops); got != float64(sink.Dropped()) {
		t.Errorf("drop counter %v, Dropped() %d", got, sink.Dropped())
	}
}

func TestCloseFlushesQueueInBatches(t *testing.T) {
	w := &lineWriter{entered: make(chan struct{}, 1), release: make(chan struct{})}
	logger, sink, err := New("info", WithWriter(w))
	if err != nil {
		t.Fatal(err)
	}
	logger.Info("first")
	<-w.entered
	for i := range 1000 {
		logger.Info("queued", zap.Int("i", i))
	}
	close(w.release)
	if err := sink.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	lines := w.lines()
	if len(lines) != 1001 || sink.Dropped() != 0 {
		t.Fatalf("%d lines, %d dropped; want 1001 and 0", len(lines), sink.Dropped())
	}
	for i, l := range lines[1:] {
		var rec struct{ I int }
		if err := json.Unmarshal([]byte(l), &rec); err != nil || rec.I != i {
			t.Fatalf("line %d out of order or corrupt: %s", i+1, l)
		}
	}
	// 1000 lines of ~100 bytes fit in a few 64 KiB batches.
	if w.writes > 10 {
		t.Errorf("%d writes for 1001 lines: not batched", w.writes)
	}
}

func TestWriteErrorsAndByteCapCounted(t *testing.T) {
	w := &lineWriter{err: errors.New("EPIPE")}
	logger, sink, err := New("info", WithWriter(w))
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		logger.Info("lost")
	}
	if err := sink.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sink.Dropped() != 10 {
		t.Errorf("dropped %d, want 10 failed writes", sink.Dropped())
	}

	w = &lineWriter{}
	logger, sink, err = New("info", WithWriter(w), WithQueueBytes(1000))
	if err != nil {
		t.Fatal(err)
	}
	logger.Info(strings.Repeat("x", 2000)) // over the byte cap on its own
	logger.Info("small")
	if err := sink.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if sink.Dropped() != 1 || len(w.lines()) != 1 || !strings.Contains(w.lines()[0], "small") {
		t.Errorf("dropped %d, lines %q", sink.Dropped(), w.lines())
	}
}

func TestConcurrentLogging(t *testing.T) {
	w := &lineWriter{}
	logger, sink, err := New("info", WithWriter(w), WithQueueEntries(1<<16))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 1000 {
				logger.Info("x", zap.Int("g", g), zap.Int("i", i))
			}
		})
	}
	wg.Wait()
	if err := sink.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := uint64(len(w.lines())) + sink.Dropped(); n != 8000 {
		t.Errorf("written + dropped = %d, want 8000", n)
	}
}
