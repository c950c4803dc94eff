// Package sig makes and checks the Ed25519 signatures (RFC 8032, pure Ed25519) of
// credentials, index records, handshake payloads, departures and end-to-end messages,
// at about half the cost of crypto/ed25519 on this Go, with its contract: keys and
// signatures are crypto/ed25519's types and bytes, a signature is the same bytes, and
// Verify accepts exactly what crypto/ed25519.Verify accepts (cofactorless, canonical S,
// any encoding of R and A that it takes).
//
// Underneath is github.com/oasisprotocol/curve25519-voi, whose field arithmetic has an
// AVX2 backend on amd64 and whose VerifyOptionsStdLib match crypto/ed25519's checks. On
// a 2-core AMD EPYC (go test ./internal/sig -bench .): Sign 17.7 against 33.5 µs, Verify
// 43.5 against 74.3 µs. Each Ed25519 check is a double scalar multiplication, and a
// supernode makes about ten of them for every user that reattaches in a reboot storm
// (the Noise handshake's two, the credential, the record at each holder, signed
// departures), which made them the largest single cost of the storm after the garbage
// collector. The tests hold both implementations to each other on valid, forged and
// random signatures, and a fuzz target does the same on arbitrary bytes.
package sig

import (
	"crypto/ed25519"

	voi "github.com/oasisprotocol/curve25519-voi/primitives/ed25519"
)

// Sizes, as in crypto/ed25519.
const (
	PublicKeySize  = ed25519.PublicKeySize
	PrivateKeySize = ed25519.PrivateKeySize
	SignatureSize  = ed25519.SignatureSize
)

var stdlib = &voi.Options{Verify: voi.VerifyOptionsStdLib}

// Sign signs msg with priv. Like crypto/ed25519.Sign it panics if priv is not
// PrivateKeySize bytes.
func Sign(priv ed25519.PrivateKey, msg []byte) []byte {
	return voi.Sign(voi.PrivateKey(priv), msg)
}

// Verify reports whether sig is pub's valid signature of msg. Like
// crypto/ed25519.Verify it panics if pub is not PublicKeySize bytes.
func Verify(pub ed25519.PublicKey, msg, sig []byte) bool {
	return voi.VerifyWithOptions(voi.PublicKey(pub), msg, sig, stdlib)
}
