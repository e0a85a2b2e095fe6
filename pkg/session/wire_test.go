package session

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// oversizedRecorder also implements OversizedHandler.
type oversizedRecorder struct{ *recorder }

func (r oversizedRecorder) EventOversized(id string, seq uint64, t time.Time, name string, size int) {
	r.add(call{kind: "oversized", id: id, seq: seq, name: name, t: t})
}

func TestOversizedEventIsSkippedAndTheStreamGoesOn(t *testing.T) {
	huge := "Event: Huge\r\nPrivilege: user,all\r\n" + strings.Repeat("Data: "+strings.Repeat("x", 1000)+"\r\n", 10) + "\r\n"
	for _, withHandler := range []bool{false, true} {
		name := map[bool]string{false: "counted only", true: "reported to the OversizedHandler"}[withHandler]
		t.Run(name, func(t *testing.T) {
			leakCheck(t)
			srv := testenv.StartSim(t, amisim.Config{})
			rec := newRecorder()
			var h Handler = rec
			if withHandler {
				h = oversizedRecorder{rec}
			}
			s, _, m := startSession(t, srv.Addr(), WithReaderLimits(4096, DefaultMaxHeaders), WithHandler(h))
			waitStarts(t, rec, 1)
			srv.Emit("UserEvent", [2]string{"UserEvent", "before"})
			srv.EmitRaw([]byte(huge))
			srv.EmitRaw([]byte("no colon here\r\n\r\n")) // not AMI: ignored
			srv.Emit("UserEvent", [2]string{"UserEvent", "after"})
			if _, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "Ping"}); err != nil {
				t.Fatal(err)
			}
			if got := testutil.ToFloat64(m.MessagesOversized.WithLabelValues("pbx1")); got != 1 {
				t.Errorf("MessagesOversized = %v, want 1", got)
			}
			var names []string
			var seq uint64
			for _, x := range rec.snapshot() {
				if x.kind != "event" && x.kind != "oversized" {
					continue
				}
				seq++
				if x.seq != seq {
					t.Fatalf("%s %s has seq %d, want %d", x.kind, x.name, x.seq, seq)
				}
				names = append(names, x.kind+":"+x.name)
			}
			want := "event:UserEvent event:UserEvent"
			if withHandler {
				want = "event:UserEvent oversized:Huge event:UserEvent"
			}
			if got := strings.Join(names[len(names)-strings.Count(want, " ")-1:], " "); got != want {
				t.Errorf("delivered %s, want ... %s", got, want)
			}
			if count(rec.snapshot(), "start") != 1 {
				t.Error("the session reconnected")
			}
		})
	}
}

func TestTLS(t *testing.T) {
	leakCheck(t)
	serverTLS, roots := selfSigned(t)
	srv := testenv.StartSim(t, amisim.Config{TLSConfig: serverTLS})

	s, rec, _ := startSession(t, srv.Addr(), WithTLS(&tls.Config{RootCAs: roots}), WithAuth(AuthMD5))
	waitStarts(t, rec, 1)
	if _, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "Ping"}); err != nil {
		t.Fatalf("Ping over TLS: %v", err)
	}
	s.Close()

	// A PBX whose certificate the session does not trust is never logged
	// in to, and the failure says why.
	logger, logs := observedLogger()
	_, rec2, _ := startSession(t, srv.Addr(), WithTLS(&tls.Config{RootCAs: x509.NewCertPool()}), WithLogger(logger))
	eventually(t, "the failed handshake to be logged", func() bool { return logs.FilterMessage("AMI connection attempt failed").Len() > 0 })
	if e := logs.FilterMessage("AMI connection attempt failed").All()[0]; !strings.Contains(e.ContextMap()["error"].(string), "certificate") {
		t.Errorf("failure logged as %v, want a certificate error", e.ContextMap())
	}
	if n := count(rec2.snapshot(), "start"); n != 0 || srv.Logins() != 1 {
		t.Errorf("untrusted PBX: %d sessions started, %d logins", n, srv.Logins())
	}
}

// selfSigned returns a server TLS config for 127.0.0.1 and a pool that
// trusts it.
func selfSigned(t *testing.T) (*tls.Config, *x509.CertPool) {
	t.Helper()
	cfg, roots, err := amisim.SelfSignedTLS()
	if err != nil {
		t.Fatal(err)
	}
	return cfg, roots
}
