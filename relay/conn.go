package relay

import (
	"encoding/binary"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peerline/peerline/internal/serve"
)

// counters are the hot-path counts of one listener (or of all TCP flows), kept apart so
// that read loops on different cores do not share cache lines; Server.flush sums them
// into the metrics set.
type counters struct {
	relayedPackets, relayedBytes atomic.Uint64 // payload to and from peers
	droppedPackets, droppedBytes atomic.Uint64 // over a user's bandwidth quota
	writeErrs                    atomic.Uint64 // fast-path datagrams that could not be sent
	writeWaits                   atomic.Uint64 // fast-path flushes that waited for a full send buffer
	_                            [16]byte      // pad to a cache line
}

// udpListener is one of the SO_REUSEPORT sockets clients send to, as pion sees it. Its
// ReadFrom polices users' bandwidth and forwards channel data on the fast path; what
// remains goes to pion.
type udpListener struct {
	s      *Server
	conn   net.PacketConn
	sock   *sendSock // conn, as the fast path sends to clients from it
	c      *counters
	in     *batchReader // conn's datagrams; used by the one read loop
	out    *batchWriter // take's sends to peers, flushed by in; used by the one read loop
	takeFn takeFunc     // take, made once
	done   sync.Once    // the read loop has seen its terminal error

	mu    sync.RWMutex // mu protects the following fields
	flows map[netip.AddrPort]*flow
}

var _ net.PacketConn = (*udpListener)(nil)

// flow is one client's allocation on a UDP listener.
type flow struct {
	addr  *net.UDPAddr // the client's address as handed to pion; shared, never modified
	user  *user
	relay *relayConn
	chans map[uint16]netip.AddrPort // channel number -> peer; guarded by the listener's mu
}

// isChannelData reports whether b starts like a ChannelData message (channel numbers
// 0x4000 to 0x7FFF).
func isChannelData(b []byte) bool { return len(b) >= 4 && b[0]&0xC0 == 0x40 }

// isSendIndication reports whether b is a STUN Send indication (type 0x0016).
func isSendIndication(b []byte) bool { return len(b) >= 20 && b[0] == 0 && b[1] == 0x16 }

// listenerBatch is how many datagrams a listener reads with one system call, and
// relayBatch how many a relayed socket does: one peer sends to it, at most a few
// datagrams arrive between two reads, and two slots are enough to tell that a read
// emptied the socket (see batchReader).
const (
	listenerBatch = 32
	relayBatch    = 2
)

// inboundMTU is the largest datagram a listener reads whole, as pion's read loop: pion
// drops one that fills its buffer.
const inboundMTU = 1600

func newUDPListener(s *Server, conn net.PacketConn) *udpListener {
	l := &udpListener{s: s, conn: conn, sock: newSendSock(conn), c: new(counters), flows: make(map[netip.AddrPort]*flow)}
	l.in = newBatchReader(conn, listenerBatch, 0, inboundMTU)
	l.out = newBatchWriter(l.c, listenerBatch)
	l.in.out = l.out
	l.takeFn = l.take
	return l
}

func (l *udpListener) ReadFrom(b []byte) (int, net.Addr, error) {
	bo := serve.AcceptBackoff{Clock: l.s.clk}
	for {
		slot, n, src, _, err := l.in.read(l.takeFn)
		if err != nil {
			if !l.s.readFailed(err, &bo, "udp listener") {
				continue
			}
			l.done.Do(func() { l.s.live.add(-1) })
			return 0, nil, err
		}
		bo.Reset()
		pkt := slot[:n]
		l.mu.RLock()
		f := l.flows[src]
		l.mu.RUnlock()
		if f == nil || !isChannelData(pkt) && !isSendIndication(pkt) {
			resp, pass := l.s.screenUDP(pkt, f != nil, net.UDPAddrFromAddrPort(src))
			if resp != nil {
				if err := l.sock.writeTo(resp, src); err != nil {
					l.c.writeErrs.Add(1)
				}
			}
			switch {
			case !pass:
				continue
			case f == nil:
				return copy(b, pkt), net.UDPAddrFromAddrPort(src), nil
			}
		}
		// Channel data and Send indications that take left to pion have been policed.
		return copy(b, pkt), f.addr, nil
	}
}

// take is the listener's fast path: it drops a flow's channel data and Send indications
// over its user's bandwidth and forwards channel data on a bound channel to the peer
// (queued on l.out, sent at the end of the batch), and leaves everything else to ReadFrom.
func (l *udpListener) take(pkt []byte, n int, src netip.AddrPort) bool {
	pkt = pkt[:n]
	data, send := isChannelData(pkt), isSendIndication(pkt)
	if !data && !send {
		return false
	}
	l.mu.RLock()
	f := l.flows[src]
	var (
		peer netip.AddrPort
		rc   *relayConn
	)
	if f != nil && data && l.s.fast {
		if p, ok := f.chans[binary.BigEndian.Uint16(pkt)]; ok {
			peer, rc = p, f.relay
		}
	}
	l.mu.RUnlock()
	if f == nil {
		return false
	}
	if f.user.bucket.rate != 0 && !f.user.bucket.allow(n, l.s.cfg.Now()) {
		l.c.droppedPackets.Add(1)
		l.c.droppedBytes.Add(uint64(n))
		return true
	}
	if rc == nil {
		return false
	}
	size := int(binary.BigEndian.Uint16(pkt[2:]))
	if 4+size > n {
		return false
	}
	l.out.send(rc.sock, pkt[4:4+size], peer, size)
	return true
}

func (l *udpListener) WriteTo(b []byte, addr net.Addr) (int, error) { return l.conn.WriteTo(b, addr) }
func (l *udpListener) Close() error                                 { return l.conn.Close() }
func (l *udpListener) LocalAddr() net.Addr                          { return l.conn.LocalAddr() }
func (l *udpListener) SetDeadline(t time.Time) error                { return l.conn.SetDeadline(t) }
func (l *udpListener) SetReadDeadline(t time.Time) error            { return l.conn.SetReadDeadline(t) }
func (l *udpListener) SetWriteDeadline(t time.Time) error           { return l.conn.SetWriteDeadline(t) }

// relayConn is an allocation's relayed socket, as pion sees it. Its ReadFrom polices the
// owner's bandwidth and forwards datagrams from channel-bound peers on the fast path.
type relayConn struct {
	s       *Server
	conn    net.PacketConn
	sock    *sendSock // conn, as the fast path sends to peers from it; nil for TURN over TCP
	port    uint16
	lis     *udpListener // the listener whose client owns it; nil for TURN over TCP
	c       *counters
	in      *batchReader // conn's datagrams, with room for a ChannelData header; used by the one reader
	out     *batchWriter // take's sends to the client, flushed by in; used by the one reader
	takeFn  takeFunc     // take, made once
	started bool         // the reader has set reading; used by the one reader

	closeOnce sync.Once
	liveOnce  sync.Once // counted out of Server.live

	mu      sync.RWMutex // mu protects the following fields
	user    *user
	client  netip.AddrPort
	peers   map[netip.AddrPort]uint16 // peer -> channel number
	reading bool                      // a read loop has started
	closed  bool
}

var _ net.PacketConn = (*relayConn)(nil)

// maxRelayed is the largest datagram relayed from a peer, as in pion.
const maxRelayed = 1600

func newRelayConn(s *Server, conn net.PacketConn, lis *udpListener, c *counters) *relayConn {
	r := &relayConn{
		s: s, conn: conn, lis: lis, c: c,
		port:  uint16(conn.LocalAddr().(*net.UDPAddr).Port),
		in:    newBatchReader(conn, relayBatch, 4, maxRelayed),
		peers: make(map[netip.AddrPort]uint16),
	}
	if lis != nil { // TURN over TCP has no fast path
		r.sock = newSendSock(conn)
		r.out = newBatchWriter(c, relayBatch)
		r.in.out = r.out
	}
	r.takeFn = r.take
	return r
}

func (r *relayConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if !r.started {
		r.started = true // only this goroutine reads it
		r.mu.Lock()
		r.reading = true
		r.mu.Unlock()
	}
	bo := serve.AcceptBackoff{Clock: r.s.clk}
	for {
		slot, n, src, _, err := r.in.read(r.takeFn)
		if err != nil {
			if !r.isClosed() && !r.s.readFailed(err, &bo, "relayed") {
				continue
			}
			r.liveOnce.Do(func() { r.s.live.add(-1) })
			return 0, nil, err
		}
		bo.Reset()
		if n > len(b) {
			continue
		}
		r.c.relayedPackets.Add(1)
		r.c.relayedBytes.Add(uint64(n))
		return copy(b, slot[4:4+n]), net.UDPAddrFromAddrPort(src), nil
	}
}

// take is the relayed socket's fast path: it drops datagrams over the owner's bandwidth
// and sends those from a channel-bound peer to the client as channel data, framed in the
// slot's head room (queued on r.out, sent from the listener's socket at the end of the
// batch); it leaves the rest to ReadFrom, for pion.
func (r *relayConn) take(slot []byte, n int, src netip.AddrPort) bool {
	r.mu.RLock()
	u, ch, client := r.user, r.peers[src], r.client
	r.mu.RUnlock()
	if u != nil && u.bucket.rate != 0 && !u.bucket.allow(n, r.s.cfg.Now()) {
		r.c.droppedPackets.Add(1)
		r.c.droppedBytes.Add(uint64(n))
		return true
	}
	if ch == 0 || r.lis == nil || !r.s.fast {
		return false
	}
	pkt := slot[:4+(n+3)&^3]
	binary.BigEndian.PutUint16(pkt, ch)
	binary.BigEndian.PutUint16(pkt[2:], uint16(n))
	clear(pkt[4+n:])
	r.out.send(r.lis.sock, pkt, client, n)
	return true
}

// WriteTo is pion's path to peers: Send indications, and channel data the fast path did
// not take.
func (r *relayConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	n, err := r.conn.WriteTo(b, addr)
	if err == nil {
		r.c.relayedPackets.Add(1)
		r.c.relayedBytes.Add(uint64(n))
	}
	return n, err
}

func (r *relayConn) Close() error {
	err := net.ErrClosed
	r.closeOnce.Do(func() {
		err = r.conn.Close()
		r.s.forgetRelay(r)
		r.mu.Lock()
		r.closed = true
		reading := r.reading
		clear(r.peers)
		r.mu.Unlock()
		if !reading {
			r.liveOnce.Do(func() { r.s.live.add(-1) })
		}
	})
	return err
}

// own records the allocation's owner, once pion has created it.
func (r *relayConn) own(u *user, client netip.AddrPort) {
	r.mu.Lock()
	r.user, r.client = u, client
	r.mu.Unlock()
}

func (r *relayConn) isClosed() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.closed
}

func (r *relayConn) LocalAddr() net.Addr                { return r.conn.LocalAddr() }
func (r *relayConn) SetDeadline(t time.Time) error      { return r.conn.SetDeadline(t) }
func (r *relayConn) SetReadDeadline(t time.Time) error  { return r.conn.SetReadDeadline(t) }
func (r *relayConn) SetWriteDeadline(t time.Time) error { return r.conn.SetWriteDeadline(t) }
