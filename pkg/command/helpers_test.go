package command

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/session"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// readRaw reads AMI messages in wire form from testdata (answers cut from
// the real Asterisk 20 transcripts).
func readRaw(t testing.TB, name string) []*amiwire.Message {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	var msgs []*amiwire.Message
	for _, block := range strings.Split(string(data), "\r\n\r\n") {
		if block == "" {
			continue
		}
		m := new(amiwire.Message)
		for _, line := range strings.Split(block, "\r\n") {
			k, v, ok := strings.Cut(line, ": ")
			if !ok {
				k, v = "", line
			}
			m.Add(k, v)
		}
		msgs = append(msgs, m)
	}
	return msgs
}

// resultOf builds the Result a session would return for an answer read
// from testdata: the response, then its list events.
func resultOf(t testing.TB, name string, withOutput bool) *session.Result {
	t.Helper()
	msgs := readRaw(t, name)
	res := &session.Result{ActionID: msgs[0].Get("ActionID"), Response: msgs[0], Events: msgs[1:]}
	if withOutput {
		res.Output = msgs[0].Values("Output")
	}
	for _, m := range msgs {
		res.Size += m.Size()
	}
	return res
}

func msgOf(kv ...string) *amiwire.Message {
	m := new(amiwire.Message)
	for i := 0; i+1 < len(kv); i += 2 {
		m.Add(kv[i], kv[i+1])
	}
	return m
}
