// Package identity holds Peerline's long-term keys and the credentials the login server
// issues.
//
// Every node (login server, supernode, client) has an Ed25519 key pair. The login server's
// public key is pinned in every client's configuration (as Tor ships its directory keys);
// it signs credentials, which bind a name to a public key until an expiry. Peers and
// supernodes verify credentials offline, so an outage of the login server does not stop
// users who are already logged in.
//
// A credential is a fixed binary layout, so that the signed bytes are canonical:
//
//	magic    4   "PLC1"
//	kind     1   1 = user, 2 = supernode
//	nameLen  1   1..64
//	name     nameLen bytes (UTF-8; user names follow the login server's name rules)
//	pubkey   32  Ed25519 public key of the holder
//	issued   8   unix seconds, big endian
//	expires  8   unix seconds, big endian
//	sig      64  Ed25519 signature by the login server over
//	             "peerline credential v1\x00" || all preceding bytes
package identity

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/peerline/peerline/internal/atomicfile"
	"github.com/peerline/peerline/internal/sig"
)

// Kind says what a credential admits its holder as.
type Kind uint8

// Kinds of credential.
const (
	KindUser      Kind = 1
	KindSupernode Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindUser:
		return "user"
	case KindSupernode:
		return "supernode"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// MaxNameLen bounds the name field of a credential.
const MaxNameLen = 64

const (
	magic        = "PLC1"
	sigContext   = "peerline credential v1\x00"
	fixedLen     = 4 + 1 + 1 + ed25519.PublicKeySize + 8 + 8 + ed25519.SignatureSize
	maxCredLen   = fixedLen + MaxNameLen
	keyFileMagic = "peerline-ed25519-seed "
)

// Errors of credential checks. ErrExpired and ErrBadSignature are distinct so that servers
// can count them apart and tell users what to do.
var (
	ErrMalformed    = errors.New("identity: malformed credential")
	ErrBadSignature = errors.New("identity: credential signature does not verify (forged, or issued by another login server)")
	ErrExpired      = errors.New("identity: credential expired; log in again with your password")
	ErrWrongKind    = errors.New("identity: credential of the wrong kind")
	ErrKeyMismatch  = errors.New("identity: credential belongs to another key")
	ErrBadKey       = errors.New("identity: malformed key")
)

// Credential is a parsed credential.
type Credential struct {
	Kind    Kind
	Name    string
	PubKey  ed25519.PublicKey
	Issued  time.Time
	Expires time.Time
	Sig     []byte
}

// Sign encodes c and signs it with the issuer's key; c.Sig is ignored.
func Sign(issuer ed25519.PrivateKey, c Credential) ([]byte, error) {
	if c.Kind != KindUser && c.Kind != KindSupernode {
		return nil, fmt.Errorf("%w: kind %d", ErrMalformed, c.Kind)
	}
	if len(c.Name) == 0 || len(c.Name) > MaxNameLen {
		return nil, fmt.Errorf("%w: name length %d", ErrMalformed, len(c.Name))
	}
	if len(c.PubKey) != ed25519.PublicKeySize {
		return nil, ErrBadKey
	}
	b := make([]byte, 0, fixedLen+len(c.Name))
	b = append(b, magic...)
	b = append(b, byte(c.Kind), byte(len(c.Name)))
	b = append(b, c.Name...)
	b = append(b, c.PubKey...)
	b = binary.BigEndian.AppendUint64(b, uint64(c.Issued.Unix()))
	b = binary.BigEndian.AppendUint64(b, uint64(c.Expires.Unix()))
	return append(b, sig.Sign(issuer, signedBytes(b))...), nil
}

func signedBytes(body []byte) []byte {
	return append([]byte(sigContext), body...)
}

// Parse decodes a credential without checking its signature or expiry. Use Verify for
// anything received from the network.
func Parse(b []byte) (Credential, error) {
	if len(b) < fixedLen || len(b) > maxCredLen {
		return Credential{}, fmt.Errorf("%w: length %d", ErrMalformed, len(b))
	}
	if string(b[:4]) != magic {
		return Credential{}, fmt.Errorf("%w: bad magic", ErrMalformed)
	}
	kind, nameLen := Kind(b[4]), int(b[5])
	if kind != KindUser && kind != KindSupernode {
		return Credential{}, fmt.Errorf("%w: kind %d", ErrMalformed, kind)
	}
	if nameLen == 0 || nameLen > MaxNameLen || len(b) != fixedLen+nameLen {
		return Credential{}, fmt.Errorf("%w: name length %d", ErrMalformed, nameLen)
	}
	p := b[6:]
	name := string(p[:nameLen])
	p = p[nameLen:]
	c := Credential{
		Kind:    kind,
		Name:    name,
		PubKey:  ed25519.PublicKey(bytes.Clone(p[:ed25519.PublicKeySize])),
		Issued:  time.Unix(int64(binary.BigEndian.Uint64(p[32:40])), 0).UTC(),
		Expires: time.Unix(int64(binary.BigEndian.Uint64(p[40:48])), 0).UTC(),
		Sig:     bytes.Clone(p[48:]),
	}
	return c, nil
}

// Verify parses b and checks that the issuer signed it and that it has not expired at now.
func Verify(b []byte, issuer ed25519.PublicKey, now time.Time) (Credential, error) {
	c, err := Parse(b)
	if err != nil {
		return Credential{}, err
	}
	if len(issuer) != ed25519.PublicKeySize {
		return Credential{}, ErrBadKey
	}
	if !sig.Verify(issuer, signedBytes(b[:len(b)-ed25519.SignatureSize]), c.Sig) {
		return Credential{}, ErrBadSignature
	}
	if !now.Before(c.Expires) {
		return Credential{}, fmt.Errorf("%w (expired %s)", ErrExpired, c.Expires.Format(time.RFC3339))
	}
	return c, nil
}

// VerifyHolder is Verify plus the checks every server makes on a peer that presented
// credential b over a channel authenticated with peerKey: the kind must match and the
// credential must name that very key.
func VerifyHolder(b []byte, issuer, peerKey ed25519.PublicKey, kind Kind, now time.Time) (Credential, error) {
	c, err := Verify(b, issuer, now)
	if err != nil {
		return Credential{}, err
	}
	return checkHolder(c, peerKey, kind)
}

// VerifyHolderChecked is VerifyHolder without the signature's check, for credential
// bytes whose signature was checked before (a client keeps the supernode credential it
// checked with the supernode's session ticket): the expiry, the kind and the key are
// checked as VerifyHolder does.
func VerifyHolderChecked(b []byte, peerKey ed25519.PublicKey, kind Kind, now time.Time) (Credential, error) {
	c, err := Parse(b)
	if err != nil {
		return Credential{}, err
	}
	if !now.Before(c.Expires) {
		return Credential{}, fmt.Errorf("%w (expired %s)", ErrExpired, c.Expires.Format(time.RFC3339))
	}
	return checkHolder(c, peerKey, kind)
}

// checkHolder is VerifyHolder's checks beyond Verify's.
func checkHolder(c Credential, peerKey ed25519.PublicKey, kind Kind) (Credential, error) {
	if c.Kind != kind {
		return Credential{}, fmt.Errorf("%w: got %s, want %s", ErrWrongKind, c.Kind, kind)
	}
	if !c.PubKey.Equal(peerKey) {
		return Credential{}, ErrKeyMismatch
	}
	return c, nil
}

// EncodeKey renders a public key as text for flags, files and logs (unpadded base64url).
func EncodeKey(k ed25519.PublicKey) string { return base64.RawURLEncoding.EncodeToString(k) }

// DecodeKey parses the form written by EncodeKey.
func DecodeKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.RawURLEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: want %d bytes of unpadded base64url", ErrBadKey, ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// LoadOrCreateKey reads the private key kept at path, creating a fresh one (mode 0600,
// written atomically) when the file does not exist.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		s, ok := strings.CutPrefix(strings.TrimSpace(string(b)), keyFileMagic)
		seed, derr := base64.RawURLEncoding.DecodeString(s)
		if !ok || derr != nil || len(seed) != ed25519.SeedSize {
			return nil, fmt.Errorf("%w: %s is not a peerline key file; move it away to create a new key", ErrBadKey, path)
		}
		return ed25519.NewKeyFromSeed(seed), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	data := keyFileMagic + base64.RawURLEncoding.EncodeToString(priv.Seed()) + "\n"
	if err := atomicfile.WriteFile(path, []byte(data), 0o600); err != nil {
		return nil, err
	}
	return priv, nil
}
