package ownership

import (
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/amibus/amibus/internal/logging"
)

// logEvery is the least time between two log lines about one continuing
// failure (NATS down makes every round fail).
const logEvery = 30 * time.Second

// failureLog reports a repeated failure through a logging.Coalescer (one
// line per logEvery with the count since the previous line and the latest
// error), plus one line when it stops.
type failureLog struct {
	what string // e.g. "lease renewal"
	log  *zap.Logger
	c    *logging.Coalescer
}

func newFailureLog(log *zap.Logger, what string) *failureLog {
	return &failureLog{what: what, log: log, c: logging.NewCoalescerWith(log, what+" failing", logEvery,
		logging.CoalescerOptions{Level: zapcore.WarnLevel, CountField: "failures"})}
}

// fail records n failures, the latest with err.
func (f *failureLog) fail(n int, err error) { f.c.AddWith(uint64(n), zap.Error(err)) }

// ok records a success and logs the end of a failing period.
func (f *failureLog) ok() {
	if n, active := f.c.End(); active {
		f.log.Info(f.what+" recovered", zap.Uint64("failures_since_last_log", n))
	}
}

// stop disarms the coalescer's timer, logging what it held.
func (f *failureLog) stop() { f.c.Stop() }
