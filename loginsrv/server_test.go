package loginsrv

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
	"github.com/peerline/peerline/internal/secure"
	"github.com/peerline/peerline/internal/turncred"
)

// newClock returns the clock a test server runs on: its time passes, and its timers
// fire, only when the test advances it.
func newClock() *clockwork.FakeClock {
	return clockwork.NewFakeClockAt(time.Date(2026, 11, 1, 12, 0, 0, 0, time.UTC))
}

type testServer struct {
	*Server
	addr  string
	clock *clockwork.FakeClock
}

// serveOn makes a server of cfg on a fresh loopback listener and runs it until stop is
// called (or the test ends). It returns once its write-behind ticker waits on clk: the
// one timer a server with no connection runs, so that from then on advancing clk by
// SeenFlush makes a flush.
func serveOn(t *testing.T, cfg Config, clk *clockwork.FakeClock) (srv *Server, addr string, stop func()) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Listener = ln
	if srv, err = New(cfg); err != nil {
		ln.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			<-done
		}
	}
	t.Cleanup(stop)
	bctx, bcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer bcancel()
	if err := clk.BlockUntilContext(bctx, 1); err != nil {
		t.Fatalf("the server's write-behind ticker never started: %v", err)
	}
	return srv, ln.Addr().String(), stop
}

func startServer(t *testing.T, mod func(*Config)) *testServer {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	store, err := OpenSQLite(filepath.Join(t.TempDir(), "accounts.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() }) // after the server stops: cleanups run last first
	clk := newClock()
	cfg := Config{Key: key, Store: store, Hasher: NewHasher(TestArgon2Params, 0), AdmitSecret: "s3cret", Clock: clk,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if mod != nil {
		mod(&cfg)
	}
	srv, addr, _ := serveOn(t, cfg, clk)
	return &testServer{Server: srv, addr: addr, clock: clk}
}

// dial opens a control connection as the holder of key (nil = anonymous).
func (ts *testServer) dial(t *testing.T, key ed25519.PrivateKey) *rpc.Conn {
	t.Helper()
	c, err := ts.tryDial(t, key)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// tryDial is dial for goroutines other than the test's: it returns the error.
func (ts *testServer) tryDial(t *testing.T, key ed25519.PrivateKey) (*rpc.Conn, error) {
	cfg, err := secure.ClientConfig(key, secure.PinnedKey(ts.PublicKey()))
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tc, err := secure.Dial(ctx, &net.Dialer{}, ts.addr, cfg)
	if err != nil {
		return nil, err
	}
	c := rpc.New(tc, rpc.Options{})
	rctx, rcancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { c.Run(rctx); close(done) }()
	t.Cleanup(func() { rcancel(); <-done })
	return c, nil
}

func newKey() ed25519.PrivateKey {
	_, k, _ := ed25519.GenerateKey(rand.Reader)
	return k
}

func call(t *testing.T, c *rpc.Conn, m proto.Message) (proto.Message, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Call(ctx, m)
}

func mustRegister(t *testing.T, ts *testServer, name, pw string) {
	t.Helper()
	if _, err := call(t, ts.dial(t, nil), &proto.Register{Name: name, Password: pw}); err != nil {
		t.Fatalf("register %s: %v", name, err)
	}
}

func login(t *testing.T, ts *testServer, key ed25519.PrivateKey, name, pw string) (*rpc.Conn, *proto.LoginOK) {
	t.Helper()
	c := ts.dial(t, key)
	m, err := call(t, c, &proto.Login{Name: name, Password: pw})
	if err != nil {
		t.Fatalf("login %s: %v", name, err)
	}
	return c, m.(*proto.LoginOK)
}

func TestRegisterLoginResume(t *testing.T) {
	ts := startServer(t, nil)
	anon := ts.dial(t, nil)
	for _, bad := range []string{"Al", "1abc", "ALICE", "al ice", "a"} {
		if _, err := call(t, anon, &proto.Register{Name: bad, Password: "password1"}); !errors.Is(err, proto.ErrInvalidName) {
			t.Errorf("name %q: %v", bad, err)
		}
	}
	if _, err := call(t, anon, &proto.Register{Name: "alice", Password: "short"}); !errors.Is(err, proto.ErrWeakPassword) {
		t.Errorf("short password: %v", err)
	}
	mustRegister(t, ts, "alice", "correct horse")
	if _, err := call(t, anon, &proto.Register{Name: "alice", Password: "another one"}); !errors.Is(err, proto.ErrUserExists) {
		t.Errorf("duplicate: %v", err)
	}
	u, err := ts.cfg.Store.User(context.Background(), "alice")
	if err != nil || len(u.PassHash) == 0 || string(u.PassHash) == "correct horse" {
		t.Fatalf("stored user %+v %v", u, err)
	}

	key := newKey()
	c := ts.dial(t, key)
	if _, err := call(t, c, &proto.Login{Name: "alice", Password: "wrong horse"}); !errors.Is(err, proto.ErrWrongPassword) {
		t.Errorf("wrong password: %v", err)
	}
	if _, err := call(t, c, &proto.Login{Name: "nobody", Password: "whatever1"}); !errors.Is(err, proto.ErrNoSuchUser) {
		t.Errorf("unknown user: %v", err)
	}
	if _, err := call(t, anon, &proto.Login{Name: "alice", Password: "correct horse"}); !errors.Is(err, proto.ErrBadRequest) {
		t.Errorf("login without client key: %v", err)
	}
	m, err := call(t, c, &proto.Login{Name: "alice", Password: "correct horse"})
	if err != nil {
		t.Fatal(err)
	}
	ok := m.(*proto.LoginOK)
	cred, err := identity.VerifyHolder(ok.Credential, ts.PublicKey(), key.Public().(ed25519.PublicKey), identity.KindUser, ts.clock.Now())
	if err != nil || cred.Name != "alice" || !cred.Expires.Equal(ts.clock.Now().Add(24*time.Hour)) {
		t.Fatalf("credential %+v %v", cred, err)
	}
	for name, want := range map[string]uint64{"login_wrong_password": 1, "login_unknown_user": 1, "logins": 1} {
		if got := ts.Metrics().Get(name); got != want {
			t.Errorf("counter %s = %d, want %d", name, got, want)
		}
	}

	// Resume: no password hash at all.
	hashes := ts.Hasher().Count()
	c2 := ts.dial(t, key)
	m, err = call(t, c2, &proto.Resume{Credential: ok.Credential})
	if err != nil {
		t.Fatal(err)
	}
	if ts.Hasher().Count() != hashes {
		t.Fatalf("resume hashed a password (%d -> %d)", hashes, ts.Hasher().Count())
	}
	if string(m.(*proto.LoginOK).Credential) != string(ok.Credential) {
		t.Error("a fresh credential was renewed before half-life")
	}
	if _, err := call(t, c2, &proto.BuddyList{}); err != nil {
		t.Errorf("resumed session not authenticated: %v", err)
	}
	// Past half-life the credential is renewed.
	ts.clock.Advance(13 * time.Hour)
	m, err = call(t, ts.dial(t, key), &proto.Resume{Credential: ok.Credential})
	if err != nil || string(m.(*proto.LoginOK).Credential) == string(ok.Credential) {
		t.Fatalf("renewal: %v", err)
	}

	// Another key cannot use alice's credential.
	if _, err := call(t, ts.dial(t, newKey()), &proto.Resume{Credential: ok.Credential}); !errors.Is(err, proto.ErrCredInvalid) {
		t.Errorf("stolen credential: %v", err)
	}
	// A credential signed by someone else is refused.
	forged, _ := identity.Sign(newKey(), identity.Credential{Kind: identity.KindUser, Name: "alice",
		PubKey: key.Public().(ed25519.PublicKey), Issued: ts.clock.Now(), Expires: ts.clock.Now().Add(time.Hour)})
	if _, err := call(t, ts.dial(t, key), &proto.Resume{Credential: forged}); !errors.Is(err, proto.ErrCredInvalid) {
		t.Errorf("forged credential: %v", err)
	}
	// An expired one too.
	ts.clock.Advance(12 * time.Hour)
	if _, err := call(t, ts.dial(t, key), &proto.Resume{Credential: ok.Credential}); !errors.Is(err, proto.ErrCredExpired) {
		t.Errorf("expired credential: %v", err)
	}
	if ts.Metrics().Get("cred_invalid") != 2 || ts.Metrics().Get("cred_expired") != 1 {
		t.Errorf("cred counters: %v", ts.Metrics().Snapshot())
	}
	// Unauthenticated requests are refused.
	if _, err := call(t, ts.dial(t, newKey()), &proto.BuddyList{}); !errors.Is(err, proto.ErrUnauthenticated) {
		t.Errorf("unauthenticated buddy list: %v", err)
	}
}

func TestFailedLoginsRateLimited(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.FailsPerName = 3; c.FailsPerAddr = 5 })
	mustRegister(t, ts, "alice", "correct horse")
	mustRegister(t, ts, "bob", "battery staple")
	c := ts.dial(t, newKey())
	for i := 0; i < 3; i++ {
		if _, err := call(t, c, &proto.Login{Name: "alice", Password: "guess"}); !errors.Is(err, proto.ErrWrongPassword) {
			t.Fatalf("attempt %d: %v", i, err)
		}
	}
	_, err := call(t, c, &proto.Login{Name: "alice", Password: "correct horse"})
	pe, ok := proto.AsError(err)
	if !ok || !errors.Is(err, proto.ErrRateLimited) || pe.RetryAfter() <= 0 {
		t.Fatalf("4th attempt: %v", err)
	}
	// Other names still work from this address, until the address limit.
	if _, err := call(t, c, &proto.Login{Name: "bob", Password: "battery staple"}); err != nil {
		t.Fatalf("bob: %v", err)
	}
	for i := 0; i < 2; i++ {
		call(t, c, &proto.Login{Name: "bob", Password: "guess"})
	}
	if _, err := call(t, c, &proto.Login{Name: "bob", Password: "battery staple"}); !errors.Is(err, proto.ErrRateLimited) {
		t.Fatalf("address limit: %v", err)
	}
	// The window passes and alice can log in again.
	ts.clock.Advance(2 * time.Minute)
	if _, err := call(t, c, &proto.Login{Name: "alice", Password: "correct horse"}); err != nil {
		t.Fatalf("after window: %v", err)
	}
	if ts.Metrics().Get("login_rate_limited") != 2 {
		t.Errorf("login_rate_limited = %d", ts.Metrics().Get("login_rate_limited"))
	}
}

func TestBuddiesAndDirectory(t *testing.T) {
	ts := startServer(t, nil)
	for _, n := range []string{"alice", "albert", "al_x", "bob", "carol"} {
		mustRegister(t, ts, n, "password-"+n)
	}
	a, _ := login(t, ts, newKey(), "alice", "password-alice")
	b, _ := login(t, ts, newKey(), "bob", "password-bob")
	if _, err := call(t, a, &proto.BuddyAdd{Name: "bob"}); err != nil {
		t.Fatal(err)
	}
	if _, err := call(t, a, &proto.BuddyAdd{Name: "nobody"}); !errors.Is(err, proto.ErrNoSuchUser) {
		t.Errorf("add unknown: %v", err)
	}
	if _, err := call(t, a, &proto.BuddyAdd{Name: "alice"}); !errors.Is(err, proto.ErrBadRequest) {
		t.Errorf("add self: %v", err)
	}
	m, err := call(t, a, &proto.BuddyList{})
	if err != nil {
		t.Fatal(err)
	}
	bl := m.(*proto.BuddyListOK)
	if len(bl.Buddies) != 1 || bl.Buddies[0].Name != "bob" || bl.Buddies[0].LastSeen.IsZero() {
		t.Fatalf("buddies %+v", bl.Buddies)
	}
	// Exact and prefix search.
	m, _ = call(t, b, &proto.Directory{Query: "alice"})
	if r := m.(*proto.DirectoryOK).Results; len(r) != 1 || r[0].LastSeen.IsZero() {
		t.Fatalf("exact: %+v", r)
	}
	m, _ = call(t, b, &proto.Directory{Query: "al*"})
	if r := m.(*proto.DirectoryOK).Results; len(r) != 3 || r[0].Name != "al_x" || r[1].Name != "albert" || r[2].Name != "alice" {
		t.Fatalf("prefix: %+v", r)
	}
	m, _ = call(t, b, &proto.Directory{Query: "zed"})
	if r := m.(*proto.DirectoryOK).Results; len(r) != 0 {
		t.Fatalf("no such user: %+v", r)
	}
	if _, err := call(t, b, &proto.Directory{Query: "*"}); !errors.Is(err, proto.ErrBadRequest) {
		t.Errorf("bare *: %v", err)
	}
	// alice blocks bob: bob no longer sees when alice was last seen.
	if _, err := call(t, a, &proto.BuddyBlock{Name: "bob", Blocked: true}); err != nil {
		t.Fatal(err)
	}
	m, _ = call(t, b, &proto.Directory{Query: "alice"})
	if r := m.(*proto.DirectoryOK).Results; len(r) != 1 || !r[0].LastSeen.IsZero() {
		t.Fatalf("blocked viewer sees presence: %+v", r)
	}
	m, _ = call(t, a, &proto.BuddyList{})
	if bl := m.(*proto.BuddyListOK); len(bl.Buddies) != 1 || !bl.Buddies[0].Blocked {
		t.Fatalf("after block %+v", bl)
	}
	if _, err := call(t, a, &proto.BuddyRemove{Name: "bob"}); err != nil {
		t.Fatal(err)
	}
}

func TestSupernodeAdmissionAndSeed(t *testing.T) {
	ts := startServer(t, func(c *Config) { c.HeartbeatInterval = 10 * time.Second })
	snKey := newKey()
	c := ts.dial(t, snKey)
	if _, err := call(t, c, &proto.SNRegister{Name: "sn1", Addr: "192.0.2.1:7001", AdmitSecret: "wrong"}); !errors.Is(err, proto.ErrNotAdmitted) {
		t.Fatalf("wrong secret: %v", err)
	}
	if _, err := call(t, c, &proto.SNHeartbeat{Addr: "192.0.2.1:7001"}); !errors.Is(err, proto.ErrUnauthenticated) {
		t.Fatalf("heartbeat before register: %v", err)
	}
	// Three supernodes that came up at different times.
	base := ts.clock.Now()
	regs := []struct {
		name, addr string
		since      time.Time
		key        ed25519.PrivateKey
	}{
		{"young", "192.0.2.3:7001", base.Add(-time.Minute), snKey},
		{"old", "192.0.2.1:7001", base.Add(-48 * time.Hour), newKey()},
		{"mid", "192.0.2.2:7001", base.Add(-time.Hour), newKey()},
	}
	conns := map[string]*rpc.Conn{}
	for _, r := range regs {
		cc := ts.dial(t, r.key)
		m, err := call(t, cc, &proto.SNRegister{Name: r.name, Addr: r.addr, Since: r.since, AdmitSecret: "s3cret"})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := identity.VerifyHolder(m.(*proto.SNRegisterOK).Credential, ts.PublicKey(), r.key.Public().(ed25519.PublicKey), identity.KindSupernode, ts.clock.Now()); err != nil {
			t.Fatal(err)
		}
		conns[r.name] = cc
	}
	_, ok := login(t, ts, newKey(), mustUser(t, ts), "password-u")
	var order []string
	for _, s := range ok.Seed {
		order = append(order, s.Addr)
	}
	if len(order) != 3 || order[0] != "192.0.2.1:7001" || order[1] != "192.0.2.2:7001" || order[2] != "192.0.2.3:7001" {
		t.Fatalf("seed order %v, want longest-lived first", order)
	}
	// Time passes; only "mid" heartbeats. The others drop out of the seed once unheard
	// for the member timeout: 3 intervals and one per doubling of the layer (3 members:
	// 5 x 10 s).
	ts.clock.Advance(55 * time.Second)
	m, err := call(t, conns["mid"], &proto.SNHeartbeat{Addr: "192.0.2.2:7001", Since: base.Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if peers := m.(*proto.SNPeers).Supernodes; len(peers) != 0 {
		t.Fatalf("heartbeat peers %+v, want none live besides itself", peers)
	}
	ts.clock.Advance(10 * time.Second)
	c2, _ := login(t, ts, newKey(), "uuu", "password-u")
	m, _ = call(t, c2, &proto.Seed{})
	if s := m.(*proto.SeedOK).Supernodes; len(s) != 1 || s[0].Addr != "192.0.2.2:7001" {
		t.Fatalf("seed after silence %+v", s)
	}
}

func mustUser(t *testing.T, ts *testServer) string {
	mustRegister(t, ts, "uuu", "password-u")
	return "uuu"
}

func TestGarbageAndOthersKeepWorking(t *testing.T) {
	ts := startServer(t, nil)
	mustRegister(t, ts, "alice", "correct horse")
	// Plain-text garbage never gets past TLS.
	raw, err := net.Dial("tcp", ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.Write([]byte("GET / HTTP/1.0\r\n\r\n"))
	raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	raw.Read(make([]byte, 100))
	raw.Close()
	// Garbage inside TLS gets a bad_frame error and the connection is closed.
	cfg, _ := secure.ClientConfig(nil, secure.PinnedKey(ts.PublicKey()))
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tc, err := secure.Dial(ctx, &net.Dialer{}, ts.addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	tc.Write([]byte{9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9, 9})
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 512)
	n, _ := tc.Read(buf)
	if n == 0 || !containsBytes(buf[:n], "bad_frame") {
		t.Fatalf("no bad_frame answer: %q", buf[:n])
	}
	tc.Close()
	// Meanwhile many logins in parallel still succeed.
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := ts.tryDial(t, newKey()) // not dial: its t.Fatal is for the test goroutine
			if err != nil {
				t.Errorf("dial during garbage: %v", err)
				return
			}
			if _, err := call(t, c, &proto.Login{Name: "alice", Password: "correct horse"}); err != nil {
				t.Errorf("login during garbage: %v", err)
			}
		}()
	}
	wg.Wait()
	eventually.That(t, 10*time.Second, "the garbage counted as a TLS error and a frame error", func() bool {
		return ts.Metrics().Get("tls_errors") >= 1 && ts.Metrics().Get("frame_errors") == 1
	})
}

func containsBytes(b []byte, s string) bool { return strings.Contains(string(b), s) }

// TestMembersDeltas: supernodes follow the member list through its changes; one whose
// connection closes leaves the list at once.
func TestMembersDeltas(t *testing.T) {
	ts := startServer(t, nil)
	var conns []*rpc.Conn
	for i := 0; i < 3; i++ {
		c := ts.dial(t, newKey())
		if _, err := call(t, c, &proto.SNRegister{Name: fmt.Sprintf("sn%d", i), Addr: fmt.Sprintf("192.0.2.%d:7001", i+1), AdmitSecret: "s3cret"}); err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	m, err := call(t, conns[0], &proto.Members{})
	if err != nil {
		t.Fatal(err)
	}
	full := m.(*proto.MembersOK)
	if full.Delta || full.Total != 3 || len(full.Members) != 3 {
		t.Fatalf("full list %+v", full)
	}
	conns[2].Close()
	eventually.That(t, 10*time.Second, "the closed supernode's departure in the deltas", func() bool {
		m, err := call(t, conns[0], &proto.Members{Since: full.Version})
		if err != nil {
			return false
		}
		d := m.(*proto.MembersOK)
		return d.Delta && len(d.Changes) == 1 && d.Changes[0].Left && d.Changes[0].Addr == "192.0.2.3:7001"
	})
	// A version the server never had gets the whole list.
	m, _ = call(t, conns[0], &proto.Members{Since: full.Version + 1000})
	if d := m.(*proto.MembersOK); d.Delta || d.Total != 2 {
		t.Fatalf("unknown version answered %+v", d)
	}
}

// TestTurnCredentials checks that a logged-in user gets TURN credentials for a live
// supernode's relay, under the secret that supernode was given at admission, and for the
// standalone relays under the login server's own relay secret; nobody else gets any.
func TestTurnCredentials(t *testing.T) {
	master := []byte("relay master secret")
	ts := startServer(t, func(c *Config) { c.RelaySecret = master; c.Relays = []string{"203.0.113.9:3478"} })
	snKey := newKey()
	m, err := call(t, ts.dial(t, snKey), &proto.SNRegister{Name: "sn1", Addr: "192.0.2.1:7001", AdmitSecret: "s3cret"})
	if err != nil {
		t.Fatal(err)
	}
	snSecret := m.(*proto.SNRegisterOK).RelaySecret
	snID := identity.EncodeKey(snKey.Public().(ed25519.PublicKey))
	if len(snSecret) == 0 || string(snSecret) == string(master) {
		t.Fatalf("supernode relay secret %x", snSecret)
	}
	if _, err := call(t, ts.dial(t, nil), &proto.TurnCreds{Relay: snID}); !errors.Is(err, proto.ErrUnauthenticated) {
		t.Fatalf("anonymous: %v", err)
	}
	user := mustUser(t, ts)
	c, _ := login(t, ts, newKey(), user, "password-u")
	m, err = call(t, c, &proto.TurnCreds{Relay: snID})
	if err != nil {
		t.Fatal(err)
	}
	cr := m.(*proto.TurnCredsOK).Creds
	if len(cr) != 1 {
		t.Fatalf("creds %+v", cr)
	}
	if got, err := turncred.Check(snSecret, cr[0].Username, cr[0].Password, ts.clock.Now()); err != nil || got != user {
		t.Fatalf("supernode relay credential: %q %v", got, err)
	}
	if _, err := turncred.Check(master, cr[0].Username, cr[0].Password, ts.clock.Now()); err == nil {
		t.Fatal("a supernode credential is valid on the standalone relays")
	}
	if _, err := call(t, c, &proto.TurnCreds{Relay: "no-such-supernode"}); !errors.Is(err, proto.ErrRefused) {
		t.Fatalf("unknown relay: %v", err)
	}
	m, err = call(t, c, &proto.TurnCreds{})
	if err != nil {
		t.Fatal(err)
	}
	cr = m.(*proto.TurnCredsOK).Creds
	if len(cr) != 1 || cr[0].Addr != "203.0.113.9:3478" {
		t.Fatalf("standalone creds %+v", cr)
	}
	if _, err := turncred.Check(master, cr[0].Username, cr[0].Password, ts.clock.Now()); err != nil {
		t.Fatal(err)
	}
}
