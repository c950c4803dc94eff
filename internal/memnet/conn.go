package memnet

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

const (
	// window is how many unread bytes one direction of a stream conn holds before Write
	// blocks. It counts bytes still in flight under Latency too, like a TCP window.
	window = 256 << 10
	// bufSize is the size of the pooled buffers that queued data is coalesced into when
	// there is no latency. Buffers go back to the pool as soon as they are read, so an
	// idle conn holds none.
	bufSize = 16 << 10
)

var bufPool = sync.Pool{New: func() any { return new([bufSize]byte) }}

// chunk is a run of bytes written at once (or coalesced), readable from time at.
type chunk struct {
	b      []byte // b[off:] is unread; pooled chunks may grow into cap(b)
	off    int
	at     int64
	pooled bool
}

// half is one direction of a stream conn. Its fields are guarded by the link's mu.
type half struct {
	q       queue[chunk]
	queued  int           // unread bytes in q
	writing bool          // a Write owns this direction; concurrent Writes queue up behind it, so they never interleave
	fin     bool          // the writer closed; the reader gets io.EOF once q is drained and finAt is reached
	finAt   int64         // when the FIN arrives
	reset   bool          // the writer was aborted; the reader gets ECONNRESET once q is drained
	gone    syscall.Errno // set once the reader's end is closed: Writes fail with it
	rwait   chan struct{} // closed when there may be something new to read
	wwait   chan struct{} // closed when there may be room to write or the write token is free
}

// pushLocked queues p, readable from at. Without latency (coalesce) it packs bytes into
// pooled buffers, so a stream of small writes costs no allocation; with latency each
// write keeps its own timestamp and gets an exact-size buffer, so that a 1-byte write
// never pins a whole pooled buffer.
func (h *half) pushLocked(p []byte, at int64, coalesce bool) {
	h.queued += len(p)
	if coalesce && h.q.len() > 0 {
		t := h.q.back()
		if t.pooled && len(t.b) < cap(t.b) {
			k := copy(t.b[len(t.b):cap(t.b)], p)
			t.b = t.b[:len(t.b)+k]
			p = p[k:]
		}
	}
	for len(p) > 0 {
		if !coalesce {
			h.q.push(chunk{b: append([]byte(nil), p...), at: at})
			return
		}
		buf := bufPool.Get().(*[bufSize]byte)
		k := copy(buf[:], p)
		h.q.push(chunk{b: buf[:k], at: at, pooled: true})
		p = p[k:]
	}
}

// popLocked copies into p the bytes that are due at now and returns how many.
func (h *half) popLocked(p []byte, now int64) int {
	n := 0
	for n < len(p) && h.q.len() > 0 {
		c := h.q.front()
		if c.at > now {
			break
		}
		k := copy(p[n:], c.b[c.off:])
		n += k
		c.off += k
		if c.off == len(c.b) {
			c := h.q.pop()
			if c.pooled {
				bufPool.Put((*[bufSize]byte)(c.b[:bufSize]))
			}
		}
	}
	h.queued -= n
	return n
}

// discardLocked drops everything queued: nobody will read it.
func (h *half) discardLocked() {
	for h.q.len() > 0 {
		if c := h.q.pop(); c.pooled {
			bufPool.Put((*[bufSize]byte)(c.b[:bufSize]))
		}
	}
	h.queued = 0
}

// link is the state shared by the two ends of a stream conn. One mutex guards both
// directions: contention is between the two ends of one conn only, and a single lock
// keeps close, reset and deadlines simple.
type link struct {
	n   *Network
	mu  sync.Mutex // mu guards dir and the fields of ends marked as guarded by it
	dir [2]half    // dir[i] carries what ends[i] writes
}

// pair is a link and its two ends, allocated together to keep a conn small.
type pair struct {
	link
	ends [2]conn
}

func (n *Network) newPair() *pair {
	p := &pair{link: link{n: n}}
	for i := range p.ends {
		p.ends[i].l = &p.link
		p.ends[i].side = i
	}
	return p
}

// conn is one end of a stream connection.
type conn struct {
	l             *link
	side          int   // index in l.dir of the direction this end writes
	host          *Host // where this end lives; set before the conn is shared
	local, remote *net.TCPAddr
	ownsPort      bool   // local port was allocated for this conn (the dialling end)
	release       func() // frees the NAT ports the dial took; the dialling end, guarded by host.mu

	// Guarded by l.mu.
	closed   bool
	wshut    bool // CloseWrite was called
	rdl, wdl deadline
}

var _ net.Conn = (*conn)(nil)

func (c *conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "tcp", Source: c.local, Addr: c.remote, Err: err}
}

// Read reads data sent by the peer. It returns io.EOF once the peer has closed (or
// half-closed) and everything it sent has been read.
func (c *conn) Read(b []byte) (int, error) {
	l := c.l
	h := &l.dir[1-c.side]
	l.mu.Lock()
	defer l.mu.Unlock()
	for {
		if c.closed {
			return 0, c.opErr("read", net.ErrClosed)
		}
		if c.rdl.expired {
			return 0, c.opErr("read", os.ErrDeadlineExceeded)
		}
		if len(b) == 0 {
			return 0, nil
		}
		now := l.n.now()
		var until int64
		switch {
		case h.q.len() > 0:
			if n := h.popLocked(b, now); n > 0 {
				wakeLocked(&h.wwait)
				return n, nil
			}
			until = h.q.front().at
		case h.reset:
			return 0, c.opErr("read", errno("read", syscall.ECONNRESET))
		case h.fin:
			if h.finAt <= now {
				return 0, io.EOF
			}
			until = h.finAt
		}
		ch := waitChLocked(&h.rwait)
		l.mu.Unlock()
		l.n.wait(ch, until)
		l.mu.Lock()
	}
}

// Write queues b for the peer, blocking while the direction's window is full. Concurrent
// Writes do not interleave. On a deadline it returns how much was queued.
func (c *conn) Write(b []byte) (int, error) {
	l := c.l
	h := &l.dir[c.side]
	l.mu.Lock()
	defer l.mu.Unlock()
	owner := false
	defer func() {
		if owner {
			h.writing = false
			wakeLocked(&h.wwait)
		}
	}()
	n := 0
	for {
		switch {
		case c.closed:
			return n, c.opErr("write", net.ErrClosed)
		case c.wshut:
			return n, c.opErr("write", errno("write", syscall.EPIPE))
		case h.gone != 0:
			return n, c.opErr("write", errno("write", h.gone))
		case c.wdl.expired:
			return n, c.opErr("write", os.ErrDeadlineExceeded)
		}
		if !owner && !h.writing {
			h.writing, owner = true, true
		}
		if owner {
			if n == len(b) {
				return n, nil
			}
			if space := window - h.queued; space > 0 {
				k := min(space, len(b)-n)
				h.pushLocked(b[n:n+k], l.n.arrival(), l.n.latency == 0)
				n += k
				wakeLocked(&h.rwait)
				continue
			}
		}
		ch := waitChLocked(&h.wwait)
		l.mu.Unlock()
		<-ch
		l.mu.Lock()
	}
}

// Close closes this end: the peer reads what was queued and then io.EOF. It returns an
// error wrapping net.ErrClosed if the conn was already closed.
func (c *conn) Close() error {
	if !c.shutdown(false) {
		return c.opErr("close", net.ErrClosed)
	}
	c.host.removeConn(c)
	return nil
}

// CloseWrite shuts down the writing side only, as (*net.TCPConn).CloseWrite does: the
// peer reads io.EOF after the queued data, and this end can still read.
func (c *conn) CloseWrite() error {
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.closed {
		return c.opErr("close", net.ErrClosed)
	}
	c.wshut = true
	h := &l.dir[c.side]
	if !h.fin {
		h.fin, h.finAt = true, l.n.arrival()
	}
	wakeLocked(&h.rwait)
	wakeLocked(&h.wwait)
	return nil
}

// shutdown closes c. With abort the peer sees a reset (ECONNRESET) instead of a FIN.
// It reports whether c was open. It does not unregister c from its host.
func (c *conn) shutdown(abort bool) bool {
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.closed {
		return false
	}
	c.closed = true
	c.rdl.stopLocked()
	c.wdl.stopLocked()
	out, in := &l.dir[c.side], &l.dir[1-c.side]
	switch {
	case out.fin: // the peer already has its EOF coming
	case abort:
		out.reset = true
	default:
		out.fin, out.finAt = true, l.n.arrival()
	}
	in.discardLocked()
	if in.gone == 0 {
		in.gone = syscall.EPIPE
		if abort {
			in.gone = syscall.ECONNRESET
		}
	}
	wakeLocked(&out.rwait)
	wakeLocked(&out.wwait)
	wakeLocked(&in.rwait)
	wakeLocked(&in.wwait)
	return true
}

// LocalAddr returns the *net.TCPAddr of this end.
func (c *conn) LocalAddr() net.Addr { return c.local }

// RemoteAddr returns the *net.TCPAddr of the peer.
func (c *conn) RemoteAddr() net.Addr { return c.remote }

// SetDeadline sets both the read and write deadlines.
func (c *conn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.SetWriteDeadline(t)
}

// SetReadDeadline makes pending and future Reads fail with os.ErrDeadlineExceeded once t
// has passed; the zero time means no deadline.
func (c *conn) SetReadDeadline(t time.Time) error {
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.closed {
		return c.opErr("set", net.ErrClosed)
	}
	h := &l.dir[1-c.side]
	c.rdl.setLocked(&l.mu, t, func() { wakeLocked(&h.rwait) })
	return nil
}

// SetWriteDeadline makes pending and future Writes fail with os.ErrDeadlineExceeded once
// t has passed; the zero time means no deadline.
func (c *conn) SetWriteDeadline(t time.Time) error {
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.closed {
		return c.opErr("set", net.ErrClosed)
	}
	h := &l.dir[c.side]
	c.wdl.setLocked(&l.mu, t, func() { wakeLocked(&h.wwait) })
	return nil
}
