package actor_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// TestNoResendAfterReconnect queues actions while the PBX does not read,
// so that they back up in the kernel and in the session's write queue,
// kills the connection, and checks that every requester is told
// (disconnected) and that none of those actions ever reaches the PBX, on
// the old connection or on the next one.
func TestNoResendAfterReconnect(t *testing.T) {
	// A long keepalive and write deadline: only the drop ends the
	// connection. 300 actions of ~100 KB are far more than the socket
	// buffers hold, so some are written and some still queued.
	const stale = 300
	e := newEnv(t, amisim.Config{}, 0, false,
		"actor:\n  max_pending: 400\n"+strings.Replace(fastSession, "session:\n", "session:\n  ping_interval: 1m\n  ping_timeout: 1m\n", 1))
	e.sim.SetStopReading(true)
	pad := strings.Repeat("x", 1000)
	fields := make([]string, 100)
	for j := range fields {
		fields[j] = fmt.Sprintf(`"Pad%d":%q`, j, pad)
	}
	var replies []<-chan *nats.Msg
	for i := range stale {
		body := fmt.Sprintf(`{"action":"UserEvent","timeout_ms":60000,"fields":{"Marker":"stale-%d",%s}}`, i, strings.Join(fields, ","))
		replies = append(replies, requestAsync(t, e.nc, "ami.action.pbx1", body))
	}
	// The session exposes no signal for "registered"; its pending gauge
	// is the only outside view.
	pending := e.act.m.ActionsPending.WithLabelValues("pbx1")
	waitCond(t, "every stale action pending in the session", func() bool { return testutil.ToFloat64(pending) == stale })

	// Reading stays stopped, so the next connection cannot log in before
	// every stale action has been failed.
	e.sim.DropConnections()
	for i, ch := range replies {
		r := recvReply(t, ch)
		if r.Outcome() != "disconnected" {
			t.Fatalf("stale action %d: %s, want disconnected", i, r.Raw)
		}
	}
	if got := testutil.ToFloat64(pending); got != 0 {
		t.Errorf("ami_actions_pending = %v after the drop, want 0", got)
	}

	e.sim.SetStopReading(false)
	if err := e.act.svc.WaitUp(ctxLimit(t), "pbx1"); err != nil {
		t.Fatal(err)
	}
	fresh := request(t, e.nc, "ami.action.pbx1", `{"action":"Ping","fields":{"Marker":"fresh"}}`)
	wantCode(t, fresh, "ok")
	testenv.WaitSim(t, e.sim, "the fresh action", func() bool { return len(receivedWith(e.sim, "Marker", "fresh")) == 1 })
	if got := receivedWith(e.sim, "Marker", "stale-"); len(got) != 0 {
		t.Fatalf("the PBX received %d stale actions (first %s on connection %d): stale replay",
			len(got), got[0].ActionID, got[0].Conn)
	}
}

// TestRandomDropsExactlyOneReply runs 10,000 requests while the simulator
// drops its connections at random: every request gets exactly one reply,
// sent = ok + the sum of every error code, and the actor's own
// ami_actions_total says the same.
func TestRandomDropsExactlyOneReply(t *testing.T) {
	const (
		total      = 10000
		requesters = 32
	)
	// Reconnects within ~20 ms, so that the session is up most of the
	// time between drops and many requests are in flight at each one.
	e := newEnv(t, amisim.Config{RecordLimit: -1}, 0, true, "actor:\n  deny: [Hangup]\n"+
		"session:\n  backoff_initial: 5ms\n  backoff_max: 20ms\n  dial_timeout: 2s\n  banner_timeout: 2s\n  login_timeout: 2s\n")

	// Replies go to chaos.<id>; one subscription counts them all.
	var (
		mu                   sync.Mutex
		counts               = make([]int, total)
		codes                = make(map[string]int)
		badSubject, badReply atomic.Int64
	)
	first := make([]chan struct{}, total)
	for i := range first {
		first[i] = make(chan struct{})
	}
	sub, err := e.nc.Subscribe("chaos.>", func(m *nats.Msg) {
		id, err := strconv.Atoi(strings.TrimPrefix(m.Subject, "chaos."))
		if err != nil || id < 0 || id >= total {
			badSubject.Add(1)
			return
		}
		code := "<invalid reply>"
		if r, err := testenv.CheckReply[string](m.Data); err == nil {
			code = r.Outcome()
		} else {
			badReply.Add(1)
		}
		mu.Lock()
		counts[id]++
		n := counts[id]
		if n == 1 {
			codes[code]++
		}
		mu.Unlock()
		if n == 1 {
			close(first[id])
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := sub.SetPendingLimits(-1, -1); err != nil {
		t.Fatal(err)
	}

	// The fault: drop every connection at random intervals of 20-100 ms.
	// This timer is the schedule of the fault, not a synchronisation.
	ctx, cancel := context.WithCancel(context.Background())
	var drops atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			tm := time.NewTimer(time.Duration(20+rand.IntN(81)) * time.Millisecond)
			select {
			case <-ctx.Done():
				tm.Stop()
				return
			case <-tm.C:
				e.sim.DropConnections()
				drops.Add(1)
			}
		}
	}()

	// A mix of requests, so that several codes are in the sum.
	body := func(i int) (string, string) {
		switch i % 20 {
		case 0:
			return "ami.action.pbx1", `{"action":`
		case 1:
			return "ami.action.pbx1.Hangup", ``
		case 2:
			return "ami.action.down.Ping", ``
		case 3:
			return "ami.action.nowhere.Ping", ``
		case 4:
			return "ami.action.pbx1.CoreShowChannels", ``
		case 5:
			return "ami.action.pbx1.NoSuchAction", ``
		}
		return "ami.action.pbx1", `{"action":"Ping","timeout_ms":2000}`
	}
	var next atomic.Int64
	errs := make(chan error, requesters)
	for range requesters {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= total {
					return
				}
				subj, b := body(i)
				if err := e.nc.PublishRequest(subj, "chaos."+strconv.Itoa(i), []byte(b)); err != nil {
					errs <- err
					return
				}
				select {
				case <-first[i]:
				case <-time.After(waitLimit):
					errs <- fmt.Errorf("request %d (%s %s): no reply", i, subj, b)
					return
				}
			}
		}()
	}
	waitRequesters := make(chan struct{})
	go func() {
		for _, ch := range first {
			<-ch
		}
		close(waitRequesters)
	}()
	select {
	case <-waitRequesters:
	case err := <-errs:
		cancel()
		wg.Wait()
		t.Fatal(err)
	}
	cancel()
	wg.Wait()

	// The graceful shutdown answers and flushes everything; a duplicate
	// reply would be on the wire before the requester's flush returns.
	if err := e.act.stop(); err != nil {
		t.Fatal(err)
	}
	if err := e.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	closed := sub.StatusChanged(nats.SubscriptionClosed)
	if err := sub.Drain(); err != nil { // every reply delivered so far goes through the callback
		t.Fatal(err)
	}
	select {
	case <-closed:
	case <-time.After(waitLimit):
		t.Fatal("the reply subscription did not drain")
	}
	mu.Lock()
	defer mu.Unlock()
	sum := 0
	for i, n := range counts {
		if n != 1 {
			t.Errorf("request %d got %d replies", i, n)
		}
	}
	for _, n := range codes {
		sum += n
	}
	t.Logf("%d requests, %d connection drops: %v", total, drops.Load(), codes)
	if sum != total {
		t.Errorf("sent %d, ok + each error code = %d (%v)", total, sum, codes)
	}
	if got := outcomes(t, e.act.m); fmt.Sprint(got) != fmt.Sprint(codes) {
		t.Errorf("ami_actions_total by outcome %v, requesters counted %v", got, codes)
	}
	if badSubject.Load()+badReply.Load() != 0 {
		t.Errorf("%d replies on unexpected subjects, %d not matching the schema", badSubject.Load(), badReply.Load())
	}
	// The run only means something if the faults hit requests in flight.
	if codes["ok"] == 0 || codes["disconnected"]+codes["unavailable"] == 0 || drops.Load() < 10 {
		t.Errorf("faults did not bite: %d drops, outcomes %v", drops.Load(), codes)
	}
}
