// Package ownership divides a list of AMI nodes among ami-ingest (and
// ami-state) replicas through a JetStream key-value bucket: one liveness
// key per replica and one owner entry per node, so that a node has
// at most one owner at any instant, and exactly one while any replica is
// healthy.
//
// # Keys and values (bucket "ami_owners" by default)
//
//	presence.<instance>  value: <incarnation>[ leaving]   one liveness key per replica, TTL
//	node.<node>          value: <instance>/<incarnation>  one entry per owned node, no TTL
//
// One replica renews one key, whatever the number of nodes it owns: at
// 10,000 nodes over 3 replicas that is one write per replica per renew
// interval instead of 3,333 (BENCHMARKS.md, "Leases for 10,000 nodes").
// Node entries are written only when ownership changes.
//
// The bucket's TTL (stream MaxAge) is the liveness TTL: a liveness key not
// rewritten for TTL disappears. The bucket has LimitMarkerTTL set, so the
// server writes a delete marker when a key expires and every replica's
// watch sees the expiry at once; nothing polls. The Manager refuses a bucket
// whose TTL differs from its own or that lacks expiry markers
// (ErrBucketConfig): its safety rule below depends on the store's TTL.
//
// Node entries live in the same bucket but do not expire: each is written
// with the per-message TTL header "Nats-TTL: never" (allowed because
// expiry markers imply AllowMsgTTL), which the server exempts from MaxAge.
// They are published directly with an expected last subject sequence
// (nats.go's KeyValue.Create and Update write no TTL header, and
// jetstream.KeyTTL applies to Create only). One bucket, one stream: the
// watch delivers liveness changes and entries in the order the server
// stored them, so an entry never arrives before the liveness write of its
// incarnation, which the safety of take-over below relies on. (Two buckets
// would give two unordered watches.)
//
// An incarnation is a random id a replica picks when it announces itself
// (Run's start, or after its liveness was lost). An entry belongs to a live
// replica only while that replica's liveness key holds the entry's
// incarnation; an entry of an ended incarnation is free to take over. A
// value that is not instance/incarnation (a lease of the earlier one-lease-
// per-node protocol, a foreign writer) is never taken over, only taken
// once deleted or expired.
//
// # Protocol
//
//   - Announce: a Put of the liveness key with a new incarnation (the
//     instance id is unique, so whatever the key held before is over).
//     Renew: every renew interval (TTL/3), kv.Update with the last known
//     revision (compare-and-set). A failed compare whose latest value is
//     not this incarnation's (the key expired, or was overwritten) ends
//     the incarnation: every node still held is lost and released at once,
//     and the next round announces a new incarnation.
//   - Acquire a free node: publish the entry expecting the revision the
//     watch showed (0: no entry; or the delete or expiry marker's). Take
//     over a node whose owner's incarnation ended (its liveness key's
//     expiry or delete marker, or another incarnation of it, seen on the
//     watch): publish expecting the revision of that entry as seen, so two
//     survivors never both win. A write whose answer was lost may still
//     have been stored: when the watch shows the entry with this
//     incarnation's value, the replica takes the node on it if it still
//     wants it and its liveness is trusted, or deletes it. No write follows
//     a round whose renewal failed.
//   - Give up: Release callback first (the caller closes the AMI session
//     and flushes what it read), then kv.Delete with LastRevision, so that
//     an entry already taken over is never deleted.
//   - A change of an owned node's entry by anyone else (seen on the watch)
//     loses the node at once.
//   - Every write except the announcement is conditional on a revision, so
//     a stale write replayed from nats.go's reconnect buffer can never take
//     a node; a replayed announcement carries the incarnation being
//     announced (it is kept across failed attempts), so it cannot end it.
//   - A replica that comes back after its liveness expired (a partition
//     healed) finds its renewal refused, announces a new incarnation, and
//     treats its old entries as any ended incarnation's: it takes them only
//     by compare-and-set, calling Acquire again.
//   - A watch on the whole bucket (restarted after every NATS reconnect)
//     reports liveness changes, entries, deletes and expiries. Timers: the
//     renew ticker and one deadline timer for the liveness's release-by;
//     nothing polls.
//   - While the NATS connection is down no call is made (each would only
//     wait for its timeout); nodes are given up by the safety rule below.
//   - Release completions are handled before anything else in the loop, so
//     a round of calls timing out cannot keep a released node counted.
//   - If a peer's liveness key was not rewritten on the watch for longer
//     than TTL plus a round (an expiry it never saw), or, while below its
//     share, a node's entry stays of an unknown kind for longer than a TTL,
//     the replica restarts the watch, which replays the bucket as it is
//     (ami_ownership_watch_resyncs_total).
//   - The Manager should have a NATS connection of its own (ami-ingest
//     gives it one): on a busy connection a renewal waits behind other
//     traffic, and nats.go holds a connection's lock while a socket write
//     blocks, whatever the call's context says.
//
// # Safety
//
// A liveness key stored by the server expires no earlier than TTL after the
// server stored it, and the server stores a write after the Manager sent
// it. So if the last successful write of the liveness was sent at local
// monotonic time s, the key holds this incarnation at least until s+TTL
// (as long as the NATS servers' clocks do not step forward by more than the
// margin). The Manager starts releasing every node it owns when its
// liveness has not been renewed by s+TTL-margin (margin TTL/2 by default)
// and gives each Release a context whose deadline is s+TTL-margin/2.
// Another replica takes a node only once the watch showed the entry
// deleted (after Release returned) or the owner's incarnation ended: its
// liveness key expired (after s+TTL), was deleted (at the end of a
// graceful shutdown, after every Release returned) or was rewritten with
// another incarnation (the same instance id restarted: the old process is
// gone). So two AMI sessions for one node never overlap as long as Release
// returns by its deadline (a late return is counted in
// ami_ownership_release_late_total). The stream's order makes "ended"
// well defined: when a replica applies an entry, the watch has already
// applied the liveness write of the entry's incarnation, so an incarnation
// it has not seen live is one that ended. The bucket is kept in file
// storage so that a NATS server restart does not forget it.
//
// # Fair share
//
// Each replica counts the live replicas from the liveness keys (itself
// included, replicas leaving excluded) and takes at most
// ceil(nodes/replicas). It takes a free node as
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
// When Run's context is cancelled the Manager rewrites its liveness as
// leaving (the others' share grows at once, while the key still fences the
// nodes not yet released), calls Release for every owned node concurrently,
// and deletes each entry as soon as that node's Release has returned, while
// it keeps renewing its liveness. Others see each delete on their watch and
// take the node at once: the gap is one AMI reconnect, not a TTL. Once
// every node is released and its entry deleted, the liveness key is
// deleted.
package ownership
