package client_test

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/supernode"
)

// TestPresenceAcrossTheMesh: with the mesh (the default), between supernodes with no connection
// open, a watch, the presence pushed back, a publication and the departure of a
// crashed client cross the mesh through a contact (index.Ring.Via). With 24
// supernodes in 8 groups, alice's name and her and bob's supernodes are chosen so that
// theirs are in groups that hold none of alice's holders, and hers has none of them for
// a contact, and bob's name so that his holders are none of hers: alice's publications
// take two hops. bob sees alice
// online, and offline within a second of her crash, where without the departure her
// record would stay online for two keep-alive periods (10 s).
func TestPresenceAcrossTheMesh(t *testing.T) {
	t.Run("binary", func(t *testing.T) { presenceAcrossTheMesh(t, false) })
	// Every other supernode, and bob, speak as versions from before binary bodies:
	// messages handed on re-encode for them, and signed departures go around them.
	t.Run("mixed-versions", func(t *testing.T) { presenceAcrossTheMesh(t, true) })
}

func presenceAcrossTheMesh(t *testing.T, mixed bool) {
	const keep = 5 * time.Second
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 24, KeepAlive: keep, SupernodeConfig: func(c *supernode.Config) {
		var i int
		fmt.Sscanf(c.Name, "sn%d", &i)
		c.JSONOnly = mixed && i%2 == 1
	}})
	sns := o.Supernodes()
	for _, sn := range sns {
		o.Eventually("ring complete", func() bool { return sn.RingSize() == len(sns) })
	}
	var members []index.Member
	byID := map[string]*overlaytest.SN{}
	for _, sn := range sns {
		members = append(members, index.Member{ID: sn.ID(), Addr: sn.Addr})
		byID[sn.ID()] = sn
	}
	ring := index.NewRing(members)
	if ring.Groups() != 8 {
		t.Fatalf("%d groups of 24 supernodes, want 8", ring.Groups())
	}
	holders := func(name string) map[string]bool {
		out := map[string]bool{}
		for _, m := range ring.Holders(name, 3, nil) {
			out[m.ID] = true
		}
		return out
	}
	// alice's supernode must also have none of her holders for a contact: it keeps a
	// connection open to each contact, and a publication takes an open connection to a
	// holder when there is one, so it would reach that holder in one hop. Names are
	// tried until one has such a supernode and another outside her holders' groups.
	var (
		alice          string
		aliceHolders   map[string]bool
		aliceSN, bobSN *overlaytest.SN
	)
	for i := 0; i < 100 && bobSN == nil; i++ {
		alice, aliceSN = fmt.Sprintf("alice%d", i), nil
		aliceHolders = holders(alice)
		apart := func(id string) bool { // in no group of alice's holders
			for h := range aliceHolders {
				if ring.SameGroup(id, h) {
					return false
				}
			}
			return true
		}
		noContact := func(id string) bool {
			for h := range aliceHolders {
				if v, ok := ring.Via(id, h, nil); ok && v.ID == h {
					return false
				}
			}
			return true
		}
		for _, sn := range sns {
			if apart(sn.ID()) && noContact(sn.ID()) {
				aliceSN = sn
				break
			}
		}
		for _, sn := range sns {
			if aliceSN != nil && apart(sn.ID()) && sn != aliceSN {
				bobSN = sn
				break
			}
		}
	}
	if bobSN == nil {
		t.Fatal("no name found with two supernodes outside the groups of its holders, one with none of them for a contact")
	}
	bob := ""
	for i := 0; i < 1000 && bob == ""; i++ {
		name := fmt.Sprintf("bob%d", i)
		overlap := false
		for h := range holders(name) {
			overlap = overlap || aliceHolders[h] || h == aliceSN.ID() || h == bobSN.ID()
		}
		if !overlap {
			bob = name
		}
	}
	if bob == "" {
		t.Fatalf("no name found whose holders are none of %s's", alice)
	}
	o.Register(alice, "correct horse")
	o.Register(bob, "battery staple")
	prefer := func(sn *overlaytest.SN) func(*client.Config) {
		return func(c *client.Config) { c.Prefer = sn.Addr; c.ParallelAttach = 1 }
	}
	a := o.StartClient(filepath.Join(t.TempDir(), alice), alice, "correct horse", prefer(aliceSN))
	o.Eventually(alice+" attached", attached(a))
	b := o.StartClient(filepath.Join(t.TempDir(), "bob"), bob, "battery staple", func(c *client.Config) {
		prefer(bobSN)(c)
		c.JSONOnly = mixed
	})
	o.Eventually("bob attached", attached(b))
	if a.Status().Supernode.Addr != aliceSN.Addr || b.Status().Supernode.Addr != bobSN.Addr {
		t.Fatalf("attached to %s and %s, not the supernodes preferred", a.Status().Supernode.Addr, b.Status().Supernode.Addr)
	}
	if err := ask(t, b, client.CmdBuddyAdd, []string{alice}, nil); err != nil {
		t.Fatal(err)
	}
	online := func(want bool) func() bool {
		return func() bool {
			for _, p := range b.Buddies() {
				if p.Name == alice && p.Online == want && !p.Updated.IsZero() {
					return true
				}
			}
			return false
		}
	}
	o.Eventually(bob+" sees "+alice+" online", online(true))
	sum := func(k string) (n uint64) {
		for _, sn := range sns {
			n += sn.Metrics().Get(k)
		}
		return n
	}
	if !mixed && (sum("via_handed_on") == 0 || sum("via_received") == 0) {
		t.Fatalf("nothing crossed the mesh: via_sent %d, via_handed_on %d, via_received %d",
			sum("via_sent"), sum("via_handed_on"), sum("via_received"))
	}
	// alice's supernode reports her departure to her holders through its contacts, signed.
	before := sum("via_received")
	crashed := time.Now()
	a.Kill()
	overlaytest.Eventually(t, keep/5, bob+" sees "+alice+" offline after her crash", online(false))
	t.Logf("crash seen in %v; via_sent %d, via_handed_on %d, via_received %d (+%d after the crash), via_refused %d",
		time.Since(crashed).Round(time.Millisecond), sum("via_sent"), sum("via_handed_on"), sum("via_received"),
		sum("via_received")-before, sum("via_refused"))
	if got := sum("via_refused"); got != 0 {
		t.Errorf("via_refused %d: a supernode refused a message handed on", got)
	}
}
