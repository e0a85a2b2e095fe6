package eventq_test

import (
	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/pkg/session"
)

// The queue is what a session delivers to: it must keep session.Handler's
// method set without importing session.
var _ session.Handler = (*eventq.Queue)(nil)

// It also takes the events the reader skipped for their size, so that they
// become a gap marker instead of vanishing without a trace.
var _ session.OversizedHandler = (*eventq.Queue)(nil)
