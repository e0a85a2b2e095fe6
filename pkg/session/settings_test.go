package session

import (
	"errors"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestCheckOptionsReportsEverySetting: CheckOptions reports each invalid
// setting by its configuration name, and a cap is accepted at its limit and
// refused one past it.
func TestCheckOptionsReportsEverySetting(t *testing.T) {
	err := CheckOptions(WithKeepalive(0, -time.Second), WithMaxPending(MaxPendingLimit+1),
		WithBackoff(time.Second, time.Millisecond), WithDialTimeout(time.Second))
	var got []string
	for _, e := range err.(interface{ Unwrap() []error }).Unwrap() {
		for _, e := range flatten(e) {
			var se *SettingError
			if !errors.As(e, &se) {
				t.Fatalf("%v is not a *SettingError", e)
			}
			got = append(got, se.Setting+": "+se.Reason+se.Other)
		}
	}
	want := []string{"ping_interval: must be positive", "ping_timeout: must be positive",
		"max_pending: must be at most 100000", "backoff_max: must be >= backoff_initial"}
	if len(got) != len(want) {
		t.Fatalf("got %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("error %d: %q, want %q", i, got[i], want[i])
		}
	}
	if err := CheckOptions(WithMaxPending(MaxPendingLimit), WithKeepalive(time.Second, time.Second)); err != nil {
		t.Errorf("valid options refused: %v", err)
	}
}

func flatten(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// TestSecondStartIsErrStarted: a second Start reports the one second-start
// error.
func TestSecondStartIsErrStarted(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) }) // runs last, after Close
	s, err := New("pbx1", "127.0.0.1:1", WithCredentials("u", "s"), WithBackoff(time.Hour, time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); !errors.Is(err, ErrStarted) {
		t.Fatalf("second Start: %v, want ErrStarted", err)
	}
}
