// Package wire frames Peerline's control messages. It does no I/O of its own except in
// ReadFrame, which only pulls bytes from an io.Reader; everything else appends into or
// parses from a caller's buffer.
//
// Every control connection (client-login server, client-supernode, supernode-login
// server) runs inside TLS 1.3 and carries a stream of frames:
//
//	 0       1       2       3       4       5       6       7       8 ... 11
//	+-------+-------+-------+-------+-------+-------+-------+-------+----------+
//	|version| type  |     flags     |           request id          |  length  |
//	+-------+-------+-------+-------+-------+-------+-------+-------+----------+
//	| body: length bytes (a JSON object, or a binary form: see package proto)   |
//	+---------------------------------------------------------------------------+
//
// All integers are big endian. version is 1. type names the message (package proto).
// flags: bit 0 marks a response, bit 1 an error response, bit 2 a binary body (package
// proto); the other bits must be zero.
// request id pairs a response with its request; 0 marks a one-way notification.
// length is at most MaxBody (64 KiB): control messages are small, and a bound here keeps a
// hostile peer from making us allocate.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Version is the only frame version this code speaks.
const Version = 1

// HeaderLen is the size of a frame header in bytes.
const HeaderLen = 12

// MaxBody is the largest body a frame may carry.
const MaxBody = 64 << 10

// Flags of a frame.
const (
	FlagResponse uint16 = 1 << 0
	FlagError    uint16 = 1 << 1
	// FlagBinary marks a body in the message's binary form instead of JSON (package
	// proto). It is sent only to a peer that has said it reads it: a peer from before it
	// takes it for an unknown flag and ends the connection.
	FlagBinary uint16 = 1 << 2
	knownFlags        = FlagResponse | FlagError | FlagBinary
)

// Errors returned by the parsers. Each names a protocol violation; a peer that commits one
// is disconnected.
var (
	ErrShort    = errors.New("wire: frame truncated")
	ErrVersion  = errors.New("wire: unsupported frame version")
	ErrTooLarge = errors.New("wire: frame body larger than 64 KiB")
	ErrFlags    = errors.New("wire: unknown frame flags")
	ErrType     = errors.New("wire: frame type 0 is reserved")
)

// Header is the fixed part of a frame.
type Header struct {
	Type  uint8
	Flags uint16
	ID    uint32
	Len   uint32
}

// IsResponse reports whether the frame answers a request.
func (h Header) IsResponse() bool { return h.Flags&FlagResponse != 0 }

// IsError reports whether the frame is an error response.
func (h Header) IsError() bool { return h.Flags&FlagError != 0 }

// AppendFrame appends a frame with the given header fields and body to b. h.Len is ignored:
// the body's length is written.
func AppendFrame(b []byte, h Header, body []byte) ([]byte, error) {
	if len(body) > MaxBody {
		return b, fmt.Errorf("%w (%d bytes)", ErrTooLarge, len(body))
	}
	if h.Flags&^knownFlags != 0 {
		return b, ErrFlags
	}
	if h.Type == 0 {
		return b, ErrType
	}
	b = append(b, Version, h.Type)
	b = binary.BigEndian.AppendUint16(b, h.Flags)
	b = binary.BigEndian.AppendUint32(b, h.ID)
	b = binary.BigEndian.AppendUint32(b, uint32(len(body)))
	return append(b, body...), nil
}

// ParseHeader parses the first HeaderLen bytes of b.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderLen {
		return Header{}, ErrShort
	}
	if b[0] != Version {
		return Header{}, fmt.Errorf("%w: %d", ErrVersion, b[0])
	}
	h := Header{
		Type:  b[1],
		Flags: binary.BigEndian.Uint16(b[2:4]),
		ID:    binary.BigEndian.Uint32(b[4:8]),
		Len:   binary.BigEndian.Uint32(b[8:12]),
	}
	if h.Type == 0 {
		return Header{}, ErrType
	}
	if h.Flags&^knownFlags != 0 {
		return Header{}, fmt.Errorf("%w: %#x", ErrFlags, h.Flags)
	}
	if h.Len > MaxBody {
		return Header{}, fmt.Errorf("%w (%d bytes)", ErrTooLarge, h.Len)
	}
	return h, nil
}

// ParseFrame parses one whole frame at the start of b and returns its header, its body
// (aliasing b) and the number of bytes consumed.
func ParseFrame(b []byte) (h Header, body []byte, n int, err error) {
	h, err = ParseHeader(b)
	if err != nil {
		return Header{}, nil, 0, err
	}
	end := HeaderLen + int(h.Len)
	if len(b) < end {
		return Header{}, nil, 0, ErrShort
	}
	return h, b[HeaderLen:end], end, nil
}

// ReadFrame reads one frame from r. The body is freshly allocated, at most MaxBody bytes,
// and only after the header has been validated.
func ReadFrame(r io.Reader) (Header, []byte, error) {
	var hb [HeaderLen]byte
	if _, err := io.ReadFull(r, hb[:]); err != nil {
		return Header{}, nil, err
	}
	h, err := ParseHeader(hb[:])
	if err != nil {
		return Header{}, nil, err
	}
	body := make([]byte, h.Len)
	if _, err := io.ReadFull(r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return Header{}, nil, err
	}
	return h, body, nil
}
