package ownership_test

import (
	"context"
	"log"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/amibus/amibus/internal/ownership"
)

// pool stands for the ingest's session pool and per-node publisher.
type pool interface {
	Add(node string)                              // start the node's AMI session; never blocks
	Remove(ctx context.Context, node string)      // close the session; returns once it stopped reading
	Flush(ctx context.Context, node string) error // publish what the node's buffer holds, then session_end
}

// Wiring ami-ingest with HA enabled: the Manager decides which nodes this
// replica runs. Run returns after every owned node was released and its
// lease deleted, so the NATS connection is closed only after Run returned.
func Example() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		log.Fatal(err)
	}
	var p pool // the real session pool
	m, err := ownership.New(js, "ingest-4f2a", []string{"pbx1", "pbx2", "pbx3"},
		ownership.WithAcquire(func(node string) { p.Add(node) }),
		ownership.WithRelease(func(ctx context.Context, node string) {
			p.Remove(ctx, node) // first: stop reading, so the new owner's session never overlaps
			if err := p.Flush(ctx, node); err != nil {
				log.Printf("%s: events not flushed before hand-over: %v", node, err) // a gap marker follows
			}
		}),
	)
	if err != nil {
		log.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background()) // cancelled on SIGTERM
	defer stop()
	if err := m.Run(ctx); err != nil {
		log.Fatal(err) // ErrBucketConfig: the bucket's TTL differs from this replica's
	}
}
