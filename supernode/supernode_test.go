package supernode_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
	"github.com/peerline/peerline/hostcache"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
	"github.com/peerline/peerline/internal/secure"
	"github.com/peerline/peerline/supernode"
)

func dial(t *testing.T, addr string, key ed25519.PrivateKey) *rpc.Conn {
	t.Helper()
	id, _ := secure.NewOverlayIdentity(key)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tc, err := id.DialOverlay(ctx, &net.Dialer{}, addr, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := rpc.New(tc, rpc.Options{})
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(rctx); close(done) }()
	t.Cleanup(func() { rcancel(); <-done })
	return c
}

func call(t *testing.T, c *rpc.Conn, m proto.Message) (proto.Message, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return c.Call(ctx, m)
}

// TestBadClientsRefusedOthersServed sends a supernode every kind of bad attachment while
// a real client stays attached to it.
func TestBadClientsRefusedOthersServed(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 1})
	sn := o.Supernodes()[0]
	o.Register("alice", "correct horse")
	alice := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "correct horse", nil)
	o.Eventually("alice attached", func() bool { return alice.Status().Supernode != nil })

	_, key, _ := ed25519.GenerateKey(rand.Reader)
	pub := key.Public().(ed25519.PublicKey)
	now := time.Now()
	sign := func(issuer ed25519.PrivateKey, kind identity.Kind, holder ed25519.PublicKey, exp time.Time) []byte {
		b, err := identity.Sign(issuer, identity.Credential{Kind: kind, Name: "mallory", PubKey: holder, Issued: now.Add(-2 * time.Hour), Expires: exp})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	_, otherIssuer, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)
	cases := []struct {
		name string
		cred []byte
		want error
	}{
		{"forged", sign(otherIssuer, identity.KindUser, pub, now.Add(time.Hour)), proto.ErrCredInvalid},
		{"expired", sign(o.Key, identity.KindUser, pub, now.Add(-time.Hour)), proto.ErrCredExpired},
		{"someone else's", sign(o.Key, identity.KindUser, otherPub, now.Add(time.Hour)), proto.ErrCredInvalid},
		{"supernode kind", sign(o.Key, identity.KindSupernode, pub, now.Add(time.Hour)), proto.ErrCredInvalid},
		{"garbage", []byte("not a credential"), proto.ErrCredInvalid},
	}
	for _, tc := range cases {
		c := dial(t, sn.Addr, key)
		if _, err := call(t, c, &proto.Attach{Credential: tc.cred}); !errors.Is(err, tc.want) {
			t.Errorf("%s credential: %v, want %v", tc.name, err, tc.want)
		}
		if _, err := call(t, c, &proto.Ping{Seq: 1}); !errors.Is(err, proto.ErrUnauthenticated) {
			t.Errorf("%s: ping after refused attach: %v", tc.name, err)
		}
	}
	// Raw garbage on the port.
	raw, err := net.Dial("tcp", sn.Addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte("\x16\x03\x01garbage garbage garbage"))
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	raw.Read(make([]byte, 64))
	raw.Close()

	m := sn.Metrics()
	overlaytest.Eventually(t, 10*time.Second, "counters", func() bool {
		return m.Get("cred_invalid") == 4 && m.Get("cred_expired") == 1 && m.Get("unauthenticated_requests") == 5 && m.Get("handshake_errors") >= 1
	})
	// alice was never disturbed: still attached, keep-alives still answered.
	before := alice.Metrics().Get("keepalives")
	o.Eventually("alice keeps pinging", func() bool { return alice.Metrics().Get("keepalives") > before })
	if alice.Metrics().Get("supernode_lost") != 0 {
		t.Fatal("alice lost her supernode")
	}
	if st := sn.Status(); len(st.Clients) != 1 || st.Clients[0] != "alice" {
		t.Fatalf("supernode clients %v", st.Clients)
	}
}

// TestSupernodesLearnEachOther: heartbeats bring back the other live supernodes, and a
// client's host cache fills from its supernode: a supernode that comes up after the client
// attached reaches the client's cache (and its file) through its supernode's peer list.
func TestSupernodesLearnEachOther(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 3})
	for _, sn := range o.Supernodes() {
		o.Eventually("peers known", func() bool { return len(sn.Peers()) == 2 })
	}
	o.Register("alice", "correct horse")
	dir := filepath.Join(t.TempDir(), "alice")
	c := o.StartClient(dir, "alice", "correct horse", func(cfg *client.Config) { cfg.RefreshInterval = 100 * time.Millisecond })
	o.Eventually("alice attached", func() bool { return c.Status().Supernode != nil })
	sn4 := o.AddSupernode(time.Second)
	o.Eventually("fourth supernode known to the supernodes", func() bool { return len(o.Supernodes()[0].Peers()) == 3 })
	// While attached, the client asks the login server for no seed: the entry can only
	// come from its supernode.
	cached := func(cache *hostcache.Cache, sn *overlaytest.SN) bool {
		for _, e := range cache.Ranked() {
			if e.Addr == sn.Addr {
				return e.PubKey == sn.ID()
			}
		}
		return false
	}
	o.Eventually("fourth supernode in alice's host cache", func() bool { return cached(c.HostCache(), sn4) })
	for _, e := range c.HostCache().Ranked() {
		if e.Addr == sn4.Addr && e.Source != hostcache.SourceSupernode {
			t.Fatalf("alice's entry for the fourth supernode came from %q, want %q", e.Source, hostcache.SourceSupernode)
		}
	}
	// The file follows the cache (saved after each merge).
	o.Eventually("all four supernodes in alice's saved host cache", func() bool {
		saved, err := hostcache.Open(filepath.Join(dir, client.HostCacheFile), hostcache.Options{})
		if err != nil {
			return false
		}
		for _, sn := range o.Supernodes() {
			if !cached(saved, sn) {
				return false
			}
		}
		return true
	})
}

// TestWrongAdmissionSecret: a supernode with the wrong secret is refused and says why.
func TestWrongAdmissionSecret(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 1})
	o.Secret = "wrong"
	sn := o.AddSupernode(time.Second)
	select {
	case <-sn.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("supernode with a wrong secret kept running")
	}
	if !errors.Is(sn.Err(), supernode.ErrNotAdmitted) {
		t.Fatalf("Run = %v, want ErrNotAdmitted", sn.Err())
	}
}

// TestPromotionNeedsReachableAddress: a node asking to be promoted with an address where
// nobody proves its key is refused by the login server.
func TestPromotionNeedsReachableAddress(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 1})
	o.Register("mallory", "mallory's password")
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	cred, _ := identity.Sign(o.Key, identity.Credential{Kind: identity.KindUser, Name: "mallory",
		PubKey: key.Public().(ed25519.PublicKey), Issued: now, Expires: now.Add(time.Hour)})
	// The address is another supernode's: reachable, but it holds a different key.
	victim := o.Supernodes()[0].Addr
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	sn, err := supernode.New(supernode.Config{Key: key, Listener: ln, Advertise: victim, LoginAddr: o.LS.Addr, LoginKey: o.LS.Key, UserCredential: cred, Logger: o.Log})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := sn.Run(ctx); !errors.Is(err, supernode.ErrNotAdmitted) {
		t.Fatalf("Run = %v, want ErrNotAdmitted", err)
	}
	if o.Login.Metrics().Get("sn_dialback_failed") != 1 {
		t.Fatalf("sn_dialback_failed = %d", o.Login.Metrics().Get("sn_dialback_failed"))
	}
}

// TestSupernodeCannotForgeRecords: an admitted supernode that publishes a record for a
// user it does not hold the key of, or alters a genuine record, is refused by the holders;
// and it cannot report another supernode's user gone.
func TestSupernodeCannotForgeRecords(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 3})
	o.Register("alice", "correct horse")
	alice := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "correct horse", nil)
	o.Eventually("alice published", func() bool { return alice.Metrics().Get("publishes") > 0 })

	// mallory runs a supernode the login server admitted.
	_, rogue, _ := ed25519.GenerateKey(rand.Reader)
	now := time.Now()
	snCred, _ := identity.Sign(o.Key, identity.Credential{Kind: identity.KindSupernode, Name: "sn-mallory",
		PubKey: rogue.Public().(ed25519.PublicKey), Issued: now, Expires: now.Add(time.Hour)})
	target := o.Supernodes()[0]
	c := dial(t, target.Addr, rogue)
	if _, err := call(t, c, &proto.SNHello{Credential: snCred}); err != nil {
		t.Fatal(err)
	}
	// The genuine record, as any holder has it.
	res, _, _ := target.Lookup(t.Context(), "alice", "")
	if !res.Found || !res.Online {
		t.Fatalf("alice not found: %+v", res)
	}
	genuine := res.Record
	rec, err := index.Parse(genuine)
	if err != nil {
		t.Fatal(err)
	}

	// 1. A record for alice signed with mallory's key (alice's credential copied in).
	forged := rec
	forged.Supernode, forged.SNAddr, forged.Seq = "mallory", "192.0.2.66:7100", rec.Seq+1000
	raw, _ := index.Sign(rogue, forged)
	if _, err := call(t, c, &proto.IndexStore{Record: raw}); !errors.Is(err, proto.ErrRefused) {
		t.Fatalf("forged record: %v", err)
	}
	// 2. The genuine record with where-she-is altered, signature kept.
	altered := append([]byte(nil), genuine...)
	i := bytes.Index(altered, []byte(rec.SNAddr))
	altered[i] ^= 0x01
	if _, err := call(t, c, &proto.IndexStore{Record: altered}); !errors.Is(err, proto.ErrRefused) {
		t.Fatalf("altered record: %v", err)
	}
	// 3. A record for a user under a credential of another user.
	o.Register("mallory", "mallory's password")
	mCred, _ := identity.Sign(o.Key, identity.Credential{Kind: identity.KindUser, Name: "mallory",
		PubKey: rogue.Public().(ed25519.PublicKey), Issued: now, Expires: now.Add(time.Hour)})
	impostor := rec
	impostor.Credential, impostor.Seq = mCred, rec.Seq+2000
	raw, _ = index.Sign(rogue, impostor)
	if _, err := call(t, c, &proto.IndexStore{Record: raw}); !errors.Is(err, proto.ErrRefused) {
		t.Fatalf("record under another's credential: %v", err)
	}
	// 4. Reporting alice gone: she is not attached to mallory, so nothing changes.
	if _, err := call(t, c, &proto.IndexGone{Name: "alice", Seq: rec.Seq + 5000}); err != nil {
		t.Fatal(err)
	}
	if got := target.Metrics().Get("records_rejected"); got != 3 {
		t.Fatalf("records_rejected = %d, want 3", got)
	}
	res, _, _ = target.Lookup(t.Context(), "alice", "")
	got, _ := index.Parse(res.Record)
	if !res.Online || got.Supernode != rec.Supernode || got.SNAddr != rec.SNAddr {
		t.Fatalf("alice's record changed: online=%v %+v", res.Online, got)
	}
}

// TestPeerConnectionSharedBothWays: the connection one supernode dials to another carries
// the other's calls back too, so a pair of supernodes holds one connection, not two.
func TestPeerConnectionSharedBothWays(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 2})
	sn1, sn2 := o.Supernodes()[0], o.Supernodes()[1]
	for _, sn := range o.Supernodes() {
		o.Eventually("peers known", func() bool { return len(sn.Peers()) == 1 })
	}
	o.Register("alice", "correct horse")
	o.Register("bob", "battery staple")
	prefer := func(sn *overlaytest.SN) func(*client.Config) {
		return func(cfg *client.Config) { cfg.Prefer = sn.Addr }
	}
	// Two supernodes with three replicas: each stores every record at the other.
	alice := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "correct horse", prefer(sn1))
	o.Eventually("alice attached", func() bool { return alice.Status().Supernode != nil })
	o.Eventually("sn1 dialled sn2 and sn2 adopted it", func() bool {
		return sn1.Metrics().Get("peer_dials") >= 1 && sn2.Metrics().Get("peer_adopted") == 1
	})
	bob := o.StartClient(filepath.Join(t.TempDir(), "bob"), "bob", "battery staple", prefer(sn2))
	o.Eventually("bob attached", func() bool { return bob.Status().Supernode != nil })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	o.Eventually("bob's record stored at sn1", func() bool {
		res, _, _ := sn1.Lookup(ctx, "bob", "")
		return res.Found
	})
	if got := sn2.Metrics().Get("peer_dials"); got != 0 {
		t.Fatalf("sn2 dialled sn1 %d times; it should have used the connection sn1 dialled", got)
	}
}

// TestPublicationPassedOnByFirstHolder: with five supernodes and three replicas, a
// user's publication leaves its supernode as one store, to the first holder, which
// passes it on: every holder has the record, and a supernode that is no holder keeps
// none.
func TestPublicationPassedOnByFirstHolder(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 5})
	for _, sn := range o.Supernodes() {
		o.Eventually("ring complete", func() bool { return sn.RingSize() == 5 })
	}
	o.Register("alice", "correct horse")
	alice := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "correct horse", nil)
	o.Eventually("alice attached", func() bool { return alice.Status().Supernode != nil })
	holding := func() (n int) {
		for _, sn := range o.Supernodes() {
			if sn.Status().Records > 0 {
				n++
			}
		}
		return n
	}
	o.Eventually("alice's record at its three holders", func() bool { return holding() == 3 })
	var home *overlaytest.SN
	for _, sn := range o.Supernodes() {
		if sn.Addr == alice.Status().Supernode.Addr {
			home = sn
		}
	}
	passed := func() (n uint64) {
		for _, sn := range o.Supernodes() {
			n += sn.Metrics().Get("records_passed_on")
		}
		return n
	}
	// Unless alice's own supernode is one of her holders (it may then be the first and
	// store at the others itself), the first holder passed her record on. It counts
	// that once the others have answered, which can be just after they show the record:
	// wait for it.
	if home.Status().Records == 0 {
		if err := overlaytest.Await(20*time.Second, "the first holder counts the record passed on",
			func() bool { return passed() > 0 }); err != nil {
			t.Fatalf("%v; counters of alice's supernode %v", err, home.Metrics().Snapshot())
		}
	}
	if got := holding(); got != 3 {
		t.Fatalf("%d supernodes hold alice's record, want 3", got)
	}
}
