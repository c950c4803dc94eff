package e2ee

import (
	"bytes"
	"crypto/ed25519"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/fuzzseed"
	"github.com/peerline/peerline/internal/identity"
)

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz/FuzzOpen from the seeds in fuzz_test.go")

// openErrors are the errors Open may return; every failure must be one of them.
var openErrors = []error{ErrMalformed, ErrDecrypt, ErrBadSender, ErrBadSignature, ErrWrongRecipient}

// corpusSeed is one checked-in FuzzOpen seed, with the outcome Open must give for it
// (as bob, at testNow, under the fixture's login key).
type corpusSeed struct {
	env  []byte
	want error // nil: opens
}

// corpusSeeds builds the FuzzOpen seeds. Envelopes are randomized, so a rebuild gives
// other bytes with the same outcomes; TestFuzzCorpus checks the checked-in ones.
func corpusSeeds(t testing.TB) map[string]corpusSeed {
	f := newFixture(t)
	m := f.msg("hello bob")
	valid := f.seal(t, m)
	mod := func(b []byte, fn func([]byte) []byte) []byte { return fn(bytes.Clone(b)) }
	to := m
	to.To = "carol"
	expired := mustCred(t, f.login, f.alice, identity.KindUser, "alice", testNow.Add(-time.Minute))
	otherLogin := mustCred(t, seededKey("other login server"), f.alice, identity.KindUser, "alice", testNow.Add(time.Hour))
	long := m
	long.Text = strings.Repeat("long text ", MaxTextLen/10)
	call := m
	call.Kind, call.Text = KindCall, `{"t":"invite"}`
	badKind := m
	badKind.Kind = KindCall + 1
	return map[string]corpusSeed{
		"valid":           {valid, nil},
		"max_text":        {f.seal(t, long), nil},
		"call_kind":       {f.seal(t, call), nil},
		"unknown_kind":    {sealContent(t, f, badKind, func(b []byte) []byte { return b }), ErrMalformed},
		"empty":           {[]byte{}, ErrMalformed},
		"header_only":     {valid[:headerLen], ErrMalformed},
		"bad_version":     {mod(valid, func(b []byte) []byte { b[0] = 2; return b }), ErrMalformed},
		"low_order_eph":   {mod(valid, func(b []byte) []byte { clear(b[1:33]); return b }), ErrMalformed},
		"truncated":       {valid[:len(valid)-1], ErrMalformed},
		"flipped_tag":     {mod(valid, func(b []byte) []byte { b[len(b)-1] ^= 1; return b }), ErrDecrypt},
		"flipped_nonce":   {mod(valid, func(b []byte) []byte { b[40] ^= 0x80; return b }), ErrDecrypt},
		"for_carols_box":  {sealRaw(t, m, f.alice, f.aliceCred, f.carol.Public), ErrDecrypt},
		"to_carol":        {f.seal(t, to), ErrWrongRecipient},
		"expired_sender":  {sealRaw(t, m, f.alice, expired, f.bob.Public), ErrBadSender},
		"other_login":     {sealRaw(t, m, f.alice, otherLogin, f.bob.Public), ErrBadSender},
		"forged_sig":      {sealRaw(t, m, seededKey("mallory"), f.aliceCred, f.bob.Public), ErrBadSignature},
		"nonzero_padding": {sealContent(t, f, m, func(b []byte) []byte { b[len(b)-1] = 1; return b }), ErrMalformed},
	}
}

// sealContent seals alice's signed content for bob after mutate has had its way with it.
func sealContent(t testing.TB, f *fixture, m Message, mutate func([]byte) []byte) []byte {
	env, err := seal(mutate(signContent(&m, f.aliceCred, f.alice, &f.bob.Public)), &f.bob.Public)
	if err != nil {
		t.Fatal(err)
	}
	return env
}

const corpusDir = "testdata/fuzz/FuzzOpen"

// TestFuzzCorpus checks that every checked-in seed still gives its outcome, so that a
// format change cannot silently turn the valid seeds into junk the fuzzer starts from.
// Run with -update-corpus to rewrite them.
func TestFuzzCorpus(t *testing.T) {
	seeds := corpusSeeds(t)
	if *updateCorpus {
		os.RemoveAll(corpusDir)
		if err := os.MkdirAll(corpusDir, 0o755); err != nil {
			t.Fatal(err)
		}
		for name, s := range seeds {
			if err := fuzzseed.Write(filepath.Join(corpusDir, name), s.env); err != nil {
				t.Fatal(err)
			}
		}
	}
	ents, err := os.ReadDir(corpusDir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	f := newFixture(t)
	for name, s := range seeds {
		if !slices.Contains(names, name) {
			t.Errorf("seed %s missing from %s; run go test -run TestFuzzCorpus -update-corpus", name, corpusDir)
			continue
		}
		env, err := fuzzseed.Read(filepath.Join(corpusDir, name))
		if err != nil {
			t.Fatal(err)
		}
		_, _, err = Open(env, f.bob, f.loginPub, "bob", testNow)
		if (s.want == nil) != (err == nil) || (s.want != nil && !errors.Is(err, s.want)) {
			t.Errorf("seed %s: %v, want %v", name, err, s.want)
		}
	}
}

// FuzzOpen feeds arbitrary envelopes to Open, as bob. Open must not panic, must classify
// every failure as one of its five errors, and anything it accepts must hold up: the
// names and credential agree, the content re-encodes to the very bytes that were
// decrypted, and the signature verifies.
//
// Random bytes almost never get past the AEAD, so this target mostly exercises the
// length, version and X25519 checks; FuzzContent reaches the parser behind it.
func FuzzOpen(f *testing.F) {
	fx := newFixture(f)
	for _, s := range corpusSeeds(f) {
		f.Add(s.env)
	}
	f.Fuzz(func(t *testing.T, env []byte) {
		m, cred, err := Open(env, fx.bob, fx.loginPub, "bob", testNow)
		if err != nil {
			if !slices.ContainsFunc(openErrors, func(e error) bool { return errors.Is(err, e) }) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		signed, err := decrypt(env, &fx.bob)
		if err != nil {
			t.Fatalf("Open accepted what decrypt rejects: %v", err)
		}
		checkAccepted(t, fx, signed, m, cred)
	})
}

// FuzzContent feeds arbitrary decrypted content (what follows the signature prefix)
// to the checks behind the AEAD, which FuzzOpen cannot reach with random bytes.
func FuzzContent(f *testing.F) {
	fx := newFixture(f)
	for _, s := range corpusSeeds(f) {
		if signed, err := decrypt(s.env, &fx.bob); err == nil {
			f.Add(signed[sigPrefixLen:])
		}
	}
	f.Add([]byte{})
	f.Add(make([]byte, padBlock))
	f.Fuzz(func(t *testing.T, content []byte) {
		signed := append([]byte(sigContext), fx.bob.Public[:]...)
		signed = append(signed, content...)
		m, cred, err := verify(signed, fx.loginPub, "bob", testNow)
		if err != nil {
			if !slices.ContainsFunc(openErrors, func(e error) bool { return errors.Is(err, e) }) {
				t.Fatalf("unclassified error: %v", err)
			}
			return
		}
		checkAccepted(t, fx, signed, m, cred)
	})
}

func checkAccepted(t *testing.T, fx *fixture, signed []byte, m Message, cred identity.Credential) {
	t.Helper()
	if m.From != cred.Name || m.To != "bob" || len(m.Text) > MaxTextLen || cred.Kind != identity.KindUser || !testNow.Before(cred.Expires) {
		t.Fatalf("accepted an inconsistent message: %s from %+v", show(m), cred)
	}
	c, err := parseContent(signed)
	if err != nil {
		t.Fatalf("accepted content does not parse: %v", err)
	}
	// Canonical: the parsed fields re-encode, and re-pad, to the same bytes.
	again := appendFields(append([]byte(nil), signed[:sigPrefixLen]...), &m, c.cred)
	if !bytes.Equal(again, signed[:c.signedLen]) {
		t.Fatalf("accepted content does not re-encode to itself")
	}
	if got := padded(len(again) - sigPrefixLen + ed25519.SignatureSize); got != len(signed)-sigPrefixLen {
		t.Fatalf("padding: %d bytes of content, want %d", len(signed)-sigPrefixLen, got)
	}
	if !ed25519.Verify(cred.PubKey, again, c.sig) {
		t.Fatalf("accepted signature does not verify")
	}
	if _, err := identity.Verify(c.cred, fx.loginPub, testNow); err != nil {
		t.Fatalf("accepted credential does not verify: %v", err)
	}
}
