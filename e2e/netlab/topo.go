package netlab

import (
	"fmt"
	"net/netip"
	"time"
)

// Kind is a NAT (or firewall) kind, named as in RFC 4787 and issue 3.
type Kind string

// NAT kinds a Site can have.
const (
	FullCone           Kind = "full-cone"
	RestrictedCone     Kind = "restricted-cone"
	PortRestrictedCone Kind = "port-restricted-cone"
	Symmetric          Kind = "symmetric"
	UDPBlocked         Kind = "udp-blocked"
)

// Kinds lists every Site kind.
var Kinds = []Kind{FullCone, RestrictedCone, PortRestrictedCone, Symmetric, UDPBlocked}

// Host is one machine: a public host, a host behind a site's router, or a router.
type Host struct {
	lab   *Lab
	node  *node
	Name  string
	addrs []netip.Addr
	iface string // the host's link: "eth0", or "wan" for routers
	site  *Site  // the site it sits in (nil for public hosts); for a router, its own site
}

// NS returns the host's namespace name.
func (h *Host) NS() string { return h.node.ns }

// IP returns the host's first address.
func (h *Host) IP() netip.Addr { return h.addrs[0] }

// Addrs returns all of the host's addresses on its link.
func (h *Host) Addrs() []netip.Addr { return append([]netip.Addr(nil), h.addrs...) }

// Site is a private network behind one NAT router.
type Site struct {
	lab      *Lab
	Name     string
	Config   SiteConfig
	Router   *Host        // the router; Router.IP() is its public (WAN) address
	LAN      netip.Prefix // 10.S.0.0/24
	hosts    []*Host
	nextPort int // next bridge port number on the LAN bridge
}

// SiteConfig says how a site's router behaves.
type SiteConfig struct {
	// Kind is the router's NAT kind. Required.
	Kind Kind
	// Hairpin makes the router hairpin: packets from the LAN to its public address on a
	// mapped port come back into the LAN. false: they are dropped. Not for Symmetric.
	Hairpin bool
	// Behind puts the router behind another site's router (double NAT). nil: on the
	// internet.
	Behind *Site
	// UDPTimeout sets the router's conntrack UDP timeouts (and so its mapping lifetime).
	// 0 keeps the kernel's defaults (30 s unreplied, 120 s after replies).
	UDPTimeout time.Duration
}

// AddPublicHost adds a host with nAddrs (at least 1) addresses on the internet.
func (l *Lab) AddPublicHost(name string, nAddrs int) *Host {
	l.t.Helper()
	if nAddrs < 1 {
		nAddrs = 1
	}
	n := l.addNode(name)
	h := &Host{lab: l, node: n, Name: name, iface: "eth0"}
	l.mu.Lock()
	for i := 0; i < nAddrs; i++ {
		h.addrs = append(h.addrs, internetAddr(10+l.nextPublic))
		l.nextPublic++
	}
	port := l.nextPort
	l.nextPort++
	l.hosts[name] = h
	l.mu.Unlock()
	l.ipBatch(l.inet,
		fmt.Sprintf("link add p%d type veth peer name eth0 netns %s", port, n.ns),
		fmt.Sprintf("link set p%d master br0 up", port))
	cmds := []string{"link set lo up", "link set eth0 up"}
	for _, a := range h.addrs {
		cmds = append(cmds, fmt.Sprintf("addr add %s/%d dev eth0", a, internetPrefix.Bits()))
	}
	l.ipBatch(n, cmds...)
	return h
}

func internetAddr(i int) netip.Addr {
	if i < 1 || i > 254 {
		panic("netlab: internet address space exhausted")
	}
	b := internetPrefix.Addr().As4()
	b[3] = byte(i)
	return netip.AddrFrom4(b)
}

// AddSite adds a NAT router called name with an empty LAN.
func (l *Lab) AddSite(name string, cfg SiteConfig) *Site {
	l.t.Helper()
	if cfg.Hairpin && cfg.Kind == Symmetric {
		l.t.Fatalf("netlab: site %s: hairpinning is not modelled for symmetric NATs", name)
	}
	n := l.addNode(name)
	l.mu.Lock()
	l.nextSite++
	s := &Site{lab: l, Name: name, Config: cfg, LAN: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(l.nextSite), 0, 0}), 24)}
	r := &Host{lab: l, node: n, Name: name, iface: "wan", site: s}
	s.Router = r
	l.hosts[name] = r
	var parentNS, parentBr string
	var port int
	var gw netip.Addr
	if cfg.Behind == nil {
		r.addrs = []netip.Addr{internetAddr(100 + l.nextWAN)}
		l.nextWAN++
		parentNS, parentBr, port = l.inet.ns, "br0", l.nextPort
		l.nextPort++
	} else {
		p := cfg.Behind
		r.addrs = []netip.Addr{p.hostAddr(len(p.hosts))}
		p.hosts = append(p.hosts, r)
		parentNS, parentBr, port = p.Router.node.ns, "lan", p.nextPort
		p.nextPort++
		gw = p.gateway()
	}
	l.mu.Unlock()

	// Sysctls first, so interfaces created afterwards inherit rp_filter=0.
	timeouts := []string{}
	if cfg.UDPTimeout > 0 {
		sec := int(cfg.UDPTimeout.Seconds() + 0.5)
		timeouts = append(timeouts, fmt.Sprintf("net.netfilter.nf_conntrack_udp_timeout=%d", sec),
			fmt.Sprintf("net.netfilter.nf_conntrack_udp_timeout_stream=%d", sec))
	}
	l.sysctl(n, append([]string{"net.ipv4.ip_forward=1", "net.ipv4.conf.all.rp_filter=0",
		"net.ipv4.conf.default.rp_filter=0", "net.bridge.bridge-nf-call-iptables=0",
		"net.bridge.bridge-nf-call-ip6tables=0"}, timeouts...)...)
	l.must(l.run([]byte(fmt.Sprintf("link add p%d type veth peer name wan netns %s\nlink set p%d master %s up\n",
		port, n.ns, port, parentBr)), "ip", "-n", parentNS, "-batch", "-"))
	cmds := []string{
		"link set lo up",
		"link set wan up",
		fmt.Sprintf("addr add %s/24 dev wan", r.IP()),
		"link add lan type bridge",
		fmt.Sprintf("addr add %s/24 dev lan", s.gateway()),
		"link set lan up",
	}
	if gw.IsValid() {
		cmds = append(cmds, fmt.Sprintf("route add default via %s", gw))
	}
	l.ipBatch(n, cmds...)
	l.nft(n, natRuleset(cfg.Kind, cfg.Hairpin, r.IP(), s.LAN))
	return s
}

// gateway is the router's LAN address, 10.S.0.1.
func (s *Site) gateway() netip.Addr { return s.LAN.Addr().Next() }

// hostAddr is the LAN address of the i-th host (or child router): 10.S.0.(10+i).
func (s *Site) hostAddr(i int) netip.Addr {
	b := s.LAN.Addr().As4()
	b[3] = byte(10 + i)
	return netip.AddrFrom4(b)
}

// AddHost adds a host called name on the site's LAN, with a default route via the router.
func (s *Site) AddHost(name string) *Host {
	l := s.lab
	l.t.Helper()
	n := l.addNode(name)
	l.mu.Lock()
	h := &Host{lab: l, node: n, Name: name, iface: "eth0", site: s, addrs: []netip.Addr{s.hostAddr(len(s.hosts))}}
	s.hosts = append(s.hosts, h)
	port := s.nextPort
	s.nextPort++
	l.hosts[name] = h
	l.mu.Unlock()
	l.ipBatch(s.Router.node,
		fmt.Sprintf("link add p%d type veth peer name eth0 netns %s", port, n.ns),
		fmt.Sprintf("link set p%d master lan up", port))
	l.ipBatch(n, "link set lo up", "link set eth0 up",
		fmt.Sprintf("addr add %s/24 dev eth0", h.IP()),
		fmt.Sprintf("route add default via %s", s.gateway()))
	return h
}

// FlushState forgets the router's NAT state (conntrack entries and the dynamic sets of
// full- and restricted-cone filtering), so that a later case does not pass on an earlier
// one's mappings.
func (s *Site) FlushState() error {
	l := s.lab
	if err := l.run(nil, "ip", "netns", "exec", s.Router.NS(), "nft", "flush", "map", "ip", natTable, "fc"); err != nil {
		return err
	}
	if err := l.run(nil, "ip", "netns", "exec", s.Router.NS(), "nft", "flush", "set", "ip", natTable, "rc"); err != nil {
		return err
	}
	// conntrack -F needs the conntrack tool; without it nothing else holds UDP state long.
	if err := l.run(nil, "ip", "netns", "exec", s.Router.NS(), "conntrack", "-F"); err != nil {
		return fmt.Errorf("flush conntrack (apt-get install conntrack): %w", err)
	}
	return nil
}
