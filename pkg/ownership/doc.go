// Package ownership divides a fixed list of AMI nodes among ami-ingest
// replicas through leases in a JetStream key-value bucket, so that a node has
// at most one owner at any instant, and exactly one while any replica is
// healthy.
//
// # Keys and values (bucket "ami_owners" by default)
//
//	node.<node>          value: owner instance id   one lease per node
//	presence.<instance>  value: instance id         one per live replica
//
// The bucket's TTL (stream MaxAge) is the lease TTL: a key that is not
// rewritten for TTL disappears. The bucket also has LimitMarkerTTL set, so
// the server writes a delete marker when a key expires and every replica's
// watch sees the expiry at once; nothing polls. The Manager refuses a bucket
// whose TTL differs from its own or that lacks expiry markers
// (ErrBucketConfig): its safety rule below depends on the store's TTL.
//
// Per-key TTLs (jetstream.KeyTTL, nats-server 2.11+, present in the pinned
// nats.go 1.55 / nats-server 2.15) are not used: KeyTTL applies to Create
// only, and KeyValue.Update writes no TTL header, so a renewed lease would
// fall back to the bucket's MaxAge anyway. The bucket TTL gives every lease
// the same lifetime after each write, which is what a lease needs.
//
// # Protocol
//
//   - Acquire: kv.Create (fails if the key exists), value = own instance.
//     A Create that failed may still have been stored (its answer lost or
//     late): when the watch shows the key with our value, the replica takes
//     the node on it (the lease lives at least TTL after the call began), or
//     deletes it if it no longer wants the node. No Create follows a round
//     whose renewals failed.
//   - Renew: every renew interval (TTL/3), kv.Update with the last known
//     revision (compare-and-set). A failed compare means another writer got
//     in: the lease is lost and the node is released at once. Presence is
//     rewritten in the same round.
//   - Give up: Release callback first (the caller closes the AMI session
//     and flushes what it read), then kv.Delete with LastRevision, so that a
//     lease already taken by someone else is never deleted.
//   - Every lease write is conditional on a revision, so a stale write
//     replayed from nats.go's reconnect buffer can never steal a lease.
//   - A watch on the whole bucket (restarted after every NATS reconnect)
//     reports creations, deletes and expiries: a replica takes a freed
//     node, or learns that its lease was changed by someone else, at once.
//     Timers: the renew ticker and one deadline timer for the earliest
//     lease that must be given up; nothing polls.
//   - While the NATS connection is down no call is made (each would only
//     wait for its timeout); leases are given up by the safety rule below.
//   - Release completions are handled before anything else in the loop, so
//     a round of calls timing out cannot keep a released node counted.
//   - If, while below its share, a replica sees a node held by no live
//     replica for longer than a TTL (an expiry it never saw), it restarts
//     the watch, which replays the bucket as it is
//     (ami_ownership_watch_resyncs_total).
//   - The Manager should have a NATS connection of its own (ami-ingest
//     gives it one): on a busy connection a renewal waits behind other
//     traffic, and nats.go holds a connection's lock while a socket write
//     blocks, whatever the call's context says.
//
// # Safety
//
// A lease stored by the server expires no earlier than TTL after the server
// stored it, and the server stores a write after the Manager sent it. So if
// the last successful write of a lease was sent at local monotonic time s,
// the lease exists in the store at least until s+TTL (as long as the NATS
// servers' clocks do not step forward by more than the margin). The Manager
// starts releasing a node whose lease has not been renewed by s+TTL-margin
// (margin TTL/2 by default) and gives Release a context whose deadline is
// s+TTL-margin/2. Another replica can only create the key after it expired
// or was deleted, which is after Release returned, so two AMI sessions for
// one node never overlap as long as Release returns by its deadline (a late
// return is counted in ami_ownership_release_late_total). Leases are kept in
// file storage so that a NATS server restart does not forget them.
//
// # Fair share
//
// Each replica counts the live replicas from the presence keys (itself
// included) and takes at most ceil(nodes/replicas). It takes a free node as
// soon as its watch sees one (no limit per round: a free node has no session,
// so waiting only lengthens the gap). When it holds more than its share
// (replicas joined) it gives up at most `step` nodes per renew round, and has
// at most `step` hand-overs in flight, so nodes move gradually. Rendezvous
// hashing (HRW) of node x instance orders preferences: a replica first takes
// free nodes for which it has the highest score among live replicas, and
// first gives up nodes for which it does not, so replicas rarely contend
// for the same key.
//
// # Graceful shutdown
//
// When Run's context is cancelled the Manager deletes its presence (the
// others' share grows at once), calls Release for every owned node
// concurrently, and deletes each lease as soon as that node's Release has
// returned, while it keeps renewing the leases still being released. Others
// see each delete on their watch and create the lease at once: the gap is
// one AMI reconnect, not a TTL.
package ownership
