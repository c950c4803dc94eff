package relay

import (
	"net"
	"net/netip"
)

// Address blocks the default peer filter treats as private besides those netip knows.
var (
	cgnat     = netip.MustParsePrefix("100.64.0.0/10")  // RFC 6598 shared address space
	thisNet   = netip.MustParsePrefix("0.0.0.0/8")      // RFC 791 "this network"
	broadcast = netip.MustParseAddr("255.255.255.255")  // limited broadcast
	reserved4 = netip.MustParsePrefix("240.0.0.0/4")    // RFC 1112 reserved (class E)
	nat64Loc  = netip.MustParsePrefix("64:ff9b:1::/48") // RFC 8215 local-use NAT64
	sixToFour = netip.MustParsePrefix("2002::/16")      // 6to4, can embed any IPv4 address
	teredo    = netip.MustParsePrefix("2001::/32")      // Teredo, can embed any IPv4 address
	docs6     = netip.MustParsePrefix("2001:db8::/32")  // RFC 3849 documentation
	discard6  = netip.MustParsePrefix("100::/64")       // RFC 6666 discard-only
)

// PublicPeer reports whether ip is a public unicast address, which the default filter
// lets clients relay to: not loopback, RFC 1918, CGNAT, ULA, link-local, unspecified,
// multicast, broadcast or reserved, and not an IPv6 form (6to4, Teredo) that tunnels to an
// arbitrary IPv4 address.
func PublicPeer(ip net.IP) bool {
	a, ok := netip.AddrFromSlice(ip)
	if !ok {
		return false
	}
	a = a.Unmap()
	return !unusablePeer(a) && !privatePeer(a)
}

// unusablePeer is what no relay should send to, whatever the configuration.
func unusablePeer(a netip.Addr) bool {
	return !a.IsValid() || a.IsUnspecified() || a.IsMulticast() || a == broadcast ||
		thisNet.Contains(a) || reserved4.Contains(a) || discard6.Contains(a)
}

// privatePeer is what belongs to the relay's own host or network.
func privatePeer(a netip.Addr) bool {
	return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || cgnat.Contains(a) ||
		nat64Loc.Contains(a) || sixToFour.Contains(a) || teredo.Contains(a) || docs6.Contains(a)
}

// peerFilter returns the filter Config asks for.
func peerFilter(cfg Config) func(net.IP) bool {
	if cfg.AllowPeer != nil {
		return cfg.AllowPeer
	}
	if cfg.AllowPrivatePeers {
		return func(ip net.IP) bool {
			a, ok := netip.AddrFromSlice(ip)
			return ok && !unusablePeer(a.Unmap())
		}
	}
	return PublicPeer
}
