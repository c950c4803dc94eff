package memnet

import "net"

// listener accepts stream conns on one port of a host.
type listener struct {
	h    *Host
	port uint16
	addr *net.TCPAddr

	// Guarded by h.mu.
	closed     bool
	backlog    queue[*conn]  // connected ends waiting for Accept
	acceptWait chan struct{} // closed when the backlog grows or the listener closes
	spaceWait  chan struct{} // closed when the backlog shrinks or the listener closes
}

var _ net.Listener = (*listener)(nil)

// Accept waits for the next connection. After Close, or after the host is killed, it
// returns an error wrapping net.ErrClosed.
func (ln *listener) Accept() (net.Conn, error) {
	h := ln.h
	h.mu.Lock()
	defer h.mu.Unlock()
	for {
		if ln.closed {
			return nil, &net.OpError{Op: "accept", Net: "tcp", Addr: ln.addr, Err: net.ErrClosed}
		}
		if ln.backlog.len() > 0 {
			c := ln.backlog.pop()
			wakeLocked(&ln.spaceWait)
			return c, nil
		}
		ch := waitChLocked(&ln.acceptWait)
		h.mu.Unlock()
		<-ch
		h.mu.Lock()
	}
}

// Close stops listening and frees the port; pending Accepts return net.ErrClosed and
// connections not yet accepted are reset. Conns already accepted stay open. Closing
// twice returns an error wrapping net.ErrClosed.
func (ln *listener) Close() error {
	h := ln.h
	h.mu.Lock()
	if ln.closed {
		h.mu.Unlock()
		return &net.OpError{Op: "close", Net: "tcp", Addr: ln.addr, Err: net.ErrClosed}
	}
	ln.closed = true
	if h.listeners[ln.port] == ln {
		delete(h.listeners, ln.port)
		delete(h.tcpPorts, ln.port)
	}
	var pending []*conn
	for ln.backlog.len() > 0 {
		c := ln.backlog.pop()
		delete(h.conns, c)
		pending = append(pending, c)
	}
	wakeLocked(&ln.acceptWait)
	wakeLocked(&ln.spaceWait)
	h.mu.Unlock()
	for _, c := range pending {
		c.shutdown(true)
	}
	return nil
}

// Addr returns the *net.TCPAddr the listener is bound to, with the host's IP.
func (ln *listener) Addr() net.Addr { return ln.addr }
