// Package x25519 is X25519 (RFC 7748) at half the cost of golang.org/x/crypto/curve25519
// on this Go, with the same contract. Through crypto/ecdh, curve25519.X25519 computes the
// scalar's own public key with a Montgomery ladder before it computes the product, so a
// DH costs two ladders and a public key a ladder and more. Here a public key multiplies
// the base point with edwards25519's precomputed tables and maps the result to its
// Montgomery u-coordinate (about a quarter of a ladder), and a DH is one ladder (go test
// ./internal/x25519 -bench .). Both are checked against crypto/ecdh. The overlay's Noise
// channel (internal/secure), end-to-end encrypted messages (internal/e2ee) and a call's
// media key agreement (internal/callsig) use it.
package x25519

import (
	"bytes"
	"errors"

	"filippo.io/edwards25519"
	"filippo.io/edwards25519/field"
)

// Sizes of scalars and points, as in curve25519.
const (
	ScalarSize = 32
	PointSize  = 32
)

// Basepoint is the canonical Curve25519 generator, u = 9.
var Basepoint = []byte{9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

var (
	errLength   = errors.New("x25519: a scalar and a point are 32 bytes")
	errLowOrder = errors.New("x25519: bad input point: low order point")
)

// X25519 returns the product of scalar and point, as curve25519.X25519 does: a point
// of low order (an all-zero result) is refused. With point the base point it is
// PublicKey.
func X25519(scalar, point []byte) ([]byte, error) {
	if len(scalar) != ScalarSize || len(point) != PointSize {
		return nil, errLength
	}
	if bytes.Equal(point, Basepoint) {
		return PublicKey(scalar)
	}
	var out [32]byte
	ladder(&out, scalar, point)
	var acc byte
	for _, b := range out {
		acc |= b
	}
	if acc == 0 {
		return nil, errLowOrder
	}
	return out[:], nil
}

// PublicKey is X25519(priv, 9), the public key of priv: the X25519 clamping of priv,
// reduced modulo the base point's order (which does not change the product), times the
// edwards25519 base point, whose u-coordinate on Curve25519 is 9.
func PublicKey(priv []byte) ([]byte, error) {
	s, err := edwards25519.NewScalar().SetBytesWithClamping(priv)
	if err != nil {
		return nil, errLength
	}
	return new(edwards25519.Point).ScalarBaseMult(s).BytesMontgomery(), nil
}

// ladder is the Montgomery ladder of RFC 7748, section 5, constant-time, as Go's
// crypto/ecdh has it (x25519ScalarMult, Copyright 2022 The Go Authors, BSD-style
// license), over filippo.io/edwards25519's field arithmetic, which is Go's own.
func ladder(dst *[32]byte, scalar, point []byte) {
	var e [32]byte
	copy(e[:], scalar)
	e[0] &= 248
	e[31] &= 127
	e[31] |= 64

	var x1, x2, z2, x3, z3, tmp0, tmp1 field.Element
	if _, err := x1.SetBytes(point); err != nil {
		panic("x25519: " + err.Error()) // only for a length other than 32
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
