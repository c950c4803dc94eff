package sig

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"testing"
)

func TestSignMatchesStdlib(t *testing.T) {
	for i := 0; i < 200; i++ {
		pub, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		msg := make([]byte, i)
		rand.Read(msg)
		got, want := Sign(priv, msg), ed25519.Sign(priv, msg)
		if !bytes.Equal(got, want) {
			t.Fatalf("message of %d bytes: signature %x, crypto/ed25519 gives %x", i, got, want)
		}
		if !Verify(pub, msg, got) {
			t.Fatalf("message of %d bytes: own signature refused", i)
		}
	}
}

func TestVerifyMatchesStdlib(t *testing.T) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	other, _, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte("peerline record")
	good := ed25519.Sign(priv, msg)
	// S + L: the same signature with a non-canonical S, which crypto/ed25519 refuses.
	l := []byte{0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14,
		0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10}
	malleable := append([]byte(nil), good...)
	var carry uint16
	for i := 0; i < 32; i++ {
		s := uint16(malleable[32+i]) + uint16(l[i]) + carry
		malleable[32+i], carry = byte(s), s>>8
	}
	cases := map[string]struct {
		pub      ed25519.PublicKey
		msg, sig []byte
	}{
		"valid":           {pub, msg, good},
		"other key":       {other, msg, good},
		"other message":   {pub, []byte("peerline recorD"), good},
		"flipped bit":     {pub, msg, flip(good, 5)},
		"flipped S bit":   {pub, msg, flip(good, 40)},
		"non-canonical S": {pub, msg, malleable},
		"short":           {pub, msg, good[:63]},
		"long":            {pub, msg, append(append([]byte(nil), good...), 0)},
		"empty":           {pub, msg, nil},
		"zero key":        {make([]byte, 32), msg, good},
		"zero signature":  {pub, msg, make([]byte, 64)},
	}
	for name, c := range cases {
		got, want := Verify(c.pub, c.msg, c.sig), ed25519.Verify(c.pub, c.msg, c.sig)
		if got != want {
			t.Errorf("%s: Verify %v, crypto/ed25519 %v", name, got, want)
		}
	}
	if !Verify(pub, msg, good) {
		t.Error("the valid signature was refused")
	}
}

func TestBadKeyLengthPanicsLikeStdlib(t *testing.T) {
	for _, f := range []func(){
		func() { Verify(make([]byte, 31), nil, make([]byte, 64)) },
		func() { Sign(make([]byte, 63), nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Error("no panic on a key of the wrong length")
				}
			}()
			f()
		}()
	}
}

// FuzzVerify holds Verify to crypto/ed25519.Verify on arbitrary keys and signatures.
func FuzzVerify(f *testing.F) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	msg := []byte("seed")
	f.Add([]byte(pub), msg, ed25519.Sign(priv, msg))
	f.Add(make([]byte, 32), msg, make([]byte, 64))
	f.Fuzz(func(t *testing.T, pub, msg, sig []byte) {
		pub = append(pub, make([]byte, PublicKeySize)...)[:PublicKeySize]
		if got, want := Verify(pub, msg, sig), ed25519.Verify(pub, msg, sig); got != want {
			t.Fatalf("Verify(%x, %x, %x) = %v, crypto/ed25519 says %v", pub, msg, sig, got, want)
		}
	})
}

func flip(b []byte, i int) []byte {
	c := append([]byte(nil), b...)
	c[i] ^= 1
	return c
}

var benchMsg = bytes.Repeat([]byte("r"), 160)

func BenchmarkSign(b *testing.B) {
	_, priv, _ := ed25519.GenerateKey(rand.Reader)
	b.Run("sig", func(b *testing.B) {
		for b.Loop() {
			Sign(priv, benchMsg)
		}
	})
	b.Run("crypto-ed25519", func(b *testing.B) {
		for b.Loop() {
			ed25519.Sign(priv, benchMsg)
		}
	})
}

func BenchmarkVerify(b *testing.B) {
	pub, priv, _ := ed25519.GenerateKey(rand.Reader)
	s := ed25519.Sign(priv, benchMsg)
	b.Run("sig", func(b *testing.B) {
		for b.Loop() {
			Verify(pub, benchMsg, s)
		}
	})
	b.Run("crypto-ed25519", func(b *testing.B) {
		for b.Loop() {
			ed25519.Verify(pub, benchMsg, s)
		}
	})
}
