// Package publish turns the items of eventq node queues into JetStream
// messages: the stream (EnsureStream), the JSON envelopes (AppendEvent,
// AppendMeta, written into reused buffers), the subjects (EventSubject,
// MetaSubject) and the Publisher, which publishes every node's items
// asynchronously, in order, with deduplicating message ids, retries and a
// process-wide cap on unacknowledged publishes. The contract it implements
// is described in schemas/README.md. It knows nothing of AMI sockets.
package publish
