package amiwire

// CommandOutput returns the output lines of a Command answer, whichever
// format the PBX used:
//
//   - Asterisk 14+: the values of the Output headers in order; "Output: "
//     is an empty line, so a command with no output gives one "".
//   - Asterisk 13 and older ("Response: Follows"): the raw lines before the
//     end marker, plus the text before "--END COMMAND--" when the output's
//     last line had no newline of its own.
//
// It returns nil when m holds no output (Command blacklisted, or any other
// message).
func CommandOutput(m *Message) []string {
	var out []string
	if m.IsFollows() {
		for i := range m.fields {
			if len(m.Key(i)) != 0 {
				continue // Response, Privilege, ActionID
			}
			v := m.Value(i)
			if endsWithMarker(v) {
				if rest := v[:len(v)-len(endCommand)]; len(rest) > 0 {
					out = append(out, string(rest))
				}
				break
			}
			out = append(out, string(v))
		}
		return out
	}
	for i := range m.fields {
		if EqualFold(m.Key(i), "Output") {
			out = append(out, string(m.Value(i)))
		}
	}
	return out
}
