package command

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/amibus/amibus/internal/amijson"
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
}

var encoderPool = sync.Pool{New: func() any { return new(encoder) }}

func getEncoder() *encoder { return encoderPool.Get().(*encoder) }

func putEncoder(e *encoder) {
	if cap(e.buf) > maxPooledBytes {
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
	amiErr = amiwire.EqualFold(status, "Error")
	if amiErr {
		b = append(e.buf[:0], `{"ok":false`...)
		b = appendHead(b, node, action)
		msg := string(message)
		if line := firstOutputLine(res); line != "" {
			// A Command that failed says why in its output ("No such
			// command 'frobnicate' ..."); its Message is only "Command
			// output follows".
			msg = line
		}
		if msg == "" {
			msg = "the PBX answered Response: Error"
		}
		b = appendError(b, CodeAMIError, msg)
	} else {
		b = append(e.buf[:0], `{"ok":true`...)
		b = appendHead(b, node, action)
	}
	b = append(b, `,"action_id":`...)
	b = amijson.AppendString(b, actionID)
	b = append(b, `,"response":`...)
	b = amijson.AppendString(b, status)
	b = append(b, `,"message":`...)
	b = amijson.AppendString(b, message)
	b = append(b, `,"fields":`...)
	b = amijson.AppendFields(b, resp, isOutput, nil)
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
		b = amijson.AppendFields(b, ev, nil, nil)
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
		b = amijson.AppendString(b, node)
	}
	if action != "" {
		b = append(b, `,"action":`...)
		b = amijson.AppendString(b, action)
	}
	return b
}

func appendError(b []byte, code Code, msg string) []byte {
	b = append(b, `,"error":{"code":`...)
	b = amijson.AppendString(b, string(code))
	b = append(b, `,"message":`...)
	b = amijson.AppendString(b, msg)
	return append(b, '}')
}

func appendElapsed(b []byte, d time.Duration) []byte {
	b = append(b, `,"elapsed_ms":`...)
	return strconv.AppendFloat(b, float64(d.Microseconds())/1000, 'f', 3, 64)
}

// isOutput picks the headers that are a response's command output (Asterisk
// 14+ Output headers, Asterisk 13 key-less lines): they go to "output", not
// to "fields".
func isOutput(key []byte) bool { return len(key) == 0 || amiwire.EqualFold(key, "Output") }

// appendOutput writes the Command output lines. When the session gave none
// it falls back to the response's own Output headers and key-less lines,
// so that no line of the answer is lost whatever the session filled in.
func appendOutput(b []byte, lines []string, resp *amiwire.Message) []byte {
	if len(lines) > 0 {
		for i, l := range lines {
			if i > 0 {
				b = append(b, ',')
			}
			b = amijson.AppendString(b, l)
		}
		return b
	}
	n := 0
	for i := 0; i < resp.Len(); i++ {
		if isOutput(resp.Key(i)) {
			if n > 0 {
				b = append(b, ',')
			}
			b = amijson.AppendString(b, resp.Value(i))
			n++
		}
	}
	return b
}

// firstOutputLine returns the first non-blank line of a Command answer's
// output, from the session's Output or, failing that, the response's own
// Output headers.
func firstOutputLine(res *session.Result) string {
	for _, l := range res.Output {
		if strings.TrimSpace(l) != "" {
			return l
		}
	}
	for _, l := range amiwire.CommandOutput(res.Response) {
		if strings.TrimSpace(l) != "" {
			return l
		}
	}
	return ""
}
