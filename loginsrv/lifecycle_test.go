package loginsrv_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
	"github.com/peerline/peerline/loginsrv"
)

// TestRunLeavesNoGoroutine: a login server that registered and logged in a user (and
// holds that user's connection open) returns from Run with none of its goroutines left.
func TestRunLeavesNoGoroutine(t *testing.T) {
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	store, err := loginsrv.OpenSQLite(filepath.Join(t.TempDir(), "accounts.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s, err := loginsrv.New(loginsrv.Config{Key: key, Store: store, Hasher: loginsrv.NewHasher(loginsrv.TestArgon2Params, 0), AdmitSecret: "s", Listener: ln})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Run(ctx) }()
	ls := client.LoginServer{Addr: ln.Addr().String(), Key: s.PublicKey()}
	rctx, rcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer rcancel()
	if err := client.Register(rctx, nil, ls, "alice", "password alice"); err != nil {
		t.Fatal(err)
	}
	// A client that logs in keeps its connection open: Run must end it.
	c, err := client.New(client.Config{DataDir: t.TempDir(), Login: ls, User: "alice", NoControl: true,
		Password: func(context.Context) (string, error) { return "password alice", nil }})
	if err != nil {
		t.Fatal(err)
	}
	cctx, ccancel := context.WithCancel(context.Background())
	ran := make(chan struct{})
	go func() { c.Run(cctx); close(ran) }()
	defer func() { ccancel(); <-ran }()
	overlaytest.Eventually(t, 10*time.Second, "alice logged in", func() bool { return c.Metrics().Get("password_logins") > 0 })
	pkg := "github.com/peerline/peerline/loginsrv."
	if running := overlaytest.Leftover(0, pkg); len(running) < 2 {
		t.Fatalf("only %d goroutines of the running server seen: the check would miss a leak", len(running))
	}
	cancel()
	if err := <-served; err != nil && ctx.Err() == nil {
		t.Fatal(err)
	}
	// A connection's goroutine may still be on its way out when Run returns (1 run in
	// about 25 under -race): a second for those.
	if left := overlaytest.Leftover(time.Second, pkg); len(left) > 0 {
		t.Fatalf("%d goroutines left after Run returned:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}
