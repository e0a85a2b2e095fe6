package ownership

import (
	"fmt"
	"testing"
)

func TestShare(t *testing.T) {
	for _, tc := range []struct{ nodes, replicas, want int }{
		{12, 1, 12}, {12, 3, 4}, {12, 5, 3}, {10, 3, 4}, {1, 3, 1}, {0, 2, 0}, {7, 0, 7},
	} {
		if got := share(tc.nodes, tc.replicas); got != tc.want {
			t.Errorf("share(%d, %d) = %d, want %d", tc.nodes, tc.replicas, got, tc.want)
		}
	}
}

// winners returns, for each node, the instance with the highest score.
func winners(t *testing.T, nodes, instances []string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, n := range nodes {
		for _, self := range instances {
			peers := map[string]struct{}{}
			for _, p := range instances {
				if p != self {
					peers[p] = struct{}{}
				}
			}
			if preferred(n, self, peers) {
				if out[n] != "" {
					t.Fatalf("node %s: both %s and %s preferred", n, out[n], self)
				}
				out[n] = self
			}
		}
	}
	return out
}

func TestPreferredIsUniqueBalancedAndStable(t *testing.T) {
	nodes := make([]string, 3000)
	for i := range nodes {
		nodes[i] = fmt.Sprintf("pbx%d", i)
	}
	three := []string{"ingest-7f9c-a", "ingest-7f9c-b", "ingest-7f9c-c"}
	before := winners(t, nodes, three)
	per := map[string]int{}
	for _, n := range nodes {
		if before[n] == "" {
			t.Fatalf("node %s has no preferred owner", n)
		}
		per[before[n]]++
	}
	// Each instance should win about a third (1000); instances differing in
	// their last character must not skew it.
	for _, inst := range three {
		if per[inst] < 850 || per[inst] > 1150 {
			t.Errorf("%s preferred for %d of 3000 nodes, want about 1000: %v", inst, per[inst], per)
		}
	}
	// A fourth replica takes over only nodes it wins; no node moves
	// between the first three.
	after := winners(t, nodes, append(three, "ingest-7f9c-d"))
	moved := 0
	for _, n := range nodes {
		if after[n] != before[n] {
			if after[n] != "ingest-7f9c-d" {
				t.Fatalf("node %s moved from %s to %s", n, before[n], after[n])
			}
			moved++
		}
	}
	if moved < 600 || moved > 900 {
		t.Errorf("%d of 3000 nodes moved to the new replica, want about 750", moved)
	}
}

func TestScoreSeparatesNodeAndInstance(t *testing.T) {
	if score("ab", "c") == score("a", "bc") {
		t.Error(`score("ab","c") == score("a","bc")`)
	}
	if score("a", "b") != score("a", "b") {
		t.Error("score not deterministic")
	}
}
