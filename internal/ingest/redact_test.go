package ingest

import (
	"bytes"
	"crypto/md5"
	"encoding/hex"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// TestRedaction: a failed MD5 login by another client makes the PBX send
// ChallengeResponseFailed to the ingest's session (it has security read
// permission), with ExpectedResponse = md5(challenge + secret), enough to
// brute-force the secret offline. The stream holds the event with that
// field replaced by the marker, and the value appears nowhere in it.
func TestRedaction(t *testing.T) {
	leakCheck(t)
	sim := testenv.StartSim(t, amisim.Config{Node: "pbx1", AuthFailDelay: time.Millisecond})
	_, cfg, nc, reader := startRig(t, []*amisim.Server{sim}, "")
	run := startService(t, cfg, nc, nil)
	session := upAndSnapshot(reader, "pbx1", 1)

	attacker := dialAMI(t, sim.Addr())
	ch := attacker.do(t, "Action: Challenge", "AuthType: MD5")["Challenge"]
	if ch == "" {
		t.Fatal("no challenge")
	}
	if r := attacker.do(t, "Action: Login", "Username: ami", "AuthType: MD5", "Key: 00000000000000000000000000000000"); r["Message"] != "Authentication failed" {
		t.Fatalf("wrong key answered %v", r)
	}
	sum := md5.Sum([]byte(ch + "amisecret"))
	secretDerived := hex.EncodeToString(sum[:])

	// The PBX did send it to the ingest: the test would see a leak.
	ingestConn := loginConns(sim)[0]
	var sentValue string
	testenv.WaitSim(t, sim, "ChallengeResponseFailed written to the ingest", func() bool {
		for _, e := range sentTo(sim, ingestConn) {
			if e.Headers[0][1] == "ChallengeResponseFailed" {
				for _, h := range e.Headers {
					if h[0] == "ExpectedResponse" {
						sentValue = h[1]
					}
				}
				return true
			}
		}
		return false
	})
	if sentValue != secretDerived {
		t.Fatalf("the PBX sent ExpectedResponse %q, want md5(challenge+secret) %q", sentValue, secretDerived)
	}

	var ev record
	reader.until("ChallengeResponseFailed in the stream", func(recs []record) bool {
		for _, r := range recs {
			if r.Event == "ChallengeResponseFailed" {
				ev = r
				return true
			}
		}
		return false
	})
	if got := fieldValue(ev.Fields, "ExpectedResponse"); got != "[redacted]" {
		t.Fatalf("ExpectedResponse published as %q", got)
	}
	if fieldValue(ev.Fields, "Challenge") != ch || fieldValue(ev.Fields, "Response") != "00000000000000000000000000000000" {
		t.Fatalf("the other fields were not kept: %s", ev.Data)
	}
	if ev.Session != session {
		t.Fatalf("event in session %s", ev.Session)
	}
	if err := run.stop(); err != nil {
		t.Fatal(err)
	}
	for _, r := range reader.all() {
		for _, secret := range []string{secretDerived, "amisecret"} {
			if bytes.Contains(bytes.ToLower(r.Data), []byte(secret)) || bytes.Contains([]byte(r.MsgID), []byte(secret)) {
				t.Fatalf("%v holds %q: %s", r, secret, r.Data)
			}
		}
	}
	if n := testutil.ToFloat64(run.m.EventsRedacted.WithLabelValues("pbx1")); n != 1 {
		t.Fatalf("ami_events_redacted_total %v, want 1", n)
	}
}
