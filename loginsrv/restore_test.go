package loginsrv

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
)

// TestMemberListSurvivesRestart: a restarted login server lists again the supernodes
// that were on its list when it stopped, with the Since they registered with (so no
// supernode takes a listed one for restarted), and not those that left (said so, or
// their connection closed) before it stopped. A restored supernode that is never heard
// from again leaves after the member timeout.
func TestMemberListSurvivesRestart(t *testing.T) {
	store, err := OpenSQLite(filepath.Join(t.TempDir(), "accounts.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	clk := newClock()
	run := func() (*testServer, func()) {
		srv, err := New(Config{Key: key, Store: store, Hasher: NewHasher(TestArgon2Params, 0), AdmitSecret: "s3cret",
			Now: clk.Now, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		if err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() { srv.Serve(ctx, ln); close(done) }()
		stopped := false
		stop := func() {
			if !stopped {
				stopped = true
				cancel()
				<-done
			}
		}
		t.Cleanup(stop)
		return &testServer{Server: srv, addr: ln.Addr().String(), clock: clk}, stop
	}
	ids := func(ts *testServer) []string {
		_, all := ts.liveMembers()
		var out []string
		for _, m := range all {
			out = append(out, m.Addr)
		}
		slices.Sort(out)
		return out
	}

	ts, stop := run()
	since := clk.Now().Add(-time.Hour).Truncate(time.Millisecond)
	conns := map[string]*rpc.Conn{}
	for _, addr := range []string{"192.0.2.1:7001", "192.0.2.2:7001", "192.0.2.3:7001"} {
		c := ts.dial(t, newKey())
		if _, err := call(t, c, &proto.SNRegister{Name: addr, Addr: addr, Since: since, AdmitSecret: "s3cret"}); err != nil {
			t.Fatal(err)
		}
		conns[addr] = c
	}
	c2 := ts.dial(t, newKey()) // one more, heard from only by its heartbeat's row
	if _, err := call(t, c2, &proto.SNRegister{Name: "late", Addr: "192.0.2.4:7001", Since: since, AdmitSecret: "s3cret"}); err != nil {
		t.Fatal(err)
	}
	clk.Add(time.Second)
	if _, err := call(t, c2, &proto.SNHeartbeat{Addr: "192.0.2.4:7001", Since: since}); err != nil {
		t.Fatal(err)
	}
	// 192.0.2.2 leaves, and 192.0.2.3's connection closes (its process died).
	if _, err := call(t, conns["192.0.2.2:7001"], &proto.SNLeave{}); err != nil {
		t.Fatal(err)
	}
	conns["192.0.2.3:7001"].Close()
	want := []string{"192.0.2.1:7001", "192.0.2.4:7001"}
	for i := 0; !slices.Equal(ids(ts), want); i++ {
		if i > 500 {
			t.Fatalf("listed %q before the restart, want %q", ids(ts), want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	stop()

	clk.Add(time.Minute)
	ts, _ = run()
	for i := 0; ts.Metrics().Get("sn_restored") == 0; i++ { // Serve restores, in its goroutine
		if i > 500 {
			t.Fatal("the restarted server restored no supernode")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := ids(ts); !slices.Equal(got, want) {
		t.Fatalf("the restarted server lists %q, want %q", got, want)
	}
	_, all := ts.liveMembers()
	for _, m := range all {
		if !m.Since.Equal(since) {
			t.Fatalf("%s restored with Since %v, want %v as it registered", m.Addr, m.Since, since)
		}
	}
	if got := ts.Metrics().Get("sn_restored"); got != 2 {
		t.Fatalf("sn_restored = %d, want 2", got)
	}
	clk.Add(ts.memberTimeout() + time.Second)
	if got := ids(ts); got != nil {
		t.Fatalf("still listed %q after the member timeout, unheard since the restart", got)
	}
}
