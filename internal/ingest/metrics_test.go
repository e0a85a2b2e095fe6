package ingest

import (
	"fmt"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/amibus/amibus/internal/metrics"
	"github.com/amibus/amibus/internal/testenv"
)

// The ingest's metrics as the tests read them.

func received(m *metrics.Metrics, node string) uint64 {
	return uint64(testutil.ToFloat64(m.EventsReceived.WithLabelValues(node)))
}

func published(m *metrics.Metrics, node string) uint64 {
	return uint64(testutil.ToFloat64(m.EventsPublished.WithLabelValues(node)))
}

// waitPublished waits until the ingest counts n events of node published:
// a reader sees a message in the stream a moment before its ack reaches the
// publisher.
func waitPublished(t *testing.T, m *metrics.Metrics, node string, n uint64) {
	t.Helper()
	testenv.Poll(t, fmt.Sprintf("%d events of %s published", n, node), func() bool { return published(m, node) >= n })
}

func dropped(m *metrics.Metrics, node, reason string) uint64 {
	return uint64(testutil.ToFloat64(m.EventsDropped.WithLabelValues(node, reason)))
}

func filtered(m *metrics.Metrics, node string) uint64 {
	return uint64(testutil.ToFloat64(m.EventsFiltered.WithLabelValues(node)))
}

// nodeCounts is what the ingest's metrics say about one node beyond its
// event counts.
type nodeCounts struct {
	buffered         uint64 // events read and not yet published (a gauge)
	retries          uint64 // publishes sent again
	reconnects       uint64
	loginSnapshots   uint64
	gapSnapshots     uint64
	skippedSnapshots uint64 // gaps within the snapshot interval of the last snapshot
}

func nodeMetrics(m *metrics.Metrics, node string) nodeCounts {
	return nodeCounts{
		buffered:         uint64(testutil.ToFloat64(m.BufferEvents.WithLabelValues(node))),
		retries:          uint64(testutil.ToFloat64(m.PublishRetries.WithLabelValues(node))),
		reconnects:       uint64(testutil.ToFloat64(m.SessionReconnects.WithLabelValues(node))),
		loginSnapshots:   uint64(testutil.ToFloat64(m.Snapshots.WithLabelValues(node, metrics.SnapshotLogin))),
		gapSnapshots:     uint64(testutil.ToFloat64(m.Snapshots.WithLabelValues(node, metrics.SnapshotGap))),
		skippedSnapshots: uint64(testutil.ToFloat64(m.SnapshotsSkipped.WithLabelValues(node))),
	}
}
