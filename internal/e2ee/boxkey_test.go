package e2ee

import (
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/crypto/curve25519"
)

func TestNewBoxKey(t *testing.T) {
	a, err := NewBoxKey()
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBoxKey()
	if err != nil {
		t.Fatal(err)
	}
	if a.Private == b.Private || a.Public == b.Public {
		t.Fatal("two fresh box keys are equal")
	}
	pub, _ := curve25519.X25519(a.Private[:], curve25519.Basepoint)
	if string(pub) != string(a.Public[:]) {
		t.Fatal("Public is not derived from Private")
	}
	priv := base64.RawURLEncoding.EncodeToString(a.Private[:])
	for _, s := range []string{a.String(), fmt.Sprintf("%v %+v %#v %s", a, a, a, a)} {
		if strings.Contains(s, priv) || strings.Contains(s, fmt.Sprint(a.Private[0], " ", a.Private[1])) {
			t.Errorf("formatting a BoxKey shows the private key: %s", s)
		}
	}
}

func TestLoadOrCreateBoxKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "box.key")
	k1, err := LoadOrCreateBoxKey(path)
	if err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("box key file mode %v, want 0600", st.Mode().Perm())
	}
	k2, err := LoadOrCreateBoxKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if k1 != k2 {
		t.Fatal("reloaded box key differs")
	}
	// No temporary files left beside it.
	if ents, _ := os.ReadDir(filepath.Dir(path)); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want 1", len(ents))
	}
	// The loaded key works.
	f := newFixture(t)
	env, err := Seal(f.msg("to the file key"), f.alice, f.aliceCred, k2.Public)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := Open(env, k1, f.loginPub, "bob", testNow); err != nil {
		t.Fatal(err)
	}
}

func TestLoadBoxKeyCorrupt(t *testing.T) {
	dir := t.TempDir()
	good := boxKeyFileMagic + base64.RawURLEncoding.EncodeToString(make([]byte, 32))
	for name, content := range map[string]string{
		"empty":        "",
		"garbage":      "garbage\n",
		"no magic":     base64.RawURLEncoding.EncodeToString(make([]byte, 32)),
		"short key":    boxKeyFileMagic + base64.RawURLEncoding.EncodeToString(make([]byte, 31)),
		"long key":     boxKeyFileMagic + base64.RawURLEncoding.EncodeToString(make([]byte, 33)),
		"bad base64":   good[:len(good)-1] + "!",
		"ed25519 file": "peerline-ed25519-seed " + base64.RawURLEncoding.EncodeToString(make([]byte, 32)),
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "_"))
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := LoadOrCreateBoxKey(path)
		if !errors.Is(err, ErrBadKeyFile) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: %v, want ErrBadKeyFile naming %s", name, err, path)
		}
		if b, _ := os.ReadFile(path); string(b) != content {
			t.Errorf("%s: the corrupt file was overwritten", name)
		}
	}
	path := filepath.Join(dir, "good")
	os.WriteFile(path, []byte(good+"\n"), 0o600)
	if _, err := LoadOrCreateBoxKey(path); err != nil {
		t.Errorf("well-formed file: %v", err)
	}
	if _, err := LoadOrCreateBoxKey(filepath.Join(dir, "no such dir", "box.key")); err == nil {
		t.Error("missing directory: no error")
	}
}
