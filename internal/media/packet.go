// Package media carries the audio of a call between two peers: G.711 µ-law voice in
// 20 ms frames, sealed end to end, over one or more datagram paths (direct, hole-punched,
// relayed) that the call setup hands it. It probes every path, sends on the best live
// one, fails over and upgrades without a gap, removes the duplicates that multipath
// produces, and plays out through a jitter buffer.
//
// Voice is 8 kHz mono 16-bit PCM, 160 samples (20 ms) a frame, 160 bytes of µ-law on the
// wire, 50 packets a second in each direction, no silence suppression.
//
// # Packet
//
// One packet is one datagram. Integers are big endian.
//
//	 0       1       2       3       4       5       6       7
//	+-------+-------+-------+-------+-------+-------+-------+-------+
//	|version| type  |          sequence number (48 bits)            |  clear header (8),
//	+-------+-------+-------+-------+-------+-------+-------+-------+  the AEAD's AD
//	|    media timestamp (32)       |     send time (32, µs)        |  \
//	+-------+-------+-------+-------+-------+-------+-------+-------+   | sealed with
//	| body, by type:                                                |   | ChaCha20-Poly1305
//	|   audio        µ-law samples, 1..960 bytes (160 = one frame)  |   |
//	|   probe        empty                                          |   |
//	|   probe-reply  echoed sequence number (8, top 16 bits zero)   |   |
//	|                echoed send time (4)                           |   |
//	|   hold, bye    empty                                          |  /
//	+-------+-------+-------+-------+-------+-------+-------+-------+
//	| Poly1305 tag (16)                                             |
//	+---------------------------------------------------------------+
//
// version is 1. type: 1 audio, 2 probe, 3 probe-reply, 4 hold, 5 bye. The sequence
// number counts every packet a side sends, of any type and on any path, from 1; it is
// the nonce and the replay window's index. The media timestamp counts samples at 8 kHz
// from the start of the sender's call and advances during hold, as in RTP; the receiver
// orders audio by it. The send time is the sender's clock in microseconds since the
// start of its session, wrapping every 71 minutes (only differences count); a
// probe-reply echoes the probe's sequence number and send time, which gives the prober
// the path's round-trip time on its own clock. An audio packet is 192 bytes.
//
// Keys and nonces:
//
//	k_caller = HKDF-SHA256(secret = call key, salt = none, info = "peerline media v1 caller to callee")
//	k_callee = HKDF-SHA256(secret = call key, salt = none, info = "peerline media v1 callee to caller")
//	nonce    = direction (1: 0x01 from the caller, 0x02 from the callee) || 0x000000 || seq (8)
//
// Why it is built this way:
//
//   - ChaCha20-Poly1305 with a counter nonce, not XChaCha20 with a random one: the
//     sequence number has to travel in the clear and be unique anyway (the receiver needs
//     it before decrypting, for the replay window), so using it as the nonce costs
//     nothing, where a random 24-byte nonce would add 12% to every audio packet
//     (9.6 kbit/s per path). Uniqueness is structural rather than probabilistic: one
//     counter per direction, a distinct subkey per direction, and a direction byte in
//     the nonce besides. The price is that the call key must never seal two sessions in
//     the same role; Config.Key says so. Seal refuses to wrap the counter.
//   - The clear header is the additional data, so no header byte can be changed; the
//     timestamps travel inside the ciphertext, so a relay learns only the packet type,
//     sequence number, size and timing (and size alone would tell it audio from probes).
//   - Probes and replies are sealed like audio: a relay cannot read them, forge a reply
//     to keep a dead path looking alive, or make a path look faster than it is.
//   - The replay window (1024 packets, a sliding bitmap) is checked before decrypting,
//     to drop old packets cheaply, and advanced only after the tag verifies, so forged
//     packets cannot move it. A packet already accepted is a duplicate when its first
//     copy came over another path (expected while a sender switches paths, and proof
//     that this path works) and a replay when it came over the same one.
//   - Every length is exact for its type, so a parser has nothing to guess.
//
// # Session
//
// A Session is one side of a call. It reads from every path at all times and probes
// every path every ProbeInterval. A path is live while packets arrive on it (within
// DeadAfter) and its probes are answered (within DeadAfter plus two probe intervals).
// Media goes to the live path of lowest rank; until some path proves live, and whenever
// none is, it goes to every open path. When the active path dies the session fails over
// at once to the next live path; when a better-ranked path has been live for one probe
// interval it upgrades, sending on both paths for a few frames so that nothing is lost
// in the switch. The receiver removes the copies with the replay window.
//
// Received audio goes through a jitter buffer keyed by media timestamp and is played
// out, one frame per 20 ms tick, JitterDelay after the first frame arrived. A frame
// missing at its turn is concealed with silence and counted; one that arrives after its
// turn is dropped as late. Hold stops audio and sends a hold packet every 3 s instead;
// the peer plays silence, counts the time as held rather than lost, and resynchronises
// its jitter buffer when audio resumes.
package media

import (
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"io"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"
)

// Version is the packet version this package writes and reads.
const Version = 1

// Sizes and limits.
const (
	// HeaderLen is the size of the clear header.
	HeaderLen = 8
	// TagLen is the size of the Poly1305 tag.
	TagLen = chacha20poly1305.Overhead
	// MaxPayload bounds an audio packet's µ-law payload: 120 ms. Sessions send 160.
	MaxPayload = 960
	// MaxPacketLen bounds a packet; longer datagrams are rejected unread.
	MaxPacketLen = HeaderLen + sealedFixedLen + MaxPayload + TagLen
	// MinPacketLen is the shortest valid packet (a probe, hold or bye).
	MinPacketLen = HeaderLen + sealedFixedLen + TagLen
	// MaxSeq is the largest sequence number.
	MaxSeq = 1<<48 - 1

	// sealedFixedLen is the media timestamp and the send time.
	sealedFixedLen = 8
	// replyBodyLen is a probe-reply's echoed sequence number and send time.
	replyBodyLen = 12
)

// Type is a packet's type.
type Type uint8

// Packet types.
const (
	TypeAudio      Type = 1 // a frame of µ-law audio
	TypeProbe      Type = 2 // asks for a probe-reply on the same path
	TypeProbeReply Type = 3 // answers a probe
	TypeHold       Type = 4 // the sender is on hold: no audio until further audio
	TypeBye        Type = 5 // the sender has hung up
)

func (t Type) String() string {
	switch t {
	case TypeAudio:
		return "audio"
	case TypeProbe:
		return "probe"
	case TypeProbeReply:
		return "probe-reply"
	case TypeHold:
		return "hold"
	case TypeBye:
		return "bye"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// bodyLen returns the exact sealed body length of t (after the fixed 8 bytes), or -1
// for audio (variable) and unknown types.
func (t Type) bodyLen() int {
	switch t {
	case TypeProbe, TypeHold, TypeBye:
		return 0
	case TypeProbeReply:
		return replyBodyLen
	}
	return -1
}

// Header is the clear part of a packet. Nothing in it is trustworthy until Open has
// verified the tag.
type Header struct {
	Type Type
	Seq  uint64
}

// ParseHeader parses the clear header and checks the packet's length against its type.
// It needs no key: it is what a receiver (or a test's simulated relay) can see.
func ParseHeader(b []byte) (Header, error) {
	if len(b) < MinPacketLen {
		return Header{}, fmt.Errorf("%w: %d bytes, minimum %d", ErrMalformed, len(b), MinPacketLen)
	}
	if len(b) > MaxPacketLen {
		return Header{}, fmt.Errorf("%w: %d bytes, maximum %d", ErrMalformed, len(b), MaxPacketLen)
	}
	if b[0] != Version {
		return Header{}, fmt.Errorf("%w: version %d, want %d", ErrVersion, b[0], Version)
	}
	h := Header{Type: Type(b[1]), Seq: uint64(b[2])<<40 | uint64(binary.BigEndian.Uint32(b[3:7]))<<8 | uint64(b[7])}
	if h.Seq == 0 {
		return Header{}, fmt.Errorf("%w: sequence number 0", ErrMalformed)
	}
	body := len(b) - MinPacketLen
	switch want := h.Type.bodyLen(); {
	case h.Type == TypeAudio:
		if body == 0 {
			return Header{}, fmt.Errorf("%w: audio packet without samples", ErrMalformed)
		}
	case want < 0:
		return Header{}, fmt.Errorf("%w: unknown type %d", ErrMalformed, uint8(h.Type))
	case body != want:
		return Header{}, fmt.Errorf("%w: %s body is %d bytes, want %d", ErrMalformed, h.Type, body, want)
	}
	return h, nil
}

// Packet is a packet's content.
type Packet struct {
	Type      Type
	Seq       uint64 // 1..MaxSeq, unique per sender
	Timestamp uint32 // media timestamp, 8 kHz samples
	SendTime  uint32 // sender's clock, µs, wrapping, for round-trip times
	EchoSeq   uint64 // probe-reply: the probe's Seq
	EchoTime  uint32 // probe-reply: the probe's SendTime
	Payload   []byte // audio: µ-law samples; nil for other types
}

// Cipher seals the packets one side sends and opens those its peer sends. It holds no
// sequence state: the caller numbers packets and keeps the replay window. It is safe
// for concurrent use.
type Cipher struct {
	send, recv       cipher.AEAD
	sendDir, recvDir byte
}

const (
	infoCaller = "peerline media v1 caller to callee"
	infoCallee = "peerline media v1 callee to caller"
	dirCaller  = 0x01
	dirCallee  = 0x02
)

// NewCipher derives the two directions' keys from the call key. caller says which side
// this is; the two sides of a call must disagree on it.
func NewCipher(key [32]byte, caller bool) (*Cipher, error) {
	kc, err := subkey(key, infoCaller)
	if err != nil {
		return nil, err
	}
	ke, err := subkey(key, infoCallee)
	if err != nil {
		return nil, err
	}
	c := &Cipher{send: kc, recv: ke, sendDir: dirCaller, recvDir: dirCallee}
	if !caller {
		c.send, c.recv, c.sendDir, c.recvDir = ke, kc, dirCallee, dirCaller
	}
	return c, nil
}

func subkey(key [32]byte, info string) (cipher.AEAD, error) {
	var k [chacha20poly1305.KeySize]byte
	if _, err := io.ReadFull(hkdf.New(sha256.New, key[:], nil, []byte(info)), k[:]); err != nil {
		return nil, err
	}
	return chacha20poly1305.New(k[:])
}

func nonce(dir byte, seq uint64) [chacha20poly1305.NonceSize]byte {
	var n [chacha20poly1305.NonceSize]byte
	n[0] = dir
	binary.BigEndian.PutUint64(n[4:], seq)
	return n
}

// Seal appends the sealed packet p to dst and returns the extended slice. The caller
// must never seal two packets with one Seq.
func (c *Cipher) Seal(dst []byte, p *Packet) ([]byte, error) {
	if p.Seq == 0 {
		return dst, fmt.Errorf("%w: sequence number 0", ErrInvalidPacket)
	}
	if p.Seq > MaxSeq {
		return dst, ErrSeqExhausted
	}
	switch want := p.Type.bodyLen(); {
	case p.Type == TypeAudio:
		if len(p.Payload) == 0 || len(p.Payload) > MaxPayload {
			return dst, fmt.Errorf("%w: audio payload of %d bytes, want 1..%d", ErrInvalidPacket, len(p.Payload), MaxPayload)
		}
	case want < 0:
		return dst, fmt.Errorf("%w: unknown type %d", ErrInvalidPacket, uint8(p.Type))
	case len(p.Payload) != 0:
		return dst, fmt.Errorf("%w: %s packet with a payload", ErrInvalidPacket, p.Type)
	case p.Type == TypeProbeReply && (p.EchoSeq == 0 || p.EchoSeq > MaxSeq):
		return dst, fmt.Errorf("%w: echoed sequence number out of range", ErrInvalidPacket)
	}
	start := len(dst)
	dst = append(dst, Version, byte(p.Type), byte(p.Seq>>40))
	dst = binary.BigEndian.AppendUint32(dst, uint32(p.Seq>>8))
	dst = append(dst, byte(p.Seq))
	body := len(dst)
	dst = binary.BigEndian.AppendUint32(dst, p.Timestamp)
	dst = binary.BigEndian.AppendUint32(dst, p.SendTime)
	switch p.Type {
	case TypeAudio:
		dst = append(dst, p.Payload...)
	case TypeProbeReply:
		dst = binary.BigEndian.AppendUint64(dst, p.EchoSeq)
		dst = binary.BigEndian.AppendUint32(dst, p.EchoTime)
	}
	n := nonce(c.sendDir, p.Seq)
	// Seal in place: the plaintext is exactly where the ciphertext goes.
	return c.send.Seal(dst[:body], n[:], dst[body:], dst[start:body]), nil
}

// Open authenticates and decrypts a packet in place: on success b holds plaintext and
// the returned Packet's Payload aliases it; on failure b's content is unspecified. Open
// does not check for replays (see the replay window in Session). Errors wrap
// ErrMalformed, ErrVersion or ErrAuth.
func (c *Cipher) Open(b []byte) (Packet, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return Packet{}, err
	}
	return c.openParsed(h, b)
}

// openParsed is Open after ParseHeader, for the session, which checks the replay window
// in between.
func (c *Cipher) openParsed(h Header, b []byte) (Packet, error) {
	n := nonce(c.recvDir, h.Seq)
	pt, err := c.recv.Open(b[HeaderLen:HeaderLen], n[:], b[HeaderLen:], b[:HeaderLen])
	if err != nil {
		return Packet{}, ErrAuth
	}
	return parseBody(h, pt)
}

// parseBody parses a decrypted body; ParseHeader has already checked its length.
func parseBody(h Header, pt []byte) (Packet, error) {
	if len(pt) < sealedFixedLen {
		return Packet{}, fmt.Errorf("%w: body of %d bytes", ErrMalformed, len(pt))
	}
	p := Packet{
		Type:      h.Type,
		Seq:       h.Seq,
		Timestamp: binary.BigEndian.Uint32(pt[0:4]),
		SendTime:  binary.BigEndian.Uint32(pt[4:8]),
	}
	rest := pt[sealedFixedLen:]
	switch h.Type {
	case TypeAudio:
		if len(rest) == 0 || len(rest) > MaxPayload {
			return Packet{}, fmt.Errorf("%w: audio payload of %d bytes", ErrMalformed, len(rest))
		}
		p.Payload = rest
	case TypeProbeReply:
		if len(rest) != replyBodyLen {
			return Packet{}, fmt.Errorf("%w: probe-reply body of %d bytes", ErrMalformed, len(rest))
		}
		p.EchoSeq = binary.BigEndian.Uint64(rest[0:8])
		p.EchoTime = binary.BigEndian.Uint32(rest[8:12])
		if p.EchoSeq == 0 || p.EchoSeq > MaxSeq {
			return Packet{}, fmt.Errorf("%w: echoed sequence number %d", ErrMalformed, p.EchoSeq)
		}
	default:
		if want := h.Type.bodyLen(); want < 0 || len(rest) != want {
			return Packet{}, fmt.Errorf("%w: %s body of %d bytes", ErrMalformed, h.Type, len(rest))
		}
	}
	return p, nil
}
