package supernode

import (
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"slices"
	"testing"

	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/rpc"
)

// newUnstarted returns a supernode that is configured but not running, for tests of its
// parts.
func newUnstarted(t *testing.T) *Supernode {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	_, login, _ := ed25519.GenerateKey(rand.Reader)
	sn, err := New(Config{Key: key, Advertise: "192.0.2.1:4000", LoginAddr: "192.0.2.2:4000", LoginKey: login.Public().(ed25519.PublicKey)})
	if err != nil {
		t.Fatal(err)
	}
	return sn
}

// TestPreferOpen: among a record's holders, this supernode comes first, then the ones it
// has a connection open to, each in ring order, and the candidates past the holders keep
// their places.
func TestPreferOpen(t *testing.T) {
	sn := newUnstarted(t)
	openConn := func(id string) {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		ready := make(chan struct{})
		close(ready)
		sn.ov.peers.conns[id] = &peerConn{ready: ready, conn: rpc.New(a, rpc.Options{})}
	}
	closedConn := func(id string) {
		a, _ := net.Pipe()
		c := rpc.New(a, rpc.Options{})
		c.Close()
		ready := make(chan struct{})
		close(ready)
		sn.ov.peers.conns[id] = &peerConn{ready: ready, conn: c}
	}
	members := func(ids ...string) []index.Member {
		out := make([]index.Member, len(ids))
		for i, id := range ids {
			out[i] = index.Member{ID: id}
		}
		return out
	}
	ids := func(ms []index.Member) (out []string) {
		for _, m := range ms {
			out = append(out, m.ID)
		}
		return out
	}
	openConn("c")
	openConn("e") // past the holders: stays where it is
	closedConn("a")
	for _, tc := range []struct {
		in   []string
		n    int
		want []string
	}{
		{[]string{"a", "b", "c", "d", "e"}, 3, []string{"c", "a", "b", "d", "e"}},
		{[]string{"a", "b", sn.id, "c", "e"}, 3, []string{sn.id, "a", "b", "c", "e"}},
		{[]string{"b", "c", sn.id}, 3, []string{sn.id, "c", "b"}},
		{[]string{"a", "b"}, 3, []string{"a", "b"}},
		{[]string{"c"}, 3, []string{"c"}},
	} {
		got := members(tc.in...)
		sn.preferOpen(got, tc.n)
		if g := ids(got); !slices.Equal(g, tc.want) {
			t.Errorf("preferOpen(%v, %d) = %v, want %v", tc.in, tc.n, g, tc.want)
		}
	}
}
