package secure

import (
	"bytes"
	"crypto/rand"
	"testing"

	"github.com/flynn/noise"
	"golang.org/x/crypto/curve25519"
)

// TestKeyGenMatchesX25519: the fixed-base key generation gives X25519(priv, 9) for
// random keys and for the edge cases of the clamping (all zeros, all ones).
func TestKeyGenMatchesX25519(t *testing.T) {
	keys := [][]byte{make([]byte, 32), bytes.Repeat([]byte{0xff}, 32)}
	for range 1000 {
		k := make([]byte, 32)
		rand.Read(k)
		keys = append(keys, k)
	}
	for _, k := range keys {
		want, err := curve25519.X25519(k, curve25519.Basepoint)
		if err != nil {
			t.Fatal(err)
		}
		if got := x25519Base(k); !bytes.Equal(got, want) {
			t.Fatalf("key %x: public %x, X25519 gives %x", k, got, want)
		}
	}
	kp, err := dh25519{}.GenerateKeypair(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := curve25519.X25519(kp.Private, curve25519.Basepoint); !bytes.Equal(kp.Public, want) {
		t.Fatalf("GenerateKeypair: public %x, X25519 gives %x", kp.Public, want)
	}
}

// TestDHMatchesX25519: the ladder gives crypto/ecdh's X25519 for random keys against
// real public keys and against arbitrary 32-byte strings (points on the twist,
// non-canonical encodings, the top bit set), and refuses what it refuses: low-order
// points, whose result is zero.
func TestDHMatchesX25519(t *testing.T) {
	for i := range 3000 {
		priv, pub := make([]byte, 32), make([]byte, 32)
		rand.Read(priv)
		if i%2 == 0 {
			rand.Read(pub)
		} else {
			other := make([]byte, 32)
			rand.Read(other)
			pub, _ = curve25519.X25519(other, curve25519.Basepoint)
		}
		want, wantErr := curve25519.X25519(priv, pub)
		got, err := dh25519{}.DH(priv, pub)
		if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("DH(%x, %x) = %x, %v; X25519 gives %x, %v", priv, pub, got, err, want, wantErr)
		}
	}
	priv := make([]byte, 32)
	rand.Read(priv)
	// Low-order points (RFC 7748 section 6.1's check): 0, 1, and p-1 (encoded).
	pMinus1 := bytes.Repeat([]byte{0xff}, 32)
	pMinus1[0], pMinus1[31] = 0xec, 0x7f
	for _, low := range [][]byte{make([]byte, 32), append([]byte{1}, make([]byte, 31)...), pMinus1} {
		if _, err := (dh25519{}).DH(priv, low); err == nil {
			t.Fatalf("DH with the low-order point %x: no error", low)
		}
		if _, err := curve25519.X25519(priv, low); err == nil {
			t.Fatalf("X25519 with the low-order point %x: no error either", low)
		}
	}
	if _, err := (dh25519{}).DH(priv[:31], priv); err == nil {
		t.Fatal("DH with a 31-byte key: no error")
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
