package e2ee

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/peerline/peerline/internal/atomicfile"
	"github.com/peerline/peerline/internal/x25519"
)

// BoxKey is a user's X25519 key pair for receiving messages. Public is what the user
// publishes in their signed presence record.
type BoxKey struct{ Private, Public [32]byte }

// String shows only the public half, so that logging a BoxKey cannot leak the private one.
func (k BoxKey) String() string {
	return "e2ee.BoxKey{Public: " + base64.RawURLEncoding.EncodeToString(k.Public[:]) + "}"
}

// GoString is String, for %#v.
func (k BoxKey) GoString() string { return k.String() }

// NewBoxKey makes a fresh box key.
func NewBoxKey() (BoxKey, error) {
	var priv [32]byte
	if _, err := rand.Read(priv[:]); err != nil {
		return BoxKey{}, err
	}
	return boxKeyFromPrivate(priv)
}

func boxKeyFromPrivate(priv [32]byte) (BoxKey, error) {
	pub, err := x25519.X25519(priv[:], x25519.Basepoint)
	if err != nil {
		return BoxKey{}, err
	}
	k := BoxKey{Private: priv}
	copy(k.Public[:], pub)
	return k, nil
}

const boxKeyFileMagic = "peerline-x25519-box-key "

// LoadOrCreateBoxKey reads the box key kept at path, creating a fresh one (mode 0600,
// written atomically) when the file does not exist. Only the private key is stored; the
// public key is derived from it, so the two cannot disagree.
func LoadOrCreateBoxKey(path string) (BoxKey, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		s, ok := strings.CutPrefix(strings.TrimSpace(string(b)), boxKeyFileMagic)
		priv, derr := base64.RawURLEncoding.DecodeString(s)
		if !ok || derr != nil || len(priv) != 32 {
			return BoxKey{}, fmt.Errorf("%w: %s; move it away to create a new box key (then republish your presence so peers use the new one)", ErrBadKeyFile, path)
		}
		return boxKeyFromPrivate([32]byte(priv))
	}
	if !errors.Is(err, os.ErrNotExist) {
		return BoxKey{}, err
	}
	k, err := NewBoxKey()
	if err != nil {
		return BoxKey{}, err
	}
	data := boxKeyFileMagic + base64.RawURLEncoding.EncodeToString(k.Private[:]) + "\n"
	if err := atomicfile.WriteFile(path, []byte(data), 0o600); err != nil {
		return BoxKey{}, fmt.Errorf("e2ee: writing box key %s: %w", path, err)
	}
	return k, nil
}
