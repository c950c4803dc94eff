package x25519

import (
	"bytes"
	"crypto/rand"
	"testing"

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
		if got, err := PublicKey(k); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("key %x: public %x, X25519 gives %x", k, got, want)
		}
	}
	for _, k := range keys[:10] {
		got, err := X25519(k, Basepoint)
		want, _ := curve25519.X25519(k, curve25519.Basepoint)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("X25519(%x, 9) = %x, %v; want %x", k, got, err, want)
		}
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
		got, err := X25519(priv, pub)
		if (err != nil) != (wantErr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("X25519(%x, %x) = %x, %v; X25519 gives %x, %v", priv, pub, got, err, want, wantErr)
		}
	}
	priv := make([]byte, 32)
	rand.Read(priv)
	// Low-order points (RFC 7748 section 6.1's check): 0, 1, and p-1 (encoded).
	pMinus1 := bytes.Repeat([]byte{0xff}, 32)
	pMinus1[0], pMinus1[31] = 0xec, 0x7f
	for _, low := range [][]byte{make([]byte, 32), append([]byte{1}, make([]byte, 31)...), pMinus1} {
		if _, err := X25519(priv, low); err == nil {
			t.Fatalf("X25519 with the low-order point %x: no error", low)
		}
		if _, err := curve25519.X25519(priv, low); err == nil {
			t.Fatalf("X25519 with the low-order point %x: no error either", low)
		}
	}
	if _, err := X25519(priv[:31], priv); err == nil {
		t.Fatal("X25519 with a 31-byte key: no error")
	}
}

// BenchmarkX25519 compares a DH and a public key with golang.org/x/crypto/curve25519's
// (go test ./internal/x25519 -run '^$' -bench .). On the README's 2-core machine, beside
// a test run (so the ratios count): DH 129 against 81 µs, public key 163 against 39 µs.
func BenchmarkX25519(b *testing.B) {
	priv, other := make([]byte, 32), make([]byte, 32)
	rand.Read(priv)
	rand.Read(other)
	pub, _ := curve25519.X25519(other, curve25519.Basepoint)
	for _, f := range []struct {
		name string
		f    func(scalar, point []byte) ([]byte, error)
	}{{"curve25519", curve25519.X25519}, {"x25519", X25519}} {
		b.Run("dh/"+f.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := f.f(priv, pub); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("public/"+f.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := f.f(priv, Basepoint); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
