package client_test

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
)

// TestMessageAfterRecipientMoved: a supernode that cached bob's record, naming the
// supernode bob has since left (he restarted and attached elsewhere, as in a reboot
// storm), looks bob up again when that supernode answers that he is not there, and the
// message arrives. Before, the message failed as "offline" until the cache entry
// expired.
func TestMessageAfterRecipientMoved(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 3, KeepAlive: 2 * time.Second, CacheTTL: time.Minute})
	sns := o.Supernodes()
	o.Register("alice", "pw-alice-1")
	o.Register("bob", "pw-bob-123")
	prefer := func(i int) func(*client.Config) {
		return func(c *client.Config) { c.Prefer = sns[i].Addr }
	}
	a := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "pw-alice-1", prefer(0))
	bobDir := filepath.Join(t.TempDir(), "bob")
	b := o.StartClient(bobDir, "bob", "pw-bob-123", prefer(1))
	published := func(c *overlaytest.Client, sn int) func() bool {
		return func() bool {
			st := c.Status()
			return st.Supernode != nil && st.Supernode.ID == sns[sn].ID() && c.Metrics().Get("publishes") > 0
		}
	}
	o.Eventually("alice on the first supernode, bob on the second", func() bool { return published(a, 0)() && published(b, 1)() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	overlaytest.Eventually(t, 10*time.Second, "alice messages bob", func() bool { return a.Message(ctx, "bob", "one") == nil })
	b.Kill()
	b2 := o.StartClient(bobDir, "bob", "pw-bob-123", prefer(2))
	o.Eventually("bob back, on the third supernode", published(b2, 2))
	relookups := sns[0].Metrics().Get("message_relookups")
	if err := a.Message(ctx, "bob", "two"); err != nil {
		t.Fatalf("message to bob after he moved: %v", err)
	}
	if got := sns[0].Metrics().Get("message_relookups"); got != relookups+1 {
		t.Errorf("message_relookups %d -> %d; want one look-up again past the cached record", relookups, got)
	}
	o.Eventually("bob's new client got it", func() bool { return len(b2.Inbox()) == 1 })
}
