package client_test

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
	"github.com/peerline/peerline/hostcache"
	"github.com/peerline/peerline/internal/media"
	"github.com/peerline/peerline/loginsrv"
	"github.com/peerline/peerline/supernode"
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

// TestPromotionRefillsLayer: the login server wants four supernodes. While the layer
// has them, eligible clients stay clients ("layer full"); when two supernodes die, the
// eligible clients promote themselves until the layer has four again, and no further,
// and the login server admits the promotions at its paced rate, answering the ones
// beyond it busy.
func TestPromotionRefillsLayer(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 4, STUN: true, LoginConfig: func(c *loginsrv.Config) {
		c.MinSupernodes, c.PromotionsPerSecond, c.PromotionBurst = 4, 0.5, 1
	}})
	eligible := func(c *client.Config) {
		quickPromotion(false)(c)
		c.RefreshInterval = 200 * time.Millisecond // the layer's size comes with the peer list
	}
	var cs []*overlaytest.Client
	for i := range 4 {
		name := fmt.Sprintf("user%d", i)
		o.Register(name, "password "+name)
		cs = append(cs, o.StartClient(filepath.Join(t.TempDir(), name), name, "password "+name, eligible))
	}
	o.Eventually("every client held back by a full layer", func() bool {
		for _, c := range cs {
			if !strings.Contains(c.Status().Promotion.Reason, "layer full") {
				return false
			}
		}
		return true
	})
	if got := o.Login.Metrics().Get("sn_promotions"); got != 0 {
		t.Fatalf("%d promotions into a full layer", got)
	}
	sns := o.Supernodes()
	sns[0].Stop()
	sns[1].Stop()
	// The login server must see the layer short before it can be refilled: a check of
	// the size alone could pass before the two stopped supernodes are missed.
	o.Eventually("the layer seen short", func() bool { return o.Login.Layer().LayerSize < 4 })
	o.Eventually("the layer refilled to four", func() bool {
		l := o.Login.Layer()
		return l.LayerSize == 4 && l.LayerWanted == 4 && sns[2].RingSize() == 4
	})
	promoted := 0
	for _, c := range cs {
		if c.Status().Promotion.Admitted {
			promoted++
		}
	}
	m := o.Login.Metrics()
	t.Logf("promoted %d; login server: sn_promotions %d, sn_promotions_paced %d, sn_promotions_unneeded %d",
		promoted, m.Get("sn_promotions"), m.Get("sn_promotions_paced"), m.Get("sn_promotions_unneeded"))
	if promoted != 2 || m.Get("sn_promotions") != 2 {
		t.Fatalf("%d clients promoted, %d promotions admitted; want 2 (the layer's shortfall)", promoted, m.Get("sn_promotions"))
	}
	if m.Get("sn_promotions_paced") == 0 {
		t.Fatal("no promotion paced: the eligible clients were all admitted at once")
	}
	// And it stays at four: the two others keep being refused or held back. Each checks
	// every 100 ms; twenty more checks each span two seconds, in which the login server,
	// pacing one promotion every two seconds, would have admitted one more if it would.
	var others []*overlaytest.Client
	var checks []uint64
	for _, c := range cs {
		if !c.Status().Promotion.Admitted {
			others = append(others, c)
			checks = append(checks, c.Metrics().Get("promotion_checks"))
		}
	}
	o.Eventually("twenty more promotion checks by each of the others", func() bool {
		for i, c := range others {
			if c.Metrics().Get("promotion_checks") < checks[i]+20 {
				return false
			}
		}
		return true
	})
	if got := o.Login.Metrics().Get("sn_promotions"); got != 2 || o.Login.Layer().LayerSize != 4 {
		t.Fatalf("promotions went on past the target: %d, layer %+v", got, o.Login.Layer())
	}
}

// TestShedConnectionIsBusyNotDead: a listener that sheds (accepts and closes at once, as
// serve.Gate does beyond its limit) is left alone as busy for a while, not retried at
// back-off pace as a dead supernode is, nor aged out of the host cache.
func TestShedConnectionIsBusyNotDead(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 1})
	o.Register("alice", "correct horse")
	a := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "correct horse", nil)
	o.Eventually("alice attached", attached(a))
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			nc.Close()
		}
	}()
	// alice's host cache now holds only the shedding listener.
	hc, err := hostcache.Open(filepath.Join(a.Dir, client.HostCacheFile), hostcache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range hc.Ranked() {
		hc.Remove(e.Addr)
	}
	hc.Merge(hostcache.Entry{Addr: ln.Addr().String(), PubKey: "shedder", Source: hostcache.SourceManual})
	if err := hc.Save(); err != nil {
		t.Fatal(err)
	}
	// alice runs on the test's clock: her back-off and the time she leaves the shedder
	// alone pass only as the test advances it.
	clk := clockwork.NewFakeClockAt(time.Now())
	shed := clk.Now()
	a2 := o.StartClient(a.Dir, "", "", func(c *client.Config) { c.Login.Addr = "127.0.0.1:1"; c.Clock = clk })
	o.Eventually("the shed seen, and the attach round over", func() bool {
		m := a2.Metrics()
		return m.Get("attach_shed") >= 1 && m.Get("attach_failures") >= 1
	})
	st := a2.Status()
	if n := accepted.Load(); n != 1 || st.Busy != 1 {
		t.Fatalf("shedder dialled %d times, %d supernodes busy; counters %v", n, st.Busy, st.Counters)
	}
	for _, e := range a2.HostCache().Ranked() {
		if e.Addr == ln.Addr().String() && e.Failures > 0 {
			t.Fatalf("a shed counted as a failure: %+v", e)
		}
	}
	// Back-off alone (50 ms base, 1 s cap here) would dial the shedder again within a
	// second; a shed leaves it alone for 5 s. The clock moves 100 ms at each poll, so the
	// second dial comes at the first poll past the time she waited.
	o.Eventually("alice dials the shedder again", func() bool {
		if accepted.Load() >= 2 {
			return true
		}
		clk.Advance(100 * time.Millisecond)
		return false
	})
	if waited := clk.Since(shed); waited < 5*time.Second {
		t.Fatalf("shedder dialled again after %v of alice's time, want 5 s (counters %v)", waited, a2.Metrics().Snapshot())
	}
	t.Logf("shedder dialled again after %v of alice's time", clk.Since(shed))
}

// onlyInCache leaves addr alone in the host cache file of the client in dir.
func onlyInCache(t *testing.T, dir, addr string) {
	t.Helper()
	hc, err := hostcache.Open(filepath.Join(dir, client.HostCacheFile), hostcache.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range hc.Ranked() {
		if e.Addr != addr {
			hc.Remove(e.Addr)
		}
	}
	if err := hc.Save(); err != nil {
		t.Fatal(err)
	}
	if hc.Len() != 1 {
		t.Fatalf("host cache holds %d entries", hc.Len())
	}
}

// TestBusySupernodePointsElsewhere: alice knows only a full supernode and the login
// server is down; the busy answer names the other supernode, and she attaches there in
// the same round, before any back-off.
func TestBusySupernodePointsElsewhere(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 2, SupernodeConfig: func(c *supernode.Config) {
		if c.Name == "sn1" {
			c.MaxAttached = 1
		}
	}})
	sn1, sn2 := o.Supernodes()[0], o.Supernodes()[1]
	o.Register("alice", "correct horse")
	o.Register("bob", "battery staple")
	a := o.StartClient(filepath.Join(t.TempDir(), "alice"), "alice", "correct horse", nil)
	o.Eventually("alice attached", attached(a))
	o.Eventually("alice knows both supernodes", func() bool { return a.HostCache().Len() == 2 })
	if err := a.Stop(); err != nil {
		t.Fatal(err)
	}
	onlyInCache(t, a.Dir, sn1.Addr)
	b := o.StartClient(filepath.Join(t.TempDir(), "bob"), "bob", "battery staple", func(c *client.Config) { c.Prefer = sn1.Addr })
	o.Eventually("bob fills sn1", func() bool { return len(sn1.Status().Clients) == 1 && b.Status().Supernode != nil })
	o.Eventually("sn1 knows sn2's load", func() bool { return sn1.Status().Load.Headroom > 0 })

	a2 := o.StartClient(a.Dir, "", "", func(c *client.Config) { c.Login.Addr = "127.0.0.1:1" })
	o.Eventually("alice attached", attached(a2))
	m := a2.Metrics()
	if got := a2.Status().Supernode.Addr; got != sn2.Addr {
		t.Fatalf("alice attached to %s, want sn2 %s", got, sn2.Addr)
	}
	if m.Get("attach_busy") != 1 || m.Get("alternatives_tried") != 1 || m.Get("attach_rounds") != 1 {
		t.Fatalf("counters %v: want one busy answer, its alternative tried, one round", m.Snapshot())
	}
	if sn1.Metrics().Get("attach_shed_full") != 1 {
		t.Fatalf("sn1 counters %v", sn1.Metrics().Snapshot())
	}
}
