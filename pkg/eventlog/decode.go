package eventlog

import (
	"errors"
	"fmt"
	"strings"
	"time"
	"unsafe"

	"github.com/amibus/amibus/internal/amijson"
)

// maxDepth caps the nesting of JSON values the decoder skips (unknown keys):
// deeper input is refused rather than recursed into.
const maxDepth = 32

// shrinkAbove is the capacity of the reused field storage above which a
// message that used less than a quarter of it gives it back: one huge
// snapshot must not pin its storage for the reader's lifetime.
const shrinkAbove = 1 << 14

// metaToken is the last subject token of markers (publish.MetaToken).
const metaToken = "_meta"

// decoder turns stored messages into entries, keeping its field storage
// from one message to the next.
type decoder struct {
	subjPrefix string   // "<prefix>.events."
	fields     []Field  // every field of the message, events' and items'
	values     []string // every value of those fields
	items      []Fields // a snapshot's items, slices of fields
	evFields   Fields   // an event's fields, a slice of fields
}

func newDecoder(prefix string) decoder {
	return decoder{subjPrefix: prefix + ".events."}
}

// Keys of the payloads, as bits of the set seen.
const (
	kNode uint32 = 1 << iota
	kEvent
	kSession
	kSeq
	kTime
	kFields
	kType
	kVersion
	kOwner
	kReason
	kLastSeq
	kFirstSeq
	kCount
	kAction
	kItems
	kTruncated
	kTotal
)

const (
	needEvent    = kNode | kEvent | kSession | kSeq | kTime | kFields
	needMeta     = kNode | kType | kTime | kSession
	needStart    = needMeta | kVersion | kOwner
	needEnd      = needMeta | kReason | kLastSeq
	needGap      = needMeta | kFirstSeq | kLastSeq | kCount | kReason
	needSnapshot = needMeta | kAction | kItems
)

var keyNames = [...]string{"node", "event", "session", "seq", "time", "fields", "type", "version", "owner",
	"reason", "last_seq", "first_seq", "count", "action", "items", "truncated", "total"}

func missing(need, seen uint32) string {
	var b strings.Builder
	for i, n := range keyNames {
		if need&^seen&(1<<i) != 0 {
			if b.Len() > 0 {
				b.WriteString(", ")
			}
			b.WriteString(n)
		}
	}
	return b.String()
}

// payload is what a message's JSON holds, before it is checked by kind.
type payload struct {
	seen                                      uint32
	node, event, session, typ, version, owner string
	reason, action, timeStr                   string
	seq, lastSeq, firstSeq, count, total      uint64
	truncated                                 bool
}

// decode fills e from the stored message. A message it cannot decode
// becomes a KindInvalid entry; decode never fails otherwise.
func (d *decoder) decode(e *Entry, sseq uint64, subject string, data []byte) {
	e.reset(sseq)
	if cap(d.values) > shrinkAbove && len(d.values) < cap(d.values)/4 {
		d.values = nil
	}
	if cap(d.fields) > shrinkAbove && len(d.fields) < cap(d.fields)/4 {
		d.fields = nil
	}
	d.fields, d.values, d.items, d.evFields = d.fields[:0], d.values[:0], d.items[:0], nil
	if err := d.decodeInto(e, subject, data); err != nil {
		node := e.Node
		*e = Entry{Kind: KindInvalid, StreamSeq: sseq, Node: node,
			Invalid: Invalid{Subject: subject, Data: data, Err: err}}
	}
}

// reset zeroes e for the message at sseq. It clears only the typed value
// its last kind set: a whole-Entry store is some thirty pointer writes, each
// with a write barrier while the GC runs, which it often does under
// nats.go's allocation per message.
func (e *Entry) reset(sseq uint64) {
	switch e.Kind {
	case KindEvent:
		e.Event = Event{}
	case KindSessionStart:
		e.Start = SessionStart{}
	case KindSessionEnd:
		e.End = SessionEnd{}
	case KindGap:
		e.Gap = Gap{}
	case KindSnapshot:
		e.Snapshot = Snapshot{}
	case KindInvalid:
		e.Invalid = Invalid{}
	}
	e.Kind, e.StreamSeq, e.Inferred, e.Late = 0, sseq, false, false
	e.Node, e.Session, e.Seq, e.Time = "", "", 0, time.Time{}
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidMessage, fmt.Sprintf(format, args...))
}

func (d *decoder) decodeInto(e *Entry, subject string, data []byte) error {
	rest, ok := strings.CutPrefix(subject, d.subjPrefix)
	if !ok {
		return invalid("subject %q: not under %s", subject, d.subjPrefix)
	}
	node, token, ok := strings.Cut(rest, ".")
	if !ok || !validToken(node) || token == "" || strings.IndexByte(token, '.') >= 0 {
		return invalid("subject %q: not %s<node>.<event>", subject, d.subjPrefix)
	}
	e.Node = node
	meta := token == metaToken
	// Every string handed out is a substring of the payload, so none costs
	// an allocation and all stay valid after the next message. nats.go
	// gives each message a payload of its own and nothing writes it
	// afterwards (the reader keeps the only reference), so the strings share
	// it instead of a copy.
	p := parser{s: unsafe.String(unsafe.SliceData(data), len(data))}
	var pl payload
	if err := d.parsePayload(&p, &pl); err != nil {
		return invalid("payload: %v", err)
	}
	if pl.seen&kNode != 0 && pl.node != node {
		return invalid("payload node %q on subject %q", pl.node, subject)
	}
	e.Node, e.Session = pl.node, pl.session
	if !meta {
		if pl.seen&needEvent != needEvent {
			return invalid("event payload: missing %s", missing(needEvent, pl.seen))
		}
		if pl.seq == 0 {
			return invalid("event payload: seq 0")
		}
		if pl.session == "" {
			return invalid("event payload: empty session")
		}
		t, err := parseTime(pl.timeStr)
		if err != nil {
			return err
		}
		e.Kind, e.Seq, e.Time = KindEvent, pl.seq, t
		e.Event = Event{Name: pl.event, Fields: d.evFields}
		return nil
	}
	if pl.seen&needMeta != needMeta {
		return invalid("marker payload: missing %s", missing(needMeta, pl.seen))
	}
	if pl.session == "" {
		return invalid("marker payload: empty session")
	}
	t, err := parseTime(pl.timeStr)
	if err != nil {
		return err
	}
	e.Time = t
	var need uint32
	switch pl.typ {
	case "session_start":
		need = needStart
		e.Kind = KindSessionStart
		e.Start = SessionStart{Version: pl.version, Owner: pl.owner}
	case "session_end":
		need = needEnd
		e.Kind, e.Seq = KindSessionEnd, pl.lastSeq
		e.End = SessionEnd{Reason: pl.reason, LastSeq: pl.lastSeq}
	case "gap":
		need = needGap
		if pl.seen&need == need && (pl.firstSeq == 0 || pl.lastSeq < pl.firstSeq || pl.count != pl.lastSeq-pl.firstSeq+1) {
			return invalid("gap marker: first_seq %d, last_seq %d, count %d do not agree", pl.firstSeq, pl.lastSeq, pl.count)
		}
		e.Kind, e.Seq = KindGap, pl.lastSeq
		e.Gap = Gap{FirstSeq: pl.firstSeq, LastSeq: pl.lastSeq, Count: pl.count, Reason: pl.reason}
	case "snapshot":
		need = needSnapshot
		e.Kind = KindSnapshot
		total := len(d.items)
		if pl.truncated {
			if pl.seen&kTotal == 0 {
				return invalid("snapshot marker: truncated without total")
			}
			total = int(min(pl.total, 1<<31))
		}
		e.Snapshot = Snapshot{Action: pl.action, Items: d.items[:len(d.items):len(d.items)],
			Truncated: pl.truncated, Total: total}
	default:
		return invalid("marker type %q", pl.typ)
	}
	if pl.seen&need != need {
		return invalid("%s marker: missing %s", pl.typ, missing(need, pl.seen))
	}
	return nil
}

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, invalid("time %q: not RFC 3339", s)
	}
	return t, nil
}

var (
	errSyntax  = errors.New("malformed JSON")
	errTooDeep = errors.New("JSON nested too deep")
)

func (d *decoder) parsePayload(p *parser, pl *payload) error {
	p.ws()
	if more, err := p.open('{', '}', "want an object"); !more {
		if err != nil {
			return err
		}
		return p.end()
	}
	for {
		key, err := p.key()
		if err != nil {
			return err
		}
		if err := d.value(p, pl, key); err != nil {
			return err
		}
		if more, err := p.next('}'); err != nil || !more {
			if err != nil {
				return err
			}
			return p.end()
		}
	}
}

func (d *decoder) value(p *parser, pl *payload, key string) error {
	var err error
	var bit uint32
	switch key {
	case "node":
		bit = kNode
		pl.node, err = p.str()
	case "event":
		bit = kEvent
		pl.event, err = p.str()
	case "session":
		bit = kSession
		pl.session, err = p.str()
	case "seq":
		bit = kSeq
		pl.seq, err = p.uint()
	case "time":
		bit = kTime
		pl.timeStr, err = p.str()
	case "fields":
		bit = kFields
		start := len(d.fields)
		if err = d.fieldsObject(p); err == nil {
			// Appends of later keys may move d.fields; this slice keeps
			// the backing its fields were written to.
			d.evFields = d.fields[start:len(d.fields):len(d.fields)]
		}
	case "type":
		bit = kType
		pl.typ, err = p.str()
	case "version":
		bit = kVersion
		pl.version, err = p.str()
	case "owner":
		bit = kOwner
		pl.owner, err = p.str()
	case "reason":
		bit = kReason
		pl.reason, err = p.str()
	case "last_seq":
		bit = kLastSeq
		pl.lastSeq, err = p.uint()
	case "first_seq":
		bit = kFirstSeq
		pl.firstSeq, err = p.uint()
	case "count":
		bit = kCount
		pl.count, err = p.uint()
	case "action":
		bit = kAction
		pl.action, err = p.str()
	case "items":
		bit = kItems
		err = d.itemsArray(p)
	case "truncated":
		bit = kTruncated
		pl.truncated, err = p.bool()
	case "total":
		bit = kTotal
		pl.total, err = p.uint()
	default:
		// Keys a later amibus may add are skipped, not refused.
		return p.skip(0)
	}
	if err != nil {
		return fmt.Errorf("%q: %w", key, err)
	}
	pl.seen |= bit
	return nil
}

// fieldsObject appends the fields of one {"Key":"v","K2":["a","b"]} object
// to d.fields.
func (d *decoder) fieldsObject(p *parser) error {
	if more, err := p.open('{', '}', "want an object"); !more {
		return err
	}
	for {
		if key, v, ok := p.plainMember(); ok {
			d.addSingle(key, v)
		} else if err := d.field(p); err != nil {
			return err
		}
		if p.eat(',') {
			// The usual separator, with no white space before it: next's
			// work without a call, once per field.
			p.ws()
			continue
		}
		if more, err := p.next('}'); err != nil || !more {
			return err
		}
	}
}

// field reads one member of a fields object in any form and appends it to
// d.fields.
func (d *decoder) field(p *parser) error {
	key, err := p.key()
	if err != nil {
		return err
	}
	switch {
	case p.peek('"'):
		v, err := p.str()
		if err != nil {
			return err
		}
		d.addSingle(key, v)
	case p.eat('['):
		start := len(d.values)
		p.ws()
		for {
			v, err := p.str()
			if err != nil {
				return fmt.Errorf("field %q: %w", key, err)
			}
			d.values = append(d.values, v)
			if more, err := p.next(']'); err != nil || !more {
				if err != nil {
					return err
				}
				break
			}
		}
		vals := d.values[start:len(d.values):len(d.values)]
		f := d.addField()
		f.Key, f.Value, f.Values = key, vals[0], vals
	default:
		return fmt.Errorf("field %q: %w", key, p.fail("want a string or an array of strings"))
	}
	return nil
}

// addSingle appends a field of one value. Its Values is a slice of its
// Value field: no store in d.values, one pointer write fewer per field (each
// a write barrier while the GC marks, see Entry.reset).
func (d *decoder) addSingle(key, v string) {
	f := d.addField()
	f.Key, f.Value, f.Values = key, v, unsafe.Slice(&f.Value, 1)
}

// addField extends d.fields by one and returns the new field, for its
// members to be stored one by one: storing a whole Field literal copies it
// with a bulk write barrier (runtime.wbMove) while the GC marks, which the
// profile of a read showed as a seventh of the decoding.
func (d *decoder) addField() *Field {
	n := len(d.fields)
	if n < cap(d.fields) {
		d.fields = d.fields[:n+1]
	} else {
		d.fields = append(d.fields, Field{})
	}
	return &d.fields[n]
}

// itemsArray parses a snapshot's array of fields objects into d.items.
func (d *decoder) itemsArray(p *parser) error {
	d.items = d.items[:0]
	if more, err := p.open('[', ']', "want an array"); !more {
		return err
	}
	for {
		start := len(d.fields)
		if err := d.fieldsObject(p); err != nil {
			return fmt.Errorf("item %d: %w", len(d.items), err)
		}
		d.items = append(d.items, d.fields[start:len(d.fields):len(d.fields)])
		if more, err := p.next(']'); err != nil || !more {
			return err
		}
	}
}

// parser reads JSON from s. Strings without escapes are substrings of s.
type parser struct {
	s string
	i int
}

func (p *parser) ws() { p.i = amijson.SkipSpace(p.s, p.i) }

func (p *parser) eat(c byte) bool {
	if p.i < len(p.s) && p.s[p.i] == c {
		p.i++
		return true
	}
	return false
}

func (p *parser) peek(c byte) bool { return p.i < len(p.s) && p.s[p.i] == c }

func (p *parser) fail(what string) error {
	if p.i >= len(p.s) {
		return fmt.Errorf("%w: %s at end of input", errSyntax, what)
	}
	return fmt.Errorf("%w: %s at offset %d", errSyntax, what, p.i)
}

func (p *parser) end() error {
	p.ws()
	if p.i != len(p.s) {
		return p.fail("trailing data")
	}
	return nil
}

// open reads an opening bracket (else fails with want) and reports whether
// a member or an element follows before the closing one.
func (p *parser) open(opening, closing byte, want string) (more bool, err error) {
	if !p.eat(opening) {
		return false, p.fail(want)
	}
	p.ws()
	return !p.eat(closing), nil
}

// key reads an object member's key and the ':' after it.
func (p *parser) key() (string, error) {
	key, err := p.str()
	if err != nil {
		return "", err
	}
	p.ws()
	if !p.eat(':') {
		return "", p.fail("want ':'")
	}
	p.ws()
	return key, nil
}

// next reads what follows a member or an element: ',' (another follows)
// or the closing bracket (none does).
func (p *parser) next(closing byte) (more bool, err error) {
	p.ws()
	switch {
	case p.eat(','):
		p.ws()
		return true, nil
	case p.eat(closing):
		return false, nil
	}
	return false, p.fail("want ',' or '" + string(rune(closing)) + "'")
}

// plainMember reads an object member "key":"value" written with no white
// space and no escape in either string, as ami-ingest writes nearly every
// field, in one pass. For any other form it reads nothing and reports
// false, for the general readers (key, str) to take it.
func (p *parser) plainMember() (key, val string, ok bool) {
	s, i := p.s, p.i
	if i >= len(s) || s[i] != '"' {
		return "", "", false
	}
	ke := amijson.PlainEnd(s, i+1)
	if ke+2 >= len(s) || s[ke] != '"' || s[ke+1] != ':' || s[ke+2] != '"' {
		return "", "", false
	}
	ve := amijson.PlainEnd(s, ke+3)
	if ve >= len(s) || s[ve] != '"' {
		return "", "", false
	}
	p.i = ve + 1
	return s[i+1 : ke], s[ke+3 : ve], true
}

// str reads a JSON string.
func (p *parser) str() (string, error) {
	if !p.eat('"') {
		return "", p.fail("want a string")
	}
	start := p.i
	p.i = amijson.PlainEnd(p.s, p.i)
	if p.i < len(p.s) && p.s[p.i] == '"' {
		v := p.s[start:p.i]
		p.i++
		return v, nil
	}
	b := append(make([]byte, 0, p.i-start+16), p.s[start:p.i]...)
	b, end, err := amijson.Unquote(b, p.s, p.i)
	p.i = end
	if err != nil {
		return "", p.fail(err.Error())
	}
	return string(b), nil
}

// uint reads a non-negative JSON integer that fits a uint64.
func (p *parser) uint() (uint64, error) {
	start := p.i
	var n uint64
	for p.i < len(p.s) && '0' <= p.s[p.i] && p.s[p.i] <= '9' {
		d := uint64(p.s[p.i] - '0')
		if n > (1<<64-1-d)/10 {
			return 0, p.fail("integer overflows 64 bits")
		}
		n = n*10 + d
		p.i++
	}
	switch {
	case p.i == start:
		return 0, p.fail("want a non-negative integer")
	case p.i-start > 1 && p.s[start] == '0':
		return 0, p.fail("leading zero")
	case p.i < len(p.s) && (p.s[p.i] == '.' || p.s[p.i] == 'e' || p.s[p.i] == 'E'):
		return 0, p.fail("want an integer")
	}
	return n, nil
}

func (p *parser) bool() (bool, error) {
	switch {
	case strings.HasPrefix(p.s[p.i:], "true"):
		p.i += 4
		return true, nil
	case strings.HasPrefix(p.s[p.i:], "false"):
		p.i += 5
		return false, nil
	}
	return false, p.fail("want true or false")
}

// skip reads past any JSON value, checking its syntax.
func (p *parser) skip(depth int) error {
	if depth > maxDepth {
		return errTooDeep
	}
	if p.i >= len(p.s) {
		return p.fail("want a value")
	}
	switch c := p.s[p.i]; {
	case c == '"':
		_, err := p.str()
		return err
	case c == '{':
		if more, err := p.open('{', '}', ""); !more {
			return err
		}
		for {
			if _, err := p.key(); err != nil {
				return err
			}
			if err := p.skip(depth + 1); err != nil {
				return err
			}
			if more, err := p.next('}'); err != nil || !more {
				return err
			}
		}
	case c == '[':
		if more, err := p.open('[', ']', ""); !more {
			return err
		}
		for {
			if err := p.skip(depth + 1); err != nil {
				return err
			}
			if more, err := p.next(']'); err != nil || !more {
				return err
			}
		}
	case c == 't' || c == 'f':
		_, err := p.bool()
		return err
	case c == 'n':
		if strings.HasPrefix(p.s[p.i:], "null") {
			p.i += 4
			return nil
		}
		return p.fail("want a value")
	case c == '-' || '0' <= c && c <= '9':
		return p.number()
	}
	return p.fail("want a value")
}

// number reads any JSON number (of a key the decoder does not know).
func (p *parser) number() error {
	p.eat('-')
	digits := func() int {
		n := 0
		for p.i < len(p.s) && '0' <= p.s[p.i] && p.s[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.eat('0') {
		// no more integer digits after a leading zero
	} else if digits() == 0 {
		return p.fail("bad number")
	}
	if p.eat('.') && digits() == 0 {
		return p.fail("bad number")
	}
	if p.eat('e') || p.eat('E') {
		if !p.eat('+') {
			p.eat('-')
		}
		if digits() == 0 {
			return p.fail("bad number")
		}
	}
	return nil
}

// parseAckReply reads the stream sequence and delivery count from a
// JetStream message's reply subject, in its v1
// ($JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>) or
// v2 ($JS.ACK.<domain>.<hash>.<stream>.<consumer>.<delivered>.<sseq>....)
// form, without the allocations of Msg.Metadata. Zeros if it is neither.
func parseAckReply(reply string) (sseq, delivered uint64) {
	rest, ok := strings.CutPrefix(reply, "$JS.ACK.")
	if !ok {
		return 0, 0
	}
	var tok [10]string
	n := 0
	for n < len(tok) {
		t, r, more := strings.Cut(rest, ".")
		tok[n] = t
		n++
		if !more {
			break
		}
		rest = r
	}
	// tokens after $JS.ACK: v1 has 7, v2 9 or 10.
	var off int
	switch {
	case n == 7:
		off = 2
	case n >= 9:
		off = 4
	default:
		return 0, 0
	}
	return parseNum(tok[off+1]), parseNum(tok[off])
}

func parseNum(s string) uint64 {
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + uint64(c-'0')
	}
	return n
}
