package setting

import (
	"testing"
	"time"
)

// TestBounds tries every check at its bound and one step past it.
func TestBounds(t *testing.T) {
	var x int
	cases := []struct {
		name string
		err  error
		want string // "" for no error
	}{
		{"positive at 1", Positive("n", 1), ""},
		{"positive at 0", Positive("n", 0), "n 0: must be positive"},
		{"positive duration", Positive("d", time.Nanosecond), ""},
		{"zero duration", Positive("d", time.Duration(0)), "d 0s: must be positive"},
		{"not negative at 0", NotNegative("d", time.Duration(0)), ""},
		{"negative", NotNegative("d", -time.Second), "d -1s: must not be negative"},
		{"at least, at it", AtLeast("n", 1, 1), ""},
		{"at least, one below", AtLeast("n", 0, 1), "n 0: must be at least 1"},
		{"at least, duration", AtLeast("d", 999*time.Millisecond, time.Second), "d 999ms: must be at least 1s"},
		{"between, low end", Between("n", 1, 1, 5), ""},
		{"between, high end", Between("n", 5, 1, 5), ""},
		{"between, one above", Between("n", 6, 1, 5), "n 6: must be 1 to 5"},
		{"between, one below", Between("n", 0, 1, 5), "n 0: must be 1 to 5"},
		{"not nil", NotNil("thing", &x), ""},
		{"nil", NotNil[int]("thing", nil), "nil thing"},
		{"token", Token("node", "pbx-1_a"), ""},
		{"empty token", Token("node", ""), `node "": must be [A-Za-z0-9_-]+`},
		{"token with dot", Token("node", "a.b"), `node "a.b": must be [A-Za-z0-9_-]+`},
	}
	for _, c := range cases {
		got := ""
		if c.err != nil {
			got = c.err.Error()
		}
		if got != c.want {
			t.Errorf("%s: got %q, want %q", c.name, got, c.want)
		}
	}
}
