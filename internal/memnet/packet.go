package memnet

import (
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"time"
)

const (
	// packetQueueMax is how many datagrams wait for ReadFrom before new ones are dropped.
	packetQueueMax = 256
	// maxDatagram is the largest UDP payload over IPv4.
	maxDatagram = 65507
)

type datagram struct {
	b    []byte
	from netip.AddrPort
	at   int64
}

// packetConn is a UDP-style socket bound to one port of a host.
type packetConn struct {
	h    *Host
	port uint16
	self netip.AddrPort
	addr *net.UDPAddr

	mu       sync.Mutex // mu guards all following fields
	closed   bool
	q        queue[datagram]
	rwait    chan struct{} // closed when a datagram arrives, the conn closes or a deadline passes
	rdl, wdl deadline
}

var _ net.PacketConn = (*packetConn)(nil)

// ListenPacket opens a datagram socket. network must be "udp", "udp4" or "udp6"; address
// follows the rules of Listen, in the host's separate UDP port space.
func (h *Host) ListenPacket(network, address string) (net.PacketConn, error) {
	var pc *packetConn
	err := bind(h, network, "udp", address, h.udp, &h.nextUDP, func(port uint16) {
		self := netip.AddrPortFrom(h.ip, port)
		pc = &packetConn{h: h, port: port, self: self, addr: net.UDPAddrFromAddrPort(self)}
		h.udp[port] = pc
	})
	if err != nil {
		return nil, err
	}
	return pc, nil
}

func (pc *packetConn) opErr(op string, addr net.Addr, err error) error {
	return &net.OpError{Op: op, Net: "udp", Source: pc.addr, Addr: addr, Err: err}
}

// ReadFrom waits for a datagram and copies it into b, truncating it if b is too short,
// as UDP does. addr is the sender's *net.UDPAddr.
func (pc *packetConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n := pc.h.n
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for {
		if pc.closed {
			return 0, nil, pc.opErr("read", nil, net.ErrClosed)
		}
		if pc.rdl.expired {
			return 0, nil, pc.opErr("read", nil, os.ErrDeadlineExceeded)
		}
		var until int64
		if pc.q.len() > 0 {
			if d := pc.q.front(); d.at <= n.now() {
				d := pc.q.pop()
				return copy(b, d.b), net.UDPAddrFromAddrPort(d.from), nil
			}
			until = pc.q.front().at
		}
		ch := waitChLocked(&pc.rwait)
		pc.mu.Unlock()
		n.wait(ch, until)
		pc.mu.Lock()
	}
}

// WriteTo sends b to addr, a *net.UDPAddr. It never blocks: a datagram nobody can
// receive is dropped and WriteTo still reports success.
func (pc *packetConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	pc.mu.Lock()
	closed, expired := pc.closed, pc.wdl.expired
	pc.mu.Unlock()
	switch {
	case closed:
		return 0, pc.opErr("write", addr, net.ErrClosed)
	case expired:
		return 0, pc.opErr("write", addr, os.ErrDeadlineExceeded)
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok || ua == nil {
		return 0, pc.opErr("write", addr, syscall.EINVAL)
	}
	if len(b) > maxDatagram {
		return 0, pc.opErr("write", addr, errno("sendto", syscall.EMSGSIZE))
	}
	dst := ua.AddrPort()
	ip := dst.Addr().Unmap()
	if ip.IsUnspecified() {
		ip = pc.h.ip
	}
	pc.h.r.send(pc.self, netip.AddrPortFrom(ip, dst.Port()), b, pc.h.n.arrival())
	return len(b), nil
}

// deliver queues a copy of b for the packet conn on port, if there is one with room.
func (h *Host) deliver(port uint16, b []byte, from netip.AddrPort, at int64) {
	h.mu.Lock()
	if gw := h.gw; gw != nil {
		h.mu.Unlock()
		gw.inbound(port, b, from, at)
		return
	}
	var pc *packetConn
	if h.up {
		pc = h.udp[port]
	}
	h.mu.Unlock()
	if pc == nil {
		return
	}
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.closed || pc.q.len() >= packetQueueMax {
		return
	}
	pc.q.push(datagram{b: append([]byte(nil), b...), from: from, at: at})
	wakeLocked(&pc.rwait)
}

// Close closes the socket and frees its port; pending ReadFroms return net.ErrClosed.
func (pc *packetConn) Close() error {
	if !pc.shutdown() {
		return pc.opErr("close", nil, net.ErrClosed)
	}
	h := pc.h
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.udp[pc.port] == pc {
		delete(h.udp, pc.port)
	}
	return nil
}

// shutdown closes pc without touching the host's port table; it reports whether pc
// was open.
func (pc *packetConn) shutdown() bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.closed {
		return false
	}
	pc.closed = true
	pc.rdl.stopLocked()
	pc.wdl.stopLocked()
	pc.q = queue[datagram]{}
	wakeLocked(&pc.rwait)
	return true
}

// LocalAddr returns the *net.UDPAddr the socket is bound to, with the host's IP.
func (pc *packetConn) LocalAddr() net.Addr { return pc.addr }

// SetDeadline sets both the read and write deadlines.
func (pc *packetConn) SetDeadline(t time.Time) error {
	if err := pc.SetReadDeadline(t); err != nil {
		return err
	}
	return pc.SetWriteDeadline(t)
}

// SetReadDeadline makes pending and future ReadFroms fail with os.ErrDeadlineExceeded
// once t has passed; the zero time means no deadline.
func (pc *packetConn) SetReadDeadline(t time.Time) error {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.closed {
		return pc.opErr("set", nil, net.ErrClosed)
	}
	pc.rdl.setLocked(&pc.mu, t, func() { wakeLocked(&pc.rwait) })
	return nil
}

// SetWriteDeadline makes WriteTo fail with os.ErrDeadlineExceeded once t has passed
// (WriteTo never blocks, so only later calls are affected); the zero time means none.
func (pc *packetConn) SetWriteDeadline(t time.Time) error {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.closed {
		return pc.opErr("set", nil, net.ErrClosed)
	}
	pc.wdl.setLocked(&pc.mu, t, func() {})
	return nil
}
