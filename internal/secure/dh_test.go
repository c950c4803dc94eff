package secure

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/flynn/noise"
	"golang.org/x/crypto/curve25519"
)

// TestGenerateKeypairMatchesX25519: the Noise DH function's key pairs and DH are
// X25519's (internal/x25519 checks itself against crypto/ecdh).
func TestGenerateKeypairMatchesX25519(t *testing.T) {
	kp, err := dh25519{}.GenerateKeypair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := curve25519.X25519(kp.Private, curve25519.Basepoint); !bytes.Equal(kp.Public, want) {
		t.Fatalf("GenerateKeypair: public %x, X25519 gives %x", kp.Public, want)
	}
	other, _ := dh25519{}.GenerateKeypair(rand.Reader)
	got, err := dh25519{}.DH(kp.Private, other.Public)
	want, _ := curve25519.X25519(kp.Private, other.Public)
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("DH = %x, %v; X25519 gives %x", got, err, want)
	}
}

// BenchmarkDH compares one X25519 DH (go test ./internal/secure -run '^$' -bench DH).
// On the 2-core machine of the README's figures (beside a simulation run, so the ratio
// counts): through crypto/ecdh (noise.DH25519, two ladders) 133 µs, the ladder 44 µs.
func BenchmarkDH(b *testing.B) {
	priv, other := make([]byte, 32), make([]byte, 32)
	rand.Read(priv)
	rand.Read(other)
	pub, _ := curve25519.X25519(other, curve25519.Basepoint)
	for _, dh := range []struct {
		name string
		f    noise.DHFunc
	}{{"ecdh", noise.DH25519}, {"ladder", dh25519{}}} {
		b.Run(dh.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := dh.f.DH(priv, pub); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkKeyGen compares the ephemeral key generation of a handshake:
//
//	go test ./internal/secure -run '^$' -bench KeyGen
//
// On the 2-core machine of the README's figures (beside a simulation run, so the ratio
// counts): noise.DH25519 (two ladders through crypto/ecdh) 91-115 µs, fixed-base
// 26-28 µs.
func BenchmarkKeyGen(b *testing.B) {
	for _, dh := range []struct {
		name string
		f    noise.DHFunc
	}{{"ecdh", noise.DH25519}, {"fixed-base", dh25519{}}} {
		b.Run(dh.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := dh.f.GenerateKeypair(rand.Reader); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
