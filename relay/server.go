package relay

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/libp2p/go-reuseport"
	"github.com/pion/turn/v4"

	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/ratelog"
)

// Names of the server's counters in its metrics set.
const (
	MetricAllocations        = "allocations"           // allocations created
	MetricAllocationsDeleted = "allocations_deleted"   // allocations deleted or expired
	MetricAuthMalformed      = "auth_fail_malformed"   // username not "<expiry>:<user>"
	MetricAuthExpired        = "auth_fail_expired"     // username past its expiry
	MetricAuthBadHMAC        = "auth_fail_bad_hmac"    // MESSAGE-INTEGRITY made with a wrong password
	MetricQuotaAllocsRefused = "quota_allocs_refused"  // Allocate refused with 486: user at MaxAllocsPerUser
	MetricPeerRefused        = "peer_refused"          // CreatePermission or ChannelBind to a refused peer
	MetricRelayedPackets     = "relayed_packets"       // datagrams relayed to or from peers
	MetricRelayedBytes       = "relayed_bytes"         // their payload bytes
	MetricDroppedPackets     = "dropped_quota_packets" // datagrams dropped over a user's bandwidth
	MetricDroppedBytes       = "dropped_quota_bytes"   // their bytes
	MetricWriteErrors        = "write_errors"          // fast-path datagrams the kernel refused, or whose socket had closed: dropped
	MetricWriteWaits         = "write_waits"           // fast-path sends that waited for a full send buffer
	MetricAuth401            = "auth_unauthorized"     // requests answered 401: one of the auth_fail_* reasons
	MetricBadPackets         = "turn_bad_packets"      // datagrams and TCP frames that are not TURN, dropped
	MetricReadErrors         = "turn_read_errors"      // socket read errors other than closure, waited out
	MetricTCPConns           = "tcp_conns"             // TURN-over-TCP connections admitted
	MetricTCPAcceptErrors    = "tcp_accept_errors"     // TCP accept errors (EMFILE...) waited out
	MetricTCPShed            = "tcp_conns_shed"        // refused: TCPMaxConns open
	MetricTCPShedAddr        = "tcp_conns_shed_addr"   // refused: TCPConnsPerAddr open from the address
	MetricTCPShedPrefix      = "tcp_conns_shed_prefix" // refused: TCPConnsPerPrefix open from its /24 or /64
	MetricTCPShedBusy        = "tcp_conns_shed_busy"   // refused: near TCPMaxConns, kept for sources that allocated
	MetricTCPIdleClosed      = "tcp_idle_closed"       // closed after TCPIdleTimeout without an allocation
	MetricTCPBadFrames       = "tcp_bad_frames"        // TCP streams closed because they are not TURN framing
	MetricLogSuppressed      = "log_suppressed"        // log lines held back by the rate limit
)

// flushEvery is how often the hot-path counters are added to the metrics set.
const flushEvery = time.Second

// Server is a TURN relay. New opens its sockets; Run serves on them until its context
// ends, and closes them.
type Server struct {
	cfg    Config
	clk    clockwork.Clock // cfg.Clock: the real clock unless a test gave its own
	log    *slog.Logger
	m      *metrics.Set
	peerOK func(net.IP) bool
	fast   bool // forward channel data on the fast path (tests turn it off to compare)

	ctx         context.Context    // ends when Run stops serving
	cancel      context.CancelFunc // ends ctx
	wg          sync.WaitGroup
	live        tracker  // sockets and read loops still running, for Run to wait on
	tcpCounters counters // hot-path counts of TURN-over-TCP allocations

	// mu protects the following fields
	mu        sync.Mutex
	started   bool
	closed    bool
	turn      *turn.Server
	listeners []*udpListener
	tcp       *tcpListener
	udpAddr   netip.AddrPort
	tcpAddr   netip.AddrPort
	relays    map[uint16]*relayConn // by relayed port

	// qmu protects the following fields
	qmu     sync.Mutex
	users   map[string]*user
	pending map[flowKey]*user // Allocate requests past the quota check

	// fmu protects the following fields
	fmu     sync.Mutex
	flushed map[string]uint64 // hot-path totals already added to m
}

// New checks cfg and opens the listening sockets: Config.Listeners UDP sockets on one
// port, and a TCP listener unless NoTCP. Binding here rather than in Run makes a port in
// use an error of New, which its caller can tell from a relay that failed while serving,
// and makes Addr and TCPAddr known before Run. Run owns the sockets: a Server that New
// returned must be Run, if only with a context already done, for them to be closed.
func New(cfg Config) (*Server, error) {
	cfg, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	log := ratelog.Wrap(cfg.Logger, cfg.Metrics)
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:     cfg,
		clk:     cfg.Clock,
		log:     log,
		m:       cfg.Metrics,
		peerOK:  peerFilter(cfg),
		fast:    true,
		ctx:     ctx,
		cancel:  cancel,
		relays:  make(map[uint16]*relayConn),
		users:   make(map[string]*user),
		pending: make(map[flowKey]*user),
		flushed: make(map[string]uint64),
	}
	if err := s.listen(); err != nil {
		cancel()
		return nil, err
	}
	return s, nil
}

// Run serves on the sockets New opened until ctx ends, then closes every socket and TCP
// connection and returns once every goroutine the server started (its own and pion's
// read loops) has ended. A server runs once: Run returns ErrStarted while another Run
// serves, and ErrClosed after one returned.
func (s *Server) Run(ctx context.Context) error {
	if err := s.start(); err != nil {
		return err
	}
	<-ctx.Done()
	return s.stop()
}

// start hands the sockets to pion's server and starts serving.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.started:
		return ErrStarted
	}
	s.started = true
	var pcs []turn.PacketConnConfig
	for _, l := range s.listeners {
		pcs = append(pcs, turn.PacketConnConfig{
			PacketConn:            l,
			RelayAddressGenerator: s.relayGen(l),
			PermissionHandler:     s.permit,
		})
	}
	var lcs []turn.ListenerConfig
	if s.tcp != nil {
		lcs = append(lcs, turn.ListenerConfig{
			Listener:              s.tcp,
			RelayAddressGenerator: s.relayGen(nil),
			PermissionHandler:     s.permit,
		})
	}
	// From here the read loops run, and Run's stop waits for them.
	s.live.add(len(s.listeners))
	if s.tcp != nil {
		s.live.add(1)
	}
	ts, err := turn.NewServer(turn.ServerConfig{
		PacketConnConfigs: pcs,
		ListenerConfigs:   lcs,
		LoggerFactory:     pionLogs{s.log},
		Realm:             s.cfg.Realm,
		AuthHandler:       s.auth,
		QuotaHandler:      s.quota,
		EventHandler:      s.events(),
	})
	if err != nil {
		s.closed = true
		s.cancel()
		for _, l := range s.listeners {
			l.conn.Close()
		}
		if s.tcp != nil {
			s.tcp.Close()
		}
		return fmt.Errorf("relay: %w", err)
	}
	s.turn = ts
	s.wg.Add(1)
	go s.flushLoop()
	s.log.Info("relay listening", "udp", s.udpAddr.String(), "tcp", s.tcpAddr.String(),
		"public_ip", s.cfg.PublicIP.String(), "listeners", len(s.listeners), "realm", s.cfg.Realm,
		"ports", fmt.Sprintf("%d-%d", s.cfg.MinPort, s.cfg.MaxPort))
	return nil
}

// listen opens the UDP sockets, all on one port, and the TCP listener on the same port
// number. With port 0 it retries a few times in case TCP's port is taken.
func (s *Server) listen() error {
	host, port, _ := net.SplitHostPort(s.cfg.Listen)
	udp, tcp := "udp", "tcp"
	if ip, err := netip.ParseAddr(host); err == nil {
		udp, tcp = "udp6", "tcp6"
		if ip.Unmap().Is4() {
			udp, tcp = "udp4", "tcp4"
		}
	}
	var err error
	for try := 0; try < 8; try++ {
		if err = s.tryListen(udp, tcp, host, port); err == nil || port != "0" {
			return err
		}
	}
	return err
}

func (s *Server) tryListen(udp, tcp, host, port string) (err error) {
	var lis []*udpListener
	defer func() {
		if err != nil {
			for _, l := range lis {
				l.conn.Close()
			}
		}
	}()
	addr := net.JoinHostPort(host, port)
	for i := 0; i < s.cfg.Listeners; i++ {
		var pc net.PacketConn
		var err error
		if s.cfg.Net != nil {
			pc, err = s.cfg.Net.ListenPacket(udp, addr)
		} else {
			pc, err = reuseport.ListenPacket(udp, addr)
		}
		if err != nil {
			return fmt.Errorf("relay: listen %s %s: %w", udp, addr, err)
		}
		s.setBuffers(pc)
		lis = append(lis, newUDPListener(s, pc))
		if i == 0 {
			// The others join the port the first one got.
			addr = net.JoinHostPort(host, strconv.Itoa(pc.LocalAddr().(*net.UDPAddr).Port))
		}
	}
	s.udpAddr = unmap(lis[0].conn.LocalAddr().(*net.UDPAddr).AddrPort())
	if !s.cfg.NoTCP {
		var ln net.Listener
		var err error
		if s.cfg.Net != nil {
			var ta *net.TCPAddr
			if ta, err = s.cfg.Net.ResolveTCPAddr(tcp, addr); err == nil {
				ln, err = s.cfg.Net.ListenTCP(tcp, ta)
			}
		} else {
			ln, err = net.Listen(tcp, addr)
		}
		if err != nil {
			return fmt.Errorf("relay: listen %s %s: %w", tcp, addr, err)
		}
		s.tcp = newTCPListener(s, ln)
		s.tcpAddr = unmap(ln.Addr().(*net.TCPAddr).AddrPort())
	}
	s.listeners = lis
	return nil
}

// setBuffers sizes a UDP socket's kernel buffers (a kernel's socket only).
func (s *Server) setBuffers(pc net.PacketConn) {
	c, ok := pc.(*net.UDPConn)
	if !ok || s.cfg.SocketBuffer < 0 {
		return
	}
	if err := c.SetReadBuffer(s.cfg.SocketBuffer); err != nil {
		s.log.Debug("socket read buffer", "err", err)
	}
	if err := c.SetWriteBuffer(s.cfg.SocketBuffer); err != nil {
		s.log.Debug("socket write buffer", "err", err)
	}
}

// relayGen is a listener's relay address generator: pion's port range generator, whose
// sockets it sizes, wraps and registers. lis is nil for the TCP listener.
type relayGen struct {
	*turn.RelayAddressGeneratorPortRange
	s   *Server
	lis *udpListener
}

func (s *Server) relayGen(lis *udpListener) *relayGen {
	return &relayGen{
		RelayAddressGeneratorPortRange: &turn.RelayAddressGeneratorPortRange{
			RelayAddress: net.IP(s.cfg.PublicIP.AsSlice()),
			Address:      s.cfg.RelayIP.String(),
			MinPort:      s.cfg.MinPort,
			MaxPort:      s.cfg.MaxPort,
			MaxRetries:   64,
			Net:          s.cfg.Net,
		},
		s: s, lis: lis,
	}
}

func (g *relayGen) AllocatePacketConn(network string, requestedPort int) (net.PacketConn, net.Addr, error) {
	pc, addr, err := g.RelayAddressGeneratorPortRange.AllocatePacketConn(network, requestedPort)
	if err != nil {
		return nil, nil, err
	}
	if _, ok := pc.LocalAddr().(*net.UDPAddr); !ok {
		pc.Close()
		return nil, nil, errors.New("relay: relayed socket is not UDP")
	}
	g.s.setBuffers(pc)
	uc := pc
	c := &g.s.tcpCounters
	if g.lis != nil {
		c = g.lis.c
	}
	rc := newRelayConn(g.s, uc, g.lis, c)
	g.s.mu.Lock()
	g.s.relays[rc.port] = rc
	g.s.mu.Unlock()
	g.s.live.add(1)
	return rc, addr, nil
}

func (s *Server) forgetRelay(r *relayConn) {
	s.mu.Lock()
	if s.relays[r.port] == r {
		delete(s.relays, r.port)
	}
	s.mu.Unlock()
}

func (s *Server) relayAt(a net.Addr) *relayConn {
	ua, ok := a.(*net.UDPAddr)
	if !ok {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.relays[uint16(ua.Port)]
}

// auth is pion's AuthHandler: it checks the username's form and expiry and returns the
// long-term key of its TURN REST API password; pion then checks MESSAGE-INTEGRITY, and
// events().OnAuth counts a mismatch. screenSTUN has refused bad credentials with 401
// before pion sees them, so these refusals (answered 400 by pion) happen only in a race,
// such as credentials expiring between the two checks.
func (s *Server) auth(username, realm string, src net.Addr) ([]byte, bool) {
	exp, _, ok := parseUsername(username)
	if !ok {
		s.m.Inc(MetricAuthMalformed)
		s.log.Info("relay: auth refused", "reason", "username is not <expiry>:<user>", "username", truncate(username, 64), "remote", src.String())
		return nil, false
	}
	if exp.Unix() < s.cfg.Now().Unix() {
		s.m.Inc(MetricAuthExpired)
		s.log.Info("relay: auth refused", "reason", "credentials expired", "username", truncate(username, 64), "remote", src.String())
		return nil, false
	}
	return turn.GenerateAuthKey(username, realm, password1(s.cfg.Secret, username)), true
}

// permit is pion's PermissionHandler.
func (s *Server) permit(client net.Addr, peer net.IP) bool {
	if s.peerOK(peer) {
		return true
	}
	s.m.Inc(MetricPeerRefused)
	s.log.Debug("peer refused", "remote", client.String(), "peer", peer.String())
	return false
}

// events are the hooks through which the server learns pion's state: who owns each
// allocation (quotas) and which channels are bound (the fast path).
func (s *Server) events() turn.EventHandler {
	return turn.EventHandler{
		OnAuth: func(src, _ net.Addr, _, username, _, method string, ok bool) {
			if !ok {
				s.m.Inc(MetricAuthBadHMAC)
				s.log.Info("relay: auth refused", "reason", "bad password", "username", truncate(username, 64), "method", method, "remote", src.String())
			}
		},
		OnAllocationCreated: func(src, _ net.Addr, _, username, _ string, relayAddr net.Addr, _ int) {
			s.m.Inc(MetricAllocations)
			u := s.allocCreated(src, username)
			rc := s.relayAt(relayAddr)
			if rc == nil {
				return
			}
			k := flowKeyOf(src)
			rc.own(u, k.ap)
			if k.tcp {
				s.tcp.allocated(k.ap, u)
				return
			}
			if s.tcp != nil {
				s.tcp.gate.MarkGood(k.ap.Addr()) // a source that behaves over UDP may use TCP's reserve
			}
			if rc.lis == nil {
				return
			}
			f := &flow{addr: net.UDPAddrFromAddrPort(k.ap), user: u, relay: rc, chans: make(map[uint16]netip.AddrPort)}
			rc.lis.mu.Lock()
			rc.lis.flows[k.ap] = f
			rc.lis.mu.Unlock()
		},
		OnAllocationDeleted: func(src, _ net.Addr, _, username, _ string) {
			s.m.Inc(MetricAllocationsDeleted)
			s.allocDeleted(username)
			k := flowKeyOf(src)
			if k.tcp {
				if s.tcp != nil {
					s.tcp.allocated(k.ap, nil)
				}
				return
			}
			// The deleted allocation's relayed socket is closed by now; a flow with an open
			// one belongs to a newer allocation of the same client address.
			for _, l := range s.listeners {
				l.mu.Lock()
				if f := l.flows[k.ap]; f != nil && f.relay.isClosed() {
					delete(l.flows, k.ap)
				}
				l.mu.Unlock()
			}
		},
		OnAllocationError: func(src, _ net.Addr, _, _ string) {
			s.allocFailed(src)
		},
		OnChannelCreated: func(src, _ net.Addr, _, _, _ string, relayAddr, peer net.Addr, ch uint16) {
			s.bindChannel(src, relayAddr, peer, ch, true)
		},
		OnChannelDeleted: func(src, _ net.Addr, _, _, _ string, relayAddr, peer net.Addr, ch uint16) {
			s.bindChannel(src, relayAddr, peer, ch, false)
		},
	}
}

// bindChannel adds a channel binding to the fast-path tables, or removes it.
func (s *Server) bindChannel(src, relayAddr, peer net.Addr, ch uint16, add bool) {
	rc := s.relayAt(relayAddr)
	pa, ok := peer.(*net.UDPAddr)
	if rc == nil || rc.lis == nil || !ok {
		return
	}
	k, p := flowKeyOf(src), unmap(pa.AddrPort())
	rc.lis.mu.Lock()
	if f := rc.lis.flows[k.ap]; f != nil && f.relay == rc {
		if add {
			f.chans[ch] = p
		} else if f.chans[ch] == p {
			delete(f.chans, ch)
		}
	}
	rc.lis.mu.Unlock()
	rc.mu.Lock()
	if add && !rc.closed {
		rc.peers[p] = ch
	} else if !add && rc.peers[p] == ch {
		delete(rc.peers, p)
	}
	rc.mu.Unlock()
}

// Addr is the UDP address the server listens on.
func (s *Server) Addr() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.udpAddr
}

// TCPAddr is the TCP address the server listens on; invalid with NoTCP.
func (s *Server) TCPAddr() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.tcpAddr
}

// PublicIP is the address the server writes in XOR-RELAYED-ADDRESS.
func (s *Server) PublicIP() netip.Addr { return s.cfg.PublicIP }

// Allocations is the number of allocations the server holds.
func (s *Server) Allocations() int {
	s.mu.Lock()
	ts := s.turn
	s.mu.Unlock()
	if ts == nil {
		return 0
	}
	return ts.AllocationCount()
}

// Metrics returns the server's counters, with the hot-path counts brought up to date.
func (s *Server) Metrics() *metrics.Set {
	s.flush()
	return s.m
}

// flush adds to the metrics set what the hot-path counters gained since the last flush.
func (s *Server) flush() {
	s.mu.Lock()
	cs := []*counters{&s.tcpCounters}
	for _, l := range s.listeners {
		cs = append(cs, l.c)
	}
	s.mu.Unlock()
	now := map[string]uint64{}
	for _, c := range cs {
		now[MetricRelayedPackets] += c.relayedPackets.Load()
		now[MetricRelayedBytes] += c.relayedBytes.Load()
		now[MetricDroppedPackets] += c.droppedPackets.Load()
		now[MetricDroppedBytes] += c.droppedBytes.Load()
		now[MetricWriteErrors] += c.writeErrs.Load()
		now[MetricWriteWaits] += c.writeWaits.Load()
	}
	s.fmu.Lock()
	defer s.fmu.Unlock()
	for name, v := range now {
		if d := v - s.flushed[name]; d > 0 {
			s.m.Add(name, d)
		}
		s.flushed[name] = v
	}
}

func (s *Server) flushLoop() {
	defer s.wg.Done()
	t := s.clk.NewTicker(flushEvery)
	defer t.Stop()
	for {
		select {
		case <-t.Chan():
			s.flush()
		case <-s.ctx.Done():
			return
		}
	}
}

// closeWait bounds how long stop waits for pion's read loops to see their sockets
// closed; they do at once unless the process is starved. It is measured on the real
// clock whatever Config.Clock is: it bounds a wait for goroutines to be scheduled, which
// no test's clock would advance.
const closeWait = 10 * time.Second

// stop ends Run's serving: it closes every socket and TCP connection and returns once
// every read loop has ended.
func (s *Server) stop() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.cancel()
	ts, tcp := s.turn, s.tcp
	s.mu.Unlock()
	s.wg.Wait()
	if ts == nil {
		return nil
	}
	if tcp != nil {
		tcp.shut()
	}
	err := ts.Close()
	if tcp != nil {
		tcp.closeConns()
	}
	select {
	case <-s.live.drain():
	case <-time.After(closeWait):
		s.log.Warn("relay: read loops still running after close", "wait", closeWait)
	}
	s.flush()
	return err
}

// tracker counts things that must end before Run returns: sockets and the read loops
// on them.
type tracker struct {
	mu       sync.Mutex // mu protects the following fields
	n        int
	draining bool
	zero     chan struct{} // closed when n reaches 0 while draining
}

func (t *tracker) add(d int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.n += d
	t.checkLocked()
}

func (t *tracker) checkLocked() {
	if t.zero == nil {
		t.zero = make(chan struct{})
	}
	if t.draining && t.n <= 0 {
		select {
		case <-t.zero:
		default:
			close(t.zero)
		}
	}
}

// drain returns a channel closed once the count is zero.
func (t *tracker) drain() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.draining = true
	t.checkLocked()
	return t.zero
}
