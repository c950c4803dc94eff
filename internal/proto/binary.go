package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// Binary bodies. The messages that supernodes and their clients exchange most (presence,
// watches, records, departures, the mesh's Via, keep-alives, answers) also have a binary
// form, which a frame marks with wire.FlagBinary. Decoding JSON was a sixth of the CPU of
// a 100,000-user reboot storm (go test ./internal/proto -bench Decode: the binary form
// of a Presence decodes several times faster, with fewer allocations). A peer sends binary
// bodies only to a peer that has shown it reads them: by asking (SNHello.Binary,
// Attach.Binary) or by sending one. Every other message, and everything to and from a
// peer from before binary bodies, stays JSON.
//
// A binary body is the message's fields in declaration order, with no names and no
// padding:
//
//	string, []byte   uvarint length, then the bytes
//	bool             one byte, 0 or 1
//	uint64, Seq      uvarint
//	Type             one byte
//	time.Time        uvarint 0 for the zero time; else uvarint 1, varint Unix seconds,
//	                 uvarint nanoseconds (< 1e9), years 0 to 9999 as in JSON; decoded
//	                 in UTC
//	list             uvarint count, then the elements
//
// A body with bytes left over, a length beyond what is left, a bool other than 0 or 1 or
// nanoseconds out of range is refused (ErrDecode); then each message is validated as a
// JSON one is, so both forms accept the same messages.

// binaryForm is implemented by messages with a binary form.
type binaryForm interface {
	Message
	appendBinary(b []byte) []byte
	parseBinary(d *decoder)
}

// ErrNoBinary is returned by AppendBinary for a message without a binary form.
var ErrNoBinary = errors.New("proto: message has no binary form")

// AppendBinary appends m's binary form to b.
func AppendBinary(b []byte, m Message) ([]byte, error) {
	bm, ok := m.(binaryForm)
	if !ok {
		return b, fmt.Errorf("%w: type %d", ErrNoBinary, m.Type())
	}
	return bm.appendBinary(b), nil
}

// DecodeBinary parses body, the binary form of a message of type t, and validates it.
func DecodeBinary(t Type, body []byte) (Message, error) {
	m, ok := New(t).(binaryForm)
	if !ok {
		return nil, fmt.Errorf("%w: type %d has no binary form", ErrDecode, t)
	}
	d := decoder{b: body}
	m.parseBinary(&d)
	if d.err == nil && len(d.b) != 0 {
		d.err = fmt.Errorf("%d bytes left over", len(d.b))
	}
	if d.err != nil {
		return nil, fmt.Errorf("%w: type %d (binary): %v", ErrDecode, t, d.err)
	}
	if v, ok := m.(validator); ok {
		if err := v.validate(); err != nil {
			return nil, fmt.Errorf("%w: type %d (binary): %v", ErrDecode, t, err)
		}
	}
	return m, nil
}

// DecodeAs parses body as Decode does, or as DecodeBinary when binary is set.
func DecodeAs(t Type, body []byte, binary bool) (Message, error) {
	if binary {
		return DecodeBinary(t, body)
	}
	return Decode(t, body)
}

// EncodeFor renders m for a peer: in binary when the peer reads binary bodies and m has a
// binary form, else as JSON; isBinary says which. A Via whose body is binary (see
// Via.BodyBinary) goes to a JSON-only peer with its body re-encoded as JSON, unless the
// body is signed (a departure), which re-encoding would break: that is ErrUnreachable,
// and the sender sends the message directly instead.
func EncodeFor(m Message, peerReadsBinary bool) (body []byte, isBinary bool, err error) {
	if peerReadsBinary {
		if bm, ok := m.(binaryForm); ok {
			return bm.appendBinary(nil), true, nil
		}
	}
	if v, ok := m.(*Via); ok && v.BodyBinary {
		if len(v.Sig) != 0 {
			return nil, false, ErrUnreachable.With("a signed binary message cannot be handed on to a peer that reads only JSON")
		}
		inner, err := DecodeBinary(v.Kind, v.Body)
		if err != nil {
			return nil, false, err
		}
		jb, err := Encode(inner)
		if err != nil {
			return nil, false, err
		}
		c := *v
		c.Body, c.BodyBinary = jb, false
		m = &c
	}
	body, err = Encode(m)
	return body, false, err
}

// decoder reads a binary body; the first error sticks and later reads return zero values.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf(format, args...)
	}
	d.b = nil
}

func (d *decoder) uvarint() uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail("bad or truncated varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.fail("bad or truncated varint")
		return 0
	}
	d.b = d.b[n:]
	return v
}

// raw returns the next length-prefixed bytes, aliasing the body.
func (d *decoder) raw() []byte {
	n := d.uvarint()
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.fail("length %d beyond the %d bytes left", n, len(d.b))
		return nil
	}
	v := d.b[:n:n]
	d.b = d.b[n:]
	return v
}

func (d *decoder) str() string { return string(d.raw()) }

// bytes returns a copy of the next length-prefixed bytes; nil when empty, as JSON gives
// for an absent field.
func (d *decoder) bytes() []byte {
	r := d.raw()
	if len(r) == 0 {
		return nil
	}
	return append([]byte(nil), r...)
}

func (d *decoder) bool() bool {
	if d.err != nil {
		return false
	}
	if len(d.b) == 0 {
		d.fail("truncated bool")
		return false
	}
	v := d.b[0]
	d.b = d.b[1:]
	if v > 1 {
		d.fail("bool %d", v)
	}
	return v == 1
}

func (d *decoder) typ() Type {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.fail("truncated type")
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return Type(v)
}

func (d *decoder) time() time.Time {
	switch d.uvarint() {
	case 0:
		return time.Time{}
	case 1:
		s, ns := d.varint(), d.uvarint()
		if ns >= 1e9 {
			d.fail("nanoseconds %d", ns)
		}
		t := time.Unix(s, int64(ns)).UTC()
		if y := t.Year(); y < 0 || y > 9999 {
			d.fail("year %d outside JSON's [0, 9999]", y) // both forms take the same times
		}
		return t
	default:
		d.fail("bad time")
		return time.Time{}
	}
}

// count reads a list's length: each element takes at least a byte, so a count beyond
// the bytes left is refused before anything is allocated.
func (d *decoder) count() int {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail("%d elements in %d bytes", n, len(d.b))
		return 0
	}
	return int(n)
}

func appendRaw(b, v []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(v)))
	return append(b, v...)
}

func appendStr(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

func (*OK) appendBinary(b []byte) []byte { return b }
func (*OK) parseBinary(*decoder)         {}

func (m *Ping) appendBinary(b []byte) []byte { return binary.AppendUvarint(b, m.Seq) }
func (m *Ping) parseBinary(d *decoder)       { m.Seq = d.uvarint() }
func (m *Pong) appendBinary(b []byte) []byte { return binary.AppendUvarint(b, m.Seq) }
func (m *Pong) parseBinary(d *decoder)       { m.Seq = d.uvarint() }

func (m *Publish) appendBinary(b []byte) []byte { return appendRaw(b, m.Record) }
func (m *Publish) parseBinary(d *decoder)       { m.Record = d.bytes() }

func (m *Subscribe) appendBinary(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(m.Names)))
	for _, n := range m.Names {
		b = appendStr(b, n)
	}
	return b
}

func (m *Subscribe) parseBinary(d *decoder) {
	if n := d.count(); n > 0 {
		m.Names = make([]string, n)
		for i := range m.Names {
			m.Names[i] = d.str()
		}
	}
}

func (m *IndexStore) appendBinary(b []byte) []byte {
	return appendBool(appendRaw(b, m.Record), m.Replicate)
}

func (m *IndexStore) parseBinary(d *decoder) { m.Record, m.Replicate = d.bytes(), d.bool() }

func (m *IndexStoreBatch) appendBinary(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(m.Records)))
	for _, r := range m.Records {
		b = appendRaw(b, r)
	}
	return b
}

func (m *IndexStoreBatch) parseBinary(d *decoder) {
	if n := d.count(); n > 0 {
		m.Records = make([][]byte, n)
		for i := range m.Records {
			m.Records[i] = d.bytes()
		}
	}
}

func (m *IndexLookup) appendBinary(b []byte) []byte { return appendStr(appendStr(b, m.Name), m.Asker) }
func (m *IndexLookup) parseBinary(d *decoder)       { m.Name, m.Asker = d.str(), d.str() }

func (m *IndexResult) appendBinary(b []byte) []byte {
	b = appendBool(appendBool(b, m.Found), m.Online)
	return appendTime(appendRaw(b, m.Record), m.LastSeen)
}

func (m *IndexResult) parseBinary(d *decoder) {
	m.Found, m.Online = d.bool(), d.bool()
	m.Record, m.LastSeen = d.bytes(), d.time()
}

func (m *IndexGone) appendBinary(b []byte) []byte {
	return binary.AppendUvarint(appendStr(b, m.Name), m.Seq)
}

func (m *IndexGone) parseBinary(d *decoder) { m.Name, m.Seq = d.str(), d.uvarint() }

func (m *Watch) appendBinary(b []byte) []byte { return appendStr(appendStr(b, m.Name), m.Watcher) }
func (m *Watch) parseBinary(d *decoder)       { m.Name, m.Watcher = d.str(), d.str() }

func (m *WatchBatch) appendBinary(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(m.Watches)))
	for i := range m.Watches {
		b = m.Watches[i].appendBinary(b)
	}
	return b
}

func (m *WatchBatch) parseBinary(d *decoder) {
	if n := d.count(); n > 0 {
		m.Watches = make([]Watch, n)
		for i := range m.Watches {
			m.Watches[i].parseBinary(d)
		}
	}
}

func (m *WatchBatchOK) appendBinary(b []byte) []byte {
	b = binary.AppendUvarint(b, uint64(len(m.Presences)))
	for i := range m.Presences {
		b = m.Presences[i].appendBinary(b)
	}
	return b
}

func (m *WatchBatchOK) parseBinary(d *decoder) {
	if n := d.count(); n > 0 {
		m.Presences = make([]Presence, n)
		for i := range m.Presences {
			m.Presences[i].parseBinary(d)
		}
	}
}

func (m *Presence) appendBinary(b []byte) []byte {
	b = appendBool(appendStr(b, m.Name), m.Online)
	b = appendStr(appendTime(b, m.LastSeen), m.To)
	return binary.AppendUvarint(b, m.Seq)
}

func (m *Presence) parseBinary(d *decoder) {
	m.Name, m.Online, m.LastSeen = d.str(), d.bool(), d.time()
	m.To, m.Seq = d.str(), d.uvarint()
}

func (m *Via) appendBinary(b []byte) []byte {
	b = appendStr(appendStr(b, m.To), m.From)
	b = appendRaw(append(b, byte(m.Kind)), m.Body)
	return appendBool(appendRaw(b, m.Sig), m.BodyBinary)
}

func (m *Via) parseBinary(d *decoder) {
	m.To, m.From, m.Kind = d.str(), d.str(), d.typ()
	m.Body, m.Sig, m.BodyBinary = d.bytes(), d.bytes(), d.bool()
}

func (m *Deliver) appendBinary(b []byte) []byte {
	return appendRaw(appendStr(appendStr(b, m.From), m.To), m.Envelope)
}

func (m *Deliver) parseBinary(d *decoder) { m.From, m.To, m.Envelope = d.str(), d.str(), d.bytes() }

func (m *Msg) appendBinary(b []byte) []byte { return appendRaw(appendStr(b, m.To), m.Envelope) }
func (m *Msg) parseBinary(d *decoder)       { m.To, m.Envelope = d.str(), d.bytes() }
