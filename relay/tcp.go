package relay

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"

	"github.com/jonboulle/clockwork"
	"github.com/pion/stun/v3"

	"github.com/peerline/peerline/internal/serve"
)

// tcpListener is the TURN-over-TCP listener as pion sees it. Pion's accept loop ends on
// the first error Accept returns, and TURN over TCP with it, so Accept waits out every
// error (descriptor exhaustion above all) and returns one only once the listener is
// closed. It admits connections through a serve.Gate, per source address and prefix, and
// tracks the connections it hands out, because pion's Close closes only the listener.
type tcpListener struct {
	net.Listener
	s    *Server
	gate *serve.Gate
	done sync.Once // counted out of Server.live

	mu     sync.Mutex // mu protects the following fields
	closed bool       // shut: Accept hands out no more connections
	conns  map[*tcpConn]struct{}
	bySrc  map[netip.AddrPort]*tcpConn // by client address
	flows  map[netip.AddrPort]*user    // client address -> owner of its allocation
}

func newTCPListener(s *Server, ln net.Listener) *tcpListener {
	return &tcpListener{
		Listener: ln, s: s,
		gate: serve.NewGate(serve.Config{
			Max: s.cfg.TCPMaxConns, PerAddr: s.cfg.TCPConnsPerAddr, PerPrefix: s.cfg.TCPConnsPerPrefix,
			AuthTimeout: -1, // the idle deadline of tcpConn plays its part
			Clock:       s.clk,
		}),
		conns: make(map[*tcpConn]struct{}),
		bySrc: make(map[netip.AddrPort]*tcpConn),
		flows: make(map[netip.AddrPort]*user),
	}
}

func (l *tcpListener) Accept() (net.Conn, error) {
	bo := serve.AcceptBackoff{Clock: l.s.clk}
	for {
		nc, err := l.Listener.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) || l.isShut() {
				l.done.Do(func() { l.s.live.add(-1) })
				return nil, err
			}
			// EMFILE, ENFILE, ECONNABORTED and the like; anything else on an open
			// listener is waited out the same way rather than ending TURN over TCP.
			l.s.m.Inc(MetricTCPAcceptErrors)
			l.s.log.Warn("relay: tcp accept failed, backing off", "err", err, "temporary", serve.Temporary(err))
			bo.Wait(l.s.ctx) // once the server closes, the next Accept fails at once
			continue
		}
		bo.Reset()
		ip := serve.AddrOf(nc.RemoteAddr())
		if ok, why := l.gate.Admit(ip); !ok {
			l.s.m.Inc("tcp_" + why)
			l.s.log.Info("relay: tcp connection shed", "remote", nc.RemoteAddr().String(), "reason", why)
			nc.Close()
			continue
		}
		ta, _ := nc.RemoteAddr().(*net.TCPAddr)
		c := &tcpConn{Conn: nc, l: l, ip: ip, done: make(chan struct{})}
		if ta != nil {
			c.src = unmap(ta.AddrPort())
		}
		l.mu.Lock()
		if l.closed {
			l.mu.Unlock()
			l.gate.Release(ip)
			nc.Close()
			l.done.Do(func() { l.s.live.add(-1) })
			return nil, net.ErrClosed
		}
		l.conns[c] = struct{}{}
		l.bySrc[c.src] = c
		l.mu.Unlock()
		l.s.live.add(1)
		l.s.m.Inc(MetricTCPConns)
		c.setAllocated(false) // arms the idle deadline
		return c, nil
	}
}

func (l *tcpListener) isShut() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.closed
}

// shut stops Accept from handing out connections; Close still closes the listener.
func (l *tcpListener) shut() {
	l.mu.Lock()
	l.closed = true
	l.mu.Unlock()
}

// closeConns closes every accepted connection.
func (l *tcpListener) closeConns() {
	l.mu.Lock()
	conns := make([]*tcpConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

func (l *tcpListener) owner(src netip.AddrPort) *user {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.flows[src]
}

// allocated records that the connection from src got an allocation (u != nil) or lost it.
func (l *tcpListener) allocated(src netip.AddrPort, u *user) {
	l.mu.Lock()
	if u != nil {
		l.flows[src] = u
	} else {
		delete(l.flows, src)
	}
	c := l.bySrc[src]
	l.mu.Unlock()
	if c != nil {
		if u != nil {
			l.gate.MarkGood(c.ip)
		}
		c.setAllocated(u != nil)
	}
}

// open is the number of TURN-over-TCP connections open now.
func (l *tcpListener) open() int { return l.gate.Open() }

// tcpConn is one TURN-over-TCP client. Its Read hands pion one TURN frame at a time, so
// that the relay sees each request (to answer bad credentials with 401 itself) and each
// unframeable stream (which it ends and counts); its reads are slowed to the user's
// bandwidth, as a stream cannot drop datagrams without losing its framing. A connection
// without an allocation is closed Config.TCPIdleTimeout after it was accepted or lost
// its allocation.
type tcpConn struct {
	net.Conn
	l    *tcpListener
	ip   netip.Addr
	src  netip.AddrPort
	done chan struct{} // closed by Close

	pend []byte // bytes read and not yet handed to pion; used by the one reader

	mu        sync.Mutex // mu protects the following fields
	reading   bool       // a Read is in progress
	closed    bool
	out       bool // counted out of Server.live
	allocated bool
	idle      clockwork.Timer
}

// errBadFrame ends a TURN-over-TCP connection whose bytes are neither STUN nor ChannelData.
var errBadFrame = errors.New("relay: tcp stream is not TURN (neither STUN nor ChannelData framing)")

func (c *tcpConn) Read(b []byte) (int, error) {
	c.mu.Lock()
	if c.closed {
		c.countOutLocked()
		c.mu.Unlock()
		return 0, net.ErrClosed
	}
	c.reading = true
	c.mu.Unlock()
	n, err := c.next(b)
	c.mu.Lock()
	c.reading = false
	if err != nil || c.closed {
		// Pion's read loop on this connection ends now.
		c.countOutLocked()
	}
	c.mu.Unlock()
	return n, err
}

// countOutLocked counts the connection's read loop out of Server.live, once.
func (c *tcpConn) countOutLocked() {
	if !c.out {
		c.out = true
		c.l.s.live.add(-1)
	}
}

// next returns the next frame the relay lets through to pion.
func (c *tcpConn) next(b []byte) (int, error) {
	for {
		size, err := frameLen(c.pend)
		switch {
		case errors.Is(err, errBadFrame):
			c.l.s.m.Inc(MetricTCPBadFrames)
			c.l.s.log.Info("relay: tcp stream is not TURN, closing", "remote", c.src.String())
			return 0, err
		case err == nil:
			f := c.pend[:size]
			resp, pass := c.l.s.screenSTUN(f, c.RemoteAddr())
			if resp != nil {
				c.Conn.Write(resp)
			}
			var n int
			if pass && size <= len(b) {
				n = copy(b, f)
			} // else pion could not take it whole either and would drop it
			c.pend = c.pend[:copy(c.pend, c.pend[size:])]
			if n > 0 {
				return n, nil
			}
			continue
		}
		n, err := c.Conn.Read(b)
		if err != nil {
			return 0, err
		}
		c.pend = append(c.pend, b[:n]...)
		if u := c.l.owner(c.src); u != nil {
			if wait := u.bucket.reserve(n, c.l.s.cfg.Now()); wait > 0 {
				t := c.l.s.clk.NewTimer(wait)
				select {
				case <-t.Chan():
				case <-c.done:
				case <-c.l.s.ctx.Done():
				}
				t.Stop()
			}
		}
	}
}

// setAllocated records whether the connection holds an allocation, and (re)arms the idle
// deadline when it does not.
func (c *tcpConn) setAllocated(yes bool) {
	d := c.l.s.cfg.TCPIdleTimeout
	c.mu.Lock()
	defer c.mu.Unlock()
	c.allocated = yes
	if c.idle != nil {
		c.idle.Stop()
		c.idle = nil
	}
	if !yes && !c.closed && d > 0 {
		c.idle = c.l.s.clk.AfterFunc(d, c.expire)
	}
}

func (c *tcpConn) expire() {
	c.mu.Lock()
	keep := c.allocated || c.closed
	c.mu.Unlock()
	if keep {
		return
	}
	c.l.s.m.Inc(MetricTCPIdleClosed)
	c.l.s.log.Debug("relay: tcp connection without allocation closed", "remote", c.src.String(), "after", c.l.s.cfg.TCPIdleTimeout)
	c.Close()
}

func (c *tcpConn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return net.ErrClosed
	}
	c.closed = true
	if !c.reading {
		c.countOutLocked()
	}
	if c.idle != nil {
		c.idle.Stop()
		c.idle = nil
	}
	c.mu.Unlock()
	close(c.done)
	err := c.Conn.Close()
	l := c.l
	l.mu.Lock()
	delete(l.conns, c)
	if l.bySrc[c.src] == c {
		delete(l.bySrc, c.src)
	}
	l.mu.Unlock()
	l.gate.Release(c.ip)
	return err
}

// errIncomplete means more bytes are needed to tell a frame's size.
var errIncomplete = errors.New("incomplete frame")

// frameLen returns the size of the TURN frame at the start of b, by the rules of pion's
// STUNConn (which reframes what Read returns, so the two must agree): a STUN message is
// its 20-byte header plus its length; ChannelData (channel numbers 0x4000-0x7FFF) is its
// 4-byte header plus its length padded to 4 bytes. Sizes that pion's 16-bit arithmetic
// would wrap are refused as bad frames.
func frameLen(b []byte) (int, error) {
	if len(b) < 9 {
		return 0, errIncomplete
	}
	var size int
	switch ch := binary.BigEndian.Uint16(b); {
	case stun.IsMessage(b):
		size = 20 + int(binary.BigEndian.Uint16(b[2:4]))
		if size > 0xFFFF {
			return 0, fmt.Errorf("%w: STUN length %d", errBadFrame, size-20)
		}
	case ch >= 0x4000 && ch <= 0x7FFF:
		size = 4 + (int(binary.BigEndian.Uint16(b[2:4]))+3)&^3
		if size > 0xFFFF {
			return 0, fmt.Errorf("%w: ChannelData length %d", errBadFrame, size-4)
		}
	case len(b) < 20:
		return 0, errIncomplete
	default:
		return 0, errBadFrame
	}
	if len(b) < size {
		return 0, errIncomplete
	}
	return size, nil
}
