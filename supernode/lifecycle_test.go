package supernode_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/e2e/overlaytest"
)

// TestRunLeavesNoGoroutine: a supernode that served STUN, a relay, peers and an attached
// client returns from Run with none of its goroutines (nor its relay's or STUN
// service's) left behind.
func TestRunLeavesNoGoroutine(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 2, STUN: true, Relay: true})
	o.Register("alice", "pw alice")
	c := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "pw alice", nil)
	o.Eventually("alice attached and published", func() bool { return c.Metrics().Get("publishes") > 0 })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Search(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	c.Stop()
	pkgs := []string{"github.com/peerline/peerline/supernode.", "github.com/peerline/peerline/relay.",
		"github.com/peerline/peerline/internal/stunsrv."}
	if running := overlaytest.Leftover(0, pkgs...); len(running) < 4 {
		t.Fatalf("only %d goroutines of the running supernodes seen: the check would miss a leak", len(running))
	}
	for _, sn := range o.Supernodes() {
		sn.Stop()
	}
	// Checked the moment Run has returned, without waiting: Run waits for what it started.
	if left := overlaytest.Leftover(0, pkgs...); len(left) > 0 {
		t.Fatalf("%d goroutines left after Run returned:\n%s", len(left), strings.Join(left, "\n\n"))
	}
}
