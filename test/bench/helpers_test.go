package bench

import (
	"os"
	"testing"
	"time"
)

func TestSumMetric(t *testing.T) {
	text := `# HELP ami_session_up 1 while up.
# TYPE ami_session_up gauge
ami_session_up{node="pbx1"} 1
ami_session_up{node="pbx2"} 0
ami_session_up{node="pbx3"} 1
ami_session_up_other{node="pbx1"} 7
ami_events_dropped_total{node="pbx1",reason="buffer_full"} 12
ami_events_dropped_total{node="pbx2",reason="shutdown"} 5
ami_buffer_bytes 6.7108864e+07
`
	tests := []struct {
		name   string
		labels []string
		want   float64
	}{
		{"ami_session_up", nil, 2},
		{"ami_session_up", []string{`node="pbx2"`}, 0},
		{"ami_events_dropped_total", []string{`reason="buffer_full"`}, 12},
		{"ami_events_dropped_total", nil, 17},
		{"ami_buffer_bytes", nil, 64 << 20},
		{"ami_missing", nil, 0},
	}
	for _, tc := range tests {
		if got := sumMetric(text, tc.name, tc.labels...); got != tc.want {
			t.Errorf("sumMetric(%s, %v) = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}

func TestParseProcStatus(t *testing.T) {
	m, err := parseProcStatus([]byte("Name:\tami-ingest\nVmHWM:\t  131072 kB\nVmRSS:\t   65536 kB\nThreads:\t9\n"))
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS != 64<<20 || m.HWM != 128<<20 {
		t.Errorf("got %+v, want RSS 64 MiB, HWM 128 MiB", m)
	}
	if _, err := parseProcStatus([]byte("VmRSS:\t65536 kB\n")); err == nil {
		t.Error("status without VmHWM: no error")
	}
	if _, err := parseProcStatus([]byte("VmRSS:\t65536 MB\nVmHWM:\t1 kB\n")); err == nil {
		t.Error("status in MB: no error")
	}
}

func TestParseProcStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := "4242 (ami (in) gest) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 130 0 0 20 0 9 0 100 0 0\n"
	d, err := parseProcStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	if want := 3800 * time.Millisecond; d != want {
		t.Errorf("cpu time %v, want %v (380 ticks of 10 ms)", d, want)
	}
	if _, err := parseProcStat([]byte("4242 (x) S 1 2 3\n")); err == nil {
		t.Error("short stat line: no error")
	}
}

// TestOwnProcess reads this process's figures the way the benchmarks read
// ami-ingest's, so a kernel whose /proc format differs fails here first.
func TestOwnProcess(t *testing.T) {
	m, err := readProcMem(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if m.RSS <= 0 || m.HWM < m.RSS {
		t.Errorf("own memory %+v: want 0 < RSS <= HWM", m)
	}
	if _, err := cpuTime(os.Getpid()); err != nil {
		t.Fatal(err)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 200; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	tests := []struct {
		p    float64
		want time.Duration
	}{{50, 100 * time.Millisecond}, {99, 198 * time.Millisecond}, {100, 200 * time.Millisecond}, {0, time.Millisecond}}
	for _, tc := range tests {
		if got := percentile(d, tc.p); got != tc.want {
			t.Errorf("p%v = %v, want %v", tc.p, got, tc.want)
		}
	}
	if got := percentile(nil, 50); got != 0 {
		t.Errorf("p50 of nothing = %v", got)
	}
	if got := countBelow(d, 5*time.Millisecond); got != 4 {
		t.Errorf("countBelow 5ms = %d, want 4", got)
	}
}

func TestRoundOf(t *testing.T) {
	if r, ok := roundOf([]byte(`{"event":"UserEvent","fields":{"UserEvent":"BenchRoundEnd","Round":"42"}}`)); !ok || r != 42 {
		t.Errorf("roundOf = %d, %v; want 42, true", r, ok)
	}
	for _, bad := range []string{`{"fields":{}}`, `{"Round":"x"}`, `{"Round":"12`} {
		if _, ok := roundOf([]byte(bad)); ok {
			t.Errorf("roundOf(%s): found a round", bad)
		}
	}
}
