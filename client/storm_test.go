package client_test

import (
	"context"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/internal/media"
	"github.com/peerline/peerline/internal/overlaytest"
)

// buddyOnline holds when c sees name with the presence want.
func buddyOnline(c *overlaytest.Client, name string, want bool) func() bool {
	return func() bool {
		for _, p := range c.Buddies() {
			if p.Name == name && p.Online == want && !p.Updated.IsZero() {
				return true
			}
		}
		return false
	}
}

// TestRestartWithLoginServerDown restarts alice while the login server is unreachable:
// with her saved credential, host cache and buddy list she attaches, watches her buddy
// (bob sees her and she sees him), is found through the overlay and takes a call, all
// without one password hash, and her login retries stay within back-off and budget.
func TestRestartWithLoginServerDown(t *testing.T) {
	o, a, b, _ := callPair(t, func(c *client.Config) { c.Call.AutoAnswer = true }, nil)
	if err := ask(t, a, client.CmdBuddyAdd, []string{"bob"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := ask(t, b, client.CmdBuddyAdd, []string{"alice"}, nil); err != nil {
		t.Fatal(err)
	}
	o.Eventually("alice sees bob online", buddyOnline(a, "bob", true))
	o.Eventually("bob sees alice online", buddyOnline(b, "alice", true))
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	o.Eventually("bob sees alice offline", buddyOnline(b, "alice", false))
	hashes := o.Login.Hasher().Count()

	// The restarted alice knows no password and reaches no login server.
	a2 := o.StartClient(a.Dir, "", "", func(c *client.Config) {
		c.Login.Addr = "127.0.0.1:1"
		c.Call.Loopback, c.Call.AutoAnswer = true, true
		c.NATTimeout = 300 * time.Millisecond
	})
	o.Eventually("alice attached without the login server", attached(a2))
	if a2.Metrics().Get("buddies_loaded") != 1 {
		t.Fatalf("buddy list not loaded from the data dir: counters %v", a2.Metrics().Snapshot())
	}
	o.Eventually("alice, restarted, sees bob online", buddyOnline(a2, "bob", true))
	o.Eventually("bob sees alice back", buddyOnline(b, "alice", true))
	o.Eventually("bob finds alice in the overlay", func() bool {
		sr, err := b.Search(context.Background(), "alice")
		return err == nil && sr.Source == "overlay" && sr.User != nil && sr.User.Online &&
			sr.User.SupernodeAddr == a2.Status().Supernode.Addr
	})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	rep, err := b.Call(ctx, "alice", client.CallOptions{Source: &media.Sine{Freq: 440, Frames: 50}})
	if err != nil {
		t.Fatalf("bob calls the restarted alice: %v", err)
	}
	if rep.Media.FramesReceived == 0 && rep.Media.FramesSent == 0 {
		t.Fatalf("call carried nothing: %+v", rep)
	}
	if got := o.Login.Hasher().Count(); got != hashes {
		t.Fatalf("argon2 hashes %d -> %d", hashes, got)
	}
	st := a2.Status()
	t.Logf("restarted alice: path %s, login_attempts %d, login_calls_deferred %d, retry tokens %.1f",
		rep.Path, st.Counters["login_attempts"], st.Counters["login_calls_deferred"], st.RetryTokens)
	if st.Counters["password_logins"] != 0 || st.Counters["resumes"] != 0 {
		t.Fatalf("logged in with the login server down? %v", st.Counters)
	}
}
