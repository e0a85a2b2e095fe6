package session

import (
	"crypto/rand"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync/atomic"
	"time"
)

const (
	// maxActionIDLen is the longest ActionID the session sends. Asterisk
	// echoes any length, but the IDs travel in logs and NATS replies.
	maxActionIDLen = 64
	// maxInstanceLen bounds the instance so that a node name keeps room.
	maxInstanceLen = 16
	// maxCounterLen is the base-36 width of the largest uint64 counter.
	maxCounterLen = 13
)

var (
	processInstance = newInstanceID()
	// epochs numbers connections process-wide. It starts at the process's
	// start time in microseconds, so that even an instance name reused by a
	// restarted process (a pod name) cannot repeat a session ID, which
	// would make JetStream deduplicate new events as old ones.
	epochs atomic.Uint64
)

func init() { epochs.Store(uint64(time.Now().UnixMicro())) }

// ProcessInstance returns the random short id this process uses in session
// and action IDs unless WithInstance sets another.
func ProcessInstance() string { return processInstance }

// newInstanceID returns 8 random characters of [a-z0-9].
func newInstanceID() string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		// crypto/rand does not fail on supported platforms; fall back to
		// the clock rather than refuse to start.
		return strconv.FormatInt(time.Now().UnixNano()%(1<<40), 36)
	}
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b[:])
}

// ids names one connection: its session ID and its ActionID prefix.
type ids struct {
	session string // "<instance>-<node>-<epoch>"
	prefix  string // "<instance>.<node'>.<epoch>." with node' shortened to fit 64
	counter atomic.Uint64
}

func newIDs(instance, node string) *ids {
	epoch := strconv.FormatUint(epochs.Add(1), 36)
	short := node
	budget := maxActionIDLen - maxCounterLen - len(instance) - len(epoch) - 3
	if len(short) > budget {
		// Keep a readable head and make the tail unique with a hash of the
		// whole name, so two long names sharing a prefix stay distinct.
		h := fnv.New32a()
		h.Write([]byte(node))
		tail := fmt.Sprintf("~%08x", h.Sum32())
		short = node[:max(budget-len(tail), 0)] + tail
	}
	return &ids{
		session: instance + "-" + node + "-" + epoch,
		prefix:  instance + "." + short + "." + epoch + ".",
	}
}

// next returns a new ActionID, unique across processes and reconnects.
func (i *ids) next() string {
	return i.prefix + strconv.FormatUint(i.counter.Add(1), 36)
}
