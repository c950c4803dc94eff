package supernode

import (
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"testing"
)

// newUnstarted returns a supernode that is configured but not running, for tests of its
// parts. Its listener, which no Run owns, is closed when the test ends.
func newUnstarted(t *testing.T) *Supernode {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	_, login, _ := ed25519.GenerateKey(rand.Reader)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	sn, err := New(Config{Key: key, Listener: ln, Advertise: "192.0.2.1:4000", LoginAddr: "192.0.2.2:4000", LoginKey: login.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	return sn
}
