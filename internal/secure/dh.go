package secure

import (
	"crypto/rand"
	"io"

	"filippo.io/edwards25519"
	"github.com/flynn/noise"
	"golang.org/x/crypto/curve25519"
)

// dh25519 is Noise's "25519" DH function (X25519, RFC 7748) with a faster key
// generation. A handshake makes a fresh ephemeral key pair on each side, and
// noise.DH25519 computes its public key with the Montgomery ladder on the base point,
// as for any point. Multiplying the base point with edwards25519's precomputed tables
// and mapping the result to its Montgomery u-coordinate gives the same key in about a
// quarter of the time (go test ./internal/secure -bench KeyGen): the key generation was
// a tenth of a reboot storm's CPU in the simulation. DH itself is noise.DH25519's.
type dh25519 struct{}

var _ noise.DHFunc = dh25519{}

// GenerateKeypair implements noise.DHFunc.
func (dh25519) GenerateKeypair(rng io.Reader) (noise.DHKey, error) {
	if rng == nil {
		rng = rand.Reader
	}
	priv := make([]byte, curve25519.ScalarSize)
	if _, err := io.ReadFull(rng, priv); err != nil {
		return noise.DHKey{}, err
	}
	return noise.DHKey{Private: priv, Public: x25519Base(priv)}, nil
}

// x25519Base is X25519(priv, 9), the public key of priv: the X25519 clamping of priv,
// reduced modulo the base point's order (which does not change the product), times the
// edwards25519 base point, whose u-coordinate on Curve25519 is 9.
func x25519Base(priv []byte) []byte {
	s, err := edwards25519.NewScalar().SetBytesWithClamping(priv)
	if err != nil {
		panic("secure: " + err.Error()) // only for a length other than 32
	}
	return new(edwards25519.Point).ScalarBaseMult(s).BytesMontgomery()
}

// DH implements noise.DHFunc.
func (dh25519) DH(priv, pub []byte) ([]byte, error) { return noise.DH25519.DH(priv, pub) }

// DHLen implements noise.DHFunc.
func (dh25519) DHLen() int { return noise.DH25519.DHLen() }

// DHName implements noise.DHFunc.
func (dh25519) DHName() string { return noise.DH25519.DHName() }
