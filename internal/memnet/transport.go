package memnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"syscall"
	"time"

	transportv3 "github.com/pion/transport/v3"
	transportv4 "github.com/pion/transport/v4"
)

// The pion libraries take their network as a transport.Net: pion/ice/v3 a
// pion/transport/v3 one, pion/turn/v4 a pion/transport/v4 one. The two interfaces have
// the same methods over different named types, so one implementation (pionNet) serves
// both through two thin wrappers. pion's own vnet could serve only one of them at a
// time and carries no TCP, while the overlay runs on memnet's streams: with these, one
// network carries the overlay, ICE, TURN clients and relays alike.

// TransportV3 returns h as a pion/transport/v3 Net, for pion/ice/v3's AgentConfig.Net.
func (h *Host) TransportV3() transportv3.Net { return netV3{pionNet{h}} }

// TransportV4 returns h as a pion/transport/v4 Net, for pion/turn/v4 (a relay's
// address generator, a client's ClientConfig.Net).
func (h *Host) TransportV4() transportv4.Net { return netV4{pionNet{h}} }

// ErrNoNames is returned when a pion library asks memnet to resolve a name: addresses
// in a memnet network are IP literals.
var ErrNoNames = errors.New("memnet: names are not resolved; use an IP literal")

// pionNet is a host as the pion libraries see a network: one interface with the host's
// address, UDP sockets (connected ones for DialUDP) and TCP streams.
type pionNet struct{ h *Host }

func (p pionNet) listenUDP(network string, laddr *net.UDPAddr) (*udpConn, error) {
	addr := ":0"
	if laddr != nil {
		addr = laddr.String()
	}
	pc, err := p.h.ListenPacket(network, addr)
	if err != nil {
		return nil, err
	}
	return &udpConn{packetConn: pc.(*packetConn)}, nil
}

func (p pionNet) dialUDP(network string, laddr, raddr *net.UDPAddr) (*udpConn, error) {
	if raddr == nil {
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.EDESTADDRREQ}
	}
	c, err := p.listenUDP(network, laddr)
	if err != nil {
		return nil, err
	}
	c.remote = raddr
	return c, nil
}

func (p pionNet) dialTCP(network string, laddr, raddr *net.TCPAddr) (*tcpConn, error) {
	if laddr != nil && laddr.Port != 0 {
		return nil, &net.OpError{Op: "dial", Net: network, Addr: raddr, Err: fmt.Errorf("memnet dials from an ephemeral port only: %w", syscall.EINVAL)}
	}
	c, err := p.h.DialContext(context.Background(), network, raddr.String())
	if err != nil {
		return nil, err
	}
	return &tcpConn{c.(*conn)}, nil
}

func (p pionNet) listenTCP(network string, laddr *net.TCPAddr) (*tcpListener, error) {
	addr := ":0"
	if laddr != nil {
		addr = laddr.String()
	}
	ln, err := p.h.Listen(network, addr)
	if err != nil {
		return nil, err
	}
	return &tcpListener{ln.(*listener)}, nil
}

func (p pionNet) dial(network, address string) (net.Conn, error) {
	switch network {
	case "udp", "udp4", "udp6":
		ra, err := p.resolveUDP(network, address)
		if err != nil {
			return nil, err
		}
		return p.dialUDP(network, nil, ra)
	}
	return p.h.DialContext(context.Background(), network, address)
}

func (p pionNet) resolveUDP(network, address string) (*net.UDPAddr, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "resolve", Net: network, Err: fmt.Errorf("%w: %q", ErrNoNames, address)}
	}
	return net.UDPAddrFromAddrPort(ap), nil
}

func (p pionNet) resolveTCP(network, address string) (*net.TCPAddr, error) {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return nil, &net.OpError{Op: "resolve", Net: network, Err: fmt.Errorf("%w: %q", ErrNoNames, address)}
	}
	return net.TCPAddrFromAddrPort(ap), nil
}

func (p pionNet) resolveIP(network, address string) (*net.IPAddr, error) {
	a, err := netip.ParseAddr(address)
	if err != nil {
		return nil, &net.OpError{Op: "resolve", Net: network, Err: fmt.Errorf("%w: %q", ErrNoNames, address)}
	}
	return &net.IPAddr{IP: a.AsSlice()}, nil
}

// ifc is the host's one interface, "memnet0", up, with the host's address.
func (p pionNet) ifc() (net.Interface, *net.IPNet) {
	bits := p.h.ip.BitLen()
	return net.Interface{Index: 1, MTU: 1500, Name: "memnet0", Flags: net.FlagUp | net.FlagRunning},
		&net.IPNet{IP: p.h.ip.AsSlice(), Mask: net.CIDRMask(bits, bits)}
}

var errNoInterface = errors.New("memnet: no such interface (a host has one, memnet0, index 1)")

type netV3 struct{ pionNet }

func (n netV3) ListenPacket(network, address string) (net.PacketConn, error) {
	return n.h.ListenPacket(network, address)
}
func (n netV3) ListenUDP(network string, laddr *net.UDPAddr) (transportv3.UDPConn, error) {
	return nilIfErr[transportv3.UDPConn](n.listenUDP(network, laddr))
}
func (n netV3) ListenTCP(network string, laddr *net.TCPAddr) (transportv3.TCPListener, error) {
	ln, err := n.listenTCP(network, laddr)
	if err != nil {
		return nil, err
	}
	return tcpListenerV3{ln}, nil
}
func (n netV3) Dial(network, address string) (net.Conn, error) { return n.dial(network, address) }
func (n netV3) DialUDP(network string, laddr, raddr *net.UDPAddr) (transportv3.UDPConn, error) {
	return nilIfErr[transportv3.UDPConn](n.dialUDP(network, laddr, raddr))
}
func (n netV3) DialTCP(network string, laddr, raddr *net.TCPAddr) (transportv3.TCPConn, error) {
	return nilIfErr[transportv3.TCPConn](n.dialTCP(network, laddr, raddr))
}
func (n netV3) ResolveIPAddr(network, address string) (*net.IPAddr, error) {
	return n.resolveIP(network, address)
}
func (n netV3) ResolveUDPAddr(network, address string) (*net.UDPAddr, error) {
	return n.resolveUDP(network, address)
}
func (n netV3) ResolveTCPAddr(network, address string) (*net.TCPAddr, error) {
	return n.resolveTCP(network, address)
}
func (n netV3) Interfaces() ([]*transportv3.Interface, error) {
	ni, addr := n.ifc()
	ifc := transportv3.NewInterface(ni)
	ifc.AddAddress(addr)
	return []*transportv3.Interface{ifc}, nil
}
func (n netV3) InterfaceByIndex(index int) (*transportv3.Interface, error) {
	if index != 1 {
		return nil, errNoInterface
	}
	l, _ := n.Interfaces()
	return l[0], nil
}
func (n netV3) InterfaceByName(name string) (*transportv3.Interface, error) {
	if name != "memnet0" {
		return nil, errNoInterface
	}
	l, _ := n.Interfaces()
	return l[0], nil
}
func (n netV3) CreateDialer(d *net.Dialer) transportv3.Dialer { return dialer{n.pionNet, d} }

type netV4 struct{ pionNet }

func (n netV4) ListenPacket(network, address string) (net.PacketConn, error) {
	return n.h.ListenPacket(network, address)
}
func (n netV4) ListenUDP(network string, laddr *net.UDPAddr) (transportv4.UDPConn, error) {
	return nilIfErr[transportv4.UDPConn](n.listenUDP(network, laddr))
}
func (n netV4) ListenTCP(network string, laddr *net.TCPAddr) (transportv4.TCPListener, error) {
	ln, err := n.listenTCP(network, laddr)
	if err != nil {
		return nil, err
	}
	return tcpListenerV4{ln}, nil
}
func (n netV4) Dial(network, address string) (net.Conn, error) { return n.dial(network, address) }
func (n netV4) DialUDP(network string, laddr, raddr *net.UDPAddr) (transportv4.UDPConn, error) {
	return nilIfErr[transportv4.UDPConn](n.dialUDP(network, laddr, raddr))
}
func (n netV4) DialTCP(network string, laddr, raddr *net.TCPAddr) (transportv4.TCPConn, error) {
	return nilIfErr[transportv4.TCPConn](n.dialTCP(network, laddr, raddr))
}
func (n netV4) ResolveIPAddr(network, address string) (*net.IPAddr, error) {
	return n.resolveIP(network, address)
}
func (n netV4) ResolveUDPAddr(network, address string) (*net.UDPAddr, error) {
	return n.resolveUDP(network, address)
}
func (n netV4) ResolveTCPAddr(network, address string) (*net.TCPAddr, error) {
	return n.resolveTCP(network, address)
}
func (n netV4) Interfaces() ([]*transportv4.Interface, error) {
	ni, addr := n.ifc()
	ifc := transportv4.NewInterface(ni)
	ifc.AddAddress(addr)
	return []*transportv4.Interface{ifc}, nil
}
func (n netV4) InterfaceByIndex(index int) (*transportv4.Interface, error) {
	if index != 1 {
		return nil, errNoInterface
	}
	l, _ := n.Interfaces()
	return l[0], nil
}
func (n netV4) InterfaceByName(name string) (*transportv4.Interface, error) {
	if name != "memnet0" {
		return nil, errNoInterface
	}
	l, _ := n.Interfaces()
	return l[0], nil
}
func (n netV4) CreateDialer(d *net.Dialer) transportv4.Dialer { return dialer{n.pionNet, d} }
func (n netV4) CreateListenConfig(*net.ListenConfig) transportv4.ListenConfig {
	return listenConfig{n.pionNet}
}

// nilIfErr converts a concrete result to interface I, giving an untyped nil on error.
func nilIfErr[I any, T any](v T, err error) (I, error) {
	var zero I
	if err != nil {
		return zero, err
	}
	return any(v).(I), nil
}

type dialer struct {
	p pionNet
	d *net.Dialer
}

func (d dialer) Dial(network, address string) (net.Conn, error) {
	ctx := context.Background()
	if d.d != nil && d.d.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.d.Timeout)
		defer cancel()
	}
	switch network {
	case "udp", "udp4", "udp6":
		return d.p.dial(network, address)
	}
	return d.p.h.DialContext(ctx, network, address)
}

type listenConfig struct{ p pionNet }

func (l listenConfig) Listen(_ context.Context, network, address string) (net.Listener, error) {
	return l.p.h.Listen(network, address)
}
func (l listenConfig) ListenPacket(_ context.Context, network, address string) (net.PacketConn, error) {
	return l.p.h.ListenPacket(network, address)
}

// udpConn is a memnet packet conn with the methods of the pion libraries' UDPConn.
// DialUDP connects it: Write sends to the remote address and reads take only its
// datagrams, as a connected UDP socket does.
type udpConn struct {
	*packetConn
	remote *net.UDPAddr
}

func (c *udpConn) RemoteAddr() net.Addr {
	if c.remote == nil {
		return nil
	}
	return c.remote
}

// SetReadBuffer and SetWriteBuffer accept any size: memnet queues a fixed 256
// datagrams per socket.
func (c *udpConn) SetReadBuffer(int) error  { return nil }
func (c *udpConn) SetWriteBuffer(int) error { return nil }

func (c *udpConn) ReadFromUDP(b []byte) (int, *net.UDPAddr, error) {
	for {
		n, addr, err := c.packetConn.ReadFrom(b)
		if err != nil {
			return n, nil, err
		}
		ua := addr.(*net.UDPAddr)
		if c.remote == nil || ua.AddrPort() == c.remote.AddrPort() {
			return n, ua, nil
		}
	}
}

func (c *udpConn) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := c.ReadFromUDP(b)
	if addr == nil {
		return n, nil, err
	}
	return n, addr, err
}

func (c *udpConn) Read(b []byte) (int, error) {
	n, _, err := c.ReadFromUDP(b)
	return n, err
}

func (c *udpConn) ReadMsgUDP(b, _ []byte) (n, oobn, flags int, addr *net.UDPAddr, err error) {
	n, addr, err = c.ReadFromUDP(b)
	return n, 0, 0, addr, err
}

func (c *udpConn) Write(b []byte) (int, error) {
	if c.remote == nil {
		return 0, c.opErr("write", nil, syscall.EDESTADDRREQ)
	}
	return c.packetConn.WriteTo(b, c.remote)
}

func (c *udpConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.remote != nil {
		return 0, c.opErr("write", addr, syscall.EISCONN)
	}
	return c.packetConn.WriteTo(b, addr)
}

func (c *udpConn) WriteToUDP(b []byte, addr *net.UDPAddr) (int, error) { return c.WriteTo(b, addr) }

func (c *udpConn) WriteMsgUDP(b, _ []byte, addr *net.UDPAddr) (n, oobn int, err error) {
	if addr == nil {
		n, err = c.Write(b)
	} else {
		n, err = c.WriteTo(b, addr)
	}
	return n, 0, err
}

// tcpConn is a memnet stream conn with the methods of the pion libraries' TCPConn. The
// socket options have nothing to act on in memory and are accepted.
type tcpConn struct{ *conn }

func (c *tcpConn) CloseRead() error                       { return c.opErr("close", syscall.ENOTSUP) }
func (c *tcpConn) ReadFrom(r io.Reader) (int64, error)    { return io.Copy(writerOnly{c.conn}, r) }
func (c *tcpConn) SetLinger(int) error                    { return nil }
func (c *tcpConn) SetKeepAlive(bool) error                { return nil }
func (c *tcpConn) SetKeepAlivePeriod(time.Duration) error { return nil }
func (c *tcpConn) SetNoDelay(bool) error                  { return nil }
func (c *tcpConn) SetWriteBuffer(int) error               { return nil }
func (c *tcpConn) SetReadBuffer(int) error                { return nil }

// writerOnly hides ReadFrom, so that io.Copy does not call it back.
type writerOnly struct{ io.Writer }

type tcpListener struct{ *listener }

func (l *tcpListener) accept() (*tcpConn, error) {
	c, err := l.listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tcpConn{c.(*conn)}, nil
}

// SetDeadline is refused: memnet listeners have no accept deadline.
func (l *tcpListener) SetDeadline(t time.Time) error {
	if t.IsZero() {
		return nil
	}
	return &net.OpError{Op: "set", Net: "tcp", Addr: l.addr, Err: syscall.ENOTSUP}
}

type tcpListenerV3 struct{ *tcpListener }

func (l tcpListenerV3) AcceptTCP() (transportv3.TCPConn, error) {
	return nilIfErr[transportv3.TCPConn](l.accept())
}

type tcpListenerV4 struct{ *tcpListener }

func (l tcpListenerV4) AcceptTCP() (transportv4.TCPConn, error) {
	return nilIfErr[transportv4.TCPConn](l.accept())
}
