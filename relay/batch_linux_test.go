package relay

import (
	"fmt"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestBatchWriterPartialAndWait: a sendmmsg that sends fewer than it was given is made
// again with the rest; EINTR is retried; EAGAIN waits for the socket to be writable, through
// the runtime's poller, and goes on; nothing is lost or sent twice, and the order holds.
//
// The wrapped call says EAGAIN only after a real send: a real EAGAIN means a full send
// buffer, whose draining the kernel announces, and on loopback the datagrams just sent
// leave the buffer at once, which announces it; after a wait with nothing sent since, the
// poller would rightly wait on.
func TestBatchWriterPartialAndWait(t *testing.T) {
	s := udpSockets(t)
	c := new(counters)
	w := newBatchWriter(c, 16)
	a, to := newSendSock(s.senders[0]), addrPortOf(s.rd.LocalAddr())
	var script []string // what each call did
	w.sys.sendmmsg = func(fd uintptr, hs []mmsghdr) (int, unix.Errno) {
		var n int
		var errno unix.Errno
		switch len(script) {
		case 0: // partial: two of them
			n, errno = sendmmsg(fd, hs[:2])
		case 1, 4:
			errno = unix.EAGAIN
		case 2:
			errno = unix.EINTR
		case 3: // partial: one
			n, errno = sendmmsg(fd, hs[:1])
		default:
			n, errno = sendmmsg(fd, hs)
		}
		script = append(script, fmt.Sprintf("%d of %d: %d %v", len(script), len(hs), n, errno))
		return n, errno
	}
	const n = 10
	for i := 0; i < n; i++ {
		w.send(a, []byte{byte('0' + i)}, to, 1)
	}
	done := make(chan struct{})
	start, took := time.Now(), time.Duration(0)
	go func() { w.flush(); close(done) }()
	select {
	case <-done:
		took = time.Since(start)
	case <-time.After(10 * time.Second):
		t.Fatal("the flush is still waiting after 10 s") // the socket was writable all along
	}
	if got := receive(t, s.rd, n); fmt.Sprint(got) != "[0 1 2 3 4 5 6 7 8 9]" {
		t.Errorf("received %q", got)
	}
	s.rd.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if k, _, err := s.rd.ReadFrom(make([]byte, 10)); err == nil {
		t.Errorf("a datagram more: %d bytes", k)
	}
	if len(script) != 6 || w.calls != 6 {
		t.Errorf("%d calls (%d counted), want 6: %q", len(script), w.calls, script)
	}
	if p, e, wt := c.relayedPackets.Load(), c.writeErrs.Load(), c.writeWaits.Load(); p != n || e != 0 || wt != 2 {
		t.Errorf("counted %d sent, %d errors, %d waits; want %d, 0, 2", p, e, wt, n)
	}
	t.Logf("calls: %q; the flush took %v", script, took)
}
