package memnet

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"sync"
	"time"
)

// Behaviour is how a NAT maps or filters, in the terms of RFC 4787: by the remote
// endpoint's nothing, address, or address and port.
type Behaviour int

const (
	// EndpointIndependent: one mapping per internal endpoint (mapping); any remote may
	// send to it (filtering). A full-cone NAT is independent in both.
	EndpointIndependent Behaviour = iota
	// AddressDependent: a mapping per remote address (mapping); only remote addresses
	// the internal endpoint sent to may answer (filtering: a restricted-cone NAT).
	AddressDependent
	// AddressAndPortDependent: a mapping per remote address and port (mapping: a
	// symmetric NAT); only remote endpoints it sent to may answer (filtering: a
	// port-restricted-cone NAT).
	AddressAndPortDependent
)

func (b Behaviour) String() string {
	switch b {
	case EndpointIndependent:
		return "endpoint-independent"
	case AddressDependent:
		return "address-dependent"
	case AddressAndPortDependent:
		return "address-and-port-dependent"
	}
	return fmt.Sprintf("Behaviour(%d)", int(b))
}

// NATConfig describes a NAT. The zero value is a full-cone NAT (endpoint-independent
// mapping and filtering) without hairpinning that passes UDP and TCP.
type NATConfig struct {
	Mapping   Behaviour
	Filtering Behaviour
	// Hairpin lets a host inside reach another inside through the NAT's public address
	// (RFC 4787 REQ-9); the datagram arrives from the sender's mapped address.
	Hairpin bool
	// BlockUDP drops every datagram that would cross the NAT, either way: a firewall
	// that passes only TCP.
	BlockUDP bool
	// Timeout is how long a UDP mapping lives after the last datagram sent out through
	// it; 0 = 2 minutes (RFC 4787 REQ-5). A datagram in refreshes it too.
	Timeout time.Duration
}

// A NAT joins a private realm, whose hosts it creates, to the realm outside it (the
// Network's internet, or another NAT's inside for a double NAT) through one public IP.
// It translates UDP both ways as its config says, and TCP connections dialled from
// inside (each gets a mapped port of its own for as long as it is open). Nothing
// dials in through it: a TCP dial to its public IP is refused, as by a router with no
// port forwarded. Create one with Network.NAT or NAT.NAT.
type NAT struct {
	cfg    NATConfig
	face   *Host  // the public side: a host of the outer realm
	inside *realm // the private side

	mu      sync.Mutex // mu guards the following fields
	udp     map[mappingKey]*mapping
	byPort  map[uint16]*mapping // UDP mappings by public port
	tcpUsed map[uint16]struct{} // public ports held by TCP connections from inside
	nextTCP uint16
}

// mappingKey identifies a UDP mapping: the internal endpoint, and the part of the remote
// endpoint the mapping behaviour depends on (zero when independent).
type mappingKey struct {
	internal netip.AddrPort
	remote   netip.AddrPort
}

type mapping struct {
	key      mappingKey
	port     uint16                 // public
	expires  time.Time              // refreshed by traffic
	sentTo   map[netip.AddrPort]int // remote endpoints sent to (the filter), by count
	sentAddr map[netip.Addr]int     // their addresses
}

// realm is an address space: the internet, or the inside of a NAT.
type realm struct {
	n   *Network
	nat *NAT // the NAT this realm is behind; nil for the internet

	mu    sync.RWMutex // mu guards hosts
	hosts map[netip.Addr]*Host
}

func newRealm(n *Network, nat *NAT) *realm {
	return &realm{n: n, nat: nat, hosts: make(map[netip.Addr]*Host)}
}

func (r *realm) lookup(a netip.Addr) *Host {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.hosts[a]
}

// host returns the host of r with IP ip, creating it (see Network.Host).
func (r *realm) host(ip string) *Host {
	a, err := netip.ParseAddr(ip)
	if err != nil || a.IsUnspecified() || a.Zone() != "" {
		panic(fmt.Sprintf("memnet: invalid host IP %q", ip))
	}
	a = a.Unmap()
	r.mu.Lock()
	defer r.mu.Unlock()
	if h := r.hosts[a]; h != nil {
		return h
	}
	h := newHost(r, a)
	r.hosts[a] = h
	return h
}

// newNAT creates a NAT whose public side is the host public of realm r.
func (r *realm) newNAT(public string, cfg NATConfig) *NAT {
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Minute
	}
	face := r.host(public)
	t := &NAT{cfg: cfg, face: face, udp: make(map[mappingKey]*mapping), byPort: make(map[uint16]*mapping),
		tcpUsed: make(map[uint16]struct{}), nextTCP: ephemeralLo}
	t.inside = newRealm(r.n, t)
	face.mu.Lock()
	if face.gw != nil {
		face.mu.Unlock()
		panic(fmt.Sprintf("memnet: %s is already a NAT", public))
	}
	face.gw = t
	face.mu.Unlock()
	return t
}

// NAT creates a NAT on the internet with the given public IP.
func (n *Network) NAT(public string, cfg NATConfig) *NAT { return n.root.newNAT(public, cfg) }

// Host returns the host with the given private IP behind the NAT, creating it, as
// Network.Host does on the internet. Hosts behind one NAT reach each other directly,
// and everything else through the NAT.
func (t *NAT) Host(ip string) *Host { return t.inside.host(ip) }

// NAT creates a NAT behind this one (a double NAT): its public IP is a private address
// of this NAT's realm.
func (t *NAT) NAT(public string, cfg NATConfig) *NAT { return t.inside.newNAT(public, cfg) }

// Mappings returns how many UDP mappings are alive.
func (t *NAT) Mappings() int {
	now := time.Now()
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, m := range t.udp {
		if now.Before(m.expires) {
			n++
		}
	}
	return n
}

// send routes a datagram from src, an address of realm r, to dst: to a host of r, or
// out through r's NAT.
func (r *realm) send(src, dst netip.AddrPort, b []byte, at int64) {
	ip := dst.Addr().Unmap()
	if t := r.lookup(ip); t != nil {
		t.deliver(dst.Port(), b, src, at)
		return
	}
	if r.nat != nil {
		r.nat.outbound(src, netip.AddrPortFrom(ip, dst.Port()), b, at)
	}
}

// key is the mapping key for a datagram from internal to remote.
func (t *NAT) key(internal, remote netip.AddrPort) mappingKey {
	switch t.cfg.Mapping {
	case AddressDependent:
		return mappingKey{internal, netip.AddrPortFrom(remote.Addr(), 0)}
	case AddressAndPortDependent:
		return mappingKey{internal, remote}
	}
	return mappingKey{internal: internal}
}

// outbound translates a datagram from inside and sends it on, or drops it.
func (t *NAT) outbound(src, dst netip.AddrPort, b []byte, at int64) {
	if t.cfg.BlockUDP {
		return
	}
	now := time.Now()
	t.mu.Lock()
	m := t.udp[t.key(src, dst)]
	if m != nil && !now.Before(m.expires) {
		t.dropLocked(m)
		m = nil
	}
	if m == nil {
		port, ok := t.allocUDPLocked(src.Port())
		if !ok {
			t.mu.Unlock()
			return // no port left: dropped, as by a full conntrack table
		}
		m = &mapping{key: t.key(src, dst), port: port, sentTo: make(map[netip.AddrPort]int), sentAddr: make(map[netip.Addr]int)}
		t.udp[m.key] = m
		t.byPort[port] = m
	}
	m.expires = now.Add(t.cfg.Timeout)
	if m.sentTo[dst] == 0 {
		m.sentAddr[dst.Addr()]++
	}
	m.sentTo[dst]++
	from := netip.AddrPortFrom(t.face.ip, m.port)
	t.mu.Unlock()
	if dst.Addr() == t.face.ip {
		if t.cfg.Hairpin {
			t.inbound(dst.Port(), b, from, at)
		}
		return
	}
	t.face.r.send(from, dst, b, at)
}

// inbound passes a datagram that reached the public port on to the internal endpoint
// of its mapping, if the mapping exists and its filter lets the sender through.
func (t *NAT) inbound(port uint16, b []byte, from netip.AddrPort, at int64) {
	if t.cfg.BlockUDP {
		return
	}
	now := time.Now()
	t.mu.Lock()
	m := t.byPort[port]
	if m != nil && !now.Before(m.expires) {
		t.dropLocked(m)
		m = nil
	}
	if m == nil {
		t.mu.Unlock()
		return
	}
	switch t.cfg.Filtering {
	case AddressDependent:
		if m.sentAddr[from.Addr()] == 0 {
			t.mu.Unlock()
			return
		}
	case AddressAndPortDependent:
		if m.sentTo[from] == 0 {
			t.mu.Unlock()
			return
		}
	}
	m.expires = now.Add(t.cfg.Timeout)
	to := m.key.internal
	t.mu.Unlock()
	if h := t.inside.lookup(to.Addr()); h != nil {
		h.deliver(to.Port(), b, from, at)
	}
}

func (t *NAT) dropLocked(m *mapping) {
	delete(t.udp, m.key)
	if t.byPort[m.port] == m {
		delete(t.byPort, m.port)
	}
}

// allocUDPLocked picks the public port of a new mapping. An endpoint-independent NAT
// keeps the internal port when it is free, as Linux does; a dependent one picks at
// random, as Linux with --random-fully does (one port per mapping).
func (t *NAT) allocUDPLocked(want uint16) (uint16, bool) {
	if t.cfg.Mapping == EndpointIndependent && want != 0 && t.byPort[want] == nil {
		return want, true
	}
	for range 64 {
		p := uint16(ephemeralLo + rand.IntN(ephemeralHi-ephemeralLo+1))
		if t.byPort[p] == nil {
			return p, true
		}
	}
	now := time.Now()
	for p := uint16(ephemeralLo); p <= ephemeralHi; p++ { // nearly full: sweep, expiring
		if m := t.byPort[p]; m == nil {
			return p, true
		} else if !now.Before(m.expires) {
			t.dropLocked(m)
			return p, true
		}
	}
	return 0, false
}

// dialOut routes a TCP dial from src in realm r toward dst: it returns the host that
// has dst's IP, seen from r (nil if none), the address the dial appears to come from
// there, and a release that frees the NAT ports it took (call it when the connection
// closes). A dial to a NAT's public IP reaches that NAT's face, which has no listener.
func (r *realm) dialOut(src netip.AddrPort, dst netip.Addr) (*Host, netip.AddrPort, func(), bool) {
	release := func() {}
	for {
		if t := r.lookup(dst); t != nil {
			return t, src, release, true
		}
		t := r.nat
		if t == nil {
			return nil, src, release, true
		}
		t.mu.Lock()
		port, ok := allocPort(t.tcpUsed, &t.nextTCP)
		if ok {
			t.tcpUsed[port] = struct{}{}
		}
		t.mu.Unlock()
		if !ok {
			release()
			return nil, src, func() {}, false
		}
		prev := release
		release = func() {
			t.mu.Lock()
			delete(t.tcpUsed, port)
			t.mu.Unlock()
			prev()
		}
		src = netip.AddrPortFrom(t.face.ip, port)
		r = t.face.r
	}
}
