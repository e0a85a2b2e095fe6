package testenv

import "testing"

func TestDiffMaps(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want map[string]int
		diff      string
	}{
		{"equal", map[string]int{"a": 1}, map[string]int{"a": 1}, ""},
		{"both empty", nil, map[string]int{}, ""},
		{"changed, missing and extra, in key order", map[string]int{"b": 2, "c": 3}, map[string]int{"a": 1, "b": 1},
			"  a:\n    bucket 0\n    truth  1\n  b:\n    bucket 2\n    truth  1\n  c:\n    bucket 3\n    truth  0\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if d := DiffMaps(c.got, c.want, "bucket", "truth"); d != c.diff {
				t.Fatalf("got %q, want %q", d, c.diff)
			}
		})
	}
}

func TestPoll(t *testing.T) {
	n := 0
	Poll(t, "the third check", func() bool { n++; return n == 3 })
	if n != 3 {
		t.Fatalf("checked %d times, want 3", n)
	}
}
