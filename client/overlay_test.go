package client_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
	"github.com/peerline/peerline/internal/ctl"
	"github.com/peerline/peerline/internal/proto"
)

// twoUsers starts an overlay with three supernodes and alice and bob attached to
// different ones, each with the other as a buddy.
func twoUsers(t *testing.T, opts overlaytest.Options) (*overlaytest.Overlay, *overlaytest.Client, *overlaytest.Client) {
	return twoUsersWith(t, opts, nil, nil)
}

// twoUsersWith is twoUsers with alice's and bob's client configs adjusted by modA and
// modB (either may be nil).
func twoUsersWith(t *testing.T, opts overlaytest.Options, modA, modB func(*client.Config)) (*overlaytest.Overlay, *overlaytest.Client, *overlaytest.Client) {
	t.Helper()
	if opts.Supernodes == 0 {
		opts.Supernodes = 3
	}
	o := overlaytest.Start(t, opts)
	o.Register("alice", "correct horse")
	o.Register("bob", "battery staple")
	a := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "correct horse", modA)
	o.Eventually("alice attached", attached(a))
	// bob avoids alice's supernode, so their records and messages must cross the overlay.
	b := o.StartClient(filepath.Join(t.TempDir(), "bob"), "bob", "battery staple", modB)
	o.Eventually("bob attached", attached(b))
	for tries := 0; b.Status().Supernode.Addr == a.Status().Supernode.Addr; tries++ {
		if tries > 20 {
			t.Fatal("bob keeps attaching to alice's supernode")
		}
		b.Stop()
		b = o.StartClient(b.Dir, "", "", func(c *client.Config) {
			if modB != nil {
				modB(c)
			}
			c.ParallelAttach = 1
		})
		b.HostCache().MarkFailure(a.Status().Supernode.Addr)
		b.HostCache().MarkFailure(a.Status().Supernode.Addr)
		o.Eventually("bob attached", attached(b))
	}
	// Attached is not yet published: wait for both records, so that no test sees the
	// record of a bob instance stopped above.
	o.Eventually("alice and bob published", func() bool {
		return a.Metrics().Get("publishes") > 0 && b.Metrics().Get("publishes") > 0
	})
	return o, a, b
}

func ask(t *testing.T, c *overlaytest.Client, cmd string, args []string, out any) error {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return ctl.Do(ctx, filepath.Join(c.Dir, client.SocketFile), ctl.Request{Cmd: cmd, Args: args}, out)
}

func TestSearchThroughOverlay(t *testing.T) {
	o, a, b := twoUsers(t, overlaytest.Options{CacheTTL: -1})
	var sr client.SearchResult
	// bob may have been restarted to leave alice's supernode: until his new client has
	// published, the overlay can still hold the old instance's record.
	overlaytest.Eventually(t, 10*time.Second, "alice finds bob in the overlay", func() bool {
		sr = client.SearchResult{}
		err := ask(t, a, client.CmdSearch, []string{"bob"}, &sr)
		return err == nil && sr.Source == "overlay" && sr.User != nil && sr.User.Online &&
			sr.User.SupernodeAddr == b.Status().Supernode.Addr
	})
	// Once published, bob is found by the overlay alone, search after search.
	dirBefore := o.Login.Metrics().Get("directory_queries")
	for i := 0; i < 5; i++ {
		sr = client.SearchResult{}
		if err := ask(t, a, client.CmdSearch, []string{"bob"}, &sr); err != nil || sr.Source != "overlay" {
			t.Fatalf("search %d: %+v %v", i, sr, err)
		}
	}
	if sr.User == nil || !sr.User.Online || sr.User.SupernodeAddr != b.Status().Supernode.Addr {
		t.Fatalf("search result %+v, bob is at %s", sr.User, b.Status().Supernode.Addr)
	}
	if got := o.Login.Metrics().Get("directory_queries"); got != dirBefore {
		t.Fatalf("the login server's directory was asked (%d -> %d): the overlay did not answer", dirBefore, got)
	}
	t.Logf("alice found bob through the overlay in %d hops (cached %v)", sr.Hops, sr.Cached)
	// Prefix searches go to the directory.
	sr = client.SearchResult{}
	if err := ask(t, b, client.CmdSearch, []string{"al*"}, &sr); err != nil || sr.Source != "directory" || len(sr.Results) != 1 || sr.Results[0].Name != "alice" {
		t.Fatalf("prefix search: %+v %v", sr, err)
	}
	// A user who never logged in is known only to the directory; a name nobody has is
	// "no such user".
	o.Register("carol", "carol's password")
	sr = client.SearchResult{}
	if err := ask(t, a, client.CmdSearch, []string{"carol"}, &sr); err != nil || sr.Source != "directory" || len(sr.Results) != 1 || !sr.Results[0].LastSeen.IsZero() {
		t.Fatalf("carol: %+v %v", sr, err)
	}
	sr = client.SearchResult{}
	if err := ask(t, a, client.CmdSearch, []string{"zed"}, &sr); err != nil || len(sr.Results) != 0 {
		t.Fatalf("zed: %+v %v", sr, err)
	}
}

func TestPresenceAndBlocking(t *testing.T) {
	o, a, b := twoUsers(t, overlaytest.Options{KeepAlive: 300 * time.Millisecond})
	if err := ask(t, a, client.CmdBuddyAdd, []string{"bob"}, nil); err != nil {
		t.Fatal(err)
	}
	online := func(c *overlaytest.Client, name string, want bool) func() bool {
		return func() bool {
			for _, p := range c.Buddies() {
				if p.Name == name && p.Online == want && !p.Updated.IsZero() {
					return true
				}
			}
			return false
		}
	}
	o.Eventually("alice sees bob online", online(a, "bob", true))
	keep := 300 * time.Millisecond

	// bob logs off cleanly.
	b.Stop()
	start := time.Now()
	overlaytest.Eventually(t, 2*keep+time.Second, "alice sees bob offline after a clean log-off", online(a, "bob", false))
	t.Logf("clean log-off seen in %v (keep-alive %v)", time.Since(start).Round(time.Millisecond), keep)

	// bob comes back, then vanishes without a word: his supernode drops him.
	b = o.StartClient(b.Dir, "", "", nil)
	o.Eventually("alice sees bob back", online(a, "bob", true))
	sn := o.SupernodeAt(b.Status().Supernode.Addr)
	start = time.Now()
	b.Kill()
	overlaytest.Eventually(t, 2*keep+time.Second, "alice sees bob offline after he was killed", online(a, "bob", false))
	t.Logf("killed client seen offline in %v via %s", time.Since(start).Round(time.Millisecond), sn.Addr)

	// Blocked users see nothing: carol has alice as a buddy, alice blocks carol.
	o.Register("carol", "carol's password")
	c := o.StartClient(filepath.Join(t.TempDir(), "carol"), "carol", "carol's password", nil)
	o.Eventually("carol attached", attached(c))
	if err := ask(t, a, client.CmdBuddyBlock, []string{"carol"}, nil); err != nil {
		t.Fatal(err)
	}
	if err := ask(t, c, client.CmdBuddyAdd, []string{"alice"}, nil); err != nil {
		t.Fatal(err)
	}
	// A control: bob, back online, is carol's buddy too; once she sees him, presence
	// reaches her. Her supernode renews all her watches every keep-alive period, and each
	// renewal brings her bob's presence again: three renewals later alice's would have
	// reached her too.
	o.StartClient(b.Dir, "", "", nil)
	if err := ask(t, c, client.CmdBuddyAdd, []string{"bob"}, nil); err != nil {
		t.Fatal(err)
	}
	o.Eventually("carol sees bob online", online(c, "bob", true))
	seen := c.Metrics().Get("presence_updates")
	o.Eventually("three renewals of carol's watches", func() bool { return c.Metrics().Get("presence_updates") >= seen+3 })
	listed := false
	for _, p := range c.Buddies() {
		if p.Name != "alice" {
			continue
		}
		listed = true
		if p.Online || !p.LastSeen.IsZero() {
			t.Fatalf("carol, blocked by alice, sees her presence: %+v", p)
		}
	}
	if !listed {
		t.Fatalf("alice is not in carol's buddy list: %+v", c.Buddies())
	}
	var sr client.SearchResult
	if err := ask(t, c, client.CmdSearch, []string{"alice"}, &sr); err != nil {
		t.Fatal(err)
	}
	if sr.User != nil && (sr.User.Online || !sr.User.LastSeen.IsZero()) {
		t.Fatalf("carol's search shows alice: %+v", sr.User)
	}
	err := ask(t, c, client.CmdMsg, []string{"alice", "hi"}, nil)
	var re *ctl.RemoteError
	if !errors.As(err, &re) || (re.Code != "offline" && re.Code != "blocked") {
		t.Fatalf("carol could message alice: %v", err)
	}
}

func TestMessages(t *testing.T) {
	_, a, b := twoUsers(t, overlaytest.Options{})
	overlaytest.Eventually(t, 10*time.Second, "alice messages bob", func() bool {
		return ask(t, a, client.CmdMsg, []string{"bob", "lunch at noon?"}, nil) == nil
	})
	var inbox []client.Event
	overlaytest.Eventually(t, 10*time.Second, "bob's inbox", func() bool {
		inbox = nil
		return ask(t, b, client.CmdInbox, nil, &inbox) == nil && len(inbox) == 1
	})
	if inbox[0].From != "alice" || inbox[0].Text != "lunch at noon?" {
		t.Fatalf("inbox %+v", inbox)
	}
	b.Stop()
	var err error
	overlaytest.Eventually(t, 10*time.Second, "message to offline bob refused", func() bool {
		err = ask(t, a, client.CmdMsg, []string{"bob", "still there?"}, nil)
		var re *ctl.RemoteError
		return errors.As(err, &re) && re.Code == proto.ErrOffline.Code
	})
}

// TestSupernodesSeeOnlyCiphertext inspects every message the supernodes handle on its way
// from alice to bob: each carries only the recipient's and sender's names for routing, and
// an envelope that contains neither the text nor alice's credential.
func TestSupernodesSeeOnlyCiphertext(t *testing.T) {
	var mu sync.Mutex
	var seen []proto.Deliver
	var where []string
	_, a, b := twoUsers(t, overlaytest.Options{Forward: func(sn string, d *proto.Deliver) {
		mu.Lock()
		seen = append(seen, *d)
		where = append(where, sn)
		mu.Unlock()
	}})
	const text = "the eagle lands at midnight"
	overlaytest.Eventually(t, 10*time.Second, "alice messages bob", func() bool {
		return ask(t, a, client.CmdMsg, []string{"bob", text}, nil) == nil
	})
	overlaytest.Eventually(t, 10*time.Second, "bob has it", func() bool { return len(b.Inbox()) == 1 })
	mu.Lock()
	defer mu.Unlock()
	if len(seen) < 2 {
		t.Fatalf("the message passed %d supernodes, want alice's and bob's (%v)", len(seen), where)
	}
	cred, _ := os.ReadFile(filepath.Join(a.Dir, client.CredentialFile))
	for i, d := range seen {
		if d.From != "alice" || d.To != "bob" {
			t.Fatalf("routing fields %q -> %q", d.From, d.To)
		}
		for _, secret := range [][]byte{[]byte(text), []byte("eagle"), cred} {
			if bytes.Contains(d.Envelope, secret) {
				t.Fatalf("supernode %s saw plaintext %q in the envelope", where[i], secret)
			}
		}
	}
	if got := b.Inbox()[0]; got.Text != text || got.From != "alice" {
		t.Fatalf("bob got %+v", got)
	}
	t.Logf("message crossed supernodes %v as %d-byte envelopes", where, len(seen[0].Envelope))
}
