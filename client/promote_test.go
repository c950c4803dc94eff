package client_test

import (
	"path/filepath"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/cmd/peerline/compose"
	"github.com/peerline/peerline/e2e/overlaytest"
)

func quickPromotion(disabled bool) func(*client.Config) {
	return func(c *client.Config) {
		c.NATTimeout = 300 * time.Millisecond
		c.Promote = client.PromoteConfig{Disabled: disabled, MinUptime: time.Millisecond, MinUploadBps: 1,
			MinCPUs: 1, MinMemory: 1, CheckInterval: 100 * time.Millisecond, ListenAddr: "127.0.0.1:0",
			NewSupernode: compose.Supernode(nil)}
	}
}

// TestPromotionAndDemotion: a public client with enough capacity promotes itself, is
// admitted by the login server (after its own dial-back) and joins the ring; one told
// not to stays a client; the promoted one, when it stops, hands off and leaves.
func TestPromotionAndDemotion(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 2, STUN: true})
	o.Register("alice", "correct horse")
	o.Register("bob", "battery staple")
	a := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "correct horse", quickPromotion(false))
	b := o.StartClient(filepath.Join(t.TempDir(), "bob"), "bob", "battery staple", quickPromotion(true))
	o.Eventually("alice promoted", func() bool { return a.Status().Promotion.Admitted })
	if o.Login.Metrics().Get("sn_promotions") != 1 {
		t.Fatalf("login server promotions = %d", o.Login.Metrics().Get("sn_promotions"))
	}
	infra := o.Supernodes()[0]
	o.Eventually("the infrastructure supernodes see alice's supernode", func() bool { return infra.RingSize() == 3 })
	st := b.Status()
	if st.Promotion.Supernode || st.Promotion.Reason == "" {
		t.Fatalf("bob (--no-supernode) promotion status %+v", st.Promotion)
	}
	t.Logf("alice serves as a supernode at %s; bob: %s", a.Status().Promotion.Addr, st.Promotion.Reason)

	// Records still resolve while alice holds some of them, and after she leaves.
	o.Register("carol", "carol's password")
	c := o.StartClient(filepath.Join(t.TempDir(), "carol"), "carol", "carol's password", quickPromotion(true))
	o.Eventually("carol attached", attached(c))
	a.Stop()
	o.Eventually("alice's supernode left the ring", func() bool { return infra.RingSize() == 2 })
	if o.Login.Metrics().Get("sn_leaves") != 1 {
		t.Fatalf("sn_leaves = %d", o.Login.Metrics().Get("sn_leaves"))
	}
	o.Eventually("bob finds carol through the overlay after alice left", func() bool {
		r, err := b.Search(t.Context(), "carol")
		return err == nil && r.Source == "overlay" && r.User != nil && r.User.Online
	})
}
