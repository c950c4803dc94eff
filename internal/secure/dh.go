package secure

import (
	"crypto/rand"
	"errors"
	"io"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
	"github.com/flynn/noise"
	"golang.org/x/crypto/curve25519"
)

// dh25519 is Noise's "25519" DH function (X25519, RFC 7748) at half the cost of
// noise.DH25519 on this Go. Both of noise.DH25519's operations go through
// golang.org/x/crypto/curve25519.X25519 and so through crypto/ecdh, whose
// NewPrivateKey computes the key's public key with a Montgomery ladder of its own: a DH
// costs two ladders, and a key generation a ladder for the public key. Here a key
// generation multiplies the base point with edwards25519's precomputed tables and maps
// the result to its Montgomery u-coordinate (about a quarter of a ladder), and a DH is
// one ladder (x25519). An XX handshake then costs each side about 3.3 ladders instead
// of 7 (go test ./internal/secure -bench 'KeyGen|DH'); X25519 was 15% of a cold
// start's CPU in the simulation at 100,000 users. Both are checked against crypto/ecdh.
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

// DH implements noise.DHFunc. Like X25519 in crypto/ecdh it refuses a low-order
// point (the all-zero result).
func (dh25519) DH(priv, pub []byte) ([]byte, error) {
	if len(priv) != curve25519.ScalarSize || len(pub) != curve25519.PointSize {
		return nil, errors.New("secure: X25519 key of the wrong length")
	}
	var out [32]byte
	x25519(&out, priv, pub)
	var acc byte
	for _, b := range out {
		acc |= b
	}
	if acc == 0 {
		return nil, errors.New("secure: X25519 with a low-order point")
	}
	return out[:], nil
}

// x25519 is the Montgomery ladder of RFC 7748, section 5, constant-time, as Go's
// crypto/ecdh has it (x25519ScalarMult, Copyright 2022 The Go Authors, BSD-style
// license), over filippo.io/edwards25519's field arithmetic, which is Go's own.
func x25519(dst *[32]byte, scalar, point []byte) {
	var e [32]byte
	copy(e[:], scalar)
	e[0] &= 248
	e[31] &= 127
	e[31] |= 64

	var x1, x2, z2, x3, z3, tmp0, tmp1 field.Element
	if _, err := x1.SetBytes(point); err != nil {
		panic("secure: " + err.Error()) // only for a length other than 32
	}
	x2.One()
	x3.Set(&x1)
	z3.One()

	swap := 0
	for pos := 254; pos >= 0; pos-- {
		b := e[pos/8] >> uint(pos&7)
		b &= 1
		swap ^= int(b)
		x2.Swap(&x3, swap)
		z2.Swap(&z3, swap)
		swap = int(b)

		tmp0.Subtract(&x3, &z3)
		tmp1.Subtract(&x2, &z2)
		x2.Add(&x2, &z2)
		z2.Add(&x3, &z3)
		z3.Multiply(&tmp0, &x2)
		z2.Multiply(&z2, &tmp1)
		tmp0.Square(&tmp1)
		tmp1.Square(&x2)
		x3.Add(&z3, &z2)
		z2.Subtract(&z3, &z2)
		x2.Multiply(&tmp1, &tmp0)
		tmp1.Subtract(&tmp1, &tmp0)
		z2.Square(&z2)

		z3.Mult32(&tmp1, 121666)
		x3.Square(&x3)
		tmp0.Add(&tmp0, &z3)
		z3.Multiply(&x1, &z2)
		z2.Multiply(&tmp1, &tmp0)
	}

	x2.Swap(&x3, swap)
	z2.Swap(&z3, swap)

	z2.Invert(&z2)
	x2.Multiply(&x2, &z2)
	copy(dst[:], x2.Bytes())
}

// DHLen implements noise.DHFunc.
func (dh25519) DHLen() int { return noise.DH25519.DHLen() }

// DHName implements noise.DHFunc.
func (dh25519) DHName() string { return noise.DH25519.DHName() }
