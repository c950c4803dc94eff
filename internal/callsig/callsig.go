// Package callsig is the call signalling that two clients exchange inside end-to-end
// encrypted messages (package e2ee, kind KindCall), through their supernodes: invite,
// accept, reject, candidates, hangup. The supernodes see only envelopes.
//
// A message is one JSON object (at most MaxLen bytes):
//
//	{"t":"invite", "call":"<32 hex>", "nat":{...}, "ufrag":"..", "pwd":"..",
//	 "cands":["<ICE candidate>",...], "relays":["ip:port",...], "public":["ip",...],
//	 "eph":"<base64 X25519 public key>", "conf":["carol",...]}
//
// The media key is agreed from the two ephemeral X25519 keys of invite and accept, and
// bound to both users' credentials and the call id (see MediaKey); since every message
// is signed by its sender inside the e2ee envelope, a supernode that swaps an ephemeral
// key is caught by the signature, not by this package.
package callsig

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"

	"golang.org/x/crypto/hkdf"

	"github.com/peerline/peerline/internal/x25519"
)

// Types of message.
const (
	TInvite    = "invite"    // caller -> callee: ring
	TAccept    = "accept"    // callee -> caller: answered
	TReject    = "reject"    // callee -> caller: Reason says why
	TCandidate = "candidate" // either way: more ICE candidates or relays, trickled
	THangup    = "hangup"    // either way: the call is over
)

// Reasons a call is refused or ended.
const (
	ReasonRejected = "rejected"
	ReasonBusy     = "busy"
	ReasonBlocked  = "blocked"
	ReasonTimeout  = "no answer"
	ReasonFailed   = "no path"
	ReasonHangup   = "hangup"
	// ReasonCancelled: the caller hung up while the call was still ringing; the callee
	// stops ringing and counts a missed call.
	ReasonCancelled = "cancelled"
)

// Limits.
const (
	MaxLen       = 4096 // bytes of one encoded message (the e2ee text limit)
	MaxCands     = 24   // ICE candidates in one message
	MaxCandLen   = 200  // bytes of one candidate
	MaxRelays    = 4    // relayed addresses
	MaxPublic    = 4    // public IP addresses
	MaxConf      = 8    // conference participants named in one invite
	maxFieldLen  = 256  // ufrag, pwd, reason, nat fields
	callIDHexLen = 32
)

// ErrMalformed wraps every decoding error.
var ErrMalformed = errors.New("callsig: malformed call signalling")

// NAT is what a client knows of its NAT, for the path prediction.
type NAT struct {
	Classic    string `json:"classic,omitempty"`   // "open", "full cone", "restricted cone", "port-restricted cone", "symmetric", "udp blocked"
	Mapping    string `json:"mapping,omitempty"`   // RFC 4787 name
	Filtering  string `json:"filtering,omitempty"` // RFC 4787 name
	UDPBlocked bool   `json:"udpBlocked,omitempty"`
}

// Msg is one signalling message.
type Msg struct {
	T      string   `json:"t"`
	Call   string   `json:"call"`
	NAT    *NAT     `json:"nat,omitempty"`
	Ufrag  string   `json:"ufrag,omitempty"`
	Pwd    string   `json:"pwd,omitempty"`
	Cands  []string `json:"cands,omitempty"`
	Relays []string `json:"relays,omitempty"` // the sender's relayed transport addresses
	Public []string `json:"public,omitempty"` // the sender's public IPs, for TURN permissions
	TCP    string   `json:"tcp,omitempty"`    // the sender's TCP mapping (ip:port), for TCP simultaneous open
	Eph    []byte   `json:"eph,omitempty"`    // X25519 public key, invite and accept
	Box    []byte   `json:"box,omitempty"`    // invite: the caller's e2ee box key, for the callee's answers
	Reason string   `json:"reason,omitempty"`
	Conf   []string `json:"conf,omitempty"` // conference: everyone else invited
	// Punch times the hole punch (candidate messages only): the caller sends "ping", the
	// callee answers "pong", and the caller, now knowing the signalling round trip, sends
	// "go" and starts its connectivity checks half a round trip later, as the callee
	// starts its own on "go". Started together, each side's first packets leave its own
	// NAT before the other's arrive there; a packet that arrives first leaves a conntrack
	// entry that makes a Linux NAT map the later outgoing flow to another port.
	Punch string `json:"punch,omitempty"`
}

// Punch timing steps.
const (
	PunchPing = "ping"
	PunchPong = "pong"
	PunchGo   = "go"
)

// Encode validates m and returns its encoding.
func Encode(m *Msg) ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	b, err := json.Marshal(m)
	if err != nil {
		return nil, err
	}
	if len(b) > MaxLen {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(b), MaxLen)
	}
	return b, nil
}

// Decode parses and validates one message.
func Decode(b []byte) (*Msg, error) {
	if len(b) > MaxLen {
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(b), MaxLen)
	}
	d := json.NewDecoder(bytes.NewReader(b))
	var m Msg
	if err := d.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: trailing data", ErrMalformed)
	}
	if err := m.validate(); err != nil {
		return nil, err
	}
	return &m, nil
}

func (m *Msg) validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, a...)...)
	}
	switch m.T {
	case TInvite, TAccept, TReject, TCandidate, THangup:
	default:
		return bad("unknown type %q", m.T)
	}
	if len(m.Call) != callIDHexLen {
		return bad("call id %q", m.Call)
	}
	if _, err := hex.DecodeString(m.Call); err != nil {
		return bad("call id %q", m.Call)
	}
	if (m.T == TInvite || m.T == TAccept) && len(m.Eph) != x25519.PointSize {
		return bad("%s needs a %d-byte key, got %d", m.T, x25519.PointSize, len(m.Eph))
	}
	if len(m.Box) != 0 && (m.T != TInvite || len(m.Box) != x25519.PointSize) {
		return bad("box key of %d bytes in a %s", len(m.Box), m.T)
	}
	if m.T != TInvite && m.T != TAccept && len(m.Eph) != 0 {
		return bad("key in a %s", m.T)
	}
	for _, s := range []string{m.Ufrag, m.Pwd, m.Reason} {
		if len(s) > maxFieldLen {
			return bad("field of %d bytes", len(s))
		}
	}
	if m.NAT != nil && (len(m.NAT.Classic) > maxFieldLen || len(m.NAT.Mapping) > maxFieldLen || len(m.NAT.Filtering) > maxFieldLen) {
		return bad("nat field too long")
	}
	switch m.Punch {
	case "":
	case PunchPing, PunchPong, PunchGo:
		if m.T != TCandidate {
			return bad("punch step in a %s", m.T)
		}
	default:
		return bad("unknown punch step %q", m.Punch)
	}
	if len(m.Cands) > MaxCands {
		return bad("%d candidates, limit %d", len(m.Cands), MaxCands)
	}
	for _, c := range m.Cands {
		if len(c) == 0 || len(c) > MaxCandLen {
			return bad("candidate of %d bytes", len(c))
		}
	}
	if len(m.Relays) > MaxRelays {
		return bad("%d relays, limit %d", len(m.Relays), MaxRelays)
	}
	for _, r := range m.Relays {
		if _, err := netip.ParseAddrPort(r); err != nil {
			return bad("relay %q: %v", r, err)
		}
	}
	if m.TCP != "" {
		if _, err := netip.ParseAddrPort(m.TCP); err != nil {
			return bad("tcp %q: %v", m.TCP, err)
		}
	}
	if len(m.Public) > MaxPublic {
		return bad("%d public addresses, limit %d", len(m.Public), MaxPublic)
	}
	for _, p := range m.Public {
		if _, err := netip.ParseAddr(p); err != nil {
			return bad("public address %q: %v", p, err)
		}
	}
	if len(m.Conf) > MaxConf {
		return bad("%d conference members, limit %d", len(m.Conf), MaxConf)
	}
	for _, n := range m.Conf {
		if len(n) == 0 || len(n) > 64 {
			return bad("conference member name of %d bytes", len(n))
		}
	}
	return nil
}

// MediaKey derives the call's 32-byte media key from this side's ephemeral private key
// and the peer's ephemeral public key, bound to the call id, both credentials and both
// ephemeral public keys, in caller-then-callee order so both sides derive the same key.
func MediaKey(priv, peerPub []byte, callID string, callerCred, calleeCred, callerEph, calleeEph []byte) ([32]byte, error) {
	var key [32]byte
	secret, err := x25519.X25519(priv, peerPub)
	if err != nil {
		return key, fmt.Errorf("callsig: key agreement: %w", err)
	}
	h := sha256.New()
	for _, part := range [][]byte{[]byte(callID), callerCred, calleeCred, callerEph, calleeEph} {
		var n [4]byte
		n[0], n[1], n[2], n[3] = byte(len(part)>>24), byte(len(part)>>16), byte(len(part)>>8), byte(len(part))
		h.Write(n[:])
		h.Write(part)
	}
	r := hkdf.New(sha256.New, secret, h.Sum(nil), []byte("peerline call media key v1"))
	if _, err := io.ReadFull(r, key[:]); err != nil {
		return key, err
	}
	return key, nil
}
