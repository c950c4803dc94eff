package loginsrv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
	"github.com/peerline/peerline/internal/secure"
	"github.com/peerline/peerline/internal/syncbuf"
)

// dialFrom opens a TLS control connection from the loopback address local.
func (ts *testServer) dialFrom(t *testing.T, local string) (*rpc.Conn, error) {
	t.Helper()
	cfg, err := secure.ClientConfig(newKey(), secure.PinnedKey(ts.PublicKey()))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	tc, err := secure.Dial(ctx, d, ts.addr, cfg)
	if err != nil {
		return nil, err
	}
	c := rpc.New(tc, rpc.Options{})
	go c.Run(context.Background())
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// TestOneAddressCannotFillTheServer holds idle TLS connections from one address, then
// from one /24: past PerAddr and PerPrefix they are shed, and a user from elsewhere still
// registers and logs in. The idle ones are closed once AuthTimeout passes on the server's
// clock; a logged-in one stays.
func TestOneAddressCannotFillTheServer(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.MaxConns, c.PerAddr, c.PerPrefix, c.AuthTimeout = 100, 4, 10, 500*time.Millisecond
	})
	var idle []*rpc.Conn
	// One address: 4 admitted, the rest shed at once (the handshake fails).
	for i := 0; i < 8; i++ {
		if c, err := ts.dialFrom(t, "127.0.1.1"); err == nil {
			idle = append(idle, c)
		}
	}
	// One /24: 10 in all.
	for i := 2; i < 10; i++ {
		if c, err := ts.dialFrom(t, fmt.Sprintf("127.0.1.%d", i)); err == nil {
			idle = append(idle, c)
		}
	}
	m := ts.Metrics()
	if len(idle) > 10 || m.Get("conns_shed_addr") < 4 || m.Get("conns_shed_prefix") == 0 {
		t.Fatalf("%d idle connections admitted, counters %v", len(idle), m.Snapshot())
	}
	// A user on another prefix is served meanwhile, and stays connected once logged in.
	mustRegister(t, ts, "alice", "correct horse")
	c, _ := login(t, ts, newKey(), "alice", "correct horse")
	ts.clock.Advance(ts.cfg.AuthTimeout)
	deadline := time.Now().Add(5 * time.Second)
	for _, ic := range idle {
		select {
		case <-ic.Done():
		case <-time.After(time.Until(deadline)):
			t.Fatalf("an idle unauthenticated connection is still open 5 s after AuthTimeout passed")
		}
	}
	if got := m.Get("conns_auth_timeout"); got < uint64(len(idle)) {
		t.Errorf("conns_auth_timeout = %d, want >= %d", got, len(idle))
	}
	if _, err := call(t, c, &proto.BuddyList{}); err != nil {
		t.Errorf("the logged-in connection was closed with the idle ones: %v", err)
	}
	// Once they are gone the address is served again. The server gives a connection's
	// slot back when its handler returns, which may be just after the client saw it close.
	eventually.That(t, 5*time.Second, "only the logged-in connection left open", func() bool { return ts.OpenConns() == 1 })
	if _, err := ts.dialFrom(t, "127.0.1.1"); err != nil {
		t.Errorf("127.0.1.1 not served after its idle connections closed: %v", err)
	}
}

// TestBadResumeFloodLogsBounded sends a thousand garbage Resume requests (valid framing,
// bad credential) from one address and from many: each is answered and counted, but the
// log holds a bounded number of lines, and what it held back is counted.
func TestBadResumeFloodLogsBounded(t *testing.T) {
	var buf syncbuf.Buffer
	ts := startServer(t, func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	const perConn = 250
	for _, from := range []string{"127.0.1.1", "127.0.1.1", "127.0.2.1", "127.0.3.1"} {
		c, err := ts.dialFrom(t, from)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < perConn; i++ {
			if _, err := call(t, c, &proto.Resume{Credential: []byte("garbage credential")}); !errors.Is(err, proto.ErrCredInvalid) {
				t.Fatalf("garbage resume: %v", err)
			}
		}
	}
	m := ts.Metrics()
	if got := m.Get("cred_invalid"); got != 4*perConn {
		t.Errorf("cred_invalid = %d, want %d", got, 4*perConn)
	}
	n := strings.Count(buf.String(), "bad credential")
	if n == 0 || n > 3 {
		t.Errorf("%d 'bad credential' lines for 1000 garbage resumes from 3 addresses, want 1 to 3:\n%s", n, buf.String())
	}
	if got := m.Get("log_suppressed"); got < 4*perConn-3 {
		t.Errorf("log_suppressed = %d, want >= %d", got, 4*perConn-3)
	}
}

// TestIdleTimeout closes a logged-in connection that carries nothing for IdleTimeout,
// and not one that keeps talking.
func TestIdleTimeout(t *testing.T) {
	ts := startServer(t, func(c *Config) {
		c.IdleTimeout, c.HeartbeatInterval = 600*time.Millisecond, 100*time.Millisecond
	})
	mustRegister(t, ts, "alice", "correct horse")
	idle, _ := login(t, ts, newKey(), "alice", "correct horse")
	busy, _ := login(t, ts, newKey(), "alice", "correct horse")
	start := time.Now()
	for i := 0; i < 10; i++ { // 2 s of pings, every 200 ms
		if _, err := call(t, busy, &proto.Ping{Seq: uint64(i)}); err != nil {
			t.Fatalf("a connection in use was closed: %v", err)
		}
		// Real time, measured: IdleTimeout is a read deadline on the socket, which no
		// test clock moves, so the pings are spaced in real time to show it is per
		// connection and counts from the last message.
		time.Sleep(200 * time.Millisecond)
	}
	select {
	case <-idle.Done():
		t.Logf("idle connection closed; busy one open after %v", time.Since(start).Round(time.Millisecond))
	default:
		t.Fatal("a logged-in connection idle for 2 s is still open (IdleTimeout 600ms)")
	}
}
