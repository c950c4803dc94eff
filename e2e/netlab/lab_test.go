package netlab

import (
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestSixHostTopology builds a 6-host topology with every kind of site (public hosts, two
// hosts behind one hairpinning NAT, a full cone, a double NAT), checks that every private
// host reaches the internet, and times setup and teardown (issue 3: under 5 s together).
func TestSixHostTopology(t *testing.T) {
	t0 := time.Now()
	l := New(t)
	srv := l.AddPublicHost("srv", 2)
	l.AddPublicHost("peer", 1)
	home := l.AddSite("home", SiteConfig{Kind: PortRestrictedCone, Hairpin: true})
	a, b := home.AddHost("a"), home.AddHost("b")
	office := l.AddSite("office", SiteConfig{Kind: FullCone})
	c := office.AddHost("c")
	carrier := l.AddSite("carrier", SiteConfig{Kind: PortRestrictedCone})
	inner := l.AddSite("inner", SiteConfig{Kind: PortRestrictedCone, Behind: carrier})
	d := inner.AddHost("d")
	setup := time.Since(t0)

	for _, h := range []*Host{a, b, c, d} {
		st, err := MeasureRTT(h, srv, RTTOptions{N: 3})
		if err != nil {
			t.Fatalf("%s -> srv: %v", h.Name, err)
		}
		t.Logf("%s (%s) -> srv: %v", h.Name, h.IP(), st)
	}
	if n := len(l.Namespaces()); n != 11 {
		t.Errorf("%d namespaces, want 11 (inet, 6 hosts, 4 routers)", n)
	}

	t1 := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	teardown := time.Since(t1)
	t.Logf("6-host topology (11 namespaces): setup %v, teardown %v, total %v",
		setup.Round(time.Millisecond), teardown.Round(time.Millisecond), (setup + teardown).Round(time.Millisecond))
	if left := l.Leftovers(); len(left) > 0 {
		t.Fatalf("leftovers: %v", left)
	}
	if setup+teardown > 5*time.Second {
		t.Fatalf("setup+teardown took %v, want < 5s", setup+teardown)
	}
}

// TestImpairedRTT adds 50 ms each way on one host's link and measures the round trip to
// another host: 100 ms +- 20 ms (issue 3).
func TestImpairedRTT(t *testing.T) {
	l := New(t)
	a, b := l.AddPublicHost("a", 1), l.AddPublicHost("b", 1)
	base, err := MeasureRTT(a, b, RTTOptions{N: 5})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Impair(Impairment{Delay: 50 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	st, err := MeasureRTT(a, b, RTTOptions{N: 20})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("unimpaired: %v", base)
	t.Logf("50 ms each way on a's link: %v", st)
	if st.Received != st.Sent {
		t.Errorf("lost %d of %d probes with no loss configured", st.Sent-st.Received, st.Sent)
	}
	if st.Median < 80*time.Millisecond || st.Median > 120*time.Millisecond {
		t.Fatalf("median RTT %v, want 100 ms +- 20 ms", st.Median)
	}
}

// TestImpairedLoss drops 30% of packets each way: about half the round trips fail.
func TestImpairedLoss(t *testing.T) {
	l := New(t)
	a, b := l.AddPublicHost("a", 1), l.AddPublicHost("b", 1)
	if err := b.Impair(Impairment{Loss: 0.3, Jitter: 5 * time.Millisecond}); err != nil {
		t.Fatal(err)
	}
	st, err := MeasureRTT(a, b, RTTOptions{N: 100, Timeout: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("30%% loss each way, 0-5 ms jitter: %v", st)
	// Expected answered fraction 0.49; 100 trials: 3 sigma is about +-15.
	if st.Received < 30 || st.Received > 70 {
		t.Fatalf("%d of 100 answered, want about 49", st.Received)
	}
}

func TestNATRulesetLoads(t *testing.T) {
	for _, k := range Kinds {
		for _, hp := range []bool{false, true} {
			if hp && (k == Symmetric || k == UDPBlocked) {
				continue
			}
			rs := natRuleset(k, hp, netip.MustParseAddr("203.0.113.100"), netip.MustParsePrefix("10.1.0.0/24"))
			if !strings.Contains(rs, "table ip plnat") {
				t.Fatalf("%s: %s", k, rs)
			}
		}
	}
	// Loading them into a kernel is what every lab test does; see TestSixHostTopology.
}
