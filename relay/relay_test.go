package relay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"

	"github.com/peerline/peerline/internal/eventually"
)

var testSecret = []byte("test-secret")

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("RELAY_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug - 4}))
}

// newServer starts a relay on loopback that admits loopback peers, with cfg's other
// fields as given.
func newServer(t *testing.T, cfg Config) *Server {
	t.Helper()
	cfg.Secret = testSecret
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	if cfg.Listeners == 0 {
		cfg.Listeners = 2
	}
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	return s
}

// run serves s in the background until the returned stop is called, or the test ends;
// stop returns Run's error once Run has returned.
func run(t testing.TB, s *Server) (stop func() error) {
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan error, 1)
	go func() { ran <- s.Run(ctx) }()
	stop = sync.OnceValue(func() error { cancel(); return <-ran })
	t.Cleanup(func() { stop() })
	return stop
}

// release closes, when the test ends, the sockets of a server the test uses without
// serving on them: a Run whose context is already done.
func release(t testing.TB, s *Server) {
	t.Cleanup(func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		s.Run(ctx)
	})
}

func allowLoopback(ip net.IP) bool { return ip.IsLoopback() }

// newClient returns a TURN client of user on s, over UDP or TCP, with a valid password
// unless password is given.
func newClient(t *testing.T, s *Server, user string, tcp bool, password ...string) *turn.Client {
	t.Helper()
	now := time.Now()
	if s.cfg.Now != nil {
		now = s.cfg.Now()
	}
	username, pw, _ := Credentials(testSecret, user, time.Hour, now)
	if len(password) > 0 {
		username, pw = password[0], password[1]
	}
	var conn net.PacketConn
	addr := s.Addr().String()
	if tcp {
		addr = s.TCPAddr().String()
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conn = turn.NewSTUNConn(c)
	} else {
		c, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		conn = c
	}
	c, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: addr, TURNServerAddr: addr, Conn: conn,
		Username: username, Password: pw, RTO: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Listen(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); conn.Close() })
	return c
}

func allocate(t *testing.T, c *turn.Client) net.PacketConn {
	t.Helper()
	pc, err := c.Allocate()
	if err != nil {
		t.Fatalf("allocate: %v", err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// datagram is one datagram read by a reader.
type datagram struct {
	from string
	data string
}

// reader reads pc until it is closed and hands every datagram to the returned channel.
func reader(pc net.PacketConn) <-chan datagram {
	ch := make(chan datagram, 1024)
	go func() {
		buf := make([]byte, 2048)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				close(ch)
				return
			}
			select {
			case ch <- datagram{from.String(), string(buf[:n])}:
			default:
			}
		}
	}()
	return ch
}

// exchange keeps sending msg from a to b's address until b receives it.
func exchange(t *testing.T, a net.PacketConn, to net.Addr, in <-chan datagram, msg string) datagram {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := a.WriteTo([]byte(msg), to); err != nil {
			t.Fatalf("write %q to %s: %v", msg, to, err)
		}
		select {
		case d := <-in:
			if d.data == msg {
				return d
			}
		case <-tick.C:
		case <-deadline:
			t.Fatalf("%q never reached %s", msg, to)
		}
	}
}

func TestRelayBetweenClients(t *testing.T) {
	for _, fast := range []bool{true, false} {
		t.Run(fmt.Sprintf("fast=%v", fast), func(t *testing.T) {
			s, err := New(Config{Secret: testSecret, Listen: "127.0.0.1:0", Listeners: 2, AllowPeer: allowLoopback, Logger: testLogger(t)})
			if err != nil {
				t.Fatal(err)
			}
			s.fast = fast // before Run, whose read loops read it
			stop := run(t, s)
			alice := allocate(t, newClient(t, s, "alice", false))
			bob := allocate(t, newClient(t, s, "bob", false))
			t.Logf("alice relayed at %s, bob at %s", alice.LocalAddr(), bob.LocalAddr())
			aliceIn, bobIn := reader(alice), reader(bob)

			// Each side's first write creates its permission; then the data flows, first in
			// Send and Data indications, then on channels once pion's client has bound one.
			bob.WriteTo([]byte("open"), alice.LocalAddr())
			for i := 0; i < 20; i++ {
				d := exchange(t, alice, bob.LocalAddr(), bobIn, fmt.Sprintf("a->b %d", i))
				if d.from != alice.LocalAddr().String() {
					t.Fatalf("bob got data from %s, want alice's relayed address %s", d.from, alice.LocalAddr())
				}
				exchange(t, bob, alice.LocalAddr(), aliceIn, fmt.Sprintf("b->a %d", i))
			}
			eventually.That(t, 5*time.Second, "channels bound", func() bool { return s.boundChannels() >= 2 })
			for i := 0; i < 20; i++ {
				exchange(t, alice, bob.LocalAddr(), bobIn, fmt.Sprintf("chan a->b %d", i))
				exchange(t, bob, alice.LocalAddr(), aliceIn, fmt.Sprintf("chan b->a %d", i))
			}
			m := s.Metrics()
			if m.Get(MetricAllocations) != 2 || m.Get(MetricRelayedPackets) < 80 || s.Allocations() != 2 {
				t.Errorf("allocations=%d (now %d) relayed=%d", m.Get(MetricAllocations), s.Allocations(), m.Get(MetricRelayedPackets))
			}
			// The fast path's sends went out in batches, both ways: the writers' counts are
			// the read loops' own, read once Run has ended them.
			s.mu.Lock()
			var rcs []*relayConn
			for _, rc := range s.relays {
				rcs = append(rcs, rc)
			}
			s.mu.Unlock()
			stop()
			toPeers, toClients := 0, 0
			for _, l := range s.listeners {
				toPeers += l.out.calls
			}
			for _, rc := range rcs {
				toClients += rc.out.calls
			}
			if batched := s.listeners[0].sock.sys.ok; fast && batched && (toPeers == 0 || toClients == 0) || !fast && toPeers+toClients != 0 {
				t.Errorf("fast path sendmmsg calls: %d to peers, %d to clients", toPeers, toClients)
			}
			t.Logf("fast path sendmmsg calls: %d to peers, %d to clients", toPeers, toClients)
		})
	}
}

// boundChannels counts the channels in the fast-path tables.
func (s *Server) boundChannels() int {
	n := 0
	for _, l := range s.listeners {
		l.mu.RLock()
		for _, f := range l.flows {
			n += len(f.chans)
		}
		l.mu.RUnlock()
	}
	return n
}

func TestAuthRefused(t *testing.T) {
	s := newServer(t, Config{AllowPeer: allowLoopback})
	expiredUser, expiredPW, _ := Credentials(testSecret, "carol", -time.Minute, time.Now())
	goodUser, _, _ := Credentials(testSecret, "carol", time.Hour, time.Now())
	_, otherPW, _ := Credentials([]byte("another secret"), "carol", time.Hour, time.Now())
	for _, tc := range []struct {
		name, user, pw, metric string
	}{
		{"wrong HMAC", goodUser, otherPW, MetricAuthBadHMAC},
		{"wrong password", goodUser, "hunter2", MetricAuthBadHMAC},
		{"expired", expiredUser, expiredPW, MetricAuthExpired},
		{"malformed", "carol", "whatever", MetricAuthMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := s.Metrics().Get(tc.metric)
			c := newClient(t, s, "", false, tc.user, tc.pw)
			if pc, err := c.Allocate(); err == nil {
				pc.Close()
				t.Fatal("allocation succeeded")
			}
			if got := s.Metrics().Get(tc.metric); got <= before {
				t.Errorf("%s = %d, want more than %d", tc.metric, got, before)
			}
		})
	}
	if n := s.Allocations(); n != 0 {
		t.Errorf("%d allocations after refused ones", n)
	}
	// And good credentials still work.
	allocate(t, newClient(t, s, "carol", false))
}

func TestAllocationQuota(t *testing.T) {
	s := newServer(t, Config{AllowPeer: allowLoopback, MaxAllocsPerUser: 1})
	alice1 := allocate(t, newClient(t, s, "alice", false))
	alice2c := newClient(t, s, "alice", false)
	_, err := alice2c.Allocate()
	var te *stun.TurnError
	if !errors.As(err, &te) || te.ErrorCodeAttr.Code != stun.CodeAllocQuotaReached {
		t.Fatalf("second allocation of alice: %v, want error 486", err)
	}
	if got := s.Metrics().Get(MetricQuotaAllocsRefused); got != 1 {
		t.Errorf("%s = %d, want 1", MetricQuotaAllocsRefused, got)
	}

	// Bob is served meanwhile, and relays with alice's allocation.
	bob := allocate(t, newClient(t, s, "bob", false))
	aliceIn, bobIn := reader(alice1), reader(bob)
	bob.WriteTo([]byte("open"), alice1.LocalAddr())
	exchange(t, alice1, bob.LocalAddr(), bobIn, "hi bob")
	exchange(t, bob, alice1.LocalAddr(), aliceIn, "hi alice")

	// Once alice gives her allocation back she may take another.
	alice1.Close()
	eventually.That(t, 5*time.Second, "alice's allocation released", func() bool { return s.Allocations() == 1 })
	allocate(t, alice2c)
}

func TestBandwidthQuota(t *testing.T) {
	frozen := time.Now()
	const burst = 2000
	s := newServer(t, Config{
		AllowPeer: allowLoopback, UserBandwidth: 1000, UserBurst: burst,
		Now: func() time.Time { return frozen }, // no refill: exactly one burst passes
	})
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peerIn := reader(peer)

	// Client to peer: alice sends 50 datagrams of 200 bytes; about 2000 bytes pass.
	alice := allocate(t, newClient(t, s, "alice", false))
	payload := bytes.Repeat([]byte("a"), 200)
	for i := 0; i < 50; i++ {
		if _, err := alice.WriteTo(payload, peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	got := 0 // bytes of alice's the peer received
	eventually.That(t, 5*time.Second, "each of alice's datagrams relayed or dropped", func() bool {
		for len(peerIn) > 0 {
			got += len((<-peerIn).data)
		}
		return got/len(payload)+int(s.Metrics().Get(MetricDroppedPackets)) == 50
	})
	// Bob, another user, is still served in full.
	bob := allocate(t, newClient(t, s, "bob", false))
	for i := 0; i < 5; i++ {
		exchange(t, bob, peer.LocalAddr(), peerIn, fmt.Sprintf("bob %d", i))
	}
	if got > burst || got == 0 {
		t.Errorf("peer got %d bytes of alice's, want some but at most %d", got, burst)
	}
	t.Logf("alice: %d of %d bytes passed; dropped %d datagrams", got, 50*len(payload), s.Metrics().Get(MetricDroppedPackets))

	// Peer to client: carol's relayed socket is policed too.
	carol := allocate(t, newClient(t, s, "carol", false))
	carolIn := reader(carol)
	carol.WriteTo([]byte("open"), peer.LocalAddr()) // permission
	before := s.Metrics().Get(MetricDroppedPackets)
	exchange(t, peer, carol.LocalAddr(), carolIn, "hi carol")
	for i := 0; i < 50; i++ {
		peer.WriteTo(payload, carol.LocalAddr())
	}
	eventually.That(t, 5*time.Second, "carol's excess dropped", func() bool {
		return s.Metrics().Get(MetricDroppedPackets) >= before+30
	})
}

func TestPeerFilter(t *testing.T) {
	s := newServer(t, Config{}) // the default filter: public peers only
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	alice := allocate(t, newClient(t, s, "alice", false))
	if _, err := alice.WriteTo([]byte("hi"), peer.LocalAddr()); err == nil {
		t.Fatal("relaying to a loopback peer was allowed")
	}
	for _, p := range []string{"10.1.2.3:5000", "192.168.1.1:5000", "[fd00::1]:5000", "169.254.1.1:5000"} {
		if _, err := alice.WriteTo([]byte("hi"), net.UDPAddrFromAddrPort(netip.MustParseAddrPort(p))); err == nil {
			t.Errorf("relaying to %s was allowed", p)
		}
	}
	if got := s.Metrics().Get(MetricPeerRefused); got < 5 {
		t.Errorf("%s = %d, want at least 5", MetricPeerRefused, got)
	}
}

func TestPublicPeer(t *testing.T) {
	for ip, want := range map[string]bool{
		"8.8.8.8": true, "203.0.113.7": true, "2606:4700::1111": true, "::ffff:8.8.4.4": true,
		"127.0.0.1": false, "10.0.0.1": false, "172.16.5.4": false, "192.168.0.1": false,
		"100.64.0.1": false, "169.254.0.1": false, "0.0.0.0": false, "0.1.2.3": false,
		"224.0.0.1": false, "255.255.255.255": false, "240.0.0.1": false, "::1": false,
		"::": false, "fd12::1": false, "fe80::1": false, "ff02::1": false,
		"2002:7f00:1::1": false, "2001:0:7f00::1": false, "::ffff:127.0.0.1": false,
	} {
		if got := PublicPeer(net.ParseIP(ip)); got != want {
			t.Errorf("PublicPeer(%s) = %v, want %v", ip, got, want)
		}
	}
}

func TestTCPAllocation(t *testing.T) {
	s := newServer(t, Config{AllowPeer: allowLoopback})
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peerIn := reader(peer)
	alice := allocate(t, newClient(t, s, "alice", true))
	aliceIn := reader(alice)
	d := exchange(t, alice, peer.LocalAddr(), peerIn, "over tcp")
	if d.from != alice.LocalAddr().String() {
		t.Errorf("peer got data from %s, want alice's relayed address %s", d.from, alice.LocalAddr())
	}
	exchange(t, peer, alice.LocalAddr(), aliceIn, "back over tcp")
}

func TestRunStopsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := New(Config{Secret: testSecret, Listen: "127.0.0.1:0", Listeners: 3, AllowPeer: allowLoopback})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, s)
	// Clients stay open until the server has closed, so that it closes busy sockets.
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		closers []func()
	)
	defer func() {
		for _, c := range closers {
			c()
		}
	}()
	for i, tcp := range []bool{false, true, false} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			username, pw, _ := Credentials(testSecret, fmt.Sprint("u", i), time.Hour, time.Now())
			addr := s.Addr().String()
			var conn net.PacketConn
			if tcp {
				addr = s.TCPAddr().String()
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Error(err)
					return
				}
				conn = turn.NewSTUNConn(c)
			} else {
				conn, _ = net.ListenPacket("udp4", "127.0.0.1:0")
			}
			c, err := turn.NewClient(&turn.ClientConfig{TURNServerAddr: addr, Conn: conn, Username: username, Password: pw})
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			closers = append(closers, func() { c.Close(); conn.Close() })
			mu.Unlock()
			c.Listen()
			pc, err := c.Allocate()
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			closers = append(closers, func() { pc.Close() })
			mu.Unlock()
		}()
	}
	wg.Wait()
	eventually.That(t, 5*time.Second, "3 allocations", func() bool { return s.Allocations() == 3 })
	if err := s.Run(context.Background()); !errors.Is(err, ErrStarted) {
		t.Errorf("second Run while serving: %v", err)
	}
	if err := stop(); err != nil {
		t.Errorf("run: %v", err)
	}
	if err := s.Run(context.Background()); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Run returned: %v", err)
	}
	for i := len(closers) - 1; i >= 0; i-- {
		closers[i]()
	}
	closers = nil
	noGoroutinesLeft(t, before)
}

// noGoroutinesLeft waits for the process to be back to the before goroutines it had, and
// fails the test with every stack if it is not within 5 s.
func noGoroutinesLeft(t *testing.T, before int) {
	t.Helper()
	if err := eventually.Await(5*time.Second, "the goroutines to end", func() bool { return runtime.NumGoroutine() <= before }); err != nil {
		buf := make([]byte, 1<<20)
		t.Fatalf("%v: %d goroutines, %d before:\n%s", err, runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
	}
}

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  Config
		want error
	}{
		{Config{}, ErrNoSecret},
		{Config{Secret: testSecret}, ErrNoPublicIP},
		{Config{Secret: testSecret, Listen: "3478"}, ErrBadListen},
		{Config{Secret: testSecret, Listen: "relay.example:3478"}, ErrBadListen},
		{Config{Secret: testSecret, PublicIP: netip.MustParseAddr("2001:db8::1")}, ErrPublicIPNotV4},
		{Config{Secret: testSecret, Listen: "192.0.2.1:3478", MinPort: 50000, MaxPort: 40000}, ErrBadPortRange},
		{Config{Secret: testSecret, Listen: "192.0.2.1:3478", UserBandwidth: -1}, ErrNegative},
		{Config{Secret: testSecret, Listen: "192.0.2.1:3478"}, nil},
		{Config{Secret: testSecret, PublicIP: netip.MustParseAddr("192.0.2.1")}, nil},
	} {
		// validate, not New: New would bind the addresses, which are not this host's.
		_, err := tc.cfg.validate()
		if !errors.Is(err, tc.want) {
			t.Errorf("validate(%+v) = %v, want %v", tc.cfg, err, tc.want)
		}
	}
	c, _ := Config{Secret: testSecret, PublicIP: netip.MustParseAddr("192.0.2.1"), UserBandwidth: 5000}.validate()
	if c.Listen != ":3478" || c.RelayIP != netip.IPv4Unspecified() || c.MinPort != 49152 || c.MaxPort != 65535 ||
		c.Listeners != runtime.NumCPU() || c.SocketBuffer != 4<<20 || c.UserBurst != 5000 || c.Realm != "peerline" {
		t.Errorf("defaults: %+v", c)
	}
	// A Config with Now only runs on the real clock telling Now's time; one with Clock
	// only tells the time by it.
	frozen := time.Unix(1700000000, 0)
	c, _ = Config{Secret: testSecret, PublicIP: netip.MustParseAddr("192.0.2.1"), Now: func() time.Time { return frozen }}.validate()
	if !c.Clock.Now().Equal(frozen) || !c.Now().Equal(frozen) || c.Clock.Since(frozen) != 0 {
		t.Errorf("with Now: Clock tells %v, Now %v; want %v", c.Clock.Now(), c.Now(), frozen)
	}
	fake := clockwork.NewFakeClockAt(frozen)
	c, _ = Config{Secret: testSecret, PublicIP: netip.MustParseAddr("192.0.2.1"), Clock: fake}.validate()
	if fake.Advance(time.Minute); !c.Now().Equal(frozen.Add(time.Minute)) {
		t.Errorf("with Clock: Now tells %v, want %v", c.Now(), frozen.Add(time.Minute))
	}
}

func TestCredentials(t *testing.T) {
	now := time.Unix(1700000000, 0)
	u, p, exp := Credentials([]byte("north"), "alice", time.Hour, now)
	if u != "1700003600:alice" || !exp.Equal(time.Unix(1700003600, 0)) {
		t.Errorf("username %q expires %v", u, exp)
	}
	// echo -n 1700003600:alice | openssl dgst -sha1 -hmac north -binary | base64
	if p != "wjwSXO2ch1B6VaLTLMy2Avn5O9o=" {
		t.Errorf("password %q", p)
	}
	if e, user, ok := parseUsername(u); !ok || user != "alice" || !e.Equal(exp) {
		t.Errorf("parseUsername(%q) = %v %q %v", u, e, user, ok)
	}
	if _, user, ok := parseUsername("1700003600:a:b"); !ok || user != "a:b" {
		t.Errorf("user names may hold colons: %q %v", user, ok)
	}
	for _, bad := range []string{"alice", ":alice", "-5:alice", "12x:alice", ""} {
		if _, _, ok := parseUsername(bad); ok {
			t.Errorf("parseUsername(%q) accepted", bad)
		}
	}
}

func TestBucket(t *testing.T) {
	t0 := time.Unix(0, 0)
	b := newBucket(1000, 500, t0)
	if !b.allow(500, t0) || b.allow(1, t0) {
		t.Fatal("a full bucket must give exactly its burst")
	}
	if !b.allow(100, t0.Add(100*time.Millisecond)) || b.allow(1, t0.Add(100*time.Millisecond)) {
		t.Fatal("100 ms at 1000 B/s must give exactly 100 bytes")
	}
	if b.allow(501, t0.Add(time.Hour)) {
		t.Fatal("the bucket must not hold more than its burst")
	}
	if d := b.reserve(1500, t0.Add(time.Hour)); d != time.Second {
		t.Fatalf("reserve past the burst: wait %v, want 1s", d)
	}
	unlimited := newBucket(0, 0, t0)
	if !unlimited.allow(1<<20, t0) {
		t.Fatal("rate 0 is unlimited")
	}
}
