package amisim

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// blacklisted is manager.c's check_blacklist.
func blacklisted(cmd string) bool {
	w := strings.Fields(cmd)
	if len(w) < 2 {
		return false
	}
	for _, b := range [][2]string{{"module", "load"}, {"module", "unload"}, {"restart", "gracefully"}} {
		if strings.EqualFold(w[0], b[0]) && strings.EqualFold(w[1], b[1]) {
			return true
		}
	}
	return false
}

// cliCommands is a sample of Asterisk 20's CLI command table, enough for
// find_best to name the same "core show help ..." hint as real Asterisk.
var cliCommands = [][]string{
	{"!"}, {"help"},
	{"core", "show", "version"}, {"core", "show", "channels"}, {"core", "show", "uptime"},
	{"core", "show", "help"}, {"core", "show", "settings"}, {"core", "show", "sysinfo"},
	{"core", "set", "verbose"}, {"core", "set", "debug"}, {"core", "reload"},
	{"core", "restart", "now"}, {"core", "stop", "now"}, {"core", "waitfullybooted"},
	{"manager", "show", "settings"}, {"manager", "show", "connected"}, {"manager", "show", "users"},
	{"manager", "show", "commands"}, {"manager", "set", "debug"}, {"manager", "reload"},
	{"module", "load"}, {"module", "unload"}, {"module", "reload"}, {"module", "show"},
	{"dialplan", "show"}, {"dialplan", "reload"}, {"dialplan", "set", "global"},
	{"queue", "show"}, {"queue", "reload"}, {"pjsip", "show", "endpoints"},
	{"channel", "originate"}, {"channel", "request", "hangup"}, {"database", "show"},
	{"logger", "reload"},
}

// findCLI is find_cli with match_type -1: true when some command has as
// many words as cmds and matches all of them but maybe the last.
func findCLI(cmds []string) bool {
	for _, e := range cliCommands {
		if len(e) != len(cmds) {
			continue
		}
		ok := true
		for i := 0; i < len(e)-1; i++ {
			if !strings.EqualFold(e[i], cmds[i]) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// findBest is cli.c's find_best: the words that lead to a command, plus
// the first one that does not.
func findBest(words []string) string {
	for x := range words {
		if !findCLI(words[:x+1]) {
			return strings.Join(words[:x+1], " ")
		}
	}
	return strings.Join(words, " ")
}

// cli runs one CLI command and returns its output as the CLI writes it
// (LF line ends, usually a trailing newline) and whether it succeeded.
func (s *Server) cli(cmd string) (string, bool) {
	w := strings.Fields(cmd)
	lw := make([]string, len(w))
	for i := range w {
		lw[i] = strings.ToLower(w[i])
	}
	is := func(words ...string) bool {
		if len(lw) != len(words) {
			return false
		}
		for i := range words {
			if lw[i] != words[i] {
				return false
			}
		}
		return true
	}
	switch {
	case is("core", "show", "version"):
		return "Asterisk " + s.cfg.AsteriskVersion +
			" built by root @ vm on a x86_64 running Linux on 2026-11-23 01:25:36 UTC\n", true
	case is("core", "show", "channels"):
		return s.cliChannels(""), true
	case is("core", "show", "channels", "verbose"), is("core", "show", "channels", "concise"),
		is("core", "show", "channels", "count"):
		return s.cliChannels(lw[3]), true
	case is("core", "show", "uptime"), is("core", "show", "uptime", "seconds"):
		s.mu.Lock()
		start, reload := s.startTime, s.reloadTime
		s.mu.Unlock()
		now := time.Now()
		return fmt.Sprintf("System uptime: %d\nLast reload: %d\n",
			int(now.Sub(start)/time.Second), int(now.Sub(reload)/time.Second)), true
	case is("manager", "show", "settings"):
		return s.cliManagerSettings(), true
	case is("dialplan", "show", "200@demo"):
		return "[ Context 'demo' created by 'pbx_config' ]\n" +
			"  '200' =>          1. NoOp(amibus test call)                     [extensions.conf:13]\n" +
			"                    2. Dial(Local/100@demo,30)                    [extensions.conf:14]\n" +
			"                    3. Hangup()                                   [extensions.conf:15]\n" +
			"\n-= 1 extension (3 priorities) in 1 context. =-\n", true
	case len(lw) == 4 && lw[0] == "core" && lw[1] == "set" && lw[2] == "verbose":
		n, err := strconv.Atoi(lw[3])
		if err != nil {
			break
		}
		s.mu.Lock()
		old := s.verbose
		s.verbose = n
		s.mu.Unlock()
		if old == n {
			return fmt.Sprintf("Console verbose is still %d.\n", n), true
		}
		return fmt.Sprintf("Console verbose was %d and is now %d.\n", old, n), true
	case is("manager", "set", "debug", "on"), is("manager", "set", "debug", "off"):
		return "", true
	case len(lw) == 5 && lw[0] == "dialplan" && lw[1] == "set" && lw[2] == "global":
		return fmt.Sprintf("\n    -- Global variable '%s' set to '%s'\n", w[3], w[4]), true
	}
	return fmt.Sprintf("No such command '%s' (type 'core show help %s' for other possible commands)\n",
		cmd, findBest(w)), false
}

// cliManagerSettings is "manager show settings" as captured in 05.
func (s *Server) cliManagerSettings() string {
	yn := func(b bool) string {
		if b {
			return "Yes"
		}
		return "No"
	}
	tlsAddr := ""
	if s.cfg.TLSConfig != nil {
		tlsAddr = s.addr
	}
	lines := []string{
		"",
		"Global Settings:",
		"----------------",
		fmt.Sprintf("  %-26s %-15s", "Manager (AMI):", "Yes"),
		fmt.Sprintf("  %-26s %-15s", "Web Manager (AMI/HTTP):", "No"),
		fmt.Sprintf("  %-26s %-15s", "TCP Bindaddress:", s.addr),
		fmt.Sprintf("  %-26s %-15s", "HTTP Timeout (seconds):", "60"),
		fmt.Sprintf("  %-26s %-15s", "TLS Enable:", yn(s.cfg.TLSConfig != nil)),
		fmt.Sprintf("  %-26s %-15s", "TLS Bindaddress:", tlsAddr),
		fmt.Sprintf("  %-26s %s", "TLS Certfile:", "/etc/asterisk/keys/ami.crt"),
		fmt.Sprintf("  %-26s %s", "TLS Privatekey:", "/etc/asterisk/keys/ami.key"),
		fmt.Sprintf("  %-26s %-15s", "TLS Cipher:", ""),
		fmt.Sprintf("  %-26s %-15s", "Allow multiple login:", "Yes"),
		fmt.Sprintf("  %-26s %-15s", "Display connects:", "Yes"),
		fmt.Sprintf("  %-26s %-15s", "Timestamp events:", yn(s.cfg.TimestampEvents)),
		fmt.Sprintf("  %-26s %s", "Channel vars:", ""),
		fmt.Sprintf("  %-26s %s", "Disabled events:", ""),
		fmt.Sprintf("  %-26s %-15s", "Debug:", "No"),
	}
	return strings.Join(lines, "\n") + "\n"
}

// cliChannels is "core show channels" in its plain, verbose, concise and
// count forms, over the live channel table.
func (s *Server) cliChannels(form string) string {
	chans := s.channelSnapshot()
	s.mu.Lock()
	calls, processed := s.activeCallCountLocked(), s.processedCalls
	s.mu.Unlock()
	now := time.Now()
	var b strings.Builder
	switch form {
	case "concise":
		for _, ch := range chans {
			fmt.Fprintf(&b, "%s!%s!%s!%s!%s!%s!%s!%s!%s!%s!%d!%d!%s!%s\n",
				ch.name, ch.context, ch.exten, ch.priority, ch.stateDesc, ch.app, ch.appData,
				ch.cidNumOrEmpty(), ch.accountCode, "", 3, int(now.Sub(ch.created)/time.Second), ch.bridge, ch.uniqueid)
		}
		return b.String()
	case "verbose":
		fmt.Fprintf(&b, "%-80.80s %-24.24s %-24.24s %-4.4s %-7.7s %-12.12s %-25.25s %-15.15s %-8.8s %-11.11s %-11.11s %-20.20s\n",
			"Channel", "Context", "Extension", "Prio", "State", "Application", "Data", "CallerID", "Duration",
			"Accountcode", "PeerAccount", "BridgeID")
		for _, ch := range chans {
			prio, _ := strconv.Atoi(ch.priority)
			fmt.Fprintf(&b, "%-80.80s %-24.24s %-24.24s %4d %-7.7s %-12.12s %-25.25s %-15.15s %8.8s %-11.11s %-11.11s %-20.20s\n",
				ch.name, ch.context, ch.exten, prio, ch.stateDesc, ch.app, ch.appData, ch.cidNumOrEmpty(),
				hms(now.Sub(ch.created)), ch.accountCode, "", ch.bridge)
		}
	case "":
		fmt.Fprintf(&b, "%-64.64s %-32.32s %-7.7s %-30.30s\n", "Channel", "Location", "State", "Application(Data)")
		for _, ch := range chans {
			loc := "(None)"
			if ch.exten != "" {
				loc = ch.exten + "@" + ch.context + ":" + ch.priority
			}
			app := "(None)"
			if ch.app != "" {
				app = ch.app + "(" + ch.appData + ")"
			}
			fmt.Fprintf(&b, "%-64.64s %-32.32s %-7.7s %-30.30s\n", ch.name, loc, ch.stateDesc, app)
		}
	}
	fmt.Fprintf(&b, "%d active channel%s\n", len(chans), plural(len(chans)))
	fmt.Fprintf(&b, "%d of %d max active call%s (%5.2f%% of capacity)\n", calls, s.cfg.MaxCalls, plural(calls),
		float64(calls)*100/float64(s.cfg.MaxCalls))
	fmt.Fprintf(&b, "%d call%s processed\n", processed, plural(processed))
	return b.String()
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}
