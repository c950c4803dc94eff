package stunsrv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"

	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/ratelog"
	"github.com/peerline/peerline/internal/serve"
)

// Slot names one of the server's four transport addresses; see the package comment.
type Slot int

// The four slots. Bit 1 is "alternate IP", bit 0 is "alternate port".
const (
	SlotPrimary Slot = 0 // A1:P1
	SlotAltPort Slot = 1 // A1:P2
	SlotAltIP   Slot = 2 // A2:P1
	SlotAltBoth Slot = 3 // A2:P2
	numSlots         = 4
	maxDatagram      = 1500
)

// Config configures a Server.
type Config struct {
	// Conns are the server's sockets, indexed by Slot. Conns[0] is required. Either all of
	// Conns[1..3] are set (RFC 5780 behaviour discovery) or none (plain RFC 5389 Binding).
	// Each must be bound to a concrete IP (not 0.0.0.0). The server owns them: Close closes
	// them.
	Conns [numSlots]net.PacketConn
	// Software is sent in the SOFTWARE attribute; "" sends none.
	Software string
	// Logger receives the server's logs (read errors; at debug, failed sends), rate
	// limited per message and per source (internal/ratelog); nil discards.
	Logger *slog.Logger
	// Metrics counts what the server does under the Metric* names, and log lines the
	// rate limit held back (log_suppressed); nil = not counted (Stats still is).
	Metrics metrics.Counter
}

// Names of the server's counters in Config.Metrics.
const (
	MetricRequests   = "stun_requests"     // Binding requests answered with success
	MetricErrors     = "stun_errors"       // requests answered with an error response
	MetricGarbage    = "stun_garbage"      // datagrams dropped: not STUN, malformed, not a request
	MetricWriteErrs  = "stun_write_errors" // responses the socket failed to send
	MetricReadErrors = "stun_read_errors"  // socket read errors other than closure, waited out
)

// Stats counts what a Server did; all fields are cumulative.
type Stats struct {
	Requests  uint64 // well-formed Binding requests answered with success
	Errors    uint64 // requests answered with an error response
	Dropped   uint64 // datagrams ignored (not STUN, malformed, not a request)
	WriteErrs uint64 // responses the socket failed to send
}

// Server answers STUN Binding requests on up to four sockets. Create it with New.
type Server struct {
	conns    [numSlots]net.PacketConn
	addrs    [numSlots]netip.AddrPort
	rfc5780  bool
	software string
	log      *slog.Logger
	m        metrics.Counter

	requests, errs, dropped, writeErrs atomic.Uint64

	closeOnce sync.Once
	ctx       context.Context    // ends with Close
	cancel    context.CancelFunc // ends ctx
	wg        sync.WaitGroup     // counts the read loops started by Serve
}

// New checks cfg and returns a server that answers once Serve is called.
func New(cfg Config) (*Server, error) {
	if cfg.Conns[0] == nil {
		return nil, ErrNoPrimary
	}
	n := 0
	for _, c := range cfg.Conns[1:] {
		if c != nil {
			n++
		}
	}
	if n != 0 && n != 3 {
		return nil, ErrPartialAlternate
	}
	s := &Server{
		conns:    cfg.Conns,
		rfc5780:  n == 3,
		software: cfg.Software,
		m:        cfg.Metrics,
	}
	if s.m == nil {
		s.m = metrics.Discard
	}
	s.log = ratelog.Wrap(cfg.Logger, s.m)
	if s.log == nil {
		s.log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	for i, c := range s.conns {
		if c == nil {
			continue
		}
		ap, err := addrPort(c.LocalAddr())
		if err != nil {
			return nil, fmt.Errorf("stunsrv: slot %d: %w", i, err)
		}
		if ap.Addr().IsUnspecified() {
			return nil, fmt.Errorf("stunsrv: slot %d (%s): %w", i, ap, ErrUnspecifiedAddr)
		}
		s.addrs[i] = ap
	}
	if s.rfc5780 {
		a := s.addrs
		if a[0].Addr() != a[1].Addr() || a[2].Addr() != a[3].Addr() || a[0].Addr() == a[2].Addr() ||
			a[0].Port() != a[2].Port() || a[1].Port() != a[3].Port() || a[0].Port() == a[1].Port() {
			return nil, fmt.Errorf("%w (got %v)", ErrBadLayout, a)
		}
	}
	return s, nil
}

// ListenUDP opens the four sockets of an RFC 5780 server on primary (A1:P1), altIP (A2)
// and altPort (P2), ready for Config.Conns. When altIP is invalid (the zero Addr) only the
// primary socket is opened.
func ListenUDP(primary netip.AddrPort, altIP netip.Addr, altPort uint16) ([numSlots]net.PacketConn, error) {
	var conns [numSlots]net.PacketConn
	addrs := []netip.AddrPort{primary}
	if altIP.IsValid() {
		addrs = append(addrs,
			netip.AddrPortFrom(primary.Addr(), altPort),
			netip.AddrPortFrom(altIP, primary.Port()),
			netip.AddrPortFrom(altIP, altPort))
	}
	for i, ap := range addrs {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(ap))
		if err != nil {
			for _, o := range conns {
				if o != nil {
					o.Close()
				}
			}
			return conns, fmt.Errorf("stunsrv: listen %s: %w", ap, err)
		}
		conns[i] = c
	}
	return conns, nil
}

// Addrs returns the addresses of the configured slots (zero AddrPort for unused ones).
func (s *Server) Addrs() [numSlots]netip.AddrPort { return s.addrs }

// RFC5780 reports whether the server has all four sockets.
func (s *Server) RFC5780() bool { return s.rfc5780 }

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats {
	return Stats{Requests: s.requests.Load(), Errors: s.errs.Load(), Dropped: s.dropped.Load(), WriteErrs: s.writeErrs.Load()}
}

// Serve answers requests until ctx ends or Close is called; it then closes the sockets,
// waits for its read loops and returns nil (ctx) or ErrClosed (Close). A socket read error
// other than closure (ENOBUFS, ICMP errors reported on the socket, a deadline) is counted
// and waited out with a capped back-off: it does not stop the server.
func (s *Server) Serve(ctx context.Context) error {
	ended := make(chan struct{}, numSlots) // a read loop ended: its socket was closed
	for i, c := range s.conns {
		if c == nil {
			continue
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			s.readLoop(Slot(i), c)
			ended <- struct{}{}
		}()
	}
	var err error
	select {
	case <-ctx.Done():
	case <-s.ctx.Done():
		err = ErrClosed
	case <-ended:
	}
	s.Close()
	s.wg.Wait()
	return err
}

// Close closes the sockets; it is idempotent and safe to call concurrently with Serve.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		s.cancel()
		for _, c := range s.conns {
			if c != nil {
				c.Close()
			}
		}
	})
	return nil
}

// readLoop answers what arrives on c until c is closed.
func (s *Server) readLoop(in Slot, c net.PacketConn) {
	buf := make([]byte, maxDatagram)
	var bo serve.AcceptBackoff
	for {
		n, from, err := c.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || s.ctx.Err() != nil {
				return
			}
			s.m.Inc(MetricReadErrors)
			s.log.Warn("stunsrv: read failed, retrying", "slot", in, "err", err)
			bo.Wait(s.ctx)
			continue
		}
		bo.Reset()
		src, err := addrPort(from)
		if err != nil {
			s.drop()
			continue
		}
		resp, out, dst, ok := s.Handle(buf[:n], src, in)
		if !ok || len(resp) == 0 {
			continue
		}
		if _, err := s.conns[out].WriteTo(resp, net.UDPAddrFromAddrPort(dst)); err != nil {
			s.writeErrs.Add(1)
			s.m.Inc(MetricWriteErrs)
			s.log.Debug("stunsrv: write failed", "slot", out, "remote", dst.String(), "err", err)
		}
	}
}

// drop counts a datagram dropped silently.
func (s *Server) drop() {
	s.dropped.Add(1)
	s.m.Inc(MetricGarbage)
}

func addrPort(a net.Addr) (netip.AddrPort, error) {
	switch v := a.(type) {
	case *net.UDPAddr:
		ap := v.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	default:
		ap, err := netip.ParseAddrPort(a.String())
		if err != nil {
			return ap, fmt.Errorf("address %q is not IP:port: %w", a, err)
		}
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), nil
	}
}

// ListenFree is ListenUDP at a free pair of ports (p, p+1) on ip and altIP, for tests and
// demos that cannot pick ports in advance.
func ListenFree(ip, altIP netip.Addr) ([numSlots]net.PacketConn, error) {
	var lastErr error
	for try := 0; try < 50; try++ {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, 0)))
		if err != nil {
			return [numSlots]net.PacketConn{}, err
		}
		port := uint16(c.LocalAddr().(*net.UDPAddr).Port)
		c.Close()
		if port == 65535 {
			continue
		}
		conns, err := ListenUDP(netip.AddrPortFrom(ip, port), altIP, port+1)
		if err == nil {
			return conns, nil
		}
		lastErr = err
	}
	return [numSlots]net.PacketConn{}, fmt.Errorf("stunsrv: no free port pair: %w", lastErr)
}
