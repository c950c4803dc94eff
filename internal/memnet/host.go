package memnet

import (
	"context"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
)

const (
	// Ephemeral ports come from Linux's default range.
	ephemeralLo = 32768
	ephemeralHi = 60999
	// backlogMax is how many connections a listener holds before Accept; dials beyond
	// it wait.
	backlogMax = 4096
)

// Host is one machine on a Network, with one IP and its own TCP and UDP port spaces.
// Get one with Network.Host. All methods are safe for concurrent use. *Host satisfies
// the overlay's Dialer interface through DialContext.
type Host struct {
	n  *Network
	r  *realm // the address space the host is in
	ip netip.Addr
	gw *NAT // set once when the host is a NAT's public side; guarded by mu

	mu        sync.Mutex // mu guards all following fields
	up        bool
	tcpPorts  map[uint16]struct{} // ports held by listeners and dialled conns
	listeners map[uint16]*listener
	conns     map[*conn]struct{} // open stream ends on this host, including unaccepted ones
	udp       map[uint16]*packetConn
	nextTCP   uint16 // where the search for a free ephemeral port starts
	nextUDP   uint16
}

func newHost(r *realm, ip netip.Addr) *Host {
	h := &Host{n: r.n, r: r, ip: ip, up: true, nextTCP: ephemeralLo, nextUDP: ephemeralLo}
	h.resetLocked()
	return h
}

// resetLocked forgets every port and conn, as a reboot does.
func (h *Host) resetLocked() {
	h.tcpPorts = make(map[uint16]struct{})
	h.listeners = make(map[uint16]*listener)
	h.conns = make(map[*conn]struct{})
	h.udp = make(map[uint16]*packetConn)
}

// IP returns the host's address.
func (h *Host) IP() netip.Addr { return h.ip }

// Conns returns how many stream conn ends on this host are open: dialled, accepted, or
// waiting in a listener's backlog. A conn between two ports of the same host counts
// twice. Leak tests expect 0 once everything is closed.
func (h *Host) Conns() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.conns)
}

// Kill crashes the host: every listener, stream conn and packet conn on it closes at
// once. Its peers read what was already queued and then an error wrapping
// syscall.ECONNRESET; dials to it fail with syscall.EHOSTUNREACH; its own Listen,
// ListenPacket and DialContext fail with ErrHostDown until Revive. Killing a dead host
// does nothing.
func (h *Host) Kill() {
	h.mu.Lock()
	if !h.up {
		h.mu.Unlock()
		return
	}
	h.up = false
	conns, lns, pcs := h.conns, h.listeners, h.udp
	for c := range conns {
		if c.release != nil {
			c.release() // the NAT forgets the crashed host's connections
			c.release = nil
		}
	}
	h.resetLocked()
	for _, ln := range lns {
		ln.closed = true
		ln.backlog = queue[*conn]{} // these conns are in conns too
		wakeLocked(&ln.acceptWait)
		wakeLocked(&ln.spaceWait)
	}
	h.mu.Unlock()

	for c := range conns {
		c.shutdown(true)
	}
	for _, pc := range pcs {
		pc.shutdown()
	}
}

// Revive brings a killed host back up with no listeners, conns or ports in use, as after
// a reboot. Reviving a live host does nothing.
func (h *Host) Revive() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.up = true
}

// Listen listens for stream connections. network must be "tcp", "tcp4" or "tcp6".
// address is ":port" or "IP:port", where IP is the host's own or unspecified; port 0
// picks a free ephemeral port. A port in use gives an error wrapping syscall.EADDRINUSE,
// another host's IP one wrapping syscall.EADDRNOTAVAIL. The listener's Addr is a
// *net.TCPAddr with the host's IP.
func (h *Host) Listen(network, address string) (net.Listener, error) {
	var ln *listener
	err := bind(h, network, "tcp", address, h.tcpPorts, &h.nextTCP, func(port uint16) {
		h.tcpPorts[port] = struct{}{}
		ln = &listener{h: h, port: port, addr: &net.TCPAddr{IP: h.ip.AsSlice(), Port: int(port)}}
		h.listeners[port] = ln
	})
	if err != nil {
		return nil, err
	}
	return ln, nil
}

// DialContext opens a stream connection to address ("IP:port") from a fresh ephemeral
// port of this host. network must be "tcp", "tcp4" or "tcp6". The dial takes one round
// trip (2×Latency). With no listener on the port the error wraps syscall.ECONNREFUSED;
// with no live host at the IP it wraps syscall.EHOSTUNREACH; if ctx ends first it wraps
// ctx.Err(). Once connected, ctx no longer matters.
func (h *Host) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	n := h.n
	p := n.newPair()
	cl, sv := &p.ends[0], &p.ends[1]
	cl.host = h
	var raddr *net.TCPAddr
	fail := func(err error) (net.Conn, error) {
		var laddr net.Addr
		if cl.local != nil {
			laddr = cl.local
		}
		var addr net.Addr = addrString(address)
		if raddr != nil {
			addr = raddr
		}
		return nil, &net.OpError{Op: "dial", Net: network, Source: laddr, Addr: addr, Err: err}
	}
	if err := checkNetwork(network, "tcp"); err != nil {
		return fail(err)
	}
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fail(&net.AddrError{Err: "not an IP:port (memnet resolves no names)", Addr: address})
	}
	dst := ap.Addr().Unmap()
	if dst.IsUnspecified() {
		dst = h.ip
	}
	raddr = &net.TCPAddr{IP: dst.AsSlice(), Port: int(ap.Port())}
	if err := ctx.Err(); err != nil {
		return fail(err)
	}

	h.mu.Lock()
	if !h.up {
		h.mu.Unlock()
		return fail(ErrHostDown)
	}
	port, ok := allocPort(h.tcpPorts, &h.nextTCP)
	if !ok {
		h.mu.Unlock()
		return fail(errno("connect", syscall.EADDRNOTAVAIL))
	}
	h.tcpPorts[port] = struct{}{}
	cl.local = &net.TCPAddr{IP: h.ip.AsSlice(), Port: int(port)}
	cl.ownsPort = true
	cl.remote = raddr
	h.conns[cl] = struct{}{} // from here on, Kill resets it
	h.mu.Unlock()

	abort := func(err error) (net.Conn, error) {
		cl.shutdown(true)
		h.removeConn(cl)
		return fail(err)
	}
	if err := n.delay(ctx); err != nil { // the SYN travels
		return abort(err)
	}
	t, seen, release, ok := h.r.dialOut(netip.AddrPortFrom(h.ip, port), dst)
	if !ok {
		return abort(errno("connect", syscall.EADDRNOTAVAIL)) // a NAT ran out of ports
	}
	cl.release = release
	if t == nil {
		err := errno("connect", syscall.EHOSTUNREACH)
		if derr := n.delay(ctx); derr != nil { // so does the ICMP error
			err = derr
		}
		return abort(err)
	}
	sv.host, sv.local, sv.remote = t, raddr, net.TCPAddrFromAddrPort(seen)
	if err := t.enqueue(ctx, ap.Port(), sv); err != nil {
		if derr := n.delay(ctx); derr != nil { // so does the RST or ICMP error
			err = derr
		}
		return abort(err)
	}
	if err := n.delay(ctx); err != nil { // the SYN-ACK travels; sv is reset by abort
		return abort(err)
	}
	p.mu.Lock()
	killed := cl.closed
	p.mu.Unlock()
	if killed {
		return fail(ErrHostDown)
	}
	return cl, nil
}

// enqueue hands c to the listener on port, waiting while its backlog is full.
func (h *Host) enqueue(ctx context.Context, port uint16, c *conn) error {
	h.mu.Lock()
	for {
		if !h.up {
			h.mu.Unlock()
			return errno("connect", syscall.EHOSTUNREACH)
		}
		ln := h.listeners[port]
		if ln == nil {
			h.mu.Unlock()
			return errno("connect", syscall.ECONNREFUSED)
		}
		if ln.backlog.len() < backlogMax {
			ln.backlog.push(c)
			h.conns[c] = struct{}{}
			wakeLocked(&ln.acceptWait)
			h.mu.Unlock()
			return nil
		}
		ch := waitChLocked(&ln.spaceWait)
		h.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
		h.mu.Lock()
	}
}

// removeConn unregisters c and frees its port, unless Kill already forgot it (then the
// port may belong to someone else since Revive).
func (h *Host) removeConn(c *conn) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if _, ok := h.conns[c]; !ok {
		return
	}
	delete(h.conns, c)
	if c.release != nil {
		c.release()
		c.release = nil
	}
	if c.ownsPort {
		delete(h.tcpPorts, uint16(c.local.Port))
	}
}

// parseBind checks a Listen or ListenPacket address and returns its port.
func (h *Host) parseBind(address string) (uint16, error) {
	host, ps, err := net.SplitHostPort(address)
	if err != nil {
		return 0, err
	}
	if host != "" {
		a, err := netip.ParseAddr(host)
		if err != nil {
			return 0, &net.AddrError{Err: "not an IP address (memnet resolves no names)", Addr: address}
		}
		if a = a.Unmap(); !a.IsUnspecified() && a != h.ip {
			return 0, errno("bind", syscall.EADDRNOTAVAIL)
		}
	}
	port, err := strconv.ParseUint(ps, 10, 16)
	if err != nil {
		return 0, &net.AddrError{Err: "invalid port", Addr: address}
	}
	return uint16(port), nil
}

// allocPort finds a free ephemeral port in used, starting at *next. It scans at most
// the whole range once, so a full range costs O(range) per attempt.
func allocPort[V any](used map[uint16]V, next *uint16) (uint16, bool) {
	for range ephemeralHi - ephemeralLo + 1 {
		p := *next
		if *next++; *next > ephemeralHi {
			*next = ephemeralLo
		}
		if _, taken := used[p]; !taken {
			return p, true
		}
	}
	return 0, false
}

// checkNetwork accepts family ("tcp" or "udp") and its 4 and 6 variants.
func checkNetwork(network, family string) error {
	switch network {
	case family, family + "4", family + "6":
		return nil
	}
	return net.UnknownNetworkError(network)
}

// addrString is a net.Addr for an address that could not be parsed.
type addrString string

func (a addrString) Network() string { return "memnet" }
func (a addrString) String() string  { return string(a) }

// bind checks network (of the given kind) and address, picks the port in one of the
// host's port spaces (port itself if free, a free ephemeral one for 0) and hands it to
// record, which runs under h.mu and must enter it in used. Errors are *net.OpError.
func bind[V any](h *Host, network, kind, address string, used map[uint16]V, next *uint16, record func(port uint16)) error {
	fail := func(err error) error {
		return &net.OpError{Op: "listen", Net: network, Addr: addrString(address), Err: err}
	}
	if err := checkNetwork(network, kind); err != nil {
		return fail(err)
	}
	port, err := h.parseBind(address)
	if err != nil {
		return fail(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.up {
		return fail(ErrHostDown)
	}
	if port == 0 {
		var ok bool
		if port, ok = allocPort(used, next); !ok {
			return fail(errno("bind", syscall.EADDRINUSE))
		}
	} else if _, inUse := used[port]; inUse {
		return fail(errno("bind", syscall.EADDRINUSE))
	}
	record(port)
	return nil
}
