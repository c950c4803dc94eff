package loginsrv

import (
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/eventually"
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
		srv, addr, stop := serveOn(t, Config{Key: key, Store: store, Hasher: NewHasher(TestArgon2Params, 0), AdmitSecret: "s3cret",
			Clock: clk, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, clk)
		return &testServer{Server: srv, addr: addr, clock: clk}, stop
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
	clk.Advance(time.Second)
	if _, err := call(t, c2, &proto.SNHeartbeat{Addr: "192.0.2.4:7001", Since: since}); err != nil {
		t.Fatal(err)
	}
	// 192.0.2.2 leaves, and 192.0.2.3's connection closes (its process died).
	if _, err := call(t, conns["192.0.2.2:7001"], &proto.SNLeave{}); err != nil {
		t.Fatal(err)
	}
	conns["192.0.2.3:7001"].Close()
	want := []string{"192.0.2.1:7001", "192.0.2.4:7001"}
	eventually.That(t, 5*time.Second, fmt.Sprintf("the list before the restart to be %q", want), func() bool {
		return slices.Equal(ids(ts), want)
	})
	stop()

	clk.Advance(time.Minute)
	ts, _ = run()
	// Run restores before it starts its write-behind ticker, which run waited for.
	if ts.Metrics().Get("sn_restored") == 0 {
		t.Fatal("the restarted server restored no supernode")
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
	clk.Advance(ts.memberTimeout() + time.Second)
	if got := ids(ts); got != nil {
		t.Fatalf("still listed %q after the member timeout, unheard since the restart", got)
	}
}
