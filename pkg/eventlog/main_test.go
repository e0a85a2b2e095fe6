package eventlog

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"go.uber.org/goleak"
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
