package identity

import (
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func newKey(t testing.TB) (ed25519.PublicKey, ed25519.PrivateKey) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return pub, priv
}

func TestSignVerify(t *testing.T) {
	issuerPub, issuer := newKey(t)
	userPub, _ := newKey(t)
	now := time.Unix(1_800_000_000, 0)
	b, err := Sign(issuer, Credential{Kind: KindUser, Name: "alice", PubKey: userPub, Issued: now, Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := VerifyHolder(b, issuerPub, userPub, KindUser, now.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "alice" || !c.Expires.Equal(now.Add(time.Hour)) {
		t.Fatalf("got %+v", c)
	}
	if _, err := Verify(b, issuerPub, now.Add(time.Hour)); !errors.Is(err, ErrExpired) {
		t.Errorf("at expiry: %v, want ErrExpired", err)
	}
	otherPub, other := newKey(t)
	if _, err := Verify(b, otherPub, now); !errors.Is(err, ErrBadSignature) {
		t.Errorf("other issuer: %v", err)
	}
	forged, _ := Sign(other, Credential{Kind: KindUser, Name: "alice", PubKey: userPub, Issued: now, Expires: now.Add(time.Hour)})
	if _, err := Verify(forged, issuerPub, now); !errors.Is(err, ErrBadSignature) {
		t.Errorf("forged: %v", err)
	}
	// Flip every byte in turn: no single change may still verify.
	for i := range b {
		m := append([]byte(nil), b...)
		m[i] ^= 0x01
		if _, err := Verify(m, issuerPub, now); err == nil {
			t.Fatalf("credential with byte %d flipped still verifies", i)
		}
	}
	if _, err := VerifyHolder(b, issuerPub, otherPub, KindUser, now); !errors.Is(err, ErrKeyMismatch) {
		t.Errorf("other holder: %v", err)
	}
	if _, err := VerifyHolder(b, issuerPub, userPub, KindSupernode, now); !errors.Is(err, ErrWrongKind) {
		t.Errorf("wrong kind: %v", err)
	}
}

func TestKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "key")
	k1, err := LoadOrCreateKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := os.Stat(path)
	if st.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v", st.Mode().Perm())
	}
	k2, err := LoadOrCreateKey(path)
	if err != nil || !k1.Equal(k2) {
		t.Fatalf("reload: %v equal=%v", err, k1.Equal(k2))
	}
	os.WriteFile(path, []byte("garbage"), 0o600)
	if _, err := LoadOrCreateKey(path); !errors.Is(err, ErrBadKey) {
		t.Errorf("garbage key file: %v", err)
	}
	pub := k1.Public().(ed25519.PublicKey)
	back, err := DecodeKey(EncodeKey(pub))
	if err != nil || !back.Equal(pub) {
		t.Fatalf("key text round trip: %v", err)
	}
	if _, err := DecodeKey("AAAA"); !errors.Is(err, ErrBadKey) {
		t.Errorf("short key: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	_, issuer := newKey(f)
	userPub, _ := newKey(f)
	now := time.Unix(1_800_000_000, 0)
	b, _ := Sign(issuer, Credential{Kind: KindUser, Name: "bob", PubKey: userPub, Issued: now, Expires: now.Add(time.Hour)})
	f.Add(b)
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := Parse(b)
		if err != nil {
			return
		}
		if len(c.Name) == 0 || len(c.Name) > MaxNameLen || len(c.PubKey) != ed25519.PublicKeySize || len(c.Sig) != ed25519.SignatureSize {
			t.Fatalf("Parse accepted inconsistent credential %+v", c)
		}
		issuerPub := issuer.Public().(ed25519.PublicKey)
		_, _ = Verify(b, issuerPub, now)
	})
}

func BenchmarkVerify(b *testing.B) {
	issuerPub, issuer := newKey(b)
	userPub, _ := newKey(b)
	now := time.Now()
	cred, _ := Sign(issuer, Credential{Kind: KindUser, Name: "alice", PubKey: userPub, Issued: now, Expires: now.Add(time.Hour)})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Verify(cred, issuerPub, now); err != nil {
			b.Fatal(err)
		}
	}
}
