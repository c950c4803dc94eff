package supernode_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/e2e/overlaytest"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
	"github.com/peerline/peerline/internal/secure"
	"github.com/peerline/peerline/supernode"
)

// TestSpikeShedsNotDemotes is the December 2010 feedback loop in small: two of three
// supernodes die, their clients all arrive at the third, which is overloaded by them at
// every maintenance tick for many ticks. It must shed the clients beyond its limit (busy,
// with a retry-after) and go on serving the rest, never demote itself, as the old rule
// (three overloaded ticks in a row) did.
func TestSpikeShedsNotDemotes(t *testing.T) {
	const maxAttached, users = 9, 15
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 3, KeepAlive: 300 * time.Millisecond,
		SupernodeConfig: func(c *supernode.Config) {
			// The listener has room: clients beyond MaxAttached get busy answers.
			c.MaxClients, c.MaxAttached, c.PerAddr, c.PerPrefix = 40, maxAttached, 1000, 1000
			c.Overload = func(n int) bool { return n >= maxAttached*8/10 }
		}})
	var cs []*overlaytest.Client
	for i := range users {
		name := fmt.Sprintf("user%02d", i)
		o.Register(name, "password "+name)
		cs = append(cs, o.StartClient(filepath.Join(t.TempDir(), name), name, "password "+name,
			func(c *client.Config) { c.Promote.Disabled = true }))
	}
	attachedCount := func() int {
		n := 0
		for _, c := range cs {
			if c.Status().Supernode != nil {
				n++
			}
		}
		return n
	}
	if err := overlaytest.Await(20*time.Second, "every user attached", func() bool { return attachedCount() == users }); err != nil {
		for _, sn := range o.Supernodes() {
			t.Logf("%s: load %+v counters %v", sn.Addr, sn.Status().Load, sn.Metrics().Snapshot())
		}
		for _, c := range cs {
			st := c.Status()
			t.Logf("%s: attached %v, err %s, counters %v", c.User(), st.Supernode != nil, st.LastError, st.Counters)
		}
		t.Fatal(err)
	}
	o.Eventually("host caches full", func() bool {
		for _, c := range cs {
			if c.HostCache().Len() < 3 {
				return false
			}
		}
		return true
	})
	sns := o.Supernodes()
	survivor := sns[0]
	sns[1].Stop()
	sns[2].Stop()
	o.Eventually("the survivor full", func() bool { return len(survivor.Status().Clients) == maxAttached })
	m := survivor.Metrics()
	// Twenty maintenance ticks overloaded: far past the old three.
	o.Eventually("twenty overloaded ticks", func() bool { return m.Get("overload_ticks") >= 20 })
	select {
	case <-survivor.Done():
		t.Fatalf("the survivor stopped: %v; counters %v", survivor.Err(), m.Snapshot())
	default:
	}
	st := survivor.Status()
	if m.Get("demotions") != 0 || len(st.Clients) != maxAttached || st.Load.MaxAttached != maxAttached || st.Load.OverloadedSince.IsZero() {
		t.Fatalf("survivor: clients %d, load %+v, counters %v", len(st.Clients), st.Load, m.Snapshot())
	}
	if m.Get("attach_shed_full") == 0 {
		t.Fatalf("nothing shed beyond the limit: %v", m.Snapshot())
	}
	var busy, shed, rounds uint64
	for _, c := range cs {
		busy += c.Metrics().Get("attach_busy")
		shed += c.Metrics().Get("attach_shed")
		rounds += c.Metrics().Get("attach_rounds")
	}
	if busy == 0 {
		t.Fatal("no client saw a busy answer")
	}
	t.Logf("survivor: %d attached of %d, attach_shed_full %d, overload_ticks %d; clients: busy answers %d, sheds %d, attach rounds %d",
		len(st.Clients), st.Load.MaxAttached, m.Get("attach_shed_full"), m.Get("overload_ticks"), busy, shed, rounds)
}

// TestSustainedOverloadDemotion: a supernode overloaded for its whole OverloadWindow
// demotes itself when the layer is whole and the others have room; when the layer shrank
// during the overload it stays and counts the deferral.
func TestSustainedOverloadDemotion(t *testing.T) {
	var overloaded atomic.Bool // sn1's overload, from when a test turns it on
	start := func(t *testing.T, window time.Duration) *overlaytest.Overlay {
		overloaded.Store(false)
		return overlaytest.Start(t, overlaytest.Options{Supernodes: 3, KeepAlive: 100 * time.Millisecond,
			SupernodeConfig: func(c *supernode.Config) {
				if c.Name == "sn1" {
					c.OverloadWindow = window
					c.Overload = func(int) bool { return overloaded.Load() }
				}
			}})
	}
	t.Run("whole layer with room", func(t *testing.T) {
		o := start(t, 500*time.Millisecond)
		sn1 := o.Supernodes()[0]
		o.Eventually("sn1 knows the whole ring and the loads", func() bool {
			return sn1.RingSize() == 3 && sn1.Status().Load.Headroom > 0
		})
		overloaded.Store(true)
		select {
		case <-sn1.Done():
		case <-time.After(20 * time.Second):
			t.Fatalf("sn1 did not demote: load %+v counters %v", sn1.Status().Load, sn1.Metrics().Snapshot())
		}
		if m := sn1.Metrics(); m.Get("demotions") != 1 || m.Get("overload_ticks") < 5 {
			t.Fatalf("counters %v", m.Snapshot())
		}
	})
	t.Run("layer shrank", func(t *testing.T) {
		// The window leaves seconds for the ring to shrink while sn1 is overloaded.
		o := start(t, 3*time.Second)
		sns := o.Supernodes()
		sn1 := sns[0]
		o.Eventually("sn1 knows the whole ring and the loads", func() bool {
			return sn1.RingSize() == 3 && sn1.Status().Load.Headroom > 0
		})
		overloaded.Store(true)
		o.Eventually("sn1 overloaded", func() bool { return sn1.Metrics().Get("overload_ticks") > 0 })
		sns[2].Stop()
		o.Eventually("sn1 sees the ring shrink", func() bool { return sn1.RingSize() == 2 })
		m := sn1.Metrics()
		o.Eventually("demotion deferred several times", func() bool { return m.Get("demotions_deferred") >= 5 })
		select {
		case <-sn1.Done():
			t.Fatalf("sn1 demoted while the layer shrank: %v", m.Snapshot())
		default:
		}
		if m.Get("demotions") != 0 {
			t.Fatalf("counters %v", m.Snapshot())
		}
	})
}

// userCred signs a user credential for key with the overlay's login server key.
func userCred(t *testing.T, o *overlaytest.Overlay, name string, key ed25519.PrivateKey) []byte {
	return userCredTB(t, o, name, key)
}

func userCredTB(t testing.TB, o *overlaytest.Overlay, name string, key ed25519.PrivateKey) []byte {
	t.Helper()
	now := time.Now()
	b, err := identity.Sign(o.Key, identity.Credential{Kind: identity.KindUser, Name: name,
		PubKey: key.Public().(ed25519.PublicKey), Issued: now, Expires: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestBusyAnswerPointsElsewhere: a supernode at its attachment limit answers busy with a
// retry-after and the less loaded supernodes it learnt of from the heartbeat answers; one
// with every attachment slot taken answers busy too, with a short retry-after.
func TestBusyAnswerPointsElsewhere(t *testing.T) {
	o := overlaytest.Start(t, overlaytest.Options{Supernodes: 3, SupernodeConfig: func(c *supernode.Config) {
		if c.Name == "sn1" {
			c.MaxAttached, c.AttachConcurrency = 2, 1
		}
	}})
	sn1 := o.Supernodes()[0]
	// Both others' loads (each with room for its default MaxAttached, 4,500).
	o.Eventually("sn1 knows the others' loads", func() bool { return sn1.Status().Load.Headroom == 2*4500 })

	attach := func(name string) (ed25519.PrivateKey, []byte, *rpc.Conn, error) {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		cred := userCred(t, o, name, k)
		c := dial(t, sn1.Addr, k)
		_, err := call(t, c, &proto.Attach{Credential: cred})
		return k, cred, c, err
	}
	// publish completes an attachment: the first publication is answered.
	publish := func(name string, k ed25519.PrivateKey, cred []byte, c *rpc.Conn) {
		raw, err := index.Sign(k, index.Record{Name: name, Credential: cred, Supernode: sn1.ID(), SNAddr: sn1.Addr,
			Seq: 1, Expires: time.Now().Add(time.Minute)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := call(t, c, &proto.Publish{Record: raw}); err != nil {
			t.Fatalf("publish %s: %v", name, err)
		}
	}
	k1, cred1, c1, err := attach("u1")
	if err != nil {
		t.Fatal(err)
	}
	// u1 has not published yet: its attachment is still in progress, the one slot taken.
	_, _, _, err = attach("u2")
	pe, ok := proto.AsError(err)
	if !ok || !errors.Is(err, proto.ErrBusy) || pe.RetryAfter() <= 0 {
		t.Fatalf("second attach while one is in progress: %v", err)
	}
	if sn1.Metrics().Get("attach_shed_full") != 0 || sn1.Metrics().Get("attach_shed_concurrency") != 1 {
		t.Fatalf("counters %v", sn1.Metrics().Snapshot())
	}
	publish("u1", k1, cred1, c1)
	k2, cred2, c2, err := attach("u2")
	if err != nil {
		t.Fatalf("attach after u1's publication freed the slot: %v", err)
	}
	publish("u2", k2, cred2, c2)
	if st := sn1.Status().Load; st.Attached != 2 || st.Attaching != 0 {
		t.Fatalf("load %+v", st)
	}
	// Now full: MaxAttached is 2.
	_, k3, _ := ed25519.GenerateKey(rand.Reader)
	_, err = call(t, dial(t, sn1.Addr, k3), &proto.Attach{Credential: userCred(t, o, "u3", k3)})
	pe, ok = proto.AsError(err)
	if !ok || !errors.Is(err, proto.ErrBusy) || pe.RetryAfter() < time.Second {
		t.Fatalf("attach to a full supernode: %v", err)
	}
	others := map[string]bool{o.Supernodes()[1].Addr: true, o.Supernodes()[2].Addr: true}
	if len(pe.Alternatives) != 2 {
		t.Fatalf("alternatives %+v, want the two others", pe.Alternatives)
	}
	for _, a := range pe.Alternatives {
		if !others[a.Addr] || a.Clients != 0 || a.MaxClients == 0 {
			t.Fatalf("alternative %+v", a)
		}
	}
	m := sn1.Metrics()
	if m.Get("attach_shed_full") != 1 || m.Get("attach_shed_concurrency") != 1 || m.Get("alternatives_given") < 2 {
		t.Fatalf("counters %v", m.Snapshot())
	}
}

// BenchmarkAttach is what one attachment costs, both ends in this process over loopback:
// the TLS 1.3 handshake, Attach (a credential check) and the first publication (a record
// check and its storage; one supernode, so no replication). It is the figure behind
// AttachConcurrency's default.
//
//	go test ./supernode -run '^$' -bench Attach -benchtime 2000x
func BenchmarkAttach(b *testing.B) {
	o := overlaytest.Start(b, overlaytest.Options{Supernodes: 1, SupernodeConfig: func(c *supernode.Config) {
		c.MaxClients, c.PerAddr, c.PerPrefix = 1<<20, 1<<20, 1<<20
	}})
	sn := o.Supernodes()[0]
	type user struct {
		key  ed25519.PrivateKey
		cred []byte
	}
	users := make([]user, b.N)
	for i := range users {
		_, k, _ := ed25519.GenerateKey(rand.Reader)
		users[i] = user{k, userCredTB(b, o, fmt.Sprintf("u%d", i), k)}
	}
	b.ResetTimer()
	for i := range b.N {
		u := users[i]
		id, _ := secure.NewOverlayIdentity(u.key)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		tc, err := id.DialOverlay(ctx, &net.Dialer{}, sn.Addr, nil)
		if err != nil {
			b.Fatal(err)
		}
		c := rpc.New(tc, rpc.Options{})
		go c.Run(ctx)
		if _, err := c.Call(ctx, &proto.Attach{Credential: u.cred}); err != nil {
			b.Fatal(err)
		}
		raw, _ := index.Sign(u.key, index.Record{Name: fmt.Sprintf("u%d", i), Credential: u.cred, Supernode: sn.ID(),
			SNAddr: sn.Addr, Seq: 1, Expires: time.Now().Add(time.Minute)})
		if _, err := c.Call(ctx, &proto.Publish{Record: raw}); err != nil {
			b.Fatal(err)
		}
		c.Close()
		cancel()
	}
}
