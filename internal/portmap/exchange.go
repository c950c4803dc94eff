package portmap

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
)

// firstInterval is the wait after a request's first send; each later wait doubles it
// (RFC 6886 §3.1, and RFC 6887 §8.1.1's IRT, without its jitter).
const firstInterval = 250 * time.Millisecond

// maxDatagram is the largest answer read: PCP's limit, with room to spare for SSDP.
const maxDatagram = 2048

// An exchange is one request to the router and the wait for its answer.
type exchange struct {
	what string           // names the request in errors and logs
	to   []netip.AddrPort // every send goes to each of them
	// from says whether a datagram from this source may be an answer; the others are
	// dropped unread.
	from  func(netip.AddrPort) bool
	req   []byte
	sends int // how many times req is sent at most
	// accept looks at a datagram from an accepted source: done=false drops it (not an
	// answer to this request) and the wait goes on; done=true ends the exchange with err.
	accept func(b []byte) (done bool, err error)
}

// fromAddr accepts datagrams from a alone.
func fromAddr(a netip.AddrPort) func(netip.AddrPort) bool {
	return func(src netip.AddrPort) bool { return src == a }
}

// roundTrip sends x.req from a fresh UDP socket on local, then again after 250 ms, 500 ms,
// 1 s and so on, until x.accept takes an answer, x.sends sends have gone unanswered for
// as long again as the last wait, or ctx ends. It returns an error wrapping
// ErrNoResponse if nothing was accepted.
func (c *Client) roundTrip(ctx context.Context, local netip.Addr, x exchange) error {
	conn, err := c.cfg.ListenPacket("udp4", netip.AddrPortFrom(local, 0).String())
	if err != nil {
		return fmt.Errorf("portmap: %s: opening a UDP socket: %w", x.what, err)
	}
	in := make(chan []byte)
	done := make(chan struct{})
	var wg sync.WaitGroup
	defer func() {
		close(done)
		conn.Close()
		wg.Wait()
	}()
	wg.Go(func() { c.readLoop(conn, x.from, in, done) })

	wait := firstInterval
	for sent := 1; ; sent++ {
		// The timer starts before the send, so once the router has the request the
		// timer is on the clock: a test that moves a fake clock counts on it.
		t := c.clk.NewTimer(wait)
		if err := c.send(conn, x); err != nil {
			t.Stop()
			return err
		}
		if sent > 1 {
			c.m.Inc("portmap_retransmits")
		}
		if done, err := c.await(ctx, t, in, x); done {
			return err
		}
		if ctx.Err() != nil || sent >= x.sends {
			cause := context.Cause(ctx)
			if cause == nil {
				cause = fmt.Errorf("no answer in %v after the last send", wait)
			}
			return fmt.Errorf("%w: %s to %v, sent %d times: %w", ErrNoResponse, x.what, x.to, sent, cause)
		}
		wait *= 2
	}
}

// await waits for t or an accepted answer: done says whether x.accept took a datagram,
// and err is then what it said. It returns done=false when t fires or ctx ends.
func (c *Client) await(ctx context.Context, t clockwork.Timer, in <-chan []byte, x exchange) (done bool, err error) {
	defer t.Stop()
	for {
		select {
		case b := <-in:
			if done, err := x.accept(b); done {
				return true, err
			}
			c.m.Inc("portmap_ignored")
		case <-t.Chan():
			return false, nil
		case <-ctx.Done():
			return false, nil
		}
	}
}

// send sends x.req to each of x.to; it fails only if no send went out.
func (c *Client) send(conn net.PacketConn, x exchange) error {
	var errs []error
	for _, dst := range x.to {
		if _, err := conn.WriteTo(x.req, net.UDPAddrFromAddrPort(dst)); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == len(x.to) {
		return fmt.Errorf("portmap: %s: sending to %v: %w", x.what, x.to, errors.Join(errs...))
	}
	return nil
}

// readLoop passes datagrams that from accepts to in until conn is closed or done is.
func (c *Client) readLoop(conn net.PacketConn, from func(netip.AddrPort) bool, in chan<- []byte, done <-chan struct{}) {
	buf := make([]byte, maxDatagram)
	for {
		n, addr, err := conn.ReadFrom(buf)
		if err != nil {
			return // closed by roundTrip; any other error would repeat
		}
		if src := addrPortOf(addr); !from(src) {
			c.m.Inc("portmap_ignored")
			c.log.Debug("portmap: datagram from a stranger ignored", "from", addr)
			continue
		}
		select {
		case in <- append([]byte(nil), buf[:n]...):
		case <-done:
			return
		}
	}
}

// addrPortOf is the IPv4 (or IPv6) address and port of a, or the zero AddrPort.
func addrPortOf(a net.Addr) netip.AddrPort {
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// withTimeout is context.WithTimeout on clk. Unlike clockwork.WithTimeout, its cancel
// stops the timer, so that a fake clock holds only live timers; context.Cause then
// tells the deadline from a cancellation.
func withTimeout(ctx context.Context, clk clockwork.Clock, d time.Duration) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	t := clk.AfterFunc(d, func() { cancel(fmt.Errorf("timed out after %v: %w", d, context.DeadlineExceeded)) })
	return ctx, func() {
		t.Stop()
		cancel(context.Canceled)
	}
}
