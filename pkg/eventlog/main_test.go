package eventlog

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/amibus/amibus/internal/eventq"
	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/publish"
)

// serverDirEnv, when set, makes the test binary a nats-server with
// JetStream storing under its value, in a process of its own: the read
// benchmark runs the server so, as in production, apart from the reader
// (which then has its own CPU time and heap). The server prints its URL
// and stops when its standard input closes.
const serverDirEnv = "EVENTLOG_TEST_SERVER_DIR"

func TestMain(m *testing.M) {
	if dir := os.Getenv(serverDirEnv); dir != "" {
		os.Exit(serveNATS(dir))
	}
	goleak.VerifyTestMain(m)
}

// StartJetStream starts a nats-server with JetStream storing under dir, on
// a free port of 127.0.0.1, for the tests, the examples (package
// eventlog_test) and the read benchmark's server process.
func StartJetStream(dir string) (*server.Server, error) {
	srv, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: dir, NoSigs: true, NoLog: true})
	if err != nil {
		return nil, err
	}
	srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		srv.Shutdown()
		return nil, errors.New("nats-server not ready")
	}
	return srv, nil
}

func serveNATS(dir string) int {
	srv, err := StartJetStream(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(srv.ClientURL())
	// Wait for the parent to close our standard input (or to die).
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	srv.Shutdown()
	srv.WaitForShutdown()
	return 0
}

// What follows is how the tests make the messages they store, shared by
// the package's own tests and eventlog_test's (the reader's tests, the
// examples and the read benchmark): exactly as ami-ingest's publisher
// encodes them (publish.AppendEvent/AppendMeta, subjects, Nats-Msg-Id), so
// that a test can also store what ami-ingest never writes (an unmarked
// jump, a bad payload).

// Stored is one message of the events stream.
type Stored struct {
	Subject string
	Data    []byte
	ID      string // Nats-Msg-Id, "" for none
}

// Msg is s to publish.
func (s Stored) Msg() *nats.Msg {
	m := nats.NewMsg(s.Subject)
	m.Data = s.Data
	if s.ID != "" {
		m.Header.Set(jetstream.MsgIDHeader, s.ID)
	}
	return m
}

// StoredEvent is event m of node's session, number seq, received at at,
// under the subject prefix.
func StoredEvent(prefix, node, session string, seq uint64, at time.Time, m *amiwire.Message) Stored {
	it := eventq.Item{Kind: eventq.KindEvent, Session: session, Seq: seq, Time: at, Msg: m}
	return Stored{Subject: publish.EventSubject(prefix, node, m.Name()), Data: publish.AppendEvent(nil, node, &it, nil),
		ID: fmt.Sprintf("%s-%d", session, seq)}
}

// T0 is the time of the tests' messages, unless they say otherwise.
var T0 = time.Date(2026, 11, 23, 1, 41, 56, 154302117, time.UTC)

// StoredMeta is the marker it of node (a snapshot with all its items)
// under the subject prefix; a zero it.Time is T0.
func StoredMeta(prefix, node string, it eventq.Item) Stored {
	if it.Time.IsZero() {
		it.Time = T0
	}
	return Stored{Subject: publish.MetaSubject(prefix, node), Data: publish.AppendMeta(nil, node, &it, nil, publish.SnapshotLimits{})}
}

// AMIMessage is the AMI message of the key, value pairs kv.
func AMIMessage(kv ...string) *amiwire.Message {
	m := &amiwire.Message{}
	for i := 0; i+1 < len(kv); i += 2 {
		m.Add(kv[i], kv[i+1])
	}
	return m
}
