package portmap

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/peerline/peerline/internal/eventually"
)

// byVersion returns the requests of r whose first byte is v: 0 for NAT-PMP, 2 for PCP.
// Probes of the two protocols run at once, so only the order within one is fixed.
func byVersion(r *router, v byte) [][]byte {
	var out [][]byte
	for _, b := range r.requests() {
		if len(b) > 0 && b[0] == v {
			out = append(out, b)
		}
	}
	return out
}

func wantMapping(t *testing.T, got Mapping, proto Protocol, ext netip.AddrPort, life time.Duration) {
	t.Helper()
	want := Mapping{Protocol: proto, External: ext, Internal: netip.AddrPortFrom(loopback, testPort), Lifetime: life, Obtained: got.Obtained}
	if got != want {
		t.Fatalf("mapping %+v\nwant %+v", got, want)
	}
}

var testExt = netip.AddrPortFrom(routerExt, testPort)

// A router that speaks NAT-PMP alone answers the PCP probe "unsupported version", so the
// client maps with NAT-PMP at once, without waiting for UPnP's search to time out.
func TestMapNATPMP(t *testing.T) {
	clk := clockwork.NewFakeClock()
	r := newRouter(t, clk)
	r.set(func(r *router) { r.pcp = false })
	c, ms := testClient(t, r, nil) // PCP, NAT-PMP, UPnP
	m, err := c.Map(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantMapping(t, m, NATPMP, testExt, 2*time.Hour)
	if cur, ok := c.Current(); !ok || cur != m {
		t.Fatalf("Current %+v %v", cur, ok)
	}
	if got := byVersion(r, 2); len(got) != 1 || string(got[0]) != string(pcpAnnounceReq()) {
		t.Errorf("PCP requests % x, want the ANNOUNCE alone", got)
	}
	nat := byVersion(r, 0)
	want := [][]byte{{0, 0}, natpmpMapReq(testPort, testPort, testLife)}
	if len(nat) != 2 || string(nat[0]) != string(want[0]) || string(nat[1]) != string(want[1]) {
		t.Fatalf("NAT-PMP requests\n got % x\nwant % x", nat, want)
	}

	if err := c.Delete(t.Context()); err != nil {
		t.Fatal(err)
	}
	if nat := byVersion(r, 0); len(nat) != 3 || string(nat[2]) != string(natpmpMapReq(testPort, 0, 0)) {
		t.Fatalf("no NAT-PMP deletion: % x", nat)
	}
	if _, ok := c.Current(); ok {
		t.Error("a mapping is still held after Delete")
	}
	if ms.Get("portmap_maps") != 1 || ms.Get("portmap_deletes") != 1 {
		t.Errorf("metrics %v", ms.Snapshot())
	}
}

// With a router that speaks both, PCP is preferred: its MAP carries the client's nonce,
// and its deletion the same nonce with lifetime 0.
func TestMapPCP(t *testing.T) {
	clk := clockwork.NewFakeClock()
	r := newRouter(t, clk)
	c, _ := testClient(t, r, nil)
	m, err := c.Map(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantMapping(t, m, PCP, testExt, 2*time.Hour)
	nonce := c.pcpNonce()
	if nonce == (pcpNonce{}) {
		t.Fatal("zero nonce")
	}
	want := [][]byte{pcpAnnounceReq(), pcpMapReq(testLife, nonce, testPort, testPort, netip.Addr{})}
	if got := byVersion(r, 2); len(got) != 2 || string(got[0]) != string(want[0]) || string(got[1]) != string(want[1]) {
		t.Fatalf("PCP requests\n got % x\nwant % x", got, want)
	}
	// The NAT-PMP probe may have gone out before PCP answered; nothing else may.
	for _, b := range byVersion(r, 0) {
		if string(b) != "\x00\x00" {
			t.Errorf("NAT-PMP request % x while mapping with PCP", b)
		}
	}
	if err := c.Delete(t.Context()); err != nil {
		t.Fatal(err)
	}
	got := byVersion(r, 2)
	if del := pcpMapReq(0, nonce, testPort, testPort, routerExt); len(got) != 3 || string(got[2]) != string(del) {
		t.Fatalf("PCP deletion\n got % x\nwant % x", got[len(got)-1], del)
	}
}

// A router that speaks PCP alone answers NAT-PMP with PCP's UNSUPP_VERSION.
func TestMapPCPOnlyRouter(t *testing.T) {
	clk := clockwork.NewFakeClock()
	r := newRouter(t, clk)
	r.set(func(r *router) { r.natpmp = false; r.assign = 60000 })
	c, _ := testClient(t, r, nil, NATPMP, PCP)
	m, err := c.Map(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantMapping(t, m, PCP, netip.AddrPortFrom(routerExt, 60000), 2*time.Hour)
}

func TestNATPMPNotAuthorized(t *testing.T) {
	clk := clockwork.NewFakeClock()
	r := newRouter(t, clk)
	r.set(func(r *router) { r.pcp = false; r.refuseNATPMP = natpmpNotAuthorized })
	c, ms := testClient(t, r, nil, PCP, NATPMP)
	_, err := c.Map(t.Context())
	if !errors.Is(err, ErrNotAuthorized) || !strings.Contains(err.Error(), "NAT-PMP result 2") {
		t.Fatalf("Map: %v, want ErrNotAuthorized from NAT-PMP", err)
	}
	t.Log(err)
	if _, ok := c.Current(); ok {
		t.Error("a refused mapping is held")
	}
	if ms.Get("portmap_map_failures") != 1 {
		t.Errorf("metrics %v", ms.Snapshot())
	}
}

func TestPCPNoResources(t *testing.T) {
	clk := clockwork.NewFakeClock()
	r := newRouter(t, clk)
	r.set(func(r *router) { r.refusePCP = pcpNoResources })
	c, _ := testClient(t, r, nil, PCP)
	if _, err := c.Map(t.Context()); !errors.Is(err, ErrNoResources) || !strings.Contains(err.Error(), "NO_RESOURCES") {
		t.Fatalf("Map: %v, want ErrNoResources", err)
	}
}

// When the preferred protocol answers the probe but refuses the mapping, the next one is
// tried, even if its probe was cut short.
func TestPCPRefusedFallsBackToNATPMP(t *testing.T) {
	clk := clockwork.NewFakeClock()
	r := newRouter(t, clk)
	r.set(func(r *router) { r.refusePCP = pcpNotAuthorized })
	c, _ := testClient(t, r, nil, PCP, NATPMP)
	m, err := c.Map(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantMapping(t, m, NATPMP, testExt, 2*time.Hour)
}

// An answer with another nonce is for another client's mapping: the client ignores it and
// takes the answer with its own nonce.
func TestPCPNonceMismatchIgnored(t *testing.T) {
	clk := clockwork.NewFakeClock()
	r := newRouter(t, clk)
	r.set(func(r *router) { r.strangerFirst = true })
	c, ms := testClient(t, r, nil, PCP)
	m, err := c.Map(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantMapping(t, m, PCP, testExt, 2*time.Hour)
	if n := ms.Get("portmap_pcp_nonce_mismatch"); n != 1 {
		t.Errorf("%d answers with another nonce counted, want 1", n)
	}
}

func TestGrantedLifetime(t *testing.T) {
	clk := clockwork.NewFakeClock()
	r := newRouter(t, clk)
	r.set(func(r *router) { r.maxLife = 600 })
	c, _ := testClient(t, r, func(cfg *Config) { cfg.ExternalPort = 4500 }, PCP)
	m, err := c.Map(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	wantMapping(t, m, PCP, netip.AddrPortFrom(routerExt, 4500), 10*time.Minute)
	if got := m.Expiry(); !got.Equal(m.Obtained.Add(10 * time.Minute)) {
		t.Errorf("expiry %v", got)
	}
}

// A router that answers nothing: every protocol gives up within Config.Timeout, after
// at most Config.Sends sends, and Map says so.
func TestSilentRouter(t *testing.T) {
	clk := clockwork.NewFakeClock()
	r := newRouter(t, clk)
	r.set(func(r *router) { r.silent = true })
	c, _ := testClient(t, r, nil) // PCP, NAT-PMP, UPnP to a silent SSDP port
	_, err := mapUntilDone(t, c, clk)
	if !isNoResponse(err) {
		t.Fatalf("Map: %v, want ErrNoResponse", err)
	}
	t.Log(err)
	pcp, nat := byVersion(r, 2), byVersion(r, 0)
	if len(pcp) < 1 || len(pcp) > DefaultSends || len(nat) < 1 || len(nat) > DefaultSends {
		t.Fatalf("%d PCP and %d NAT-PMP sends, want 1 to %d each", len(pcp), len(nat), DefaultSends)
	}
	for _, b := range pcp {
		if string(b) != string(pcpAnnounceReq()) {
			t.Errorf("PCP request % x", b)
		}
	}
	for _, b := range nat {
		if string(b) != "\x00\x00" {
			t.Errorf("NAT-PMP request % x", b)
		}
	}
}

// The retransmissions of RFC 6886 §3.1: sends at 0, 250 ms, 750 ms and 1.75 s, then
// giving up at Config.Timeout, 2 s, without a fifth send.
func TestRetransmitSchedule(t *testing.T) {
	clk := clockwork.NewFakeClock()
	start := clk.Now()
	r := newRouter(t, clk)
	r.set(func(r *router) { r.silent = true })
	c, ms := testClient(t, r, nil, NATPMP)
	done := make(chan error, 1)
	go func() {
		_, err := c.Map(t.Context())
		done <- err
	}()
	// The client starts a send's timer before sending: once the router has send n, the
	// fake clock can move to the next.
	for n, wait := range []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second, 250 * time.Millisecond} {
		eventually.That(t, 5*time.Second, "the next send", func() bool { return r.count() == n+1 })
		clk.Advance(wait)
	}
	if err := <-done; !isNoResponse(err) {
		t.Fatalf("Map: %v, want ErrNoResponse", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	var at []time.Duration
	for _, q := range r.reqs {
		at = append(at, q.at.Sub(start))
	}
	want := []time.Duration{0, 250 * time.Millisecond, 750 * time.Millisecond, 1750 * time.Millisecond}
	if len(at) != len(want) {
		t.Fatalf("sends at %v, want %v", at, want)
	}
	for i := range want {
		if at[i] != want[i] {
			t.Fatalf("sends at %v, want %v", at, want)
		}
	}
	if n := ms.Get("portmap_retransmits"); n != 3 {
		t.Errorf("%d retransmissions counted, want 3", n)
	}
}

// Probe waits for every protocol: here all three answer, UPnP through an SSDP search
// of the router.
func TestProbe(t *testing.T) {
	clk := clockwork.NewFakeClock()
	r := newRouter(t, clk)
	g := newIGD(t, "urn:schemas-upnp-org:service:WANIPConnection:1")
	c, _ := testClient(t, r, func(cfg *Config) { cfg.SSDPPort = g.ssdpPort() })
	res, err := c.Probe(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := ProbeResult{Gateway: loopback, PCP: true, NATPMP: true, UPnP: true, ExternalAddr: routerExt}
	if res != want {
		t.Fatalf("probe %+v, want %+v", res, want)
	}
	if n := g.searchCount(); n != 1 {
		t.Errorf("%d SSDP searches, want 1", n)
	}
	if calls := g.soapCalls(); len(calls) != 0 {
		t.Errorf("Probe made SOAP calls %v", calls)
	}
}

// A probe of a router that speaks NAT-PMP alone and has no UPnP ends at Config.Timeout.
func TestProbeNATPMPOnly(t *testing.T) {
	clk := clockwork.NewFakeClock()
	r := newRouter(t, clk)
	r.set(func(r *router) { r.pcp = false })
	c, _ := testClient(t, r, nil)
	done := make(chan ProbeResult, 1)
	go func() {
		res, err := c.Probe(t.Context())
		if err != nil {
			t.Error(err)
		}
		done <- res
	}()
	res := advanceUntil(t, clk, "Probe to return", done) // until UPnP's search times out
	if want := (ProbeResult{Gateway: loopback, NATPMP: true, ExternalAddr: routerExt}); res != want {
		t.Fatalf("probe %+v, want %+v", res, want)
	}
}
