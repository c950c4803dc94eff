package client

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/libp2p/go-reuseport"
	"github.com/pion/stun/v3"

	"github.com/peerline/peerline/internal/callsig"
)

// TCP simultaneous open. When either side's UDP is blocked but both may open TCP
// connections, the two clients connect to each other's TCP mapping at the same moment
// (the punch timing of the ICE checks): each SYN leaves its own NAT before the other's
// arrives there, the NATs take each arriving SYN for the answer to their own, and the
// kernels join the two into one connection. Each side learns its mapping by asking the
// STUN service of its supernode's TURN relay over TCP from the port it will punch from
// (SO_REUSEPORT lets that port be bound again); NATs that keep the port of a TCP flow
// (most cone NATs) map the punch the same way. Against a symmetric NAT it fails, and the
// call stays on the relay.

// tcpMapping opens a TCP connection from a fresh port to the STUN service at addr and
// returns the port and the address the server saw it come from.
func tcpMapping(ctx context.Context, addr string) (port int, mapped netip.AddrPort, err error) {
	d := net.Dialer{Control: reuseport.Control, Timeout: 3 * time.Second}
	c, err := d.DialContext(ctx, "tcp4", addr)
	if err != nil {
		return 0, mapped, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	req, err := stun.Build(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if err != nil {
		return 0, mapped, err
	}
	if _, err := c.Write(req.Raw); err != nil {
		return 0, mapped, err
	}
	// STUN over TCP is not framed beyond the message's own length field.
	head := make([]byte, 20)
	if _, err := io.ReadFull(c, head); err != nil {
		return 0, mapped, err
	}
	n := int(binary.BigEndian.Uint16(head[2:4]))
	if n > 1024 {
		return 0, mapped, fmt.Errorf("stun over tcp: %d-byte answer", n)
	}
	raw := make([]byte, 20+n)
	copy(raw, head)
	if _, err := io.ReadFull(c, raw[20:]); err != nil {
		return 0, mapped, err
	}
	res := &stun.Message{Raw: raw}
	if err := res.Decode(); err != nil {
		return 0, mapped, err
	}
	if res.TransactionID != req.TransactionID {
		return 0, mapped, errors.New("stun over tcp: answer to another request")
	}
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(res); err != nil {
		return 0, mapped, err
	}
	ip, ok := netip.AddrFromSlice(xa.IP)
	if !ok {
		return 0, mapped, errors.New("stun over tcp: bad mapped address")
	}
	return c.LocalAddr().(*net.TCPAddr).Port, netip.AddrPortFrom(ip.Unmap(), uint16(xa.Port)), nil
}

// gatherTCP learns this side's TCP mapping through the supernode's relay and trickles
// it to the peer.
func (l *leg) gatherTCP(ctx context.Context, relay string) {
	port, mapped, err := tcpMapping(ctx, relay)
	if err != nil {
		l.log.Debug("no tcp mapping", "err", err)
		return
	}
	l.mu.Lock()
	l.tcpPort, l.tcpMapped = port, mapped.String()
	send := l.onLocal
	l.mu.Unlock()
	l.log.Debug("tcp mapping", "port", port, "mapped", mapped)
	if send != nil {
		send(callsig.Msg{T: callsig.TCandidate, Call: l.callID, TCP: mapped.String()})
	}
	l.maybeTCP()
}

// maybeTCP starts the TCP punch once the punch timing said go and both mappings are
// known, when either side's UDP is blocked (otherwise the UDP paths serve better).
func (l *leg) maybeTCP() {
	l.mu.Lock()
	ready := l.iceStarted && l.tcpPort != 0 && l.remote.tcp != "" && !l.tcpStarted && !l.closed &&
		(l.udpBlocked || normClassic(l.remote.nat) == "udp-blocked")
	if ready {
		l.tcpStarted = true
	}
	port, remote, rnat := l.tcpPort, l.remote.tcp, l.remote.nat
	l.mu.Unlock()
	if !ready {
		return
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.runTCP(port, remote, rnat)
	}()
}

// tcpAttempts and tcpRetry bound the punch: a refused or timed-out attempt (the other
// side's SYN was not out yet) is tried again from the same port.
const (
	tcpAttempts = 8
	tcpRetry    = 400 * time.Millisecond
)

func (l *leg) runTCP(port int, remote string, rnat callsig.NAT) {
	d := net.Dialer{Control: reuseport.Control, LocalAddr: &net.TCPAddr{Port: port}, Timeout: time.Second}
	var conn net.Conn
	var err error
	// The attempts are paced by the client's clock, an attempt every tcpRetry; the
	// dial's own timeout is a socket's, in real time.
	for i := 0; i < tcpAttempts && l.ctx.Err() == nil; i++ {
		start := l.p.clk.Now()
		if conn, err = d.DialContext(l.ctx, "tcp4", remote); err == nil {
			break
		}
		l.log.Debug("tcp punch attempt failed", "attempt", i, "err", err)
		l.p.sleep(l.ctx, tcpRetry-min(tcpRetry, l.p.clk.Since(start)))
	}
	if conn == nil {
		l.p.m.Inc("call_tcp_punch_failed")
		l.log.Info("no tcp path", "remote", remote, "err", err)
		return
	}
	// One side's UDP is blocked: the TCP path is direct when the other side needs no NAT
	// crossed at all, punched otherwise (as PredictPath says).
	kind := PathPunched
	if normClassic(l.nat) == "open" || normClassic(rnat) == "open" {
		kind = PathDirect
	}
	name := fmt.Sprintf("tcp %s -> %s", conn.LocalAddr(), conn.RemoteAddr())
	l.log.Info("tcp path connected", "path", kind, "conn", name)
	l.p.m.Inc("call_tcp_punched")
	l.addPath(kind, name, newTCPPath(conn), rankTCP)
}

// tcpPath carries media packets over a TCP connection, each behind a 2-byte length
// (RFC 4571 framing).
type tcpPath struct {
	conn net.Conn
	r    *bufio.Reader
	wmu  sync.Mutex
	wbuf []byte
}

func newTCPPath(c net.Conn) *tcpPath {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.SetNoDelay(true)
	}
	return &tcpPath{conn: c, r: bufio.NewReaderSize(c, 4096)}
}

func (p *tcpPath) Read(b []byte) (int, error) {
	var h [2]byte
	if _, err := io.ReadFull(p.r, h[:]); err != nil {
		return 0, err
	}
	n := int(binary.BigEndian.Uint16(h[:]))
	if n > len(b) {
		// Longer than any media packet: the stream is not ours; drop it.
		p.conn.Close()
		return 0, fmt.Errorf("tcp path: %d-byte frame", n)
	}
	return io.ReadFull(p.r, b[:n])
}

func (p *tcpPath) Write(b []byte) (int, error) {
	if len(b) > 0xffff {
		return 0, errors.New("tcp path: packet too long")
	}
	p.wmu.Lock()
	defer p.wmu.Unlock()
	p.wbuf = binary.BigEndian.AppendUint16(p.wbuf[:0], uint16(len(b)))
	p.wbuf = append(p.wbuf, b...)
	p.conn.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := p.conn.Write(p.wbuf); err != nil {
		// A frame may be half written: the stream is useless from here on.
		p.conn.Close()
		return 0, fmt.Errorf("tcp path: %w", net.ErrClosed)
	}
	return len(b), nil
}

func (p *tcpPath) Close() error { return p.conn.Close() }
