package amiwire

const (
	// MaxActionLine is the longest action line Asterisk reads, its CRLF
	// included. manager.c's get_input reads into inbuf[1025] (1024 bytes and
	// a NUL) and finds a line only when its whole "\r\n" lies inside those
	// 1024 bytes; a longer line is discarded and the action answered
	// "Failed to parse message: line too long" (transcript 06-errors: a
	// 1110-byte line refused, a 312-byte one accepted). So a line holds at
	// most 1022 bytes before its CRLF.
	MaxActionLine = 1024
	// MaxActionLines is how many lines of one action Asterisk keeps
	// (AST_MAX_MANHEADERS); with more it answers "Too many lines in message
	// or allocation failure" (06-errors, 132 lines).
	MaxActionLines = 128
)

// AppendAction appends the action "Action: name", "ActionID: actionID" (left
// out when actionID is empty), then headers in order, then the empty line,
// all CRLF-ended, to dst and returns the extended slice.
//
// It refuses, returning dst unchanged and an *EncodeError, anything that
// could inject a header or that Asterisk would discard or misread: CR, LF or
// NUL (which ends a C string) in any name, key or value; an empty action
// name (ErrEmptyAction); an action name or key that is empty or holds a
// colon, a space or a control character; a header named Action or ActionID,
// which the caller does not own (ErrInvalidKey); an ActionID starting with a
// blank, which Asterisk strips before echoing it; a line longer than
// MaxActionLine (ErrLineTooLong); more than MaxActionLines lines
// (ErrTooManyHeaders).
func AppendAction(dst []byte, name, actionID string, headers []Header) ([]byte, error) {
	if err := checkAction(name, actionID, headers); err != nil {
		return dst, err
	}
	dst = appendLine(dst, "Action", name)
	if actionID != "" {
		dst = appendLine(dst, "ActionID", actionID)
	}
	for _, h := range headers {
		dst = appendLine(dst, h.Key, h.Value)
	}
	return append(dst, '\r', '\n'), nil
}

func appendLine(dst []byte, key, value string) []byte {
	dst = append(dst, key...)
	dst = append(dst, ':', ' ')
	dst = append(dst, value...)
	return append(dst, '\r', '\n')
}

// lineLen is the wire length of "key: value\r\n".
func lineLen(key, value string) int { return len(key) + 2 + len(value) + 2 }

func checkAction(name, actionID string, headers []Header) error {
	if name == "" {
		return &EncodeError{Err: ErrEmptyAction, Field: "Action", Index: -1, Reason: "the action name is empty"}
	}
	if p := keyProblem(name); p != "" {
		return &EncodeError{Err: ErrInvalidValue, Field: "Action", Index: -1, Reason: "the action name " + p}
	}
	if lineLen("Action", name) > MaxActionLine {
		return &EncodeError{Err: ErrLineTooLong, Field: "Action", Index: -1, Reason: "line longer than 1024 bytes with its CRLF"}
	}
	lines := 1 + len(headers)
	if actionID != "" {
		lines++
		if p := valueProblem(actionID); p != "" {
			return &EncodeError{Err: ErrInvalidValue, Field: "ActionID", Index: -1, Reason: p}
		}
		if actionID[0] == ' ' || actionID[0] == '\t' {
			return &EncodeError{Err: ErrInvalidValue, Field: "ActionID", Index: -1, Reason: "starts with a blank, which Asterisk strips before echoing it"}
		}
		if lineLen("ActionID", actionID) > MaxActionLine {
			return &EncodeError{Err: ErrLineTooLong, Field: "ActionID", Index: -1, Reason: "line longer than 1024 bytes with its CRLF"}
		}
	}
	for i, h := range headers {
		field := h.Key
		if len(field) > excerptMax {
			field = field[:excerptMax]
		}
		if p := keyProblem(h.Key); p != "" {
			return &EncodeError{Err: ErrInvalidKey, Field: field, Index: i, Reason: "key " + p}
		}
		if len(h.Key) <= len("ActionID") && (EqualFold([]byte(h.Key), "ActionID") || EqualFold([]byte(h.Key), "Action")) {
			return &EncodeError{Err: ErrInvalidKey, Field: field, Index: i, Reason: "Action and ActionID are set by the caller of AppendAction, not by a header"}
		}
		if p := valueProblem(h.Value); p != "" {
			return &EncodeError{Err: ErrInvalidValue, Field: field, Index: i, Reason: "value " + p}
		}
		if lineLen(h.Key, h.Value) > MaxActionLine {
			return &EncodeError{Err: ErrLineTooLong, Field: field, Index: i, Reason: "line longer than 1024 bytes with its CRLF"}
		}
	}
	if lines > MaxActionLines {
		return &EncodeError{Err: ErrTooManyHeaders, Index: -1, Reason: "more than 128 lines in one action"}
	}
	return nil
}

// badKeyByte and badValueByte mark the bytes a key (or action name) and a
// value may not hold; a table keeps the check off the profile.
var badKeyByte, badValueByte = func() (k, v [256]byte) {
	for c := range 0x20 {
		k[c] = 1
	}
	k[' '], k[':'], k[0x7f] = 1, 1, 1
	v['\r'], v['\n'], v[0] = 1, 1, 1
	return k, v
}()

// keyProblem says what makes k unusable as a key or action name, or "".
func keyProblem(k string) string {
	if k == "" {
		return "is empty"
	}
	var bad byte
	for i := 0; i < len(k); i++ {
		bad |= badKeyByte[k[i]]
	}
	if bad == 0 {
		return ""
	}
	for i := 0; i < len(k); i++ {
		switch c := k[i]; {
		case c == '\r' || c == '\n':
			return "contains CR or LF"
		case c == ':':
			return "contains a colon"
		case c == ' ':
			return "contains a space"
		case c < 0x20 || c == 0x7f:
			return "contains a control character"
		}
	}
	return ""
}

// valueProblem says what makes v unusable as a value, or "".
func valueProblem(v string) string {
	var bad byte
	for i := 0; i < len(v); i++ {
		bad |= badValueByte[v[i]]
	}
	if bad == 0 {
		return ""
	}
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\r', '\n':
			return "contains CR or LF"
		case 0:
			return "contains NUL"
		}
	}
	return ""
}

// SessionActions returns the actions that act on the manager session that
// sends them (log in or out, change its event mask or its filters): a client
// that forwards them for someone else hands its session over, so amibus
// denies them to requesters whatever its configuration says.
func SessionActions() []string {
	return []string{"Login", "Logoff", "Challenge", "Events", "Filter"}
}
