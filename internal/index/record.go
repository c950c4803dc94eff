// Package index is the distributed user index of the supernode layer, without any I/O:
// the signed presence records users publish, the consistent-hash ring that says which
// supernodes hold a name, and the store each holder keeps.
//
// A record says where a user is now. The user's client signs it with the key its
// credential names, so no supernode can forge or alter where a user is; holders verify the
// signature and the credential (offline, against the pinned login server key) before they
// store anything. Records carry a sequence number (newer replaces older) and a short
// expiry that the user's keep-alives push forward, so a record of a vanished user dies by
// itself.
//
// Record layout (integers big endian; "str8" is a 1-byte length then bytes, "str16" a
// 2-byte length then bytes):
//
//	magic      4    "PLR1"
//	flags      1    bit 0: offline (a signed log-off); other bits zero
//	name       str8
//	credential str16  the user's credential (package identity)
//	supernode  str8   id of the supernode the user is attached to
//	snaddr     str8   its address
//	nat        str8   the user's NAT type in classic words
//	boxkey     32     X25519 key for end-to-end messages to this user
//	candidates 1 + n*str8   transport addresses for calls, at most 16
//	blocked    1 + n*str8   names this user has blocked, at most 200
//	seq        8    increases with every record the user signs
//	expires    8    unix milliseconds
//	sig        64   Ed25519 by the user over "peerline record v1\x00" || all preceding bytes
package index

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/sig"
)

// Limits of a record.
const (
	MaxCandidates = 16
	MaxBlocked    = 200
	MaxRecordLen  = 16 << 10
	// MaxTTL bounds how far in the future a record may expire, so that a record cannot
	// outlive its user by more than this.
	MaxTTL = 10 * time.Minute
)

const (
	recordMagic   = "PLR1"
	recordContext = "peerline record v1\x00"
	flagOffline   = 1
)

// Errors of record checks.
var (
	ErrMalformed    = errors.New("index: malformed record")
	ErrBadSignature = errors.New("index: record signature does not verify")
	ErrExpired      = errors.New("index: record expired")
	ErrTooLong      = errors.New("index: record expires too far in the future")
	ErrNameMismatch = errors.New("index: record name differs from its credential")
	ErrStale        = errors.New("index: an equal or newer record is already held")
)

// Record is a user's signed statement of where they are.
type Record struct {
	Name       string
	Offline    bool // a signed log-off: the user left cleanly
	Credential []byte
	Supernode  string
	SNAddr     string
	NAT        string
	BoxKey     [32]byte
	Candidates []string
	Blocked    []string
	Seq        uint64
	Expires    time.Time
}

// Sign encodes r and signs it with the user's key.
func Sign(key ed25519.PrivateKey, r Record) ([]byte, error) {
	if len(r.Candidates) > MaxCandidates || len(r.Blocked) > MaxBlocked {
		return nil, fmt.Errorf("%w: too many candidates or blocked names", ErrMalformed)
	}
	b := make([]byte, 0, 512)
	b = append(b, recordMagic...)
	var flags byte
	if r.Offline {
		flags |= flagOffline
	}
	b = append(b, flags)
	var err error
	for _, f := range []struct {
		s    string
		wide bool
	}{{r.Name, false}, {string(r.Credential), true}, {r.Supernode, false}, {r.SNAddr, false}, {r.NAT, false}} {
		if b, err = appendStr(b, f.s, f.wide); err != nil {
			return nil, err
		}
	}
	b = append(b, r.BoxKey[:]...)
	for _, list := range [][]string{r.Candidates, r.Blocked} {
		b = append(b, byte(len(list)))
		for _, s := range list {
			if b, err = appendStr(b, s, false); err != nil {
				return nil, err
			}
		}
	}
	b = binary.BigEndian.AppendUint64(b, r.Seq)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Expires.UnixMilli()))
	b = append(b, sig.Sign(key, append([]byte(recordContext), b...))...)
	if len(b) > MaxRecordLen {
		return nil, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	return b, nil
}

func appendStr(b []byte, s string, wide bool) ([]byte, error) {
	if wide {
		if len(s) > 0xffff {
			return nil, fmt.Errorf("%w: field too long", ErrMalformed)
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
	} else {
		if len(s) > 0xff {
			return nil, fmt.Errorf("%w: field too long", ErrMalformed)
		}
		b = append(b, byte(len(s)))
	}
	return append(b, s...), nil
}

// reader walks a record's bytes; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b) {
		r.err = fmt.Errorf("%w: truncated", ErrMalformed)
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

func (r *reader) u8() int {
	b := r.take(1)
	if b == nil {
		return 0
	}
	return int(b[0])
}

func (r *reader) str(wide bool) string {
	n := 0
	if wide {
		b := r.take(2)
		if b == nil {
			return ""
		}
		n = int(binary.BigEndian.Uint16(b))
	} else {
		n = r.u8()
	}
	return string(r.take(n))
}

func (r *reader) u64() uint64 {
	b := r.take(8)
	if b == nil {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// Parse decodes a record without checking it. Use Verify for anything from the network.
func Parse(b []byte) (Record, error) {
	if len(b) > MaxRecordLen {
		return Record{}, fmt.Errorf("%w: %d bytes", ErrMalformed, len(b))
	}
	if len(b) < len(recordMagic)+ed25519.SignatureSize || string(b[:4]) != recordMagic {
		return Record{}, fmt.Errorf("%w: bad magic or too short", ErrMalformed)
	}
	rd := &reader{b: b[4 : len(b)-ed25519.SignatureSize]}
	var rec Record
	flags := rd.u8()
	if flags&^flagOffline != 0 {
		return Record{}, fmt.Errorf("%w: unknown flags %#x", ErrMalformed, flags)
	}
	rec.Offline = flags&flagOffline != 0
	rec.Name = rd.str(false)
	if c := rd.str(true); c != "" {
		rec.Credential = []byte(c)
	}
	rec.Supernode = rd.str(false)
	rec.SNAddr = rd.str(false)
	rec.NAT = rd.str(false)
	copy(rec.BoxKey[:], rd.take(32))
	for i, list := range []*[]string{&rec.Candidates, &rec.Blocked} {
		n := rd.u8()
		if (i == 0 && n > MaxCandidates) || (i == 1 && n > MaxBlocked) {
			return Record{}, fmt.Errorf("%w: list of %d", ErrMalformed, n)
		}
		for j := 0; j < n && rd.err == nil; j++ {
			*list = append(*list, rd.str(false))
		}
	}
	rec.Seq = rd.u64()
	rec.Expires = time.UnixMilli(int64(rd.u64())).UTC()
	if rd.err != nil {
		return Record{}, rd.err
	}
	if len(rd.b) != 0 {
		return Record{}, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(rd.b))
	}
	if rec.Name == "" {
		return Record{}, fmt.Errorf("%w: no name", ErrMalformed)
	}
	return rec, nil
}

// Verify parses b and checks everything a holder must before storing it: the credential
// was issued by the login server (loginKey) and is unexpired, it names the record's user,
// the user's key signed the record, and the record is unexpired and not too long-lived.
func Verify(b []byte, loginKey ed25519.PublicKey, now time.Time) (Record, error) {
	return verify(b, now, func(cred []byte) (identity.Credential, error) { return identity.Verify(cred, loginKey, now) })
}

// VerifyCached is Verify with the record's credential checked through creds, the cache of
// a holder that sees the same credentials again with every publication.
func VerifyCached(b []byte, creds *identity.Cache, now time.Time) (Record, error) {
	return verify(b, now, func(cred []byte) (identity.Credential, error) { return creds.Verify(cred, now) })
}

func verify(b []byte, now time.Time, verifyCred func([]byte) (identity.Credential, error)) (Record, error) {
	rec, err := Parse(b)
	if err != nil {
		return Record{}, err
	}
	cred, err := verifyCred(rec.Credential)
	if err != nil {
		return Record{}, fmt.Errorf("index: record credential: %w", err)
	}
	if cred.Kind != identity.KindUser || cred.Name != rec.Name {
		return Record{}, ErrNameMismatch
	}
	body := b[:len(b)-ed25519.SignatureSize]
	if !sig.Verify(cred.PubKey, append([]byte(recordContext), body...), b[len(body):]) {
		return Record{}, ErrBadSignature
	}
	if !now.Before(rec.Expires) {
		return Record{}, ErrExpired
	}
	if rec.Expires.Sub(now) > MaxTTL {
		return Record{}, ErrTooLong
	}
	return rec, nil
}

// HasBlocked reports whether the record's user has blocked name.
func (r *Record) HasBlocked(name string) bool { return slices.Contains(r.Blocked, name) }
