package client

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pion/ice/v3"
	"github.com/pion/logging"
	"github.com/pion/stun/v2"
	"github.com/pion/turn/v4"

	"github.com/peerline/peerline/internal/callsig"
	"github.com/peerline/peerline/internal/media"
	"github.com/peerline/peerline/internal/x25519"
)

// The paths of a call, from best to worst. A call's media session sends on the best
// path that is alive and receives on all of them, so a path that starts working later
// (the punch after the relay) takes over without a gap, and one that dies is replaced
// by the next within the session's DeadAfter.
const (
	rankDirect   = 0
	rankPunched  = 1
	rankTCP      = 2 // TCP simultaneous open (or a connection to a public peer)
	rankRelayUDP = 3 // via the peer's relay, from our plain UDP socket
	rankRelayOwn = 4 // via our own relay allocation
	rankRelayTCP = 5
)

// Path kinds, as reported.
const (
	PathDirect   = "direct"
	PathPunched  = "punched"
	PathRelayUDP = "relay-udp"
	PathRelayTCP = "relay-tcp"
)

// PredictPath says which path a call between NATs a and b should take, per the table of
// which NAT pairs can punch (DESIGN.md): direct when one side is public or full cone,
// punched when both are cone-like (or symmetric against restricted cone), relayed over
// UDP when the pair cannot punch. Where either side's UDP is blocked, the TCP
// simultaneous open connects the pair unless the other side's NAT is symmetric (it maps
// the punch to a port nobody predicted): direct to a public peer, punched otherwise, and
// the relay over TCP against a symmetric NAT. Unknown NATs predict a punch: ICE tries,
// and the relay stands by. This is the one table: the NAT lab's call matrix holds the
// client to it.
func PredictPath(a, b callsig.NAT) string {
	ca, cb := normClassic(a), normClassic(b)
	switch {
	case ca == "udp-blocked" || cb == "udp-blocked":
		other := cb
		if cb == "udp-blocked" {
			other = ca
		}
		switch other {
		case "symmetric":
			return PathRelayTCP
		case "open":
			return PathDirect
		}
		return PathPunched
	case ca == "open" || cb == "open" || ca == "full cone" || cb == "full cone":
		return PathDirect
	case ca == "symmetric" && cb == "symmetric":
		return PathRelayUDP
	case ca == "symmetric" || cb == "symmetric":
		other := cb
		if cb == "symmetric" {
			other = ca
		}
		if other == "restricted cone" {
			return PathPunched
		}
		if other == "port-restricted cone" {
			return PathRelayUDP
		}
		return PathPunched
	default:
		return PathPunched
	}
}

func normClassic(n callsig.NAT) string {
	if n.UDPBlocked {
		return "udp-blocked"
	}
	switch n.Classic {
	case "udp blocked", "udp-blocked":
		return "udp-blocked"
	}
	return n.Classic
}

// leg is this side's half of a call's transport: an ICE agent for the direct and punched
// paths, and a TURN allocation on our supernode's relay with a plain UDP socket for the
// relayed ones.
type leg struct {
	p           *phone
	log         *slog.Logger
	callID      string
	controlling bool
	nat         callsig.NAT
	ephPriv     []byte
	ephPub      []byte
	agent       *ice.Agent
	ufrag, pwd  string
	udpBlocked  bool

	mu         sync.Mutex // mu protects the following fields
	cands      []string   // local ICE candidates gathered so far
	gathered   bool
	relayAddr  string        // our relayed transport address, once allocated
	grew       chan struct{} // closed when cands, gathered or relayAddr change; nil = nobody waits
	relayTCP   bool
	publicIPs  []string
	turnClient *turn.Client
	turnConn   net.PacketConn // the socket (or TCP stream) under turnClient
	alloc      net.PacketConn
	plain      net.PacketConn
	remoteSet  bool
	remote     remoteInfo
	session    *media.Session
	relayPaths bool
	closed     bool
	iceStarted bool   // the punch timing said go
	tcpPort    int    // our TCP punch port, 0 = no TCP mapping
	tcpMapped  string // its mapping, as the relay saw it
	tcpStarted bool
	onLocal    func(callsig.Msg) // sends our trickled candidates and relays to the peer, in order
	urgent     func(callsig.Msg) // sends at once, past the queue: the punch timing

	iceOnce sync.Once
	pingAt  time.Time       // caller: when the last punch ping went out (real time)
	pongs   int             // caller: punch pongs received
	bestRTT time.Duration   // caller: the shortest signalling round trip seen
	ctx     context.Context // the leg's own work stops with it
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// remoteInfo is what the peer told us so far.
type remoteInfo struct {
	nat        callsig.NAT
	ufrag, pwd string
	relays     []string
	public     []string
	tcp        string
}

func randomString(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}

// newLeg gathers this side's candidates and allocates on the relay, in the background;
// onLocal is called with every candidate or relay found after the first signal was built.
// peerNAT is the peer's NAT class as far as known ("" = not yet).
func (p *phone) newLeg(ctx context.Context, callID string, controlling bool, peerNAT string, onLocal, urgent func(callsig.Msg)) (*leg, error) {
	priv := make([]byte, 32)
	rand.Read(priv)
	pub, err := x25519.X25519(priv, x25519.Basepoint)
	if err != nil {
		return nil, err
	}
	nat := p.net.natStatus()
	sn := p.net.supernode()
	l := &leg{
		p: p, log: p.log.With("call", callID[:8]), callID: callID, controlling: controlling,
		nat:     callsig.NAT{Classic: nat.Classic, Mapping: string(nat.Mapping), Filtering: string(nat.Filtering), UDPBlocked: nat.UDPBlocked},
		ephPriv: priv, ephPub: pub, ufrag: randomString(16), pwd: randomString(32),
		udpBlocked: nat.UDPBlocked, onLocal: onLocal, urgent: urgent,
	}
	l.ctx, l.cancel = context.WithCancel(ctx)
	ctx = l.ctx
	if ip, _, err := net.SplitHostPort(nat.MappedAddr); err == nil {
		l.publicIPs = append(l.publicIPs, ip)
	}
	var urls []*stun.URI
	if sn.stun != "" && !l.udpBlocked {
		if u, err := stun.ParseURI("stun:" + sn.stun); err == nil {
			urls = append(urls, u)
		}
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	zero := time.Duration(0)
	// A host pair that works (a LAN) is taken at once; a reflexive one waits a moment
	// for a host pair to prove itself, so two hosts behind a hairpinning NAT talk over
	// their LAN rather than through the NAT.
	reflexiveWait := 250 * time.Millisecond
	// Checks every 40 ms, each pair tried for 4 s: the peer's checks come a round trip and
	// a trickled candidate later, and on slow links pion's default (7 requests) gives up
	// on a pair before the other NAT has opened.
	check := 40 * time.Millisecond
	maxReq := uint16(100)
	keepalive := 300 * time.Millisecond
	disc, failed := 3*time.Second, 15*time.Second
	stunWait := 2 * time.Second
	cfg := &ice.AgentConfig{
		Urls:                   urls,
		LocalUfrag:             l.ufrag,
		LocalPwd:               l.pwd,
		NetworkTypes:           []ice.NetworkType{ice.NetworkTypeUDP4},
		CandidateTypes:         []ice.CandidateType{ice.CandidateTypeHost, ice.CandidateTypeServerReflexive},
		MulticastDNSMode:       ice.MulticastDNSModeDisabled,
		IncludeLoopback:        p.cfg.Loopback,
		CheckInterval:          &check,
		MaxBindingRequests:     &maxReq,
		KeepaliveInterval:      &keepalive,
		DisconnectedTimeout:    &disc,
		FailedTimeout:          &failed,
		HostAcceptanceMinWait:  &zero,
		SrflxAcceptanceMinWait: &reflexiveWait,
		PrflxAcceptanceMinWait: &reflexiveWait,
		STUNGatherTimeout:      &stunWait,
		LoggerFactory:          lf,
		Net:                    p.net.iceNet(),
	}
	if l.udpBlocked {
		cfg.CandidateTypes = []ice.CandidateType{ice.CandidateTypeHost}
	}
	if !p.cfg.Loopback {
		cfg.IPFilter = func(ip net.IP) bool { return !ip.IsLoopback() }
	}
	agent, err := ice.NewAgent(cfg)
	if err != nil {
		return nil, fmt.Errorf("ice: %w", err)
	}
	l.agent = agent
	if err := agent.OnCandidate(l.onCandidate); err != nil {
		agent.Close()
		return nil, err
	}
	if err := agent.GatherCandidates(); err != nil {
		agent.Close()
		return nil, fmt.Errorf("ice gather: %w", err)
	}
	// The TCP punch serves only where UDP is blocked on either side: learn the mapping
	// for it only then (it costs a connection to the relay).
	if sn.turn != "" && p.net.iceNet() == nil && (l.udpBlocked || normClassic(callsig.NAT{Classic: peerNAT}) == "udp-blocked") {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.gatherTCP(ctx, sn.turn)
		}()
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		if err := l.allocate(ctx, sn); err != nil {
			l.log.Warn("no relay for this call", "err", err)
			p.m.Inc("call_relay_failed")
		}
	}()
	return l, nil
}

// onCandidate collects gathered ICE candidates; once the first signal is out, each new
// one is trickled to the peer.
func (l *leg) onCandidate(cand ice.Candidate) {
	l.mu.Lock()
	if cand == nil {
		l.gathered = true
		l.grewLocked()
		l.mu.Unlock()
		return
	}
	s := cand.Marshal()
	l.log.Debug("local candidate", "cand", s)
	l.cands = append(l.cands, s)
	l.grewLocked()
	send := l.onLocal
	if cand.Type() == ice.CandidateTypeServerReflexive {
		if ip := cand.Address(); ip != "" && !slices.Contains(l.publicIPs, ip) {
			l.publicIPs = append(l.publicIPs, ip)
		}
	}
	l.mu.Unlock()
	if send != nil {
		send(callsig.Msg{T: callsig.TCandidate, Call: l.callID, Cands: []string{s}})
	}
}

// grewLocked wakes a firstSignal waiting for what this side has to offer; l.mu is held.
func (l *leg) grewLocked() {
	if l.grew != nil {
		close(l.grew)
		l.grew = nil
	}
}

// firstSignal fills m (an invite or accept) with what this side has now: ICE credentials,
// the candidates gathered within wait, the relay if already allocated. It waits, up to
// wait by the client's clock, for the gathering to end or for a candidate and the relay
// to be there; every candidate, the end of the gathering and the allocation wake it
// (grew), so it goes out the moment it has enough. What comes later is trickled.
func (l *leg) firstSignal(ctx context.Context, m *callsig.Msg, wait time.Duration) {
	deadline := l.p.clk.NewTimer(wait)
	defer deadline.Stop()
waiting:
	for {
		l.mu.Lock()
		ready := l.gathered || (len(l.cands) > 0 && l.relayAddr != "")
		if !ready && l.grew == nil {
			l.grew = make(chan struct{})
		}
		grew := l.grew
		l.mu.Unlock()
		if ready {
			break
		}
		select {
		case <-grew:
		case <-deadline.Chan():
			break waiting
		case <-ctx.Done():
			break waiting
		}
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	nat := l.nat
	m.NAT = &nat
	m.Ufrag, m.Pwd, m.Eph = l.ufrag, l.pwd, l.ephPub
	m.Cands = append([]string(nil), l.cands...)
	if len(m.Cands) > callsig.MaxCands {
		m.Cands = m.Cands[:callsig.MaxCands]
	}
	if l.relayAddr != "" {
		m.Relays = []string{l.relayAddr}
	}
	m.Public = publicList(l.publicIPs)
	m.TCP = l.tcpMapped
}

func publicList(ips []string) []string {
	if len(ips) > callsig.MaxPublic {
		ips = ips[:callsig.MaxPublic]
	}
	return append([]string(nil), ips...)
}

// allocate gets TURN credentials for our supernode's relay from the login server and
// allocates a relayed address on it: over UDP, or over TCP when UDP is blocked.
func (l *leg) allocate(ctx context.Context, sn supernodeServices) error {
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	srv, err := l.relayServer(cctx, sn)
	if err != nil {
		return err
	}
	var conn net.PacketConn
	tcp := l.udpBlocked || srv.TCP
	if tcp {
		nc, err := l.p.net.dial(cctx, "tcp", srv.Addr)
		if err != nil {
			return err
		}
		conn = turn.NewSTUNConn(nc)
	} else {
		conn, err = l.p.net.listenPacket("udp4", ":0")
		if err != nil {
			return err
		}
	}
	lf := logging.NewDefaultLoggerFactory()
	lf.DefaultLogLevel = logging.LogLevelError
	tc, err := turn.NewClient(&turn.ClientConfig{
		TURNServerAddr: srv.Addr, STUNServerAddr: srv.Addr, Conn: conn,
		Username: srv.Username, Password: srv.Password, LoggerFactory: lf,
	})
	if err != nil {
		conn.Close()
		return err
	}
	server, _ := netip.ParseAddrPort(srv.Addr)
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		l.turnRead(tc, conn, server.Addr().Unmap(), server.Port())
	}()
	alloc, err := tc.Allocate()
	if err != nil {
		tc.Close()
		conn.Close()
		return fmt.Errorf("allocate: %w", err)
	}
	var plain net.PacketConn
	if !tcp {
		plain, err = l.p.net.listenPacket("udp4", ":0")
		if err != nil {
			alloc.Close()
			tc.Close()
			conn.Close()
			return err
		}
	}
	relayed := alloc.LocalAddr().String()
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		alloc.Close()
		tc.Close()
		conn.Close()
		if plain != nil {
			plain.Close()
		}
		return nil
	}
	l.turnClient, l.turnConn, l.alloc, l.plain, l.relayAddr, l.relayTCP = tc, conn, alloc, plain, relayed, tcp
	l.grewLocked()
	send := l.onLocal
	pub := publicList(l.publicIPs)
	l.mu.Unlock()
	l.p.m.Inc("call_relay_allocations")
	l.log.Debug("relay allocated", "relayed", relayed, "tcp", tcp)
	if send != nil {
		send(callsig.Msg{T: callsig.TCandidate, Call: l.callID, Relays: []string{relayed}, Public: pub})
	}
	l.maybeRelayPaths()
	return nil
}

// TURNServer is a TURN relay a client may use for its calls: any RFC 5766 server.
type TURNServer struct {
	Addr     string // host:port, UDP (and TCP on the same port)
	Username string
	Password string
	TCP      bool // reach it over TCP even when UDP works
}

// relayServer picks the relay for this call's allocation: one configured by hand
// (CallConfig.TURN), else the relay of the supernode we are attached to, else a
// standalone relay the login server knows, each with credentials from the login server.
func (l *leg) relayServer(ctx context.Context, sn supernodeServices) (TURNServer, error) {
	if len(l.p.cfg.TURN) > 0 {
		return l.p.cfg.TURN[0], nil
	}
	relay := ""
	if sn.turn != "" {
		relay = sn.id
	}
	creds, err := l.p.net.turnCredentials(ctx, relay)
	if err != nil {
		return TURNServer{}, fmt.Errorf("turn credentials: %w", err)
	}
	if len(creds) == 0 {
		return TURNServer{}, errors.New("no relay: the supernode runs none and the login server knows none")
	}
	cr := creds[0]
	addr := cr.Addr
	if relay != "" {
		addr = sn.turn
	}
	return TURNServer{Addr: addr, Username: cr.Username, Password: cr.Password}, nil
}

// setSession gives the leg the media session its paths go to, and the signal that sends
// trickled candidates.
func (l *leg) setSession(s *media.Session) {
	l.mu.Lock()
	l.session = s
	l.mu.Unlock()
	l.maybeRelayPaths()
}

// addRemote takes in what the peer signalled: ICE credentials and candidates, relays,
// public addresses. The first time credentials arrive, the ICE checks start.
func (l *leg) addRemote(m *callsig.Msg) {
	l.mu.Lock()
	if m.NAT != nil {
		l.remote.nat = *m.NAT
	}
	if m.Ufrag != "" && !l.remoteSet {
		l.remote.ufrag, l.remote.pwd, l.remoteSet = m.Ufrag, m.Pwd, true
	}
	for _, r := range m.Relays {
		if !slices.Contains(l.remote.relays, r) {
			l.remote.relays = append(l.remote.relays, r)
		}
	}
	for _, p := range m.Public {
		if !slices.Contains(l.remote.public, p) {
			l.remote.public = append(l.remote.public, p)
		}
	}
	if m.TCP != "" {
		l.remote.tcp = m.TCP
	}
	l.mu.Unlock()
	if m.TCP != "" {
		l.maybeTCP()
	}
	for _, s := range m.Cands {
		l.log.Debug("remote candidate", "cand", s)
		cand, err := ice.UnmarshalCandidate(s)
		if err != nil {
			l.p.m.Inc("call_bad_candidates")
			continue
		}
		if err := l.agent.AddRemoteCandidate(cand); err != nil {
			l.p.m.Inc("call_bad_candidates")
		}
	}
	if m.Punch != "" {
		l.onPunch(m.Punch)
	}
	l.maybeRelayPaths()
}

// punchTimeout is how long a side waits for the punch timing before checking anyway.
const punchTimeout = 3 * time.Second

// beginPunch starts the punch timing once both sides' ICE credentials are known: the
// caller sends the ping; the callee waits for "go". Either checks on its own if the
// timing does not complete.
//
// The round trips are measured in real time, as they are delays on the network; the
// waits they set (half the shortest, and the timeout) are the client's clock's.
func (l *leg) beginPunch() {
	l.mu.Lock()
	send := l.urgent
	if l.controlling {
		l.pingAt = time.Now()
	}
	l.mu.Unlock()
	if l.controlling && send != nil {
		send(callsig.Msg{T: callsig.TCandidate, Call: l.callID, Punch: callsig.PunchPing})
	}
	wait := punchTimeout
	if !l.controlling {
		wait = 2 * punchTimeout
	}
	l.startICEAfter(wait)
}

// punchRounds is how many pings the caller sends; the shortest round trip is the
// least delayed by queues, so half of it is the best guess of the one-way delay.
const punchRounds = 3

// onPunch takes one step of the punch timing.
func (l *leg) onPunch(step string) {
	l.mu.Lock()
	send := l.urgent
	var rtt time.Duration
	again := false
	if step == callsig.PunchPong && l.controlling && !l.pingAt.IsZero() {
		rtt = time.Since(l.pingAt)
		if l.pongs == 0 || rtt < l.bestRTT {
			l.bestRTT = rtt
		}
		l.pongs++
		if again = l.pongs < punchRounds; again {
			l.pingAt = time.Now()
		}
		rtt = l.bestRTT
	}
	l.mu.Unlock()
	if send == nil {
		return
	}
	switch {
	case step == callsig.PunchPing && !l.controlling:
		send(callsig.Msg{T: callsig.TCandidate, Call: l.callID, Punch: callsig.PunchPong})
	case step == callsig.PunchPong && again:
		send(callsig.Msg{T: callsig.TCandidate, Call: l.callID, Punch: callsig.PunchPing})
	case step == callsig.PunchPong && rtt > 0:
		send(callsig.Msg{T: callsig.TCandidate, Call: l.callID, Punch: callsig.PunchGo})
		l.log.Debug("punch timing", "signal_rtt", rtt.Round(time.Millisecond))
		l.startICEAfter(rtt / 2)
	case step == callsig.PunchGo && !l.controlling:
		l.startICE()
	}
}

// startICEAfter starts the checks after d, unless they started already or the leg ends.
func (l *leg) startICEAfter(d time.Duration) {
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		t := l.p.clk.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.Chan():
			l.startICE()
		case <-l.ctx.Done():
		}
	}()
}

// startICE starts the connectivity checks, once.
func (l *leg) startICE() {
	l.mu.Lock()
	ready := l.remoteSet && !l.closed
	if ready {
		l.iceStarted = true
	}
	l.mu.Unlock()
	if !ready {
		return
	}
	l.maybeTCP()
	l.iceOnce.Do(func() {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.runICE(l.ctx)
		}()
	})
}

// runICE runs the connectivity checks and, once a pair is selected, adds it to the
// session as the direct or punched path.
func (l *leg) runICE(ctx context.Context) {
	l.mu.Lock()
	ufrag, pwd := l.remote.ufrag, l.remote.pwd
	l.mu.Unlock()
	if d := l.p.cfg.TestHookDirectDelay; d > 0 && !l.p.sleep(ctx, d) {
		return
	}
	var conn *ice.Conn
	var err error
	start := time.Now() // for the log: how long pion's checks took, in real time
	if l.controlling {
		conn, err = l.agent.Dial(ctx, ufrag, pwd)
	} else {
		conn, err = l.agent.Accept(ctx, ufrag, pwd)
	}
	if err != nil {
		if ctx.Err() == nil {
			l.log.Info("no direct path", "err", err)
		}
		l.p.m.Inc("call_ice_failed")
		return
	}
	pair, err := l.agent.GetSelectedCandidatePair()
	kind, rank := PathPunched, rankPunched
	name := "ice"
	if err == nil && pair != nil {
		name = fmt.Sprintf("ice %s %s -> %s %s", pair.Local.Type(), net.JoinHostPort(pair.Local.Address(), fmt.Sprint(pair.Local.Port())),
			pair.Remote.Type(), net.JoinHostPort(pair.Remote.Address(), fmt.Sprint(pair.Remote.Port())))
		l.mu.Lock()
		rnat := l.remote.nat
		l.mu.Unlock()
		if directKind(pair.Local.Type(), pair.Remote.Type(), l.nat, rnat) {
			kind, rank = PathDirect, rankDirect
		}
	}
	l.log.Info("ice connected", "path", kind, "pair", name, "after", time.Since(start).Round(time.Millisecond))
	l.p.m.Inc("call_ice_connected")
	l.addPath(kind, name, conn, rank)
}

// addPath hands a path that came up to the media session, which owns it from then on.
func (l *leg) addPath(kind, name string, p media.Path, rank int) {
	l.mu.Lock()
	s := l.session
	l.mu.Unlock()
	if s == nil {
		p.Close()
		return
	}
	s.AddPath(media.PathKind(kind), name, p, rank)
}

// directKind says whether an ICE pair is a direct path rather than a punched one: host
// to host (a LAN, or both public), or one side needing no punch (open or full cone).
func directKind(local, remote ice.CandidateType, a, b callsig.NAT) bool {
	if local == ice.CandidateTypeHost && remote == ice.CandidateTypeHost {
		return true
	}
	return PredictPath(a, b) == PathDirect
}

// maybeRelayPaths adds the relayed paths once both our allocation and the peer's relayed
// address are known:
//   - via the peer's relay: our plain UDP socket <-> the peer's relayed address;
//   - via our relay: our allocation <-> whatever address of the peer sends to it (the
//     peer's plain socket, through any NAT, since TURN permissions are per IP).
//
// When either side's UDP is blocked there is no plain socket, and the one path is relay
// to relay: our allocation <-> the peer's relayed address.
func (l *leg) maybeRelayPaths() {
	l.mu.Lock()
	if l.relayPaths || l.closed || l.session == nil || l.alloc == nil || len(l.remote.relays) == 0 {
		l.mu.Unlock()
		return
	}
	l.relayPaths = true
	s, alloc, plain, tc, tcp := l.session, l.alloc, l.plain, l.turnClient, l.relayTCP
	peerRelay, err := net.ResolveUDPAddr("udp4", l.remote.relays[0])
	remote := l.remote
	l.mu.Unlock()
	if err != nil {
		return
	}
	remoteBlocked := normClassic(remote.nat) == "udp-blocked"
	var perms []net.Addr
	allowed := map[netip.Addr]bool{}
	for _, p := range append(append([]string(nil), remote.public...), peerRelay.IP.String()) {
		ip, err := netip.ParseAddr(p)
		if err != nil || allowed[ip] {
			continue
		}
		allowed[ip] = true
		perms = append(perms, &net.UDPAddr{IP: ip.AsSlice(), Port: 9})
	}
	if err := tc.CreatePermission(perms...); err != nil {
		l.log.Warn("relay permissions", "err", err)
	}
	if tcp || remoteBlocked || plain == nil {
		kind := PathRelayUDP
		if tcp || remoteBlocked {
			kind = PathRelayTCP
		}
		s.AddPath(media.PathKind(kind), "relay to relay "+l.relayAddr+" <-> "+peerRelay.String(),
			&allocPath{pc: alloc, allowed: allowed, target: peerRelay, fixed: true, hook: l.p.cfg.TestHookRelayed}, rankRelayTCP)
		return
	}
	hook := l.p.cfg.TestHookRelayed
	s.AddPath(PathRelayUDP, "via peer relay "+peerRelay.String(), &plainPath{pc: plain, peer: peerRelay, hook: hook}, rankRelayUDP)
	s.AddPath(PathRelayUDP, "via own relay "+l.relayAddr, &allocPath{pc: alloc, allowed: allowed, hook: hook}, rankRelayOwn)
}

// close releases everything the leg holds and waits for its goroutines.
func (l *leg) close() {
	l.mu.Lock()
	l.closed = true
	alloc, plain, tc, tconn := l.alloc, l.plain, l.turnClient, l.turnConn
	l.onLocal, l.urgent = nil, nil
	l.mu.Unlock()
	l.cancel()
	l.agent.Close()
	if alloc != nil {
		alloc.Close()
	}
	if plain != nil {
		plain.Close()
	}
	if tc != nil {
		tc.Close()
	}
	if tconn != nil {
		tconn.Close()
	}
	l.wg.Wait()
}

// turnRead is the TURN client's read loop, in place of pion's Client.Listen, which ends
// at the first datagram it cannot handle: a STUN request from anyone, such as the ICE
// check a peer whose private addresses are ours sends to its host candidate, which is
// this machine; the relayed path would die with it. Here a datagram that does not come
// from the relay is dropped and counted (turn_stray), one the client cannot handle is
// counted (turn_bad) and the loop goes on; it ends when conn is closed.
func (l *leg) turnRead(tc *turn.Client, conn net.PacketConn, ip netip.Addr, port uint16) {
	buf := make([]byte, 64<<10)
	for {
		n, from, err := conn.ReadFrom(buf)
		if err != nil {
			return
		}
		if ua, ok := from.(*net.UDPAddr); ok && ip.IsValid() {
			if a := ua.AddrPort(); a.Addr().Unmap() != ip || a.Port() != port {
				l.p.m.Inc("turn_stray")
				continue
			}
		}
		if _, err := tc.HandleInbound(buf[:n], from); err != nil {
			l.p.m.Inc("turn_bad")
			l.log.Debug("relay datagram not handled", "from", from, "err", err)
		}
	}
}

// plainPath is our plain UDP socket talking to the peer's relayed address.
type plainPath struct {
	pc   net.PacketConn
	peer *net.UDPAddr
	hook func([]byte)
}

func (p *plainPath) Read(b []byte) (int, error) {
	for {
		n, from, err := p.pc.ReadFrom(b)
		if err != nil {
			return 0, err
		}
		if u, ok := from.(*net.UDPAddr); ok && u.IP.Equal(p.peer.IP) && u.Port == p.peer.Port {
			return n, nil
		}
	}
}

func (p *plainPath) Write(b []byte) (int, error) {
	if p.hook != nil {
		p.hook(b)
	}
	return p.pc.WriteTo(b, p.peer)
}
func (p *plainPath) Close() error { return p.pc.Close() }

// allocPath is our relay allocation talking to the peer: to the address the peer last
// sent from (its plain socket, as its NAT maps it), or to a fixed address (the peer's
// relayed address, relay to relay).
type allocPath struct {
	pc      net.PacketConn
	allowed map[netip.Addr]bool // the peer's IPs; read-only
	fixed   bool
	hook    func([]byte)

	mu     sync.Mutex
	target net.Addr
}

func (p *allocPath) Read(b []byte) (int, error) {
	for {
		n, from, err := p.pc.ReadFrom(b)
		if err != nil {
			return 0, err
		}
		u, ok := from.(*net.UDPAddr)
		if !ok {
			continue
		}
		ip, _ := netip.AddrFromSlice(u.IP)
		if !p.allowed[ip.Unmap()] {
			continue
		}
		if !p.fixed {
			p.mu.Lock()
			p.target = from
			p.mu.Unlock()
		}
		return n, nil
	}
}

func (p *allocPath) Write(b []byte) (int, error) {
	p.mu.Lock()
	t := p.target
	p.mu.Unlock()
	if t == nil {
		return len(b), nil // the peer has not reached our relay yet; the probe is lost
	}
	if p.hook != nil {
		p.hook(b)
	}
	return p.pc.WriteTo(b, t)
}

func (p *allocPath) Close() error { return p.pc.Close() }
