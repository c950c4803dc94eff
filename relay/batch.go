package relay

import (
	"net"
	"net/netip"
	"sync"
)

// The fast path's sockets are read in batches. A batchReader reads up to its number of
// slots of datagrams with one system call (recvmmsg on Linux) into slots it allocated once,
// and hands them out one at a time; a socket that is not a *net.UDPConn (an in-memory
// network in tests), or a system without recvmmsg, is read one datagram per call through
// ReadFrom instead, with the same results.
//
// The reader also saves the read that ends each burst: Go's read loops read until the
// socket says EAGAIN before they sleep, one wasted system call per wake-up, and at the
// relay's loads most wake-ups bring one datagram. A batch that comes back with fewer
// datagrams than it had room for has emptied the socket's queue, so the reader hands its
// datagrams to the caller's take function inside the runtime's read callback and then
// goes straight to waiting for the socket to become readable, with no read to be told
// EAGAIN; a datagram that arrived meanwhile has marked the socket readable already, and
// the wait returns at once.

// batchReader reads one socket's datagrams in batches. Its methods are for one reader at a
// time (the socket's read loop).
type batchReader struct {
	pc   net.PacketConn
	sys  sysBatch     // recvmmsg state; its ok is false where it cannot be used
	out  *batchWriter // where take queues its sends, flushed after each batch; may be nil
	head int          // bytes of room before each datagram in its slot
	size int          // bytes of room for the datagram; a longer one is cut to this

	slots [][]byte // head + size bytes each (+3 to pad a ChannelData message to 4)
	lens  []int    // datagram length in each read slot
	srcs  []netip.AddrPort
	addrs []net.Addr // the sources as ReadFrom gave them, when sys is not ok
	next  int        // slots[next:n] are read and not yet handed out
	n     int
}

// newBatchReader returns a reader of pc with batch slots of head+size bytes, using
// recvmmsg if pc is a *net.UDPConn on a system that has it.
func newBatchReader(pc net.PacketConn, batch, head, size int) *batchReader {
	r := &batchReader{pc: pc, head: head, size: size}
	if uc, ok := pc.(*net.UDPConn); ok {
		r.sys.init(uc, batch)
	}
	if !r.sys.ok {
		batch = 1
	}
	stride := head + size + 3
	mem := make([]byte, batch*stride)
	r.slots = make([][]byte, batch)
	for i := range r.slots {
		r.slots[i] = mem[i*stride : (i+1)*stride : (i+1)*stride]
	}
	r.lens = make([]int, batch)
	r.srcs = make([]netip.AddrPort, batch)
	if r.sys.ok {
		r.sys.setup(r.slots, head, size)
	} else {
		r.addrs = make([]net.Addr, batch)
	}
	return r
}

// takeFunc deals with one datagram, slot[head:head+n] from src, on the fast path and
// returns true, or returns false to have read return it. It may write into the slot, and
// queue (part of) the slot on the reader's batchWriter: the reader flushes that before it
// reads into the slots again and before read returns.
type takeFunc func(slot []byte, n int, src netip.AddrPort) bool

// read returns the next datagram that take (nil: none) does not deal with: its slot (the
// datagram is slot[head:head+n], valid until the next read), its source, and, when the
// socket is not read through recvmmsg, the source as its ReadFrom gave it (else nil). The
// error is the socket's, such as a closed socket or a deadline exceeded. What take queued
// has been sent when read returns.
func (r *batchReader) read(take takeFunc) (slot []byte, n int, src netip.AddrPort, addr net.Addr, err error) {
	for r.next < r.n {
		i := r.next
		r.next++
		if take == nil || !take(r.slots[i], r.lens[i], r.srcs[i]) {
			r.flush()
			return r.slots[i], r.lens[i], r.srcs[i], r.addrOf(i), nil
		}
	}
	r.flush()
	if r.sys.ok {
		i, err := r.sys.read(r, take)
		if err != nil {
			return nil, 0, netip.AddrPort{}, nil, err
		}
		return r.slots[i], r.lens[i], r.srcs[i], nil, nil
	}
	for {
		n, a, err := r.pc.ReadFrom(r.slots[0][r.head : r.head+r.size])
		if err != nil {
			return nil, 0, netip.AddrPort{}, nil, err
		}
		var src netip.AddrPort
		if ua, ok := a.(*net.UDPAddr); ok {
			src = unmap(ua.AddrPort())
		}
		r.lens[0], r.srcs[0], r.addrs[0] = n, src, a
		if take == nil || !take(r.slots[0], n, src) {
			return r.slots[0], n, src, a, nil
		}
		r.flush()
	}
}

// flush sends what take queued.
func (r *batchReader) flush() {
	if r.out != nil {
		r.out.flush()
	}
}

func (r *batchReader) addrOf(i int) net.Addr {
	if r.addrs == nil {
		return nil
	}
	return r.addrs[i]
}

// handOut hands the batch slots[0:n] out, from the first, to take until it returns false,
// and sends what take queued; it says which slot take refused, or -1.
func (r *batchReader) handOut(n int, take takeFunc) int {
	r.next, r.n = 0, n
	for r.next < r.n {
		i := r.next
		r.next++
		if take == nil || !take(r.slots[i], r.lens[i], r.srcs[i]) {
			r.flush()
			return i
		}
	}
	r.flush()
	return -1
}

// batchConn is a net.PacketConn whose reads go through a batchReader; writes go straight
// to the socket. ReadFrom is safe for concurrent use, like the socket's.
type batchConn struct {
	net.PacketConn
	mu sync.Mutex // mu protects r
	r  *batchReader
}

// newBatchConn wraps pc, reading up to batch datagrams of up to size bytes at a time.
func newBatchConn(pc net.PacketConn, batch, size int) *batchConn {
	return &batchConn{PacketConn: pc, r: newBatchReader(pc, batch, 0, size)}
}

// ReadFrom returns the next datagram; one longer than b is cut to len(b), as a UDP
// socket does. Datagrams already read are handed out after a read deadline passes.
func (c *batchConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	slot, n, src, addr, err := c.r.read(nil)
	if err != nil {
		return 0, nil, err
	}
	if addr == nil {
		addr = net.UDPAddrFromAddrPort(src)
	}
	return copy(b, slot[:n]), addr, nil
}

// The fast path's sends are batched too. Each read loop has a batchWriter, on which its
// take queues the datagrams it forwards (pointing into the read slots, not copied); the
// reader flushes the queue at the end of each batch, before it hands a datagram to its
// caller and before it reads or waits again. A flush sends each socket's datagrams, in the
// order queued, with one system call (sendmmsg on Linux) from message headers, I/O vectors
// and address buffers the writer allocated once: towards a client, an allocation's read
// loop has one socket to send from (its listener's), so a batch costs one call; from a
// listener's batch, one call per relayed socket it forwards to.
//
// A call that sends fewer than it was given is made again with the rest; one that finds
// the socket's buffer full waits for it to become writable through the runtime's poller
// (the RawConn Write callback returns false) and goes on. A datagram the kernel refuses
// (a failed sendmmsg reports the error of its first message) is dropped and counted in
// write_errors, as a failed sendto was, and the next call starts after it; a socket that
// fails as a whole (closed, a write deadline) drops what it had left. A socket that is not
// a *net.UDPConn, or a system without sendmmsg, is written one datagram per call at once.
//
// The calls are hand-written, like the reader's, rather than golang.org/x/net's ipv4 and
// ipv6 PacketConn.WriteBatch: that takes each datagram's destination as a net.Addr, so a
// *net.UDPAddr per datagram (an allocation, or a cache of them per destination) where the
// fast path has a netip.AddrPort, and it wants a PacketConn of the socket's family, ipv4
// or ipv6, when a listener may be either.

// sendSock is a socket the fast path sends from, set up once: every read loop that
// forwards through it shares it.
type sendSock struct {
	pc  net.PacketConn
	uc  *net.UDPConn // pc if it is one, else nil
	sys sysSock      // sendmmsg state; its ok is false where it cannot be used
}

func newSendSock(pc net.PacketConn) *sendSock {
	s := &sendSock{pc: pc}
	if uc, ok := pc.(*net.UDPConn); ok {
		s.uc = uc
		s.sys.init(uc)
	}
	return s
}

// writeTo sends one datagram with its own system call.
func (s *sendSock) writeTo(b []byte, to netip.AddrPort) error {
	var err error
	if s.uc != nil {
		_, err = s.uc.WriteToUDPAddrPort(b, to)
	} else {
		_, err = s.pc.WriteTo(b, net.UDPAddrFromAddrPort(to))
	}
	return err
}

// queued is a datagram waiting in a batchWriter.
type queued struct {
	sock *sendSock
	b    []byte
	to   netip.AddrPort
	size int // payload bytes, counted in relayed_bytes once sent
}

// sendCounts is what a flush did.
type sendCounts struct {
	sent, bytes uint64 // datagrams sent and their payload bytes
	errs        uint64 // datagrams dropped: refused, or their socket failed
	waits       uint64 // times a socket's buffer was full and the flush waited
	calls       int    // sendmmsg calls
}

// batchWriter queues one read loop's fast-path sends and sends them in batches. Its
// methods are for that read loop only.
type batchWriter struct {
	c     *counters
	q     []queued // up to cap(q) datagrams, flushed early if it fills
	sys   sysWriter
	calls int // sendmmsg calls made so far (tests count them)
}

// newBatchWriter returns a writer of up to n datagrams per flush that counts what it
// sends in c.
func newBatchWriter(c *counters, n int) *batchWriter {
	w := &batchWriter{c: c, q: make([]queued, 0, n)}
	w.sys.init(n)
	return w
}

// send queues b, whose payload is size bytes, to be sent from s to the address to at the
// next flush; b must stay as it is until then. Where s cannot be written in batches, it is
// sent now.
func (w *batchWriter) send(s *sendSock, b []byte, to netip.AddrPort, size int) {
	if !s.sys.ok || !w.sys.ok {
		if err := s.writeTo(b, to); err != nil {
			w.c.writeErrs.Add(1)
		} else {
			w.c.relayedPackets.Add(1)
			w.c.relayedBytes.Add(uint64(size))
		}
		return
	}
	if len(w.q) == cap(w.q) {
		w.flush()
	}
	w.q = append(w.q, queued{sock: s, b: b, to: to, size: size})
}

// flush sends what is queued: each socket's datagrams with one system call, unless a
// datagram is refused or the socket's buffer fills.
func (w *batchWriter) flush() {
	if len(w.q) == 0 {
		return
	}
	n := w.sys.flush(w.q)
	clear(w.q) // hold on to no socket or slot
	w.q = w.q[:0]
	w.calls += n.calls
	if n.sent > 0 {
		w.c.relayedPackets.Add(n.sent)
		w.c.relayedBytes.Add(n.bytes)
	}
	if n.errs > 0 {
		w.c.writeErrs.Add(n.errs)
	}
	if n.waits > 0 {
		w.c.writeWaits.Add(n.waits)
	}
}
