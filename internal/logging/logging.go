// Package logging builds the JSON zap logger of the amibus binaries. Log
// lines go through a Sink, a bounded queue drained by one goroutine, so that
// a log output that blocks (a stderr pipe nobody reads) never stalls the
// code that logs: what does not fit is dropped and counted. A Coalescer
// turns a repeated condition into at most one line per interval.
package logging

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/amibus/amibus/internal/setting"
)

// ErrBadLevel is wrapped by ParseLevel's error for an unknown level.
var ErrBadLevel = errors.New("must be debug, info, warn or error")

// ParseLevel accepts exactly the levels the --log-level flag documents.
func ParseLevel(s string) (zapcore.Level, error) {
	switch s {
	case "debug":
		return zapcore.DebugLevel, nil
	case "info":
		return zapcore.InfoLevel, nil
	case "warn":
		return zapcore.WarnLevel, nil
	case "error":
		return zapcore.ErrorLevel, nil
	}
	return 0, fmt.Errorf("log level %q: %w", s, ErrBadLevel)
}

// Option configures New.
type Option func(*options) error

type options struct {
	w            io.Writer
	drops        prometheus.Counter
	queueEntries int
	queueBytes   int
}

// WithWriter sets the output (default os.Stderr). Only the Sink's goroutine
// calls its Write, so it need not be safe for concurrent use.
func WithWriter(w io.Writer) Option {
	return func(o *options) error {
		if w == nil {
			return errors.New("nil writer")
		}
		o.w = w
		return nil
	}
}

// WithDropCounter counts lost log lines in c as well (the binaries pass
// metrics.LogLinesDropped, ami_log_lines_dropped_total).
func WithDropCounter(c prometheus.Counter) Option {
	return func(o *options) error { o.drops = c; return nil }
}

// WithQueueEntries sets the queue's cap in lines (default DefaultQueueEntries).
func WithQueueEntries(n int) Option {
	return func(o *options) error { o.queueEntries = n; return setting.Positive("queue entries", n) }
}

// WithQueueBytes sets the queue's cap in bytes (default DefaultQueueBytes).
func WithQueueBytes(n int) Option {
	return func(o *options) error { o.queueBytes = n; return setting.Positive("queue bytes", n) }
}

// OrNop returns l, or a logger that discards everything for nil: the
// components whose logger is optional take nil for none.
func OrNop(l *zap.Logger) *zap.Logger {
	if l == nil {
		return zap.NewNop()
	}
	return l
}

// New builds a JSON logger at level (debug, info, warn or error) writing
// through a new Sink. The caller owns the Sink and must Close it before
// exiting, to flush the queue and stop its goroutine.
func New(level string, opts ...Option) (*zap.Logger, *Sink, error) {
	lvl, err := ParseLevel(level)
	if err != nil {
		return nil, nil, err
	}
	o := options{w: os.Stderr, queueEntries: DefaultQueueEntries, queueBytes: DefaultQueueBytes}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, nil, fmt.Errorf("logging: %w", err)
		}
	}
	sink := newSink(o)
	enc := zapcore.NewJSONEncoder(zapcore.EncoderConfig{
		TimeKey:        "time",
		LevelKey:       "level",
		NameKey:        "logger",
		CallerKey:      "caller",
		MessageKey:     "msg",
		StacktraceKey:  "stacktrace",
		LineEnding:     zapcore.DefaultLineEnding,
		EncodeLevel:    zapcore.LowercaseLevelEncoder,
		EncodeTime:     zapcore.RFC3339NanoTimeEncoder,
		EncodeDuration: zapcore.StringDurationEncoder,
		EncodeCaller:   zapcore.ShortCallerEncoder,
	})
	core := zapcore.NewCore(enc, sink, lvl)
	// zap reports its own failures to ErrorOutput, by default a locked,
	// blocking os.Stderr: route them through the sink too.
	logger := zap.New(core, zap.AddCaller(), zap.ErrorOutput(sink))
	return logger, sink, nil
}
