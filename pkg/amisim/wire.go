package amisim

import (
	"io"
	"strconv"
	"strings"
)

// Asterisk's manager input limits (manager.c): a session reads into a
// 1025-byte buffer and keeps at most AST_MAX_MANHEADERS header lines.
const (
	maxLineBytes     = 1024
	maxHeaderLines   = 128
	errLineTooLong   = "Failed to parse message: line too long"
	errTooManyLines  = "Too many lines in message or allocation failure"
	errMissingAction = "Missing action in request"
)

// lineReader is manager.c's get_input: it returns lines ended by CRLF or a
// bare LF, and when 1024 bytes hold no line end it discards them (keeping
// the last byte, in case it is the CR of a CRLF) and flags the message as
// having had a line too long.
type lineReader struct {
	r       io.Reader
	buf     [maxLineBytes + 1]byte
	n       int
	tooLong bool
}

// readLine returns the next line without its terminator. The string is a
// copy; the reader's buffer is reused.
func (lr *lineReader) readLine() (string, error) {
	for {
		for x := 0; x < lr.n; x++ {
			skip := 0
			switch {
			case lr.buf[x] == '\r' && x+1 < lr.n && lr.buf[x+1] == '\n':
				skip = 2
			case lr.buf[x] == '\n':
				skip = 1
			default:
				continue
			}
			line := string(lr.buf[:x])
			copy(lr.buf[:], lr.buf[x+skip:lr.n])
			lr.n -= x + skip
			return line, nil
		}
		if lr.n >= maxLineBytes {
			lr.buf[0] = lr.buf[lr.n-1]
			lr.n = 1
			lr.tooLong = true
		}
		m, err := lr.r.Read(lr.buf[lr.n:maxLineBytes])
		lr.n += m
		if err != nil && m == 0 {
			return "", err
		}
	}
}

// request is one client message as Asterisk stores it: raw header lines.
type request struct {
	lines []string
}

// get is astman_get_header: the value of the first line whose key matches
// case-insensitively, leading blanks skipped; "" if none.
func (r *request) get(key string) string {
	for _, h := range r.lines {
		if len(h) > len(key) && h[len(key)] == ':' && strings.EqualFold(h[:len(key)], key) {
			return strings.TrimLeft(h[len(key)+1:], " \t")
		}
	}
	return ""
}

// getNonEmpty is __astman_get_header with GET_HEADER_SKIP_EMPTY.
func (r *request) getNonEmpty(key string) string {
	for _, h := range r.lines {
		if len(h) > len(key) && h[len(key)] == ':' && strings.EqualFold(h[:len(key)], key) {
			if v := strings.TrimLeft(h[len(key)+1:], " \t"); v != "" {
				return v
			}
		}
	}
	return ""
}

// all returns the values of every line with the key, in order.
func (r *request) all(key string) []string {
	var out []string
	for _, h := range r.lines {
		if len(h) > len(key) && h[len(key)] == ':' && strings.EqualFold(h[:len(key)], key) {
			out = append(out, strings.TrimLeft(h[len(key)+1:], " \t"))
		}
	}
	return out
}

// pairs splits the lines for the record: a line without a colon has an
// empty key and the whole line as its value.
func (r *request) pairs() [][2]string {
	out := make([][2]string, len(r.lines))
	for i, h := range r.lines {
		if k, v, ok := strings.Cut(h, ":"); ok {
			out[i] = [2]string{k, strings.TrimLeft(v, " \t")}
		} else {
			out[i] = [2]string{"", h}
		}
	}
	return out
}

// msg builds one outgoing message. Every line ends in CRLF and an empty
// value is written "Key: " with its space, as Asterisk does.
type msg struct {
	b []byte
}

// h appends one header line.
func (m *msg) h(key, value string) *msg {
	m.b = append(m.b, key...)
	m.b = append(m.b, ": "...)
	m.b = append(m.b, value...)
	m.b = append(m.b, "\r\n"...)
	return m
}

// hi appends one header line with an integer value.
func (m *msg) hi(key string, value int) *msg {
	m.b = append(m.b, key...)
	m.b = append(m.b, ": "...)
	m.b = strconv.AppendInt(m.b, int64(value), 10)
	m.b = append(m.b, "\r\n"...)
	return m
}

// id appends "ActionID: <id>" when the request had one.
func (m *msg) id(actionID string) *msg {
	if actionID != "" {
		m.h("ActionID", actionID)
	}
	return m
}

// end terminates the message with the empty line.
func (m *msg) end() *msg {
	m.b = append(m.b, "\r\n"...)
	return m
}

// response starts astman_send_response_full: Response, then ActionID.
func response(resp, actionID string) *msg {
	m := &msg{b: make([]byte, 0, 128)}
	return m.h("Response", resp).id(actionID)
}

// parseMessage splits a rendered message into its header pairs, exactly as
// written: "Key: Value" lines split at the first ": " (or ":"), a line
// without a colon has an empty key.
func parseMessage(b []byte) [][2]string {
	s := string(b)
	s = strings.TrimSuffix(s, "\r\n\r\n")
	if s == "" {
		return nil
	}
	lines := strings.Split(s, "\r\n")
	out := make([][2]string, len(lines))
	for i, l := range lines {
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			out[i] = [2]string{"", l}
			continue
		}
		out[i] = [2]string{k, strings.TrimPrefix(v, " ")}
	}
	return out
}
