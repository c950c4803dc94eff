package e2e

// NAT lab tests (issue 3): for every kind of NAT the lab can build, coturn's RFC 5780
// discovery tool first proves the lab NAT behaves as intended, then `peerline nat --json`
// (against `peerline stun` on the same public host) must report the same mapping and
// filtering behaviour and the right classic name. They need root, iproute2, nftables and
// coturn, and skip with a message otherwise.

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerline/peerline/e2e/netlab"
	"github.com/peerline/peerline/internal/natdetect"
)

// natCase is one lab topology and what both tools must say about it.
type natCase struct {
	name      string
	build     func(l *netlab.Lab) *netlab.Host // adds the client host (and its sites)
	udp       bool                             // false: UDP is blocked, nobody answers
	mapping   string                           // RFC 4787 words, as peerline prints them
	filtering string
	classic   string
	hairpin   *bool // nil: hairpinning not checked
}

var natTrue, natFalse = true, false

func natCases() []natCase {
	site := func(name string, cfg netlab.SiteConfig) func(l *netlab.Lab) *netlab.Host {
		return func(l *netlab.Lab) *netlab.Host { return l.AddSite(name, cfg).AddHost("client") }
	}
	const eim, adm, apdm = "endpoint-independent", "address-dependent", "address-and-port-dependent"
	return []natCase{
		{name: "public", build: func(l *netlab.Lab) *netlab.Host { return l.AddPublicHost("client", 1) },
			udp: true, mapping: eim, filtering: eim, classic: "open"},
		{name: "full-cone", build: site("nat", netlab.SiteConfig{Kind: netlab.FullCone}),
			udp: true, mapping: eim, filtering: eim, classic: "full cone"},
		{name: "restricted-cone", build: site("nat", netlab.SiteConfig{Kind: netlab.RestrictedCone}),
			udp: true, mapping: eim, filtering: adm, classic: "restricted cone"},
		{name: "port-restricted-cone", build: site("nat", netlab.SiteConfig{Kind: netlab.PortRestrictedCone}),
			udp: true, mapping: eim, filtering: apdm, classic: "port-restricted cone"},
		{name: "symmetric", build: site("nat", netlab.SiteConfig{Kind: netlab.Symmetric}),
			udp: true, mapping: apdm, filtering: apdm, classic: "symmetric"},
		{name: "udp-blocked", build: site("fw", netlab.SiteConfig{Kind: netlab.UDPBlocked}),
			udp: false, classic: "udp-blocked"},
		{name: "double-nat", build: func(l *netlab.Lab) *netlab.Host {
			carrier := l.AddSite("carrier", netlab.SiteConfig{Kind: netlab.PortRestrictedCone})
			return l.AddSite("home", netlab.SiteConfig{Kind: netlab.FullCone, Behind: carrier}).AddHost("client")
		}, udp: true, mapping: eim, filtering: apdm, classic: "port-restricted cone"},
		{name: "double-nat-symmetric-carrier", build: func(l *netlab.Lab) *netlab.Host {
			carrier := l.AddSite("carrier", netlab.SiteConfig{Kind: netlab.Symmetric})
			return l.AddSite("home", netlab.SiteConfig{Kind: netlab.FullCone, Behind: carrier}).AddHost("client")
		}, udp: true, mapping: apdm, filtering: apdm, classic: "symmetric"},
		{name: "hairpin-on", build: func(l *netlab.Lab) *netlab.Host {
			s := l.AddSite("nat", netlab.SiteConfig{Kind: netlab.PortRestrictedCone, Hairpin: true})
			c := s.AddHost("client")
			s.AddHost("sibling")
			return c
		}, udp: true, mapping: eim, filtering: apdm, classic: "port-restricted cone", hairpin: &natTrue},
		{name: "hairpin-off", build: func(l *netlab.Lab) *netlab.Host {
			s := l.AddSite("nat", netlab.SiteConfig{Kind: netlab.PortRestrictedCone})
			c := s.AddHost("client")
			s.AddHost("sibling")
			return c
		}, udp: true, mapping: eim, filtering: apdm, classic: "port-restricted cone", hairpin: &natFalse},
	}
}

// natNeeds skips the test when the lab or coturn is missing.
func natNeeds(t *testing.T) {
	t.Helper()
	if err := netlab.Requirements(); err != nil {
		t.Skipf("skipping NAT lab test: %v", err)
	}
	for _, tool := range []string{"turnserver", "turnutils_natdiscovery"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("skipping NAT lab test: %s missing: apt-get install coturn", tool)
		}
	}
}

// TestNatKinds is issue 3's acceptance test: every NAT kind, checked by coturn and then
// by peerline. Cases run in parallel, each in its own lab.
func TestNatKinds(t *testing.T) {
	natNeeds(t)
	bin := netlab.BuildPeerline(t)
	var mu sync.Mutex
	var labs []*netlab.Lab
	t.Run("group", func(t *testing.T) {
		for _, c := range natCases() {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				l := natRunCase(t, bin, c)
				mu.Lock()
				labs = append(labs, l)
				mu.Unlock()
			})
		}
	})
	// Every case closed its lab; nothing of any of them may remain.
	for _, l := range labs {
		if left := l.Leftovers(); len(left) > 0 {
			t.Errorf("lab %s: leftovers %v", l.ID(), left)
		}
	}
	if left := natLeftoverNamespaces(labs); len(left) > 0 {
		t.Errorf("leftover namespaces: %v", left)
	}
}

func natRunCase(t *testing.T, bin string, c natCase) *netlab.Lab {
	t0 := time.Now()
	l := netlab.New(t)
	srv := l.AddPublicHost("stun", 4) // .10/.11 for coturn, .12/.13 for peerline stun
	client := c.build(l)
	a := srv.Addrs()
	setup := time.Since(t0)

	// coturn's turnserver with two -L addresses and an alternate port serves RFC 5780.
	ts, err := srv.Start("turnserver", "turnserver", "-n", "--no-cli", "--no-tls", "--no-dtls", "--stun-only",
		"-L", a[0].String(), "-L", a[1].String(), "-p", "3478", "--alt-listening-port", "3479",
		"--log-file", "stdout", "--simple-log", "--pidfile", l.LogDir()+"/turnserver.pid",
		"--userdb", l.LogDir()+"/turndb")
	if err != nil {
		t.Fatal(err)
	}
	ps, err := srv.Start("peerline-stun", bin, "stun", "--primary", a[2].String()+":3478", "--alt", a[3].String(), "--alt-port", "3479")
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.WaitLog("stun server listening", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := ts.WaitLog("Total General servers", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	natWaitSTUN(t, srv, netip.AddrPortFrom(a[0], 3478))

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()

	// 1. The outside check: coturn's discovery tool must see the intended NAT.
	t1 := time.Now()
	args := []string{"turnutils_natdiscovery", "-m", "-f"}
	if c.hairpin != nil {
		args = append(args, "-H")
	}
	out, err := client.Run(ctx, append(args, a[0].String())...)
	if err != nil && c.udp {
		t.Fatalf("natdiscovery: %v\n%s", err, out)
	}
	cm, cf, chp, canswered, crefl := natParseCoturn(string(out))
	coturnTime := time.Since(t1)
	if canswered != c.udp || cm != c.mapping || cf != c.filtering || (c.hairpin != nil && chp != *c.hairpin) {
		t.Fatalf("lab NAT is not what it should be: coturn says answered=%v mapping=%q filtering=%q hairpin=%v; want %v %q %q %v\n%s",
			canswered, cm, cf, chp, c.udp, c.mapping, c.filtering, c.hairpin, out)
	}
	// A public host is seen at its own address; a NATed one never is.
	if public := c.name == "public"; c.udp && (crefl == client.IP().String()) != public {
		t.Fatalf("coturn saw the client at %s; client is %s, public=%v", crefl, client.IP(), public)
	}

	// 2. peerline nat against peerline stun.
	t2 := time.Now()
	out, err = client.Run(ctx, bin, "nat", "--stun", a[2].String()+":3478", "--json", "--timeout", "1s")
	if err != nil {
		t.Fatalf("peerline nat: %v\n%s", err, out)
	}
	peerlineTime := time.Since(t2)
	var r struct {
		natdetect.Result
		Hairpinning *bool `json:"hairpinning"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("peerline nat --json: %v\n%s", err, out)
	}
	if r.UDPBlocked == c.udp || string(r.Mapping) != c.mapping || string(r.Filtering) != c.filtering ||
		r.Classic != c.classic || (c.name == "public") != r.Public {
		t.Fatalf("peerline nat says %s\nwant udp_blocked=%v mapping=%q filtering=%q classic=%q", out, !c.udp, c.mapping, c.filtering, c.classic)
	}
	if c.hairpin != nil && (r.Hairpinning == nil || *r.Hairpinning != *c.hairpin) {
		t.Fatalf("peerline nat hairpinning %v, want %v\n%s", r.Hairpinning, *c.hairpin, out)
	}

	// 2b. peerline netcheck, from the same host: the same NAT, reachability as the NAT
	// allows, coturn timed as a relay, the router asked for port mapping (no lab router
	// offers any), and a predicted path for every kind.
	out, err = client.Run(ctx, bin, "netcheck", "--stun", a[2].String()+":3478", "--turn", a[0].String()+":3478",
		"--json", "--timeout", "1s")
	if err != nil {
		t.Fatalf("peerline netcheck: %v\n%s", err, out)
	}
	var nc struct {
		NAT struct {
			natdetect.Result
			Hairpinning *bool `json:"hairpinning"`
		} `json:"nat"`
		IPv4        bool `json:"ipv4"`
		TCP         bool `json:"tcp"`
		PortMapping *struct {
			PCP    bool   `json:"pcp"`
			NATPMP bool   `json:"nat_pmp"`
			UPnP   bool   `json:"upnp"`
			Error  string `json:"error"`
		} `json:"port_mapping"`
		Latency []struct {
			Server string  `json:"server"`
			RTTMs  float64 `json:"rtt_ms"`
		} `json:"latency"`
		Predicted map[string]string `json:"predicted"`
	}
	if err := json.Unmarshal(out, &nc); err != nil {
		t.Fatalf("peerline netcheck --json: %v\n%s", err, out)
	}
	answered := 0
	for _, l := range nc.Latency {
		if l.RTTMs > 0 {
			answered++
		}
	}
	if nc.NAT.Classic != c.classic || string(nc.NAT.Mapping) != c.mapping || string(nc.NAT.Filtering) != c.filtering ||
		nc.IPv4 != c.udp || nc.TCP == c.udp || (c.udp && answered != 2) || (!c.udp && answered != 0) ||
		len(nc.Predicted) != 6 || nc.PortMapping == nil || nc.PortMapping.PCP || nc.PortMapping.NATPMP || nc.PortMapping.UPnP {
		t.Fatalf("peerline netcheck says %s\nwant classic %q, mapping %q, filtering %q, IPv4 %v, both servers timed when UDP passes, no port mapping, 6 predictions",
			out, c.classic, c.mapping, c.filtering, c.udp)
	}
	if c.hairpin != nil && (nc.NAT.Hairpinning == nil || *nc.NAT.Hairpinning != *c.hairpin) {
		t.Fatalf("peerline netcheck hairpinning %v, want %v\n%s", nc.NAT.Hairpinning, *c.hairpin, out)
	}

	// 3. Two hosts behind one NAT: the sibling is reachable at its public mapping only
	// when the NAT hairpins.
	if c.hairpin != nil {
		if got := natHairpinReaches(t, l.Host("sibling"), client, netip.AddrPortFrom(a[2], 3478)); got != *c.hairpin {
			t.Fatalf("client reached sibling through the NAT's public address: %v, want %v", got, *c.hairpin)
		}
	}

	t3 := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if left := l.Leftovers(); len(left) > 0 {
		t.Fatalf("leftovers: %v", left)
	}
	t.Logf("%s: coturn agrees (%v), peerline nat: %s / %s / %q (%v), netcheck agrees (%d servers timed, no port mapping); setup %v, teardown %v",
		c.name, coturnTime.Round(time.Millisecond), r.Mapping, r.Filtering, r.Classic,
		peerlineTime.Round(time.Millisecond), answered, setup.Round(time.Millisecond), time.Since(t3).Round(time.Millisecond))
	return l
}

// natWaitSTUN waits until a STUN server answers a Binding request from host h.
func natWaitSTUN(t *testing.T, h *netlab.Host, srv netip.AddrPort) {
	t.Helper()
	for i := 0; i < 50; i++ {
		c, err := h.ListenUDP("0.0.0.0:0")
		if err != nil {
			t.Fatal(err)
		}
		res, _ := natdetect.Detect(context.Background(), c, natdetect.Options{Servers: []string{srv.String()}, Timeout: 200 * time.Millisecond})
		c.Close()
		if !res.UDPBlocked && res.MappedAddr != "" {
			return
		}
	}
	t.Fatalf("STUN server %s never answered", srv)
}

var (
	natCoturnMapping   = regexp.MustCompile(`NAT with (Endpoint Independent|Address Dependent|Address and Port Dependent) Mapping!`)
	natCoturnFiltering = regexp.MustCompile(`NAT with (Endpoint Independent|Address Dependent|Address and Port Dependent) Filtering!`)
	natCoturnReflexive = regexp.MustCompile(`UDP reflexive addr: ([0-9.]+):`)
)

// natParseCoturn reads turnutils_natdiscovery's report: its mapping and filtering
// verdicts in RFC 4787 words, whether its hairpinning probe came back, whether the server
// answered at all, and the reflexive (mapped) IP it saw.
func natParseCoturn(out string) (mapping, filtering string, hairpin, answered bool, reflexive string) {
	words := func(s string) string {
		return strings.ReplaceAll(strings.ToLower(strings.ReplaceAll(s, " and ", "-and-")), " ", "-")
	}
	if m := natCoturnMapping.FindStringSubmatch(out); m != nil {
		mapping = words(m[1])
	}
	if m := natCoturnFiltering.FindStringSubmatch(out); m != nil {
		filtering = words(m[1])
	}
	if m := natCoturnReflexive.FindStringSubmatch(out); m != nil {
		reflexive = m[1]
	}
	hairpin = strings.Contains(out, "Received a request (maybe a successful hairpinning)")
	answered = reflexive != ""
	return
}

// natHairpinReaches learns sibling's public mapping with a STUN request, then sends to it
// from client and reports whether sibling received the datagram.
func natHairpinReaches(t *testing.T, sibling, client *netlab.Host, stun netip.AddrPort) bool {
	t.Helper()
	sc, err := sibling.ListenUDP("0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	res, err := natdetect.Detect(context.Background(), sc, natdetect.Options{Servers: []string{stun.String()}, Timeout: 500 * time.Millisecond})
	if err != nil || res.MappedAddr == "" {
		t.Fatalf("sibling mapping: %+v %v", res, err)
	}
	mapped := netip.MustParseAddrPort(res.MappedAddr)
	cc, err := client.ListenUDP("0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	buf := make([]byte, 64)
	for i := 0; i < 5; i++ {
		cc.WriteTo([]byte("hairpin"), net.UDPAddrFromAddrPort(mapped))
		sc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
		n, from, err := sc.ReadFrom(buf)
		if err == nil && string(buf[:n]) == "hairpin" {
			t.Logf("sibling %s got the datagram via %s, from %s", sibling.IP(), mapped, from)
			return true
		}
	}
	return false
}

// natLeftoverNamespaces lists namespaces of the given labs that still exist.
func natLeftoverNamespaces(labs []*netlab.Lab) []string {
	out, _ := exec.Command("ip", "netns", "list").Output()
	var left []string
	for _, l := range labs {
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, fmt.Sprintf("%s%s-", netlab.NSPrefix, l.ID())) {
				left = append(left, strings.Fields(line)[0])
			}
		}
	}
	return left
}

// TestNatMappingLifetime gives a port-restricted NAT a 3 s UDP timeout and checks that
// `peerline nat --lifetime-max` measures it: idle intervals of 1 s and 2 s survive, 4 s
// does not, so the reported lower bound is 2 s.
func TestNatMappingLifetime(t *testing.T) {
	natNeeds(t)
	bin := netlab.BuildPeerline(t)
	l := netlab.New(t)
	srv := l.AddPublicHost("stun", 2)
	client := l.AddSite("nat", netlab.SiteConfig{Kind: netlab.PortRestrictedCone, UDPTimeout: 3 * time.Second}).AddHost("client")
	a := srv.Addrs()
	ps, err := srv.Start("peerline-stun", bin, "stun", "--primary", a[0].String()+":3478", "--alt", a[1].String())
	if err != nil {
		t.Fatal(err)
	}
	if err := ps.WaitLog("stun server listening", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	t0 := time.Now()
	out, err := client.Run(ctx, bin, "nat", "--stun", a[0].String()+":3478", "--json", "--timeout", "1s",
		"--no-hairpin", "--lifetime-max", "8s")
	if err != nil {
		t.Fatalf("peerline nat: %v\n%s", err, out)
	}
	var r struct {
		Classic    string `json:"classic"`
		LifetimeMS *int64 `json:"mapping_lifetime_ms"`
	}
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if r.Classic != "port-restricted cone" || r.LifetimeMS == nil || *r.LifetimeMS != 2000 {
		t.Fatalf("want port-restricted cone with a 2000 ms lifetime, got\n%s", out)
	}
	t.Logf("mapping lifetime lower bound %d ms with a 3 s conntrack UDP timeout (took %v)", *r.LifetimeMS, time.Since(t0).Round(time.Millisecond))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if left := l.Leftovers(); len(left) > 0 {
		t.Fatalf("leftovers: %v", left)
	}
}
