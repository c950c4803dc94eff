package serve

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/metrics"
)

var (
	attacker  = netip.MustParseAddr("192.0.2.66")
	attacker2 = netip.MustParseAddr("192.0.2.67")
	user      = netip.MustParseAddr("198.51.100.5")
	newcomer  = netip.MustParseAddr("203.0.113.9")
)

func TestGatePerAddrAndPrefix(t *testing.T) {
	g := NewGate(Config{Max: 1000, PerAddr: 3, PerPrefix: 5})
	for i := range 3 {
		if ok, why := g.Admit(attacker); !ok {
			t.Fatalf("connection %d from one address shed (%s) under its limit", i, why)
		}
	}
	if ok, why := g.Admit(attacker); ok || why != "conns_shed_addr" {
		t.Fatalf("4th from one address: admitted=%v why=%q, want conns_shed_addr", ok, why)
	}
	for range 2 {
		if ok, _ := g.Admit(attacker2); !ok {
			t.Fatal("a second address of the /24 shed under the prefix limit")
		}
	}
	if ok, why := g.Admit(attacker2); ok || why != "conns_shed_prefix" {
		t.Fatalf("6th from one /24: admitted=%v why=%q, want conns_shed_prefix", ok, why)
	}
	if ok, _ := g.Admit(user); !ok {
		t.Fatal("another prefix was shed")
	}
	g.Release(attacker)
	if ok, _ := g.Admit(attacker2); !ok {
		t.Fatal("a released slot of the prefix was not reusable")
	}
	v6a, v6b := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::9")
	g6 := NewGate(Config{Max: 1000, PerAddr: 10, PerPrefix: 1})
	g6.Admit(v6a)
	if ok, why := g6.Admit(v6b); ok || why != "conns_shed_prefix" {
		t.Fatalf("two addresses of one /64: admitted=%v why=%q", ok, why)
	}
}

func TestGateReserveForGoodSources(t *testing.T) {
	now := time.Unix(1e6, 0)
	g := NewGate(Config{Max: 10, Reserve: 3, PerAddr: 100, PerPrefix: 100, GoodFor: time.Minute, Now: func() time.Time { return now }})
	g.MarkGood(user)
	for i := range 7 {
		if ok, why := g.Admit(attacker); !ok {
			t.Fatalf("connection %d shed (%s) below Max-Reserve", i, why)
		}
	}
	if ok, why := g.Admit(newcomer); ok || why != "conns_shed_busy" {
		t.Fatalf("unknown source in the reserve: admitted=%v why=%q", ok, why)
	}
	for i := range 3 {
		if ok, why := g.Admit(user); !ok {
			t.Fatalf("good source's reserved slot %d shed (%s)", i, why)
		}
	}
	if ok, why := g.Admit(user); ok || why != "conns_shed" {
		t.Fatalf("beyond Max: admitted=%v why=%q", ok, why)
	}
	g.Release(user)
	now = now.Add(2 * time.Minute)
	if ok, _ := g.Admit(user); ok {
		t.Fatal("a source still counted as good after GoodFor")
	}
	if g.Open() != 9 {
		t.Fatalf("Open = %d, want 9", g.Open())
	}
}

func TestGoodSetBounded(t *testing.T) {
	g := NewGate(Config{})
	for i := range maxGood + 10 {
		g.MarkGood(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}))
	}
	if n := len(g.good); n > maxGood {
		t.Fatalf("good set holds %d sources, bound %d", n, maxGood)
	}
}

// dialFrom connects to ln from a chosen loopback source address.
func dialFrom(t *testing.T, src string, ln net.Listener) net.Conn {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	c, err := d.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial from %s: %v", src, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// closedSoon reports whether the server closed c within limit.
func closedSoon(c net.Conn, limit time.Duration) bool {
	c.SetReadDeadline(time.Now().Add(limit))
	var b [1]byte
	_, err := c.Read(b[:])
	var ne net.Error
	return err != nil && !(errors.As(err, &ne) && ne.Timeout())
}

// The AuthTimeout runs on the gate's clock, a fake one here: the test moves it past the
// timeout once the connections are in, and the unauthenticated ones are closed.
func TestServeShedsAndTimesOutUnauthenticated(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := new(metrics.Set)
	clk := clockwork.NewFakeClock()
	g := NewGate(Config{Max: 100, PerAddr: 2, PerPrefix: 50, AuthTimeout: 300 * time.Millisecond, Counter: m, Clock: clk})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- g.Serve(ctx, ln, func(ctx context.Context, nc net.Conn) {
			defer context.AfterFunc(ctx, func() { nc.Close() })()
			var b [1]byte
			for {
				if _, err := nc.Read(b[:]); err != nil {
					return
				}
				if b[0] == 'A' {
					Authenticated(ctx)
				}
				nc.Write(b[:])
			}
		})
	}()
	a1, a2 := dialFrom(t, "127.0.1.1", ln), dialFrom(t, "127.0.1.1", ln)
	a3 := dialFrom(t, "127.0.1.1", ln)
	if !closedSoon(a3, 2*time.Second) {
		t.Fatal("a third connection from one address was not shed")
	}
	u := dialFrom(t, "127.0.0.1", ln)
	echoed := func(c net.Conn, b byte) error {
		c.Write([]byte{b})
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := c.Read(make([]byte, 1))
		return err
	}
	if err := echoed(u, 'A'); err != nil {
		t.Fatalf("the user from another address: %v", err)
	}
	// Accepted in the order dialled, a1 and a2 before u, whose timer has stopped: the
	// clock waits on their two.
	bctx, bcancel := context.WithTimeout(ctx, 5*time.Second)
	defer bcancel()
	if err := clk.BlockUntilContext(bctx, 2); err != nil {
		t.Fatalf("the unauthenticated connections' timers: %v", err)
	}
	clk.Advance(300 * time.Millisecond)
	if !closedSoon(a1, 5*time.Second) || !closedSoon(a2, 5*time.Second) {
		t.Fatal("idle unauthenticated connections were not closed after AuthTimeout")
	}
	if err := echoed(u, 'x'); err != nil {
		t.Fatalf("the authenticated connection after AuthTimeout: %v", err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if m.Get("conns_shed_addr") != 1 || m.Get("conns_auth_timeout") != 2 {
		t.Fatalf("counters %v: want conns_shed_addr=1 conns_auth_timeout=2", m.Snapshot())
	}
}

// flakyListener fails its first accepts with descriptor exhaustion, as a process does
// when its RLIMIT_NOFILE is reached, then accepts from inner.
type flakyListener struct {
	net.Listener
	mu    sync.Mutex
	fails int
}

func (l *flakyListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.fails > 0 {
		l.fails--
		l.mu.Unlock()
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: syscall.EMFILE}
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

func TestServeGoesOnAfterDescriptorExhaustion(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &flakyListener{Listener: inner, fails: 5}
	m := new(metrics.Set)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	served := make(chan struct{}, 1)
	go NewGate(Config{Counter: m}).Serve(ctx, ln, func(ctx context.Context, nc net.Conn) { served <- struct{}{} })
	dialFrom(t, "127.0.0.1", inner)
	select {
	case <-served:
	case <-time.After(10 * time.Second):
		t.Fatal("no connection served after EMFILE: the accept loop ended")
	}
	if n := m.Get("accept_errors"); n != 5 {
		t.Fatalf("accept_errors = %d, want 5", n)
	}
}

func TestTemporary(t *testing.T) {
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED} {
		if !Temporary(&net.OpError{Op: "accept", Err: e}) {
			t.Errorf("%v not temporary", e)
		}
	}
	if Temporary(net.ErrClosed) {
		t.Error("a closed listener is temporary")
	}
}

func TestAuthenticatedOutsideServe(t *testing.T) {
	Authenticated(context.Background()) // must not panic
}

func TestAuthTimeoutWaitsForRequestInFlight(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := new(metrics.Set)
	clk := clockwork.NewFakeClock()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	release := make(chan struct{})
	working := make(chan *conn, 1)
	go NewGate(Config{AuthTimeout: 100 * time.Millisecond, Counter: m, Clock: clk}).Serve(ctx, ln, func(ctx context.Context, nc net.Conn) {
		defer context.AfterFunc(ctx, func() { nc.Close() })()
		var b [1]byte
		for {
			if _, err := nc.Read(b[:]); err != nil {
				return
			}
			done := Working(ctx)
			select {
			case working <- fromContext(ctx):
			default:
			}
			<-release // a slow request: a login queued at the hasher
			nc.Write(b[:])
			done()
		}
	})
	c := dialFrom(t, "127.0.0.1", ln)
	c.Write([]byte("x"))
	var sc *conn
	select {
	case sc = <-working:
	case <-time.After(5 * time.Second):
		t.Fatal("the request never reached the handler")
	}
	// Well past AuthTimeout, the request still in flight.
	clk.Advance(300 * time.Millisecond)
	eventually.That(t, 5*time.Second, "the AuthTimeout deferred for the request in flight", func() bool {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		return sc.expired
	})
	close(release)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b [1]byte
	if _, err := c.Read(b[:]); err != nil {
		t.Fatalf("the answer of a request in flight at AuthTimeout was cut off: %v", err)
	}
	if !closedSoon(c, 5*time.Second) {
		t.Fatal("the unauthenticated connection stayed open after its request ended")
	}
	if n := m.Get("conns_auth_timeout"); n != 1 {
		t.Fatalf("conns_auth_timeout = %d, want 1", n)
	}
}

// TestResetShed: with ResetShed a shed connection is reset, so the dialler sees
// ECONNRESET (at connect or at its first read), never a clean EOF.
func TestResetShed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	m := new(metrics.Set)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go NewGate(Config{Max: 1, Reserve: -1, ResetShed: true, Counter: m}).Serve(ctx, ln, func(ctx context.Context, nc net.Conn) { <-ctx.Done() })
	held := dialFrom(t, "127.0.0.1", ln)
	defer held.Close()
	eventually.That(t, 5*time.Second, "the held connection admitted", func() bool { return m.Get("conns") == 1 })
	c, err := net.Dial("tcp", ln.Addr().String())
	if err == nil {
		defer c.Close()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("shed connection: %v, want a reset", err)
	}
	if m.Get("conns_shed") != 1 {
		t.Fatalf("counters %v", m.Snapshot())
	}
}
