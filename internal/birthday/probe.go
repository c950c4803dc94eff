package birthday

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
)

// A probe is 30 bytes:
//
//	 0                   1                   2                   3
//	 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                        magic "PLBP"                           |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|    version    |     role      |                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+          nonce (64)           +
//	|                                                               |
//	+                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                               |                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+                               +
//	|                   tag: HMAC-SHA256 of the above,              |
//	+                   under the call's probe key,                 +
//	|                   first 16 bytes                              |
//	+                               +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//	|                               |
//	+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//
// The tag keeps anyone without the call's key from opening a path: a datagram that
// happens to reach a probing socket is refused unless it carries a tag for this call.
// The nonce tells one probe from another (and an answer names the probe it answers).

const (
	probeMagic   = "PLBP"
	probeVersion = 1
	tagLen       = 16
	headerLen    = 4 + 1 + 1 + 8
	// ProbeLen is the size of a probe on the wire.
	ProbeLen = headerLen + tagLen
)

// Roles of a probe.
const (
	roleSpray = 1 // from one of the many sockets of the side behind the symmetric NAT
	roleGuess = 2 // from the cone side's one socket, to a guessed port
	roleAck   = 3 // the answer to a guess or a spray that got through: the path works
)

// Errors of parseProbe.
var (
	errShort   = errors.New("birthday: datagram shorter than a probe")
	errMagic   = errors.New("birthday: not a probe")
	errVersion = errors.New("birthday: probe of another version")
	errRole    = errors.New("birthday: probe of an unknown role")
	errTag     = errors.New("birthday: probe not authenticated by this call's key")
)

// appendProbe appends a probe of role and nonce, tagged under key.
func appendProbe(b, key []byte, role byte, nonce uint64) []byte {
	start := len(b)
	b = append(b, probeMagic...)
	b = append(b, probeVersion, role)
	b = binary.BigEndian.AppendUint64(b, nonce)
	return append(b, tag(key, b[start:])...)
}

func tag(key, header []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(header)
	return m.Sum(nil)[:tagLen]
}

// parseProbe checks that b is a probe tagged under key and returns its role and nonce.
// Trailing bytes are refused: a probe is exactly ProbeLen.
func parseProbe(b, key []byte) (role byte, nonce uint64, err error) {
	switch {
	case len(b) < ProbeLen:
		return 0, 0, errShort
	case len(b) > ProbeLen || string(b[:4]) != probeMagic:
		return 0, 0, errMagic
	case b[4] != probeVersion:
		return 0, 0, errVersion
	}
	role = b[5]
	if role != roleSpray && role != roleGuess && role != roleAck {
		return 0, 0, errRole
	}
	if !hmac.Equal(tag(key, b[:headerLen]), b[headerLen:]) {
		return 0, 0, errTag
	}
	return role, binary.BigEndian.Uint64(b[6:headerLen]), nil
}
