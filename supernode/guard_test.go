package supernode_test

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
	"testing"
	"time"

	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
	"github.com/peerline/peerline/internal/secure"
	"github.com/peerline/peerline/internal/syncbuf"
	"github.com/peerline/peerline/loginsrv"
	"github.com/peerline/peerline/supernode"
)

// guarded starts a login server and one supernode admitted by it, the supernode's
// config changed by mod, and returns the supernode and its address.
func guarded(t *testing.T, mod func(*supernode.Config)) (*supernode.Supernode, string) {
	t.Helper()
	_, lkey, _ := ed25519.GenerateKey(rand.Reader)
	store, err := loginsrv.OpenSQLite(filepath.Join(t.TempDir(), "accounts.db"))
	if err != nil {
		t.Fatal(err)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	lln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ls, err := loginsrv.New(loginsrv.Config{Key: lkey, Store: store, Hasher: loginsrv.NewHasher(loginsrv.TestArgon2Params, 0),
		AdmitSecret: "s", Logger: quiet, Listener: lln})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	lsDone := make(chan struct{})
	go func() { ls.Run(ctx); close(lsDone) }()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	cfg := supernode.Config{Key: key, Listener: ln, Advertise: ln.Addr().String(), LoginAddr: lln.Addr().String(),
		LoginKey: ls.PublicKey(), AdmitSecret: "s", Logger: quiet}
	mod(&cfg)
	sn, err := supernode.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	snDone := make(chan struct{})
	go func() { sn.Run(ctx); close(snDone) }()
	t.Cleanup(func() { cancel(); <-snDone; <-lsDone; store.Close() })
	eventually.That(t, 10*time.Second, "supernode admitted", sn.Registered)
	return sn, ln.Addr().String()
}

func dialFrom(t *testing.T, addr, local string) (*rpc.Conn, error) {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	id, _ := secure.NewOverlayIdentity(key)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tc, err := id.DialOverlay(ctx, &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}, addr, nil)
	if err != nil {
		return nil, err
	}
	c := rpc.New(tc, rpc.Options{})
	go c.Run(context.Background())
	t.Cleanup(func() { c.Close() })
	return c, nil
}

// TestSupernodeSheds holds idle TLS connections from one address and one /24: past
// PerAddr and PerPrefix they are shed, and those admitted are closed at AuthTimeout.
func TestSupernodeSheds(t *testing.T) {
	sn, addr := guarded(t, func(c *supernode.Config) {
		c.MaxClients, c.PerAddr, c.PerPrefix, c.AuthTimeout = 100, 3, 8, 500*time.Millisecond
	})
	var idle []*rpc.Conn
	for i := 1; i <= 6; i++ {
		for j := 0; j < 3; j++ {
			if c, err := dialFrom(t, addr, fmt.Sprintf("127.0.1.%d", min(i, 2))); err == nil {
				idle = append(idle, c)
			}
		}
	}
	m := sn.Metrics()
	if len(idle) != 6 || m.Get("conns_shed_addr") == 0 {
		t.Fatalf("%d idle connections from two addresses admitted (PerAddr 3), counters %v", len(idle), m.Snapshot())
	}
	for i := 3; i <= 6; i++ {
		if c, err := dialFrom(t, addr, fmt.Sprintf("127.0.1.%d", i)); err == nil {
			idle = append(idle, c)
		}
	}
	if len(idle) != 8 || m.Get("conns_shed_prefix") == 0 {
		t.Fatalf("%d idle connections from one /24 admitted (PerPrefix 8), counters %v", len(idle), m.Snapshot())
	}
	for _, c := range idle {
		select {
		case <-c.Done():
		case <-time.After(5 * time.Second):
			t.Fatal("an idle unattached connection is still open after 5 s (AuthTimeout 500ms)")
		}
	}
	if got := m.Get("conns_auth_timeout"); got != uint64(len(idle)) {
		t.Errorf("conns_auth_timeout = %d, want %d", got, len(idle))
	}
}

// TestGarbageAttachFloodLogsBounded sends a thousand Attach requests with a bad
// credential: each is refused and counted, the log holds one line per source.
func TestGarbageAttachFloodLogsBounded(t *testing.T) {
	var buf syncbuf.Buffer
	sn, addr := guarded(t, func(c *supernode.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	const perConn = 250
	for _, from := range []string{"127.0.1.1", "127.0.1.1", "127.0.2.1", "127.0.3.1"} {
		c, err := dialFrom(t, addr, from)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < perConn; i++ {
			if _, err := call(t, c, &proto.Attach{Credential: []byte("garbage")}); !errors.Is(err, proto.ErrCredInvalid) {
				t.Fatalf("garbage attach: %v", err)
			}
		}
	}
	m := sn.Metrics()
	if got := m.Get("cred_invalid"); got != 4*perConn {
		t.Errorf("cred_invalid = %d, want %d", got, 4*perConn)
	}
	if n := strings.Count(buf.String(), "attach refused"); n == 0 || n > 3 {
		t.Errorf("%d 'attach refused' lines for 1000 garbage attaches from 3 addresses, want 1 to 3", n)
	}
	if got := m.Get("log_suppressed"); got < 4*perConn-3 {
		t.Errorf("log_suppressed = %d, want >= %d", got, 4*perConn-3)
	}
}
