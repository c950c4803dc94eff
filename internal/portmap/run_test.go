package portmap

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/peerline/peerline/internal/eventually"
)

// The tests of Run drive its schedule with the fake clock: they wait for Run to be asleep
// (its timer the only one on the clock), then move the clock to the next event.

// events records the calls of Config.OnChange.
type events struct {
	mu   sync.Mutex // mu protects list
	list []string
}

func (e *events) on(m Mapping, ok bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !ok {
		e.list = append(e.list, "none")
		return
	}
	e.list = append(e.list, fmt.Sprintf("%v %v", m.Protocol, m.External))
}

func (e *events) get() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.list)
}

// startRun runs c.Run until the returned stop, which cancels it and returns Run's error.
func startRun(t *testing.T, c *Client) (stop func() error) {
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(cancel)
	return func() error {
		cancel()
		return <-done
	}
}

// asleep waits until Run sleeps: until its timer is on clk. The caller makes sure that no
// other timer can be (a Map or a check has returned).
func asleep(t *testing.T, clk *clockwork.FakeClock) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := clk.BlockUntilContext(ctx, 1); err != nil {
		t.Fatal("Run did not go to sleep:", err)
	}
}

func noLeftovers(t *testing.T) {
	t.Helper()
	if left := eventually.Leftover(time.Second, "github.com/peerline/peerline/internal/portmap.(*Client)"); len(left) > 0 {
		t.Fatalf("goroutines left behind:\n%v", left)
	}
}

func mapped(c *Client) func() bool {
	return func() bool { _, ok := c.Current(); return ok }
}

// NAT-PMP: Run renews at half the lifetime granted, asking for the port it has, reports
// a new port, and deletes the mapping when its context ends.
func TestRunRenewsAndDeletes(t *testing.T) {
	clk := clockwork.NewFakeClock()
	r := newRouter(t, clk)
	r.set(func(r *router) { r.pcp = false; r.maxLife = 600 })
	ev := &events{}
	c, ms := testClient(t, r, func(cfg *Config) { cfg.OnChange = ev.on; cfg.CheckInterval = -1 }, NATPMP)
	stop := startRun(t, c)
	eventually.That(t, 5*time.Second, "a mapping", mapped(c))
	asleep(t, clk)

	clk.Advance(5 * time.Minute) // half of the 10 minutes granted
	eventually.That(t, 5*time.Second, "the first renewal", func() bool { return ms.Get("portmap_renewals") == 1 })
	asleep(t, clk)

	r.set(func(r *router) { r.assign = 50001 })
	clk.Advance(5 * time.Minute)
	eventually.That(t, 5*time.Second, "the second renewal", func() bool { return ms.Get("portmap_renewals") == 2 })
	asleep(t, clk)
	if cur, _ := c.Current(); cur.External != netip.AddrPortFrom(routerExt, 50001) || cur.Lifetime != 10*time.Minute {
		t.Fatalf("after the renewal: %+v", cur)
	}

	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	ext, mapReq := []byte{0, 0}, natpmpMapReq(testPort, testPort, testLife)
	checkRequests(t, r, ext, mapReq, ext, mapReq, ext, mapReq, natpmpMapReq(testPort, 0, 0))
	want := []string{"NAT-PMP 203.0.113.7:41641", "NAT-PMP 203.0.113.7:50001", "none"}
	if got := ev.get(); !slices.Equal(got, want) {
		t.Errorf("OnChange %q, want %q", got, want)
	}
	if _, ok := c.Current(); ok {
		t.Error("a mapping is held after Run")
	}
	noLeftovers(t)
}

// PCP: between renewals Run checks the router's epoch; a router that restarted (and lost
// the mapping) gets the MAP again at once, with the same nonce.
func TestRunRemapsAfterRouterRestart(t *testing.T) {
	clk := clockwork.NewFakeClock()
	r := newRouter(t, clk)
	ev := &events{}
	c, ms := testClient(t, r, func(cfg *Config) { cfg.OnChange = ev.on }, PCP)
	stop := startRun(t, c)
	eventually.That(t, 5*time.Second, "a mapping", mapped(c))
	asleep(t, clk)

	clk.Advance(DefaultCheckInterval)
	eventually.That(t, 5*time.Second, "the first check", func() bool { return ms.Get("portmap_checks") == 1 })
	asleep(t, clk)
	if n := r.count(); n != 3 {
		t.Fatalf("%d requests after a check of a router that kept its state, want 3", n)
	}

	r.restart()
	r.set(func(r *router) { r.assign = 50002 })
	clk.Advance(DefaultCheckInterval)
	eventually.That(t, 5*time.Second, "the MAP after the restart", func() bool { return ms.Get("portmap_renewals") == 1 })
	asleep(t, clk)
	if n := ms.Get("portmap_router_restarts"); n != 1 {
		t.Errorf("%d restarts seen, want 1", n)
	}

	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	n := c.pcpNonce()
	checkRequests(t, r,
		pcpAnnounceReq(),
		pcpMapReq(testLife, n, testPort, testPort, netip.Addr{}),
		pcpAnnounceReq(), // the check: same epoch
		pcpAnnounceReq(), // the check: epoch back to 0
		pcpMapReq(testLife, n, testPort, testPort, routerExt),
		pcpMapReq(0, n, testPort, 50002, routerExt))
	want := []string{"PCP 203.0.113.7:41641", "PCP 203.0.113.7:50002", "none"}
	if got := ev.get(); !slices.Equal(got, want) {
		t.Errorf("OnChange %q, want %q", got, want)
	}
	noLeftovers(t)
}

// UPnP: a check sees the external address change and maps again; the mapping is
// deleted when Run ends.
func TestRunUPnP(t *testing.T) {
	g := newIGD(t, "urn:schemas-upnp-org:service:WANIPConnection:2")
	ev := &events{}
	c, clk, ms := upnpClientMod(t, g, false, func(cfg *Config) { cfg.OnChange = ev.on })
	stop := startRun(t, c)
	eventually.That(t, 5*time.Second, "a mapping", mapped(c))
	asleep(t, clk)

	g.set(func(g *igd) { g.ext = "198.51.100.9" })
	clk.Advance(DefaultCheckInterval)
	eventually.That(t, 5*time.Second, "the mapping again", func() bool { return ms.Get("portmap_renewals") == 1 })
	asleep(t, clk)

	if err := stop(); err != nil {
		t.Fatalf("Run: %v", err)
	}
	want := []string{"AddPortMapping", "GetExternalIPAddress", "GetExternalIPAddress", "AddPortMapping", "GetExternalIPAddress", "DeletePortMapping"}
	if got := g.actions(); !slices.Equal(got, want) {
		t.Fatalf("SOAP actions %v, want %v", got, want)
	}
	calls := g.soapCalls()
	wantCall(t, calls[3], "AddPortMapping", addArgs("7200"))
	wantCall(t, calls[5], "DeletePortMapping", deleteArgs)
	wantEv := []string{"UPnP 203.0.113.7:41641", "UPnP 198.51.100.9:41641", "none"}
	if got := ev.get(); !slices.Equal(got, wantEv) {
		t.Errorf("OnChange %q, want %q", got, wantEv)
	}
	noLeftovers(t)
}

// A router that stops answering: the deletion when Run ends gives up after
// Config.DeleteTimeout, and Run says why.
func TestRunDeletionBounded(t *testing.T) {
	clk := clockwork.NewFakeClock()
	r := newRouter(t, clk)
	r.set(func(r *router) { r.pcp = false })
	c, _ := testClient(t, r, nil, NATPMP)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	eventually.That(t, 5*time.Second, "a mapping", mapped(c))
	asleep(t, clk)
	before := r.count()
	r.set(func(r *router) { r.silent = true })
	cancel()
	err := advanceUntil(t, clk, "Run to return", done) // toward the deletion's timeout
	if !isNoResponse(err) {
		t.Fatalf("Run: %v, want ErrNoResponse", err)
	}
	t.Log(err)
	dels := r.requests()[before:]
	if len(dels) < 1 || len(dels) > DefaultSends {
		t.Fatalf("%d deletions sent", len(dels))
	}
	for _, b := range dels {
		if string(b) != string(natpmpMapReq(testPort, 0, 0)) {
			t.Errorf("deletion % x", b)
		}
	}
	if _, ok := c.Current(); ok {
		t.Error("a mapping is held after Run")
	}
	noLeftovers(t)
}

// Run tries again after a failure, and forgets a mapping that expired unrenewed.
func TestRunRetriesAndExpires(t *testing.T) {
	clk := clockwork.NewFakeClock()
	r := newRouter(t, clk)
	r.set(func(r *router) { r.pcp = false; r.silent = true; r.maxLife = 10 })
	ev := &events{}
	c, ms := testClient(t, r, func(cfg *Config) { cfg.OnChange = ev.on; cfg.CheckInterval = -1 }, NATPMP)
	stop := startRun(t, c)
	eventually.That(t, 5*time.Second, "a failed Map", func() bool {
		clk.Advance(50 * time.Millisecond) // each poll, toward the timeout
		return ms.Get("portmap_map_failures") == 1
	})
	r.set(func(r *router) { r.silent = false })
	eventually.That(t, 10*time.Second, "a mapping after the back-off", func() bool {
		clk.Advance(100 * time.Millisecond) // each poll, toward the end of the back-off
		return ms.Get("portmap_maps") == 1
	})

	r.set(func(r *router) { r.silent = true })
	eventually.That(t, 10*time.Second, "the mapping to expire", func() bool {
		clk.Advance(100 * time.Millisecond) // each poll, through the failed renewals
		return ms.Get("portmap_expired") == 1
	})
	if _, ok := c.Current(); ok {
		t.Error("an expired mapping is held")
	}
	if err := stop(); err != nil {
		t.Fatalf("Run with nothing to delete: %v", err)
	}
	for _, b := range r.requests() {
		if string(b) == string(natpmpMapReq(testPort, 0, 0)) {
			t.Error("a deletion was sent for an expired mapping")
		}
	}
	if got, want := ev.get(), []string{"NAT-PMP 203.0.113.7:41641", "none"}; !slices.Equal(got, want) {
		t.Errorf("OnChange %q, want %q", got, want)
	}
	noLeftovers(t)
}
