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
	sys  sysBatch // recvmmsg state; its ok is false where it cannot be used
	head int      // bytes of room before each datagram in its slot
	size int      // bytes of room for the datagram; a longer one is cut to this

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
// returns true, or returns false to have read return it. It may write into the slot.
type takeFunc func(slot []byte, n int, src netip.AddrPort) bool

// read returns the next datagram that take (nil: none) does not deal with: its slot (the
// datagram is slot[head:head+n], valid until the next read), its source, and, when the
// socket is not read through recvmmsg, the source as its ReadFrom gave it (else nil). The
// error is the socket's, such as a closed socket or a deadline exceeded.
func (r *batchReader) read(take takeFunc) (slot []byte, n int, src netip.AddrPort, addr net.Addr, err error) {
	for r.next < r.n {
		i := r.next
		r.next++
		if take == nil || !take(r.slots[i], r.lens[i], r.srcs[i]) {
			return r.slots[i], r.lens[i], r.srcs[i], r.addrOf(i), nil
		}
	}
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
	}
}

func (r *batchReader) addrOf(i int) net.Addr {
	if r.addrs == nil {
		return nil
	}
	return r.addrs[i]
}

// handOut hands the batch slots[0:n] out, from the first, to take until it returns false;
// it says which slot take refused, or -1.
func (r *batchReader) handOut(n int, take takeFunc) int {
	r.next, r.n = 0, n
	for r.next < r.n {
		i := r.next
		r.next++
		if take == nil || !take(r.slots[i], r.lens[i], r.srcs[i]) {
			return i
		}
	}
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
