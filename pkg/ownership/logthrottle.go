package ownership

import (
	"time"

	"go.uber.org/zap"
)

// logEvery is the least time between two log lines about one continuing
// failure (NATS down makes every round fail).
const logEvery = 30 * time.Second

// throttle coalesces a repeated failure into one line per logEvery carrying
// the count since the previous line, plus one line when it stops.
type throttle struct {
	what    string // e.g. "lease renewal"
	failing bool
	last    time.Time
	count   int // failures not yet reported
}

// fail records n failures with the latest error and logs when due.
func (t *throttle) fail(log *zap.Logger, n int, err error, now time.Time) {
	t.count += n
	if t.failing && now.Sub(t.last) < logEvery {
		return
	}
	t.failing = true
	t.last = now
	log.Warn(t.what+" failing", zap.Int("failures", t.count), zap.Error(err))
	t.count = 0
}

// ok records a success and logs the end of a failing period.
func (t *throttle) ok(log *zap.Logger) {
	if !t.failing {
		return
	}
	t.failing = false
	log.Info(t.what+" recovered", zap.Int("failures_since_last_log", t.count))
	t.count = 0
}
