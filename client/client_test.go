package client_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
	"github.com/peerline/peerline/internal/ctl"
	"github.com/peerline/peerline/internal/proto"
)

func attached(c *overlaytest.Client) func() bool {
	return func() bool { return c.Status().Supernode != nil }
}

// TestReattachAfterSupernodeDies kills the supernode a client is attached to and checks
// that the client attaches to another one from its host cache.
func TestReattachAfterSupernodeDies(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 3})
	o.Register("alice", "correct horse")
	c := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "correct horse", nil)
	o.Eventually("alice attached", attached(c))
	o.Eventually("host cache filled", func() bool { return c.HostCache().Len() == 3 })
	first := c.Status().Supernode
	sn := o.SupernodeAt(first.Addr)
	if sn == nil {
		t.Fatalf("attached to unknown supernode %s", first.Addr)
	}
	o.Eventually("supernode sees alice", func() bool { return len(sn.Status().Clients) == 1 })
	killed := time.Now()
	sn.Stop()
	o.Eventually("reattached elsewhere", func() bool {
		s := c.Status().Supernode
		return s != nil && s.Addr != first.Addr
	})
	t.Logf("reattached from %s to %s in %v", first.Addr, c.Status().Supernode.Addr, time.Since(killed).Round(time.Millisecond))
	if got := c.Metrics().Get("supernode_lost"); got != 1 {
		t.Errorf("supernode_lost = %d", got)
	}
}

// TestRestartWithoutPassword restarts a client within its credential's lifetime: it must
// log back in without a password and without a single argon2 hash at the login server.
func TestRestartWithoutPassword(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{})
	o.Register("alice", "correct horse")
	dir := filepath.Join(t.TempDir(), "alice")
	c := o.StartClient(dir, "alice", "correct horse", nil)
	o.Eventually("alice attached", attached(c))
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	hashes := o.Login.Hasher().Count()
	logins := o.Login.Metrics().Get("logins")

	c2 := o.StartClient(dir, "", "", nil) // no user, no password: all from the data dir
	o.Eventually("alice attached again", attached(c2))
	// The saved credential and buddy list suffice to attach; the login server is asked
	// when a request needs it, with a resume.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var bl proto.BuddyListOK
	if err := ctl.Do(ctx, filepath.Join(dir, client.SocketFile), ctl.Request{Cmd: client.CmdBuddyList}, &bl); err != nil {
		t.Fatalf("buddy list after the restart: %v", err)
	}
	o.Eventually("resumed at the login server", func() bool { return c2.Metrics().Get("resumes") >= 1 })
	if got := o.Login.Hasher().Count(); got != hashes {
		t.Fatalf("argon2 hashes went from %d to %d on a credential restart", hashes, got)
	}
	if o.Login.Metrics().Get("logins") != logins || c2.Metrics().Get("password_logins") != 0 {
		t.Fatal("a password login happened")
	}
	if c2.User() != "alice" {
		t.Fatalf("user %q", c2.User())
	}
}

func TestWrongPasswordIsFatal(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{})
	o.Register("alice", "correct horse")
	c := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "wrong horse", nil)
	select {
	case err := <-c.Done():
		if !errors.Is(err, proto.ErrWrongPassword) {
			t.Fatalf("Run = %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("client kept retrying a wrong password")
	}
	c2 := o.StartClient(filepath.Join(t.TempDir(), "nobody"), "nobody", "", nil)
	if err := <-c2.Done(); !errors.Is(err, client.ErrNeedPassword) {
		t.Fatalf("no password: %v", err)
	}
}

func TestControlSocket(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{})
	o.Register("alice", "correct horse")
	o.Register("bob", "battery staple")
	a := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "correct horse", nil)
	o.Eventually("alice attached", attached(a))
	sock := filepath.Join(a.Dir, client.SocketFile)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var st client.Status
	if err := ctl.Do(ctx, sock, ctl.Request{Cmd: client.CmdStatus}, &st); err != nil || st.Supernode == nil || st.User != "alice" {
		t.Fatalf("status %+v %v", st, err)
	}
	if err := ctl.Do(ctx, sock, ctl.Request{Cmd: client.CmdBuddyAdd, Args: []string{"bob"}}, nil); err != nil {
		t.Fatal(err)
	}
	var bl proto.BuddyListOK
	if err := ctl.Do(ctx, sock, ctl.Request{Cmd: client.CmdBuddyList}, &bl); err != nil || len(bl.Buddies) != 1 {
		t.Fatalf("buddies %+v %v", bl, err)
	}
	var sr client.SearchResult
	if err := ctl.Do(ctx, sock, ctl.Request{Cmd: client.CmdSearch, Args: []string{"b*"}}, &sr); err != nil || len(sr.Results) != 1 || sr.Results[0].Name != "bob" {
		t.Fatalf("search %+v %v", sr, err)
	}
	err := ctl.Do(ctx, sock, ctl.Request{Cmd: client.CmdBuddyAdd, Args: []string{"zed"}}, nil)
	var re *ctl.RemoteError
	if !errors.As(err, &re) || re.Code != "no_such_user" {
		t.Fatalf("unknown buddy: %v", err)
	}
}

// TestLoginServerOutageKeepsUsersAttached: credentials are checked offline, so a client
// with a saved credential and host cache attaches while the login server is unreachable.
func TestLoginServerOutageKeepsUsersAttached(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 2})
	o.Register("alice", "correct horse")
	dir := filepath.Join(t.TempDir(), "alice")
	c := o.StartClient(dir, "alice", "correct horse", nil)
	o.Eventually("alice attached", attached(c))
	c.Stop()
	// Point the restarted client at a login server that is not there: with a saved
	// credential and host cache it still attaches.
	c2 := o.StartClient(dir, "", "", func(cfg *client.Config) { cfg.Login.Addr = "127.0.0.1:1" })
	o.Eventually("attached without the login server", attached(c2))
}

// TestAttachWhenSupernodesAppearLater: a client that logs in while no supernode is live
// gets an empty seed; it must keep asking and attach once a supernode comes up.
func TestAttachWhenSupernodesAppearLater(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: -1})
	o.Register("alice", "correct horse")
	c := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "correct horse", nil)
	o.Eventually("alice logged in", func() bool { return c.Status().LoggedIn })
	if c.HostCache().Len() != 0 {
		t.Fatal("host cache filled with no supernode running")
	}
	o.AddSupernode(time.Second)
	o.Eventually("alice attached", attached(c))
	if c.Metrics().Get("seed_refreshes") == 0 {
		t.Fatal("attached without a seed refresh?")
	}
}

// TestNATShownInStatus: the client detects its NAT with its supernode's RFC 5780 STUN
// service; on loopback it has none, so it is "open", and its record says so.
func TestNATShownInStatus(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{STUN: true})
	o.Register("alice", "correct horse")
	c := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "correct horse",
		func(cfg *client.Config) { cfg.NATTimeout = 300 * time.Millisecond })
	o.Eventually("NAT detected", func() bool { return c.Status().NAT != nil })
	n := c.Status().NAT
	if n.Classic != "open" || !n.Public || n.Mapping != "endpoint-independent" || n.Filtering != "endpoint-independent" || n.Error != "" {
		t.Fatalf("loopback NAT status %+v", n)
	}
}

// TestNATSavedAcrossRestart: a client saves the NAT type it detected; restarted, its
// first record carries it, and a detection that finds the same type publishes nothing
// more (a mass restart then costs each client one publication, not two).
func TestNATSavedAcrossRestart(t *testing.T) {
	// Keep-alives (publications too) come after the test is over.
	o := overlaytest.Start(t, overlaytest.Options{STUN: true, KeepAlive: time.Minute})
	o.Register("alice", "correct horse")
	dir := filepath.Join(t.TempDir(), "alice")
	mod := func(cfg *client.Config) { cfg.NATTimeout = 300 * time.Millisecond }
	c := o.StartClient(dir, "alice", "correct horse", mod)
	// The first run's first record had no NAT type: detection republished it.
	o.Eventually("NAT detected and republished", func() bool { return c.Metrics().Get("publishes") == 2 })
	if b, err := os.ReadFile(filepath.Join(dir, client.NATFile)); err != nil || string(b) != "open\n" {
		t.Fatalf("saved NAT type %q, %v; want \"open\\n\"", b, err)
	}
	c.Kill()
	c = o.StartClient(dir, "alice", "", mod)
	o.Eventually("NAT detected again", func() bool { return c.Metrics().Get("nat_unchanged") == 1 })
	if n := c.Metrics().Get("publishes"); n != 1 {
		t.Fatalf("restarted: %d publications, want 1 (the NAT type did not change)", n)
	}
	at := o.SupernodeAt(c.Status().Supernode.Addr) // a holder too: 2 supernodes, 3 replicas
	if e, ok := at.Held("alice"); !ok || e.Rec.NAT != "open" || e.Offline {
		t.Errorf("alice's supernode holds %+v (found %v, offline %v): want alice online with the saved NAT type", e.Rec, ok, e.Offline)
	}
	// An unreadable file is counted, and the record carries no type until detection.
	if err := os.WriteFile(filepath.Join(dir, client.NATFile), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	c.Kill()
	c = o.StartClient(dir, "alice", "", mod)
	if n := c.Metrics().Get("nat_file_unreadable"); n != 1 {
		t.Fatalf("nat_file_unreadable = %d, want 1", n)
	}
	o.Eventually("republished with the type detected", func() bool { return c.Metrics().Get("publishes") == 2 })
}

// TestLoginConnectionClosesWhenIdle: a client holds its login-server connection only
// while it uses it, so a population of idle clients costs the login server nothing; a
// later request resumes a new connection with the saved credential, without a password.
func TestLoginConnectionClosesWhenIdle(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{})
	o.Register("alice", "correct horse")
	o.Register("bob", "battery staple")
	a := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "correct horse",
		func(cfg *client.Config) { cfg.LoginIdle = 300 * time.Millisecond })
	o.Eventually("alice attached", attached(a))
	sns := len(o.Supernodes()) // each keeps its heartbeat connection
	o.Eventually("no client connection left at the login server", func() bool { return o.Login.OpenConns() == sns })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sock := filepath.Join(a.Dir, client.SocketFile)
	if err := ctl.Do(ctx, sock, ctl.Request{Cmd: client.CmdBuddyAdd, Args: []string{"bob"}}, nil); err != nil {
		t.Fatalf("buddy add after the idle close: %v", err)
	}
	if got := a.Metrics().Get("resumes"); got < 1 {
		t.Fatalf("resumes = %d: the request did not resume a new connection", got)
	}
	if got := a.Metrics().Get("password_logins"); got != 1 {
		t.Fatalf("password_logins = %d, want the first login only", got)
	}
	o.Eventually("the new connection closed as idle too", func() bool { return o.Login.OpenConns() == sns })
}
