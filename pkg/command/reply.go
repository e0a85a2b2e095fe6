package command

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/amibus/amibus/pkg/amiwire"
	"github.com/amibus/amibus/pkg/session"
)

// Code is the error code of a failed reply (error.code in the reply JSON).
type Code string

// Error codes; schemas/actions.md says when each is sent.
const (
	CodeBadRequest   Code = "bad_request"
	CodeForbidden    Code = "forbidden"
	CodeUnknownNode  Code = "unknown_node"
	CodeUnavailable  Code = "unavailable"
	CodeOverloaded   Code = "overloaded"
	CodeTimeout      Code = "timeout"
	CodeDisconnected Code = "disconnected"
	CodeAMIError     Code = "ami_error"
	CodeTooLarge     Code = "too_large"
	CodeInternal     Code = "internal"
)

// outcomeOK is the outcome label of a successful reply.
const outcomeOK = "ok"

// CodeOf maps an error from Sender.Send, or from DecodeRequest, to its reply
// code. An error it does not know is CodeInternal.
func CodeOf(err error) Code {
	var re *RequestError
	switch {
	case errors.Is(err, session.ErrNotConnected), errors.Is(err, session.ErrAuth):
		return CodeUnavailable
	case errors.Is(err, session.ErrOverloaded):
		return CodeOverloaded
	case errors.Is(err, session.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return CodeTimeout
	case errors.Is(err, session.ErrDisconnected), errors.Is(err, session.ErrClosed):
		return CodeDisconnected
	case errors.Is(err, session.ErrTooLarge):
		return CodeTooLarge
	case errors.Is(err, session.ErrInvalidAction), errors.As(err, &re):
		return CodeBadRequest
	}
	return CodeInternal
}

// errReplyTooLarge stops encoding as soon as a reply outgrows its limit, so
// a huge answer costs no more than the limit to find out.
var errReplyTooLarge = errors.New("command: reply too large")

// maxPooledBytes caps the buffer an encoder keeps between replies; a bigger
// one (a long list answer) is left to the garbage collector so that one big
// answer does not pin its memory for good.
const maxPooledBytes = 64 << 10

// encoder builds reply JSON by appending into reused buffers: no maps, no
// reflection, no per-field allocation.
type encoder struct {
	buf []byte
	// Scratch for grouping repeated keys of one message (see appendFields).
	idx, order, end []int32
	grp             []int32
}

var encoderPool = sync.Pool{New: func() any { return new(encoder) }}

func getEncoder() *encoder { return encoderPool.Get().(*encoder) }

func putEncoder(e *encoder) {
	if cap(e.buf) > maxPooledBytes || cap(e.grp) > maxPooledBytes {
		return
	}
	encoderPool.Put(e)
}

// failure encodes {"ok":false,"node","action","error":{code,message},"elapsed_ms"};
// node and action are left out when empty.
func (e *encoder) failure(node, action string, code Code, msg string, elapsed time.Duration) []byte {
	b := append(e.buf[:0], `{"ok":false`...)
	b = appendHead(b, node, action)
	b = appendError(b, code, msg)
	b = appendElapsed(b, elapsed)
	b = append(b, '}')
	e.buf = b
	return b
}

// result encodes the PBX's answer: a success reply, or an ami_error failure
// (amiErr) carrying the PBX's response, message, fields, events and output.
// It returns errReplyTooLarge, with no reply, once the JSON passes limit
// bytes (limit <= 0: no limit).
func (e *encoder) result(node, action string, res *session.Result, elapsed time.Duration, limit int) (data []byte, amiErr bool, err error) {
	resp := res.Response
	status := resp.Name()
	message, _ := resp.Lookup("Message")
	actionID := res.ActionID
	if actionID == "" {
		actionID = string(resp.ActionID())
	}
	var b []byte
	amiErr = bytes.EqualFold(status, []byte("Error"))
	if amiErr {
		b = append(e.buf[:0], `{"ok":false`...)
		b = appendHead(b, node, action)
		msg := string(message)
		if msg == "" {
			msg = "the PBX answered Response: Error"
		}
		b = appendError(b, CodeAMIError, msg)
	} else {
		b = append(e.buf[:0], `{"ok":true`...)
		b = appendHead(b, node, action)
	}
	b = append(b, `,"action_id":`...)
	b = appendString(b, actionID)
	b = append(b, `,"response":`...)
	b = appendString(b, status)
	b = append(b, `,"message":`...)
	b = appendString(b, message)
	b = append(b, `,"fields":`...)
	b = e.appendFields(b, resp, true)
	b = append(b, `,"events":[`...)
	for i, ev := range res.Events {
		if limit > 0 && len(b) > limit {
			e.buf = b
			return nil, amiErr, errReplyTooLarge
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, `{"fields":`...)
		b = e.appendFields(b, ev, false)
		b = append(b, '}')
	}
	b = append(b, `],"output":[`...)
	b = appendOutput(b, res.Output, resp)
	b = append(b, ']')
	b = appendElapsed(b, elapsed)
	b = append(b, '}')
	e.buf = b
	if limit > 0 && len(b) > limit {
		return nil, amiErr, errReplyTooLarge
	}
	return b, amiErr, nil
}

func appendHead(b []byte, node, action string) []byte {
	if node != "" {
		b = append(b, `,"node":`...)
		b = appendString(b, node)
	}
	if action != "" {
		b = append(b, `,"action":`...)
		b = appendString(b, action)
	}
	return b
}

func appendError(b []byte, code Code, msg string) []byte {
	b = append(b, `,"error":{"code":`...)
	b = appendString(b, string(code))
	b = append(b, `,"message":`...)
	b = appendString(b, msg)
	return append(b, '}')
}

func appendElapsed(b []byte, d time.Duration) []byte {
	b = append(b, `,"elapsed_ms":`...)
	return strconv.AppendFloat(b, float64(d.Microseconds())/1000, 'f', 3, 64)
}

// appendOutput writes the Command output lines. When the session gave none
// it falls back to the response's own Output headers and key-less lines,
// so that no line of the answer is lost whatever the session filled in.
func appendOutput(b []byte, lines []string, resp *amiwire.Message) []byte {
	if len(lines) > 0 {
		for i, l := range lines {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendString(b, l)
		}
		return b
	}
	n := 0
	for i := 0; i < resp.Len(); i++ {
		if k := resp.Key(i); len(k) == 0 || bytes.EqualFold(k, []byte("Output")) {
			if n > 0 {
				b = append(b, ',')
			}
			b = appendString(b, resp.Value(i))
			n++
		}
	}
	return b
}

// smallGroup is the header count up to which repeated keys are found by
// comparing every pair; above it a sort keeps the cost at n log n.
const smallGroup = 16

// appendFields writes a message's headers as a JSON object in wire order of
// first appearance: a key that repeats maps to the array of its values in
// order, any other to its value. Keys compare byte for byte. For a response
// the Output headers and key-less lines are left out: they are the output.
func (e *encoder) appendFields(b []byte, m *amiwire.Message, response bool) []byte {
	idx := e.idx[:0]
	for i := 0; i < m.Len(); i++ {
		if response {
			if k := m.Key(i); len(k) == 0 || bytes.EqualFold(k, []byte("Output")) {
				continue
			}
		}
		idx = append(idx, int32(i))
	}
	e.idx = idx
	b = append(b, '{')
	if len(idx) <= smallGroup {
		b = e.appendFieldsSmall(b, m, idx)
	} else {
		b = e.appendFieldsSorted(b, m, idx)
	}
	return append(b, '}')
}

func (e *encoder) appendFieldsSmall(b []byte, m *amiwire.Message, idx []int32) []byte {
	first := true
next:
	for p, i := range idx {
		key := m.Key(int(i))
		for _, j := range idx[:p] {
			if bytes.Equal(m.Key(int(j)), key) {
				continue next // written with its first occurrence
			}
		}
		repeats := false
		for _, j := range idx[p+1:] {
			if bytes.Equal(m.Key(int(j)), key) {
				repeats = true
				break
			}
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, key)
		b = append(b, ':')
		if !repeats {
			b = appendString(b, m.Value(int(i)))
			continue
		}
		b = append(b, '[')
		b = appendString(b, m.Value(int(i)))
		for _, j := range idx[p+1:] {
			if bytes.Equal(m.Key(int(j)), key) {
				b = append(b, ',')
				b = appendString(b, m.Value(int(j)))
			}
		}
		b = append(b, ']')
	}
	return b
}

// appendFieldsSorted groups equal keys by a stable sort of header indexes
// (stable, so each group keeps wire order), then walks the headers in wire
// order and writes each group at its first member.
func (e *encoder) appendFieldsSorted(b []byte, m *amiwire.Message, idx []int32) []byte {
	order := append(e.order[:0], idx...)
	slices.SortStableFunc(order, func(x, y int32) int {
		return bytes.Compare(m.Key(int(x)), m.Key(int(y)))
	})
	// grp[wire index] = start of its group in order; end[group start] = end.
	grp := slices.Grow(e.grp[:0], m.Len())[:m.Len()]
	end := slices.Grow(e.end[:0], len(order))[:len(order)]
	for s := 0; s < len(order); {
		t := s + 1
		for t < len(order) && bytes.Equal(m.Key(int(order[t])), m.Key(int(order[s]))) {
			t++
		}
		for _, i := range order[s:t] {
			grp[i] = int32(s)
		}
		end[s] = int32(t)
		s = t
	}
	e.order, e.grp, e.end = order, grp, end
	first := true
	for _, i := range idx {
		s := grp[i]
		if order[s] != i {
			continue // not the first of its group
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		b = appendString(b, m.Key(int(i)))
		b = append(b, ':')
		members := order[s:end[s]]
		if len(members) == 1 {
			b = appendString(b, m.Value(int(i)))
			continue
		}
		b = append(b, '[')
		for k, j := range members {
			if k > 0 {
				b = append(b, ',')
			}
			b = appendString(b, m.Value(int(j)))
		}
		b = append(b, ']')
	}
	return b
}

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string. Invalid UTF-8 becomes U+FFFD, as
// encoding/json does, so a reply is always valid JSON in valid UTF-8 even
// when a PBX sends Latin-1.
func appendString[T string | []byte](b []byte, s T) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := decodeRune(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
		case r == '\u2028' || r == '\u2029':
			// Valid JSON, but not valid JavaScript source; escaped as
			// encoding/json does.
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
		default:
			i += size
			continue
		}
		i += size
		start = i
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}

func decodeRune[T string | []byte](s T) (rune, int) {
	switch v := any(s).(type) {
	case string:
		return utf8.DecodeRuneInString(v)
	case []byte:
		return utf8.DecodeRune(v)
	}
	return utf8.RuneError, 1
}
