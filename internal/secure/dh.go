package secure

import (
	"crypto/rand"
	"io"

	"github.com/flynn/noise"

	"github.com/peerline/peerline/internal/x25519"
)

// dh25519 is Noise's "25519" DH function (X25519, RFC 7748) at half the cost of
// noise.DH25519 on this Go: noise.DH25519 goes through golang.org/x/crypto/curve25519,
// which costs two ladders a DH, and dh25519 through internal/x25519, one. An XX
// handshake then costs each side about 3.3 ladders instead of 7 (go test
// ./internal/secure -bench 'KeyGen|DH'); X25519 was 15% of a cold start's CPU in the
// simulation at 100,000 users.
type dh25519 struct{}

var _ noise.DHFunc = dh25519{}

// GenerateKeypair implements noise.DHFunc.
func (dh25519) GenerateKeypair(rng io.Reader) (noise.DHKey, error) {
	if rng == nil {
		rng = rand.Reader
	}
	priv := make([]byte, x25519.ScalarSize)
	if _, err := io.ReadFull(rng, priv); err != nil {
		return noise.DHKey{}, err
	}
	pub, err := x25519.PublicKey(priv)
	if err != nil {
		return noise.DHKey{}, err
	}
	return noise.DHKey{Private: priv, Public: pub}, nil
}

// DH implements noise.DHFunc. Like X25519 in crypto/ecdh it refuses a low-order
// point (the all-zero result).
func (dh25519) DH(priv, pub []byte) ([]byte, error) { return x25519.X25519(priv, pub) }

// DHLen implements noise.DHFunc.
func (dh25519) DHLen() int { return noise.DH25519.DHLen() }

// DHName implements noise.DHFunc.
func (dh25519) DHName() string { return noise.DH25519.DHName() }
