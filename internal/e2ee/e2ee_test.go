package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/identity"
)

// testNow is the clock of every test; credentials are issued an hour before it.
var testNow = time.Unix(1_800_000_000, 0)

// seededKey and seededBox make deterministic keys, so that the checked-in fuzz seeds
// stay valid envelopes.
func seededKey(name string) ed25519.PrivateKey {
	s := sha256.Sum256([]byte("peerline e2ee test identity " + name))
	return ed25519.NewKeyFromSeed(s[:])
}

func seededBox(t testing.TB, name string) BoxKey {
	k, err := boxKeyFromPrivate(sha256.Sum256([]byte("peerline e2ee test box " + name)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustCred(t testing.TB, issuer, holder ed25519.PrivateKey, kind identity.Kind, name string, expires time.Time) []byte {
	b, err := identity.Sign(issuer, identity.Credential{
		Kind: kind, Name: name, PubKey: holder.Public().(ed25519.PublicKey),
		Issued: testNow.Add(-time.Hour), Expires: expires,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fixture: alice writes to bob; carol is a third user; mallory a forger.
type fixture struct {
	login      ed25519.PrivateKey
	loginPub   ed25519.PublicKey
	alice      ed25519.PrivateKey
	aliceCred  []byte
	bob, carol BoxKey
}

func newFixture(t testing.TB) *fixture {
	f := &fixture{
		login: seededKey("login"),
		alice: seededKey("alice"),
		bob:   seededBox(t, "bob"),
		carol: seededBox(t, "carol"),
	}
	f.loginPub = f.login.Public().(ed25519.PublicKey)
	f.aliceCred = mustCred(t, f.login, f.alice, identity.KindUser, "alice", testNow.Add(24*time.Hour))
	return f
}

func (f *fixture) msg(text string) Message {
	return Message{From: "alice", To: "bob", Sent: testNow.Add(-time.Second), Text: text}
}

// sameMessage compares messages as Open promises to return them: Sent at millisecond
// precision.
func sameMessage(a, b Message) bool {
	return a.From == b.From && a.To == b.To && a.Text == b.Text && a.Sent.UnixMilli() == b.Sent.UnixMilli()
}

func show(m Message) string {
	text := m.Text
	if len(text) > 40 {
		text = text[:40] + "..."
	}
	return fmt.Sprintf("{From:%q To:%q Sent:%s Text(%d):%q}", m.From, m.To, m.Sent.Format(time.RFC3339Nano), len(m.Text), text)
}

func (f *fixture) seal(t testing.TB, m Message) []byte {
	t.Helper()
	env, err := Seal(m, f.alice, f.aliceCred, f.bob.Public)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// sealRaw signs and seals with no sender-side checks, to build forgeries.
func sealRaw(t testing.TB, m Message, key ed25519.PrivateKey, cred []byte, box [32]byte) []byte {
	t.Helper()
	env, err := seal(signContent(&m, cred, key, &box), &box)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func TestRoundTrip(t *testing.T) {
	f := newFixture(t)
	for _, text := range []string{"", "hello bob", "naïve café ☕ 你好", strings.Repeat("x", MaxTextLen)} {
		m := f.msg(text)
		env := f.seal(t, m)
		if len(env) > MaxEnvelopeLen || (len(env)-headerLen-tagLen)%padBlock != 0 {
			t.Errorf("text %d bytes: envelope %d bytes", len(text), len(env))
		}
		got, cred, err := Open(env, f.bob, f.loginPub, "bob", testNow)
		if err != nil {
			t.Fatalf("text %d bytes: %v", len(text), err)
		}
		if !sameMessage(got, m) {
			t.Errorf("text %d bytes: got %s, want %s", len(text), show(got), show(m))
		}
		if cred.Name != "alice" || cred.Kind != identity.KindUser || !cred.PubKey.Equal(f.alice.Public()) {
			t.Errorf("credential %+v", cred)
		}
	}
}

func TestSentPrecision(t *testing.T) {
	f := newFixture(t)
	for _, sent := range []time.Time{
		time.Unix(1_800_000_000, 123_456_789),
		time.Unix(-86400*365, 5e6), // before 1970
		{},                         // zero time
	} {
		m := f.msg("t")
		m.Sent = sent
		got, _, err := Open(f.seal(t, m), f.bob, f.loginPub, "bob", testNow)
		if err != nil {
			t.Fatal(err)
		}
		if want := time.UnixMilli(sent.UnixMilli()); !got.Sent.Equal(want) || got.Sent.Location() != time.UTC {
			t.Errorf("sent %v: got %v, want %v UTC", sent, got.Sent, want)
		}
	}
}

func TestMaximalEnvelopeFits(t *testing.T) {
	f := newFixture(t)
	long := strings.Repeat("n", identity.MaxNameLen)
	key := seededKey("long")
	cred := mustCred(t, f.login, key, identity.KindUser, long, testNow.Add(time.Hour))
	if len(cred) != maxCredLen {
		t.Fatalf("credential %d bytes, maxCredLen %d", len(cred), maxCredLen)
	}
	m := Message{From: long, To: long, Sent: testNow, Text: strings.Repeat("é", MaxTextLen/2)}
	env, err := Seal(m, key, cred, f.bob.Public)
	if err != nil {
		t.Fatal(err)
	}
	if len(env) != maxEnvelopeLen {
		t.Errorf("longest envelope is %d bytes, maxEnvelopeLen %d", len(env), maxEnvelopeLen)
	}
	t.Logf("longest envelope: %d bytes (limit %d)", len(env), MaxEnvelopeLen)
	if got, _, err := Open(env, f.bob, f.loginPub, long, testNow); err != nil || !sameMessage(got, m) {
		t.Fatalf("open: %v; got %s", err, show(got))
	}
}

func TestWrongBoxKey(t *testing.T) {
	f := newFixture(t)
	env := f.seal(t, f.msg("for bob only"))
	if _, _, err := Open(env, f.carol, f.loginPub, "bob", testNow); !errors.Is(err, ErrDecrypt) {
		t.Errorf("carol's box key: %v, want ErrDecrypt", err)
	}
	// A box key whose Public half does not match its Private half (a caller bug) must
	// not open either: the public key is bound into the KDF.
	mixed := BoxKey{Private: f.bob.Private, Public: f.carol.Public}
	if _, _, err := Open(env, mixed, f.loginPub, "bob", testNow); !errors.Is(err, ErrDecrypt) {
		t.Errorf("mismatched box key: %v, want ErrDecrypt", err)
	}
}

func TestEveryByteMatters(t *testing.T) {
	f := newFixture(t)
	env := f.seal(t, f.msg("do not touch"))
	if _, _, err := Open(env, f.bob, f.loginPub, "bob", testNow); err != nil {
		t.Fatal(err)
	}
	for i := range env {
		for _, mask := range []byte{0x01, 0x80, 0xff} {
			bad := bytes.Clone(env)
			bad[i] ^= mask
			_, _, err := Open(bad, f.bob, f.loginPub, "bob", testNow)
			if err == nil {
				t.Fatalf("byte %d ^ %#x: still opens", i, mask)
			}
			if !errors.Is(err, ErrDecrypt) && !errors.Is(err, ErrMalformed) {
				t.Fatalf("byte %d ^ %#x: %v, want ErrDecrypt or ErrMalformed", i, mask, err)
			}
		}
	}
	for n := range len(env) {
		if _, _, err := Open(env[:n], f.bob, f.loginPub, "bob", testNow); err == nil {
			t.Fatalf("truncated to %d bytes: still opens", n)
		}
	}
	if _, _, err := Open(append(bytes.Clone(env), 0), f.bob, f.loginPub, "bob", testNow); !errors.Is(err, ErrMalformed) {
		t.Errorf("one byte appended: %v", err)
	}
	// A whole extra block keeps the length plausible; the tag must still catch it.
	if _, _, err := Open(append(bytes.Clone(env), make([]byte, padBlock)...), f.bob, f.loginPub, "bob", testNow); !errors.Is(err, ErrDecrypt) {
		t.Errorf("block appended: %v", err)
	}
}

func TestMalformedEnvelope(t *testing.T) {
	f := newFixture(t)
	env := f.seal(t, f.msg("hi"))
	v2 := bytes.Clone(env)
	v2[0] = 2
	for name, b := range map[string][]byte{
		"nil":                                 nil,
		"header":                              env[:headerLen],
		"version 2":                           v2,
		"over 8KiB":                           make([]byte, MaxEnvelopeLen+1),
		"aligned but longer than any message": make([]byte, maxEnvelopeLen+padBlock),
	} {
		if _, _, err := Open(b, f.bob, f.loginPub, "bob", testNow); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

// lowOrderPoints are the encodings of points of order 1, 2, 4 and 8 on Curve25519 (with
// non-canonical p, p+1 and p-1), as listed by libsodium and RFC 7748's security notes.
var lowOrderPoints = []string{
	"0000000000000000000000000000000000000000000000000000000000000000",
	"0100000000000000000000000000000000000000000000000000000000000000",
	"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
	"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
	"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
	"eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
}

func TestLowOrderPoints(t *testing.T) {
	f := newFixture(t)
	env := f.seal(t, f.msg("hi"))
	for _, h := range lowOrderPoints {
		p, _ := hex.DecodeString(h)
		if _, err := Seal(f.msg("hi"), f.alice, f.aliceCred, [32]byte(p)); !errors.Is(err, ErrBadBoxKey) {
			t.Errorf("seal to %s: %v, want ErrBadBoxKey", h[:8], err)
		}
		bad := bytes.Clone(env)
		copy(bad[1:], p)
		if _, _, err := Open(bad, f.bob, f.loginPub, "bob", testNow); !errors.Is(err, ErrMalformed) {
			t.Errorf("ephemeral %s: %v, want ErrMalformed", h[:8], err)
		}
	}
}

func TestForgedSender(t *testing.T) {
	f := newFixture(t)
	mallory := seededKey("mallory")
	otherLogin := seededKey("other login server")
	m := f.msg("send money")

	t.Run("credential from another login server", func(t *testing.T) {
		cred := mustCred(t, otherLogin, f.alice, identity.KindUser, "alice", testNow.Add(time.Hour))
		env, err := Seal(m, f.alice, cred, f.bob.Public) // Seal cannot know the login key
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = Open(env, f.bob, f.loginPub, "bob", testNow)
		if !errors.Is(err, ErrBadSender) || !errors.Is(err, identity.ErrBadSignature) {
			t.Errorf("got %v, want ErrBadSender wrapping identity.ErrBadSignature", err)
		}
	})
	t.Run("recipient pins another login server", func(t *testing.T) {
		_, _, err := Open(f.seal(t, m), f.bob, otherLogin.Public().(ed25519.PublicKey), "bob", testNow)
		if !errors.Is(err, ErrBadSender) {
			t.Errorf("got %v, want ErrBadSender", err)
		}
	})
	t.Run("signed by a key other than the credential's", func(t *testing.T) {
		env := sealRaw(t, m, mallory, f.aliceCred, f.bob.Public)
		if _, _, err := Open(env, f.bob, f.loginPub, "bob", testNow); !errors.Is(err, ErrBadSignature) {
			t.Errorf("got %v, want ErrBadSignature", err)
		}
	})
	t.Run("valid user claims another name", func(t *testing.T) {
		malloryCred := mustCred(t, f.login, mallory, identity.KindUser, "mallory", testNow.Add(time.Hour))
		if _, err := Seal(m, mallory, malloryCred, f.bob.Public); !errors.Is(err, ErrBadSender) {
			t.Errorf("Seal: %v, want ErrBadSender", err)
		}
		env := sealRaw(t, m, mallory, malloryCred, f.bob.Public)
		if _, _, err := Open(env, f.bob, f.loginPub, "bob", testNow); !errors.Is(err, ErrBadSender) {
			t.Errorf("Open: %v, want ErrBadSender", err)
		}
	})
	t.Run("supernode credential", func(t *testing.T) {
		snCred := mustCred(t, f.login, f.alice, identity.KindSupernode, "alice", testNow.Add(time.Hour))
		if _, err := Seal(m, f.alice, snCred, f.bob.Public); !errors.Is(err, ErrBadSender) {
			t.Errorf("Seal: %v, want ErrBadSender", err)
		}
		env := sealRaw(t, m, f.alice, snCred, f.bob.Public)
		if _, _, err := Open(env, f.bob, f.loginPub, "bob", testNow); !errors.Is(err, ErrBadSender) {
			t.Errorf("Open: %v, want ErrBadSender", err)
		}
	})
}

func TestExpiredSender(t *testing.T) {
	f := newFixture(t)
	expires := testNow.Add(time.Minute)
	cred := mustCred(t, f.login, f.alice, identity.KindUser, "alice", expires)
	env, err := Seal(f.msg("late"), f.alice, cred, f.bob.Public)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(env, f.bob, f.loginPub, "bob", expires.Add(-time.Second)); err != nil {
		t.Fatalf("before expiry: %v", err)
	}
	for _, now := range []time.Time{expires, expires.Add(time.Hour)} {
		_, _, err := Open(env, f.bob, f.loginPub, "bob", now)
		if !errors.Is(err, ErrBadSender) || !errors.Is(err, identity.ErrExpired) {
			t.Errorf("at %v: %v, want ErrBadSender wrapping identity.ErrExpired", now.Sub(expires), err)
		}
	}
}

func TestWrongRecipient(t *testing.T) {
	f := newFixture(t)
	t.Run("opened by a client that is not the addressee", func(t *testing.T) {
		env := f.seal(t, f.msg("hi bob"))
		if _, _, err := Open(env, f.bob, f.loginPub, "carol", testNow); !errors.Is(err, ErrWrongRecipient) {
			t.Errorf("got %v, want ErrWrongRecipient", err)
		}
	})
	t.Run("addressed to carol, encrypted to bob", func(t *testing.T) {
		m := f.msg("hi carol")
		m.To = "carol"
		env := f.seal(t, m)
		if _, _, err := Open(env, f.bob, f.loginPub, "bob", testNow); !errors.Is(err, ErrWrongRecipient) {
			t.Errorf("got %v, want ErrWrongRecipient", err)
		}
	})
	t.Run("bob re-encrypts alice's message to carol", func(t *testing.T) {
		signed, err := decrypt(f.seal(t, f.msg("hi bob")), &f.bob)
		if err != nil {
			t.Fatal(err)
		}
		content := signed[sigPrefixLen:]
		env, err := seal(content, &f.carol.Public)
		if err != nil {
			t.Fatal(err)
		}
		for _, wantTo := range []string{"carol", "bob"} {
			if _, _, err := Open(env, f.carol, f.loginPub, wantTo, testNow); !errors.Is(err, ErrBadSignature) {
				t.Errorf("carol opens (wantTo %q): %v, want ErrBadSignature", wantTo, err)
			}
		}
		// Documented limitation: re-encrypting to bob himself is a replay, and opens.
		env, err = seal(content, &f.bob.Public)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := Open(env, f.bob, f.loginPub, "bob", testNow); err != nil {
			t.Errorf("bob's own re-encryption: %v", err)
		}
	})
}

// TestSupernodeView checks what a relay sees: nothing of the content, and a length that
// says little about the text's.
func TestSupernodeView(t *testing.T) {
	f := newFixture(t)
	alice := seededKey("alice-in-wonderland")
	cred := mustCred(t, f.login, alice, identity.KindUser, "alice-in-wonderland", testNow.Add(time.Hour))
	m := Message{From: "alice-in-wonderland", To: "bob-the-builder", Sent: testNow, Text: "the password is swordfish"}
	env, err := Seal(m, alice, cred, f.bob.Public)
	if err != nil {
		t.Fatal(err)
	}
	for name, secret := range map[string][]byte{
		"text":                     []byte(m.Text),
		"sender name":              []byte(m.From),
		"recipient name":           []byte(m.To),
		"credential":               cred,
		"sender's identity key":    alice.Public().(ed25519.PublicKey),
		"credential's signature":   cred[len(cred)-ed25519.SignatureSize:],
		"recipient's box key":      f.bob.Public[:],
		"sent time (ms, big end.)": appendFields(nil, &m, nil)[2+1+len(m.From)+1+len(m.To):][:8],
	} {
		if bytes.Contains(env, secret) {
			t.Errorf("envelope contains the %s", name)
		}
	}
	// Texts of 0..511 bytes make only three envelope sizes.
	sizes := map[int]int{}
	for n := range 512 {
		m.Text = strings.Repeat("x", n)
		env, err := Seal(m, alice, cred, f.bob.Public)
		if err != nil {
			t.Fatal(err)
		}
		sizes[len(env)]++
	}
	if len(sizes) > 3 {
		t.Errorf("texts of 0..511 bytes give %d envelope sizes, want at most 3: %v", len(sizes), sizes)
	}
	t.Logf("envelope sizes for texts of 0..511 bytes: %v", sizes)
}

func TestSealsDiffer(t *testing.T) {
	f := newFixture(t)
	m := f.msg("same words twice")
	a, b := f.seal(t, m), f.seal(t, m)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of one message are identical")
	}
	if bytes.Equal(a[1:33], b[1:33]) {
		t.Error("ephemeral key reused")
	}
	if bytes.Equal(a[33:headerLen], b[33:headerLen]) {
		t.Error("nonce reused")
	}
	for _, env := range [][]byte{a, b} {
		if got, _, err := Open(env, f.bob, f.loginPub, "bob", testNow); err != nil || !sameMessage(got, m) {
			t.Errorf("open: %v; got %s", err, show(got))
		}
	}
}

func TestSealRejects(t *testing.T) {
	f := newFixture(t)
	long := strings.Repeat("n", identity.MaxNameLen+1)
	for _, tc := range []struct {
		name string
		m    Message
		key  ed25519.PrivateKey
		cred []byte
		want error
	}{
		{"text too long", Message{From: "alice", To: "bob", Text: strings.Repeat("x", MaxTextLen+1)}, f.alice, f.aliceCred, ErrInvalidMessage},
		{"no sender", Message{To: "bob"}, f.alice, f.aliceCred, ErrInvalidMessage},
		{"no recipient", Message{From: "alice"}, f.alice, f.aliceCred, ErrInvalidMessage},
		{"recipient name too long", Message{From: "alice", To: long}, f.alice, f.aliceCred, ErrInvalidMessage},
		{"short private key", f.msg(""), f.alice[:32], f.aliceCred, ErrInvalidMessage},
		{"nil private key", f.msg(""), nil, f.aliceCred, ErrInvalidMessage},
		{"garbage credential", f.msg(""), f.alice, []byte("PLC1 not really"), ErrBadSender},
		{"credential of another key", f.msg(""), seededKey("mallory"), f.aliceCred, identity.ErrKeyMismatch},
	} {
		if _, err := Seal(tc.m, tc.key, tc.cred, f.bob.Public); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
}

// TestContentCanonical seals content that decrypts fine but breaks the layout, to reach
// the parser behind the AEAD.
func TestContentCanonical(t *testing.T) {
	f := newFixture(t)
	m := f.msg("hi")
	good := signContent(&m, f.aliceCred, f.alice, &f.bob.Public)
	for name, mutate := range map[string]func([]byte) []byte{
		"non-zero padding": func(b []byte) []byte { b[len(b)-1] = 1; return b },
		"extra padding block": func(b []byte) []byte {
			return append(b, make([]byte, padBlock)...)
		},
		"credential length lies": func(b []byte) []byte { b[1]++; return b },
		"credential length 0":    func(b []byte) []byte { b[0], b[1] = 0, 0; return b },
		"from length 0":          func(b []byte) []byte { b[2+len(f.aliceCred)] = 0; return b },
		"from length 255": func(b []byte) []byte {
			b[2+len(f.aliceCred)] = 255
			return b
		},
		"text length 4097": func(b []byte) []byte {
			i := 2 + len(f.aliceCred) + 1 + 5 + 1 + 3 + 8
			b[i], b[i+1] = 0x10, 0x01
			return b
		},
		"text length past the end": func(b []byte) []byte {
			i := 2 + len(f.aliceCred) + 1 + 5 + 1 + 3 + 8
			b[i], b[i+1] = 0x0f, 0xff
			return b
		},
		"to length 0": func(b []byte) []byte {
			b[2+len(f.aliceCred)+1+5] = 0
			return b
		},
	} {
		env, err := seal(mutate(bytes.Clone(good)), &f.bob.Public)
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = Open(env, f.bob, f.loginPub, "bob", testNow)
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
	env, _ := seal(good, &f.bob.Public)
	if _, _, err := Open(env, f.bob, f.loginPub, "bob", testNow); err != nil {
		t.Fatalf("unmutated content: %v", err)
	}
}

func BenchmarkSealOpen(b *testing.B) {
	f := newFixture(b)
	for _, n := range []int{32, MaxTextLen} {
		m := f.msg(strings.Repeat("x", n))
		b.Run("text="+strconv.Itoa(n), func(b *testing.B) {
			b.SetBytes(int64(n))
			b.ReportAllocs()
			for b.Loop() {
				env, err := Seal(m, f.alice, f.aliceCred, f.bob.Public)
				if err != nil {
					b.Fatal(err)
				}
				if _, _, err := Open(env, f.bob, f.loginPub, "bob", testNow); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSeal(b *testing.B) {
	f := newFixture(b)
	m := f.msg(strings.Repeat("x", 32))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Seal(m, f.alice, f.aliceCred, f.bob.Public); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	f := newFixture(b)
	env := f.seal(b, f.msg(strings.Repeat("x", 32)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Open(env, f.bob, f.loginPub, "bob", testNow); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenJunk is what a flood of garbage of a plausible length costs a recipient.
func BenchmarkOpenJunk(b *testing.B) {
	f := newFixture(b)
	env := f.seal(b, f.msg("x"))
	env[len(env)-1] ^= 1
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Open(env, f.bob, f.loginPub, "bob", testNow); !errors.Is(err, ErrDecrypt) {
			b.Fatal(err)
		}
	}
}
