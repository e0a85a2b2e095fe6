package amisim

import (
	"crypto/md5"
	"encoding/hex"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// A transcript (testdata/*.txt, see testdata/README.md) is read into steps
// per connection, in the order they happened.
type stepKind int

const (
	stepConnect stepKind = iota
	stepBanner
	stepClient
	stepServer
	stepEOF
	stepReset
	stepNote
)

type step struct {
	kind stepKind
	conn int
	raw  string // stepClient: the exact bytes the client sent
	msg  tmsg   // stepServer: the message; stepBanner: one line as key ""
	note string
}

var (
	reWire = regexp.MustCompile(`^([CSs])(\d*): (.*)$`)
	reConn = regexp.MustCompile(`\[(\d+)\]`)
)

// readTranscript parses testdata/<name>.txt.
func readTranscript(t testing.TB, name string) []step {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name + ".txt")
	if err != nil {
		t.Fatal(err)
	}
	var steps []step
	client := map[int]*strings.Builder{}
	server := map[int]tmsg{}
	bannerSeen := map[int]bool{}
	lines := strings.Split(string(b), "\n")
	if lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	for _, l := range lines {
		if strings.HasPrefix(l, "#") {
			conn := 1
			if m := reConn.FindStringSubmatch(l); m != nil {
				conn, _ = strconv.Atoi(m[1])
			}
			switch {
			case strings.Contains(l, "connected to"):
				steps = append(steps, step{kind: stepConnect, conn: conn})
			case strings.Contains(l, "EOF: server closed the connection"):
				steps = append(steps, step{kind: stepEOF, conn: conn})
			case strings.Contains(l, "ConnectionResetError"):
				steps = append(steps, step{kind: stepReset, conn: conn})
			default:
				steps = append(steps, step{kind: stepNote, note: l})
			}
			continue
		}
		m := reWire.FindStringSubmatch(l)
		if m == nil {
			t.Fatalf("%s: unparsable line %q", name, l)
		}
		conn := 1
		if m[2] != "" {
			conn, _ = strconv.Atoi(m[2])
		}
		payload := m[3]
		switch m[1] {
		case "C":
			if client[conn] == nil {
				client[conn] = &strings.Builder{}
			}
			client[conn].WriteString(payload + "\n")
			if payload == "\r" || payload == "" {
				steps = append(steps, step{kind: stepClient, conn: conn, raw: client[conn].String()})
				client[conn] = nil
			}
		case "S":
			line := strings.TrimSuffix(payload, "\r")
			if !bannerSeen[conn] {
				bannerSeen[conn] = true
				steps = append(steps, step{kind: stepBanner, conn: conn, msg: tmsg{{"", line}}})
				continue
			}
			if line == "" {
				steps = append(steps, step{kind: stepServer, conn: conn, msg: server[conn]})
				server[conn] = nil
				continue
			}
			k, v, ok := strings.Cut(line, ": ")
			if !ok {
				k, v = "", line
			}
			server[conn] = append(server[conn], [2]string{k, v})
		default:
			t.Fatalf("%s: truncated stream lines are not replayed", name)
		}
	}
	return steps
}

// The values that legitimately differ between real Asterisk and amisim, by
// header key, and how each is compared. Every other value must be equal.
var (
	reDigits   = regexp.MustCompile(`^\d+$`)
	reEpochUs  = regexp.MustCompile(`^\d+\.\d{6}$`)
	reEventTV  = regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+0000$`)
	reDate     = regexp.MustCompile(`^\d{4}-\d\d-\d\d$`)
	reClock    = regexp.MustCompile(`^\d\d:\d\d:\d\d$`)
	reDateTime = regexp.MustCompile(`^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$`)
	rePointer  = regexp.MustCompile(`^0x[0-9a-f]+$`)
	reAddress  = regexp.MustCompile(`^IPV4/(TCP|TLS)/127\.0\.0\.1/\d+$`)
	// "manager show settings" lines that show the listener's own address
	// and TLS setup: only the label is compared.
	reSettingsLine = regexp.MustCompile(`^  (TCP Bindaddress|TLS Enable|TLS Bindaddress): `)

	// Tokens renamed consistently (a bijection per replay): Uniqueid-like
	// values, Local channel names and bridge ids.
	reUniqueid = regexp.MustCompile(`^(?:[\w-]+-)?\d{9,}\.\d+$`)
	reChannel  = regexp.MustCompile(`Local/[^;\s]*-[0-9a-f]{8};[12]`)
	reUUID     = regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`)
)

// varyingPattern lists the keys whose value only has to have the format of
// the expected one.
var varyingPattern = map[string]*regexp.Regexp{
	"Timestamp":          reEpochUs, // Ping, timestampevents
	"Challenge":          reDigits,  // random per session
	"Uptime":             reDigits,  // FullyBooted
	"LastReload":         reDigits,
	"EventTV":            reEventTV, // security events
	"SessionID":          rePointer, // "%p" of the session
	"LocalAddress":       reAddress, // ports differ
	"RemoteAddress":      reAddress,
	"CoreStartupDate":    reDate,
	"CoreReloadDate":     reDate,
	"CoreStartupTime":    reClock,
	"CoreReloadTime":     reClock,
	"CoreProcessedCalls": reDigits, // the peer's call history
	"LoginTime":          reDigits, // queue member login = PBX start
	"StartTime":          reDateTime,
	"AnswerTime":         reDateTime,
	"EndTime":            reDateTime,
	"Duration":           regexp.MustCompile(`^(\d+|\d\d:\d\d:\d\d)$`), // Cdr seconds, CoreShowChannel h:m:s
	"BillableSeconds":    reDigits,
	"Seconds":            reDigits, // Status
	// ChallengeResponseFailed: md5(challenge + secret), and the challenge
	// is random; TestSecurityEvents checks the value itself.
	"ExpectedResponse": regexp.MustCompile(`^[0-9a-f]{32}$`),
}

// varyingVarSet lists VarSet variables whose Value is a measured duration.
var varyingVarSet = map[string]bool{"ANSWEREDTIME": true, "ANSWEREDTIME_MS": true, "DIALEDTIME": true, "DIALEDTIME_MS": true}

// renamer keeps the bijection between expected and actual tokens.
type renamer struct {
	fwd, back map[string]string
}

func newRenamer() *renamer { return &renamer{fwd: map[string]string{}, back: map[string]string{}} }

func (r *renamer) same(exp, act string) bool {
	if a, ok := r.fwd[exp]; ok {
		return a == act
	}
	if _, ok := r.back[act]; ok {
		return false
	}
	r.fwd[exp], r.back[act] = act, exp
	return true
}

// sameValue compares one header value under the rules above.
func (r *renamer) sameValue(key, exp, act string, prev tmsg) bool {
	if exp == act {
		if reUniqueid.MatchString(exp) || reUUID.MatchString(exp) {
			return r.same(exp, act)
		}
		return true
	}
	if re, ok := varyingPattern[key]; ok {
		return re.MatchString(act)
	}
	switch {
	case key == "SessionTV":
		return !strings.HasPrefix(exp, "1970") && reEventTV.MatchString(act)
	case key == "Value" && len(prev) > 0 && prev[len(prev)-1][0] == "Variable" && varyingVarSet[prev[len(prev)-1][1]]:
		return reDigits.MatchString(act)
	case key == "Output" && reSettingsLine.MatchString(exp):
		m := reSettingsLine.FindStringSubmatch(act)
		return m != nil && m[1] == reSettingsLine.FindStringSubmatch(exp)[1]
	case reUniqueid.MatchString(exp) || reUUID.MatchString(exp):
		return r.same(exp, act)
	}
	// Channel names inside a value (Channel, DestChannel, BRIDGEPEER ...).
	expChans, actChans := reChannel.FindAllString(exp, -1), reChannel.FindAllString(act, -1)
	if len(expChans) > 0 && len(expChans) == len(actChans) {
		for i := range expChans {
			if !r.same(expChans[i], actChans[i]) {
				return false
			}
		}
		return reChannel.ReplaceAllString(exp, "CH") == reChannel.ReplaceAllString(act, "CH")
	}
	return false
}

// compare reports how act differs from exp: same keys in the same order,
// values equal but for the rules above.
func (r *renamer) compare(exp, act tmsg) error {
	if len(exp) != len(act) {
		return fmt.Errorf("%d headers, want %d\n got:\n%s want:\n%s", len(act), len(exp), act, exp)
	}
	for i := range exp {
		if exp[i][0] != act[i][0] {
			return fmt.Errorf("header %d is %q, want %q\n got:\n%s want:\n%s", i, act[i][0], exp[i][0], act, exp)
		}
		if !r.sameValue(exp[i][0], exp[i][1], act[i][1], exp[:i]) {
			return fmt.Errorf("%s: %q, want %q\n got:\n%s want:\n%s", exp[i][0], act[i][1], exp[i][1], act, exp)
		}
	}
	return nil
}

// canonical renders a message with every varying value and renamed token
// replaced by a marker, for comparisons where order is not Asterisk's to
// keep (events of concurrent channels).
func canonical(m tmsg) string {
	var b strings.Builder
	for i, h := range m {
		k, v := h[0], h[1]
		switch {
		case varyingPattern[k] != nil:
			v = "<varies>"
		case k == "Value" && i > 0 && m[i-1][0] == "Variable" && varyingVarSet[m[i-1][1]]:
			v = "<varies>"
		case reUniqueid.MatchString(v):
			v = "<uniqueid>"
		case reUUID.MatchString(v):
			v = "<uuid>"
		default:
			v = reChannel.ReplaceAllStringFunc(v, func(s string) string {
				return s[:strings.LastIndexByte(s, '-')] + "-<n>" + s[len(s)-2:]
			})
		}
		b.WriteString(k + ": " + v + "\n")
	}
	return b.String()
}

// multisetDiff returns the canonical messages of exp missing from act and
// those of act not in exp, ignoring any whose first line is in ignore.
func multisetDiff(exp, act []tmsg, ignore map[string]bool) (missing, extra []string) {
	count := map[string]int{}
	for _, m := range exp {
		if !ignore[m.first()] {
			count[canonical(m)]++
		}
	}
	for _, m := range act {
		if !ignore[m.first()] {
			count[canonical(m)]--
		}
	}
	for k, n := range count {
		for ; n > 0; n-- {
			missing = append(missing, k)
		}
		for ; n < 0; n++ {
			extra = append(extra, k)
		}
	}
	sort.Strings(missing)
	sort.Strings(extra)
	return missing, extra
}

// md5Key returns md5hex(challenge + secret).
func md5Key(challenge, secret string) string {
	sum := md5.Sum([]byte(challenge + secret))
	return hex.EncodeToString(sum[:])
}
