package session

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/amibus/amibus/internal/testenv"
	"github.com/amibus/amibus/pkg/amisim"
)

// observedLogger logs everything, debug included, into memory.
func observedLogger() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zapcore.DebugLevel)
	return zap.New(core), logs
}

// assertNoSecret scans every entry's message and every field, rendered as
// text, for each of secrets.
func assertNoSecret(t *testing.T, logs *observer.ObservedLogs, secrets ...string) {
	t.Helper()
	for _, e := range logs.All() {
		text := e.Message + " " + fmt.Sprint(e.ContextMap())
		for _, f := range e.Context {
			text += " " + f.String + " " + fmt.Sprint(f.Interface)
		}
		for _, s := range secrets {
			if strings.Contains(text, s) {
				t.Errorf("log line leaks a secret: %s", text)
			}
		}
	}
}

// TestSecretAndKeyNeverLogged runs logins that succeed and fail, plain and
// MD5, with the logger at debug, and scans every line and every error for
// the secrets and the MD5 key actually sent.
func TestSecretAndKeyNeverLogged(t *testing.T) {
	leakCheck(t)
	const wrong = "wrong-secret-4f2a"
	srv := testenv.StartSim(t, amisim.Config{AuthFailDelay: 10 * time.Millisecond})
	logger, logs := observedLogger()
	var errs []error

	for _, auth := range []AuthMethod{AuthPlain, AuthMD5} {
		s, rec, _ := startSession(t, srv.Addr(), WithAuth(auth), WithLogger(logger), WithKeepalive(20*time.Millisecond, time.Second))
		waitStarts(t, rec, 1)
		_, err := s.Send(ctxTimeout(t, time.Millisecond), Action{Name: "Ping"})
		errs = append(errs, err)
		srv.DropConnections()
		waitStarts(t, rec, 2)
		s.Close()
	}
	for _, auth := range []AuthMethod{AuthPlain, AuthMD5} {
		s, _, _ := startSession(t, srv.Addr(), WithAuth(auth), WithLogger(logger),
			WithCredentials("ami", wrong), WithAuthFailureBackoff(10*time.Millisecond))
		before := srv.Stats().LoginFailures
		testenv.WaitSim(t, srv, "two failed logins", func() bool { return srv.Stats().LoginFailures >= before+2 })
		_, err := s.Send(ctxTimeout(t, waitLimit), Action{Name: "Ping"})
		errs = append(errs, err)
		s.Close()
	}

	secrets := []string{"amisecret", wrong}
	for _, a := range received(srv, "Login") {
		if key, ok := a.Header("Key"); ok {
			secrets = append(secrets, key)
		}
	}
	if len(secrets) < 4 {
		t.Fatalf("only %d secrets and keys to look for; the MD5 logins did not happen", len(secrets))
	}
	if len(logs.All()) == 0 {
		t.Fatal("nothing was logged; the scan proves nothing")
	}
	assertNoSecret(t, logs, secrets...)
	for _, err := range errs {
		for _, s := range secrets {
			if err != nil && strings.Contains(err.Error(), s) {
				t.Errorf("error %q leaks a secret", err)
			}
		}
	}
	if !errors.Is(errs[len(errs)-1], ErrNotConnected) {
		t.Errorf("Send with a refused login: %v, want ErrNotConnected", errs[len(errs)-1])
	}
}
