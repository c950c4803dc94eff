// Package supernode runs a Peerline supernode: a well-connected node that clients attach
// to. It registers with the login server (which admits it, with the operator's admission
// secret or, for a promoted client, after dialling it back, and signs its supernode
// credential), heartbeats so that it stays in host-cache seeds and follows the member list,
// accepts clients' control connections, checks their credentials offline, and serves STUN
// for NAT detection. Together the supernodes hold the user index (overlay.go): signed
// records on R holders of a consistent-hash ring, one-hop lookups with caching, presence
// watches, and the forwarding of end-to-end encrypted messages.
//
// Trust runs both ways on an attachment: the key the client proved in the overlay
// handshake (secure.OverlayIdentity) must be the one its user credential names, and the
// supernode's the one in its supernode credential; both credentials are signed by the
// login server whose key everyone pins.
// Between supernodes the same holds with supernode credentials on both sides.
package supernode

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sort"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/peerline/peerline/internal/backoff"
	"github.com/peerline/peerline/internal/clocks"
	"github.com/peerline/peerline/internal/dht"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/ratelog"
	"github.com/peerline/peerline/internal/rpc"
	"github.com/peerline/peerline/internal/secure"
	"github.com/peerline/peerline/internal/serve"
	"github.com/peerline/peerline/internal/stunsrv"
	"github.com/peerline/peerline/internal/version"
)

// Config configures a Supernode. Key, Listener, Advertise, LoginAddr and LoginKey are
// required.
type Config struct {
	Key ed25519.PrivateKey // the supernode's identity key
	// Listener accepts clients' and other supernodes' control connections. Run owns it
	// and closes it when it returns; until Run is called (and when New fails) it is the
	// caller's.
	Listener    net.Listener
	Name        string            // shown in credentials and logs; "" = "sn-" + start of the key
	Advertise   string            // host:port clients dial, as listed in host caches
	LoginAddr   string            // host:port of the login server
	LoginKey    ed25519.PublicKey // the login server's pinned key
	AdmitSecret string            // the login server's supernode admission secret (infrastructure supernodes)
	// UserCredential admits a promoted client instead of AdmitSecret: the user's own
	// credential for Key; the login server dials Advertise back before it admits.
	UserCredential []byte
	// Overload says whether the supernode is overloaded with this many clients (nil =
	// never). Overload is answered by shedding (see admission.go); the supernode demotes
	// itself (hands off its records and leaves the ring) only when Overload held at every
	// maintenance tick for OverloadWindow, the layer is not short of supernodes nor
	// shrinking, and the others have headroom for its clients (see demotion.go).
	Overload func(clients int) bool
	// OverloadWindow is how long overload must last before a demotion is considered;
	// 0 = 10 minutes.
	OverloadWindow time.Duration
	// MaxAttached is how many clients are attached at most; Attach beyond it is answered
	// busy with less loaded supernodes to try. 0 = MaxClients*9/10, so that the listener
	// (MaxClients) rarely has to shed connections unanswered.
	MaxAttached int
	// AttachConcurrency is how many attachments may be in progress (from Attach to the
	// answer to the client's first publication) at once; more are answered busy.
	// 0 = max(16, 8 x GOMAXPROCS).
	AttachConcurrency int
	// TestHookForward, if set, sees every end-to-end message this supernode handles, as
	// it handles it (tests check that supernodes see only ciphertext).
	TestHookForward func(*proto.Deliver)
	Dialer          secure.Dialer // nil = &net.Dialer{}
	KeepAlive       time.Duration // how often clients should ping; a client silent for 3 periods is dropped; 0 = 20s
	MaxClients      int           // connections (clients and other supernodes) at once, more are shed; 0 = 5000
	// The admission policy of the control listener (package serve): no source takes more
	// than its share, and a connection that has not attached (or, from another supernode,
	// said hello) soon is closed.
	PerAddr   int // connections at once from one address; 0 = max(MaxClients/100, 16)
	PerPrefix int // connections at once from one /24 (IPv4) or /64 (IPv6); 0 = max(MaxClients/25, 4*PerAddr)
	Reserve   int // of MaxClients, slots only sources that authenticated within the last hour get; 0 = MaxClients/10
	// AuthTimeout closes a connection that has not attached or said hello this long after
	// it was accepted; 0 = 15s, negative = never.
	AuthTimeout time.Duration
	Replicas    int           // holders of each user record; 0 = 3
	CacheTTL    time.Duration // how long lookup results are cached here; 0 = 5s, negative = off
	SuspectTime time.Duration // how long an unreachable member is left out of holder sets; 0 = 10s
	// MaxPeers caps the connections kept to other supernodes; 0 = 128 plus two for each
	// attached client. The records of a supernode's clients are held by as many other
	// supernodes as it has clients (their names hash anywhere on the ring), and as many
	// supernodes publish to it, so that a fixed cap below that closes connections that
	// the next keep-alive period dials again, one handshake per publication.
	MaxPeers int
	// PeerIdle closes a connection to another supernode that carried nothing for this
	// long; 0 = 2×KeepAlive, so the holders this supernode publishes to every period
	// stay connected.
	PeerIdle time.Duration
	// NoMesh sends watches, presence pushes, publications and departures straight to
	// each peer, dialling it if need be, instead of through a contact when no
	// connection to it is open (see callVia). The mesh is on by default; the simulation
	// turns it off (PEERLINE_SIM_NOMESH=1) to measure what it saves.
	NoMesh bool
	// JSONOnly makes the supernode speak as one from before binary bodies (package
	// proto): JSON only, and a binary frame ends the connection. For tests of networks
	// that mix versions; false: binary bodies with every peer that reads them.
	JSONOnly bool
	// NoTickets makes the supernode one from before session tickets: it neither issues
	// them nor resumes sessions with them (a resuming client gets the XX handshake).
	// For tests of networks that mix versions.
	NoTickets bool
	// LookupHedge is how long a lookup waits for one holder before it asks the next as
	// well, so that one slow or dead holder does not stall it; 0 = 250ms.
	LookupHedge time.Duration
	// STUN are the sockets of the RFC 5780 STUN service clients use to detect their NAT:
	// [0] the primary address (required for the service), and either all of [1..3]
	// (same IP other port, other IP same port, other IP other port) or none. Zero = no
	// STUN service. The supernode owns and closes them.
	STUN [4]net.PacketConn
	// NewRelay makes a TURN relay beside the supernode, keyed with the secret the login
	// server hands this supernode at admission; the supernode runs it inside its Run.
	// The program that composes the roles provides it (cmd/peerline/compose.Relay builds
	// package relay's), so that this package knows the relay only by the interface it
	// declares. nil, or a login server that hands out no secret, = no relay.
	NewRelay func(RelayParams) (Relay, error)
	// RelayIP is the IP clients reach the relay at; the zero value = Advertise's.
	RelayIP netip.Addr
	Logger  *slog.Logger     // nil = slog.Default()
	Metrics *metrics.Set     // nil = a fresh set
	Now     func() time.Time // nil = Clock's
	// Clock runs the index's timers and tells its time (internal/dht); nil = the real
	// clock, telling Now's time if Now is set.
	Clock clockwork.Clock
}

// Supernode is one running supernode.
type Supernode struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics.Set
	id    string
	since time.Time
	ident *secure.OverlayIdentity // for every overlay connection, accepted or dialled
	// tickets seal the session tickets attached clients resume with; nil = none
	// (NoTickets).
	tickets *secure.TicketKeys
	creds   *identity.Cache // credentials seen (attachments, hellos, records), signature checked
	ov      *overlay
	ix      *dht.Node       // the user index (overlay.go)
	clk     clockwork.Clock // cfg.Clock, or the real clock
	// runCtx is Run's context, for work that outlives a request (set before serving).
	runCtx context.Context
	demote context.CancelFunc // ends Run: overload demotion
	gate   *serve.Gate        // admission to the control listener
	adm    *admission         // admission of attachments (admission.go)

	mu         sync.Mutex // mu protects the following fields
	cred       []byte     // supernode credential; nil until admitted
	credIssued time.Time
	credExp    time.Time
	registered bool
	clients    map[string]*client // by user name
	relay      Relay              // the TURN relay, once started
	relayWG    sync.WaitGroup     // the relay's Run, for Run to wait on
	turnAddr   string             // its address as clients reach it
	overSince  time.Time          // when the current overload began; zero = not overloaded
}

type client struct {
	name     string
	conn     *rpc.Conn
	since    time.Time
	lastSeen time.Time
	rec      *index.Record // the user's latest record, nil until published
	raw      []byte        // and its signed bytes
	offline  bool          // the user published a signed log-off
}

// ErrNotAdmitted is returned by Run when the login server refuses the admission secret.
var ErrNotAdmitted = errors.New("supernode: the login server refused admission (check --admit-secret)")

// New checks cfg and returns a supernode.
func New(cfg Config) (*Supernode, error) {
	if len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("supernode: Config.Key is required")
	}
	if cfg.Listener == nil {
		return nil, errors.New("supernode: Config.Listener is required")
	}
	if err := proto.ValidAddr(cfg.Advertise); err != nil {
		return nil, fmt.Errorf("supernode: advertised address: %w", err)
	}
	if cfg.LoginAddr == "" || len(cfg.LoginKey) != ed25519.PublicKeySize {
		return nil, errors.New("supernode: the login server's address and key are required")
	}
	id := identity.EncodeKey(cfg.Key.Public().(ed25519.PublicKey))
	if cfg.Name == "" {
		cfg.Name = "sn-" + id[:8]
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{}
	}
	if cfg.KeepAlive <= 0 {
		cfg.KeepAlive = 20 * time.Second
	}
	if cfg.MaxClients <= 0 {
		cfg.MaxClients = 5000
	}
	if cfg.MaxAttached <= 0 || cfg.MaxAttached > cfg.MaxClients {
		cfg.MaxAttached = max(1, cfg.MaxClients*9/10)
	}
	if cfg.AttachConcurrency <= 0 {
		cfg.AttachConcurrency = defaultConcurrency()
	}
	if cfg.OverloadWindow <= 0 {
		cfg.OverloadWindow = 10 * time.Minute
	}
	if cfg.Replicas <= 0 {
		cfg.Replicas = 3
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = 5 * time.Second
	}
	if cfg.SuspectTime <= 0 {
		cfg.SuspectTime = 10 * time.Second
	}
	if cfg.PeerIdle <= 0 {
		cfg.PeerIdle = 2 * cfg.KeepAlive
	}
	if cfg.LookupHedge <= 0 {
		cfg.LookupHedge = 250 * time.Millisecond
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = &metrics.Set{}
	}
	// A flood of bad requests must not become a flood of log lines: each message is
	// bounded, and logged once per interval for one source (counted as log_suppressed).
	// The relay and STUN service log through the same limits.
	cfg.Logger = ratelog.Wrap(cfg.Logger, cfg.Metrics)
	cfg.Clock = clocks.Pick(cfg.Clock, cfg.Now)
	if cfg.Now == nil {
		cfg.Now = cfg.Clock.Now
	}
	ident, err := secure.NewOverlayIdentity(cfg.Key)
	if err != nil {
		return nil, err
	}
	sn := &Supernode{
		cfg:     cfg,
		log:     cfg.Logger.With("sn", cfg.Name),
		m:       cfg.Metrics,
		id:      id,
		since:   cfg.Now().UTC().Truncate(time.Millisecond), // its incarnation too: see repair
		ident:   ident,
		clk:     cfg.Clock,
		creds:   identity.NewCache(cfg.LoginKey, 0),
		clients: make(map[string]*client),
		runCtx:  context.Background(),
		adm:     newAdmission(cfg.AttachConcurrency),
		gate: serve.NewGate(serve.Config{
			Max: cfg.MaxClients, PerAddr: cfg.PerAddr, PerPrefix: cfg.PerPrefix, Reserve: cfg.Reserve,
			AuthTimeout: cfg.AuthTimeout, Counter: cfg.Metrics, Now: cfg.Now, Clock: cfg.Clock,
			// Clients take a reset for busy and move on: the cheapest shed.
			ResetShed: true,
		}),
	}
	if !cfg.NoTickets {
		sn.tickets = secure.NewTicketKeys(cfg.Now)
		ident.ResumeTickets(sn.tickets)
	}
	sn.initOverlay()
	return sn, nil
}

// Relay is the TURN relay a supernode runs beside itself. Config.NewRelay returns it
// listening, so that a port in use is an error of NewRelay; the supernode then calls Run
// once, with its own Run's context, and waits for it to return before its own Run does.
type Relay interface {
	Addr() netip.AddrPort // the address it listens on, over UDP and TCP
	// Run serves until ctx ends, and returns once the relay's sockets are closed and its
	// goroutines have ended.
	Run(ctx context.Context) error
}

// RelayParams is what a supernode gives the relay it starts.
type RelayParams struct {
	Secret  []byte          // the login server's, for this supernode: the relay's credentials
	Logger  *slog.Logger    // the supernode's, for the relay
	Metrics *metrics.Set    // the supernode's: the relay counts into it
	Clock   clockwork.Clock // the supernode's
}

// startRelay starts the TURN relay with the secret from the login server, once, and runs
// it until Run's context ends. It is called from Run's registration loop, so that the
// relay's Run has begun before Run waits for it.
func (sn *Supernode) startRelay(secret []byte) error {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	ctx := sn.runCtx
	if sn.relay != nil || sn.cfg.NewRelay == nil || ctx.Err() != nil {
		return nil
	}
	srv, err := sn.cfg.NewRelay(RelayParams{Secret: secret, Logger: sn.log.With("role", "relay"), Metrics: sn.m, Clock: sn.clk})
	if err != nil {
		return err
	}
	host, _, _ := net.SplitHostPort(sn.cfg.Advertise)
	if sn.cfg.RelayIP.IsValid() {
		host = sn.cfg.RelayIP.String()
	}
	sn.relay, sn.turnAddr = srv, net.JoinHostPort(host, fmt.Sprint(srv.Addr().Port()))
	sn.relayWG.Go(func() {
		if err := srv.Run(ctx); err != nil {
			// Clients are no longer told of a relay that stopped serving; the next
			// admission starts another.
			sn.log.Warn("TURN relay stopped", "err", err)
			sn.mu.Lock()
			if sn.relay == srv {
				sn.relay, sn.turnAddr = nil, ""
			}
			sn.mu.Unlock()
		}
	})
	sn.log.Info("TURN relay up", "addr", sn.turnAddr)
	return nil
}

// TURNAddr is the relay's address as clients reach it, "" when there is none.
func (sn *Supernode) TURNAddr() string {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	return sn.turnAddr
}

// Relay is the supernode's TURN relay, nil when there is none.
func (sn *Supernode) Relay() Relay {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	return sn.relay
}

// ID is the supernode's public key, as host caches name it.
func (sn *Supernode) ID() string { return sn.id }

// Metrics returns the supernode's counters.
func (sn *Supernode) Metrics() *metrics.Set { return sn.m }

// Run serves clients on Config.Listener and keeps the supernode registered with the login
// server until ctx ends, or the supernode demotes itself. It returns ErrNotAdmitted if
// the login server refuses it, and returns only once every goroutine it started (the
// relay's and the STUN service's among them) has ended, with the listener closed.
func (sn *Supernode) Run(ctx context.Context) error {
	ln := sn.cfg.Listener
	defer ln.Close() // the gate closes it once ctx ends; this, on a return before (no STUN service)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	sn.mu.Lock()
	sn.runCtx = ctx
	sn.mu.Unlock()
	sn.demote = cancel
	defer sn.ov.peers.closeAll()
	// The relay runs on ctx: cancelled below, it stops, and Run waits for it.
	defer func() {
		sn.relayWG.Wait()
		sn.mu.Lock()
		sn.relay, sn.turnAddr = nil, ""
		sn.mu.Unlock()
	}()
	// Run returns only once every goroutine it started has: registered after the
	// deferred closes above, this runs before them.
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	wg.Go(func() { sn.maintain(ctx) })
	wg.Go(func() { sn.ix.Run(ctx) })
	wg.Go(func() { sn.ov.peers.janitor(ctx) })
	if sn.cfg.STUN[0] != nil {
		srv, err := stunsrv.New(stunsrv.Config{Conns: sn.cfg.STUN, Software: "peerline", Logger: sn.log, Metrics: sn.m})
		if err != nil {
			return fmt.Errorf("supernode: STUN service: %w", err)
		}
		defer srv.Close()
		wg.Go(func() { srv.Serve(ctx) })
	}
	serveErr := make(chan error, 1)
	go func() { serveErr <- sn.gate.Serve(ctx, ln, sn.serveConn) }()
	if err := sn.registerLoop(ctx); err != nil {
		cancel()
		<-serveErr
		return err
	}
	return <-serveErr
}

// registerLoop registers, heartbeats, and registers again after any failure, with
// jittered exponential back-off. Clients already attached keep being served meanwhile:
// their credentials are checked offline.
func (sn *Supernode) registerLoop(ctx context.Context) error {
	var bo backoff.Backoff
	for ctx.Err() == nil {
		err := sn.registerOnce(ctx)
		if errors.Is(err, ErrNotAdmitted) {
			return err
		}
		if ctx.Err() != nil {
			return nil
		}
		sn.m.Inc("login_failures")
		sn.log.Warn("login server connection lost; retrying", "err", err)
		sn.mu.Lock()
		sn.registered = false
		sn.mu.Unlock()
		d := bo.Next()
		if pe, ok := proto.AsError(err); ok && errors.Is(err, proto.ErrBusy) {
			// The login server paces admissions: come back when it said.
			sn.m.Inc("register_busy")
			d = max(d, pe.RetryAfter())
		}
		if !backoff.Sleep(ctx.Done(), d) {
			return nil
		}
		if err == nil {
			bo.Reset()
		}
	}
	return nil
}

func (sn *Supernode) registerOnce(ctx context.Context) error {
	cfg, err := secure.ClientConfig(sn.cfg.Key, secure.PinnedKey(sn.cfg.LoginKey))
	if err != nil {
		return err
	}
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	tc, err := secure.Dial(dctx, sn.cfg.Dialer, sn.cfg.LoginAddr, cfg)
	cancel()
	if err != nil {
		return err
	}
	c := rpc.New(tc, rpc.Options{Logger: sn.log, Counter: sn.m})
	runDone := make(chan struct{})
	// The connection outlives ctx by the moment leave needs to say goodbye on it.
	go func() { c.Run(context.WithoutCancel(ctx)); close(runDone) }()
	defer func() { c.Close(); <-runDone }()

	interval, err := sn.register(ctx, c)
	if err != nil {
		return err
	}
	// Member lists are fetched beside the heartbeats, not between them: a fetch that is
	// slow (a thousand supernodes joining at once) must not delay a heartbeat past the
	// three the login server waits for, or it drops us and every member refetches.
	syncCtx, stopSync := context.WithCancel(ctx)
	want := make(chan uint64, 1)
	syncDone := make(chan struct{})
	go func() { defer close(syncDone); sn.syncLoop(syncCtx, c, want) }()
	defer func() { stopSync(); <-syncDone }()
	t := sn.clk.NewTicker(interval)
	defer t.Stop()
	late := 0 // heartbeats unanswered in a row on an open connection
	for {
		if err := sn.heartbeat(ctx, c, want); err != nil {
			if ctx.Err() != nil {
				// Stopped while the heartbeat was out: leave all the same, or the login
				// server takes the closing connection for a crash.
				sn.leave(c)
				return nil
			}
			// A login server too busy to answer in time is not gone: dropping the
			// connection would make it register us again, on top of its load, and the
			// whole layer does the same at once. Three unanswered in a row is gone.
			if !errors.Is(err, context.DeadlineExceeded) || late >= 2 {
				return err
			}
			late++
			sn.m.Inc("heartbeats_late")
			sn.log.Warn("heartbeat unanswered; the login server is slow", "err", err, "in_a_row", late)
		} else {
			late = 0
		}
		sn.mu.Lock()
		renew := sn.credExp.Sub(sn.clk.Now()) < sn.credExp.Sub(sn.credIssued)/2
		sn.mu.Unlock()
		if renew {
			if _, err := sn.register(ctx, c); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			sn.leave(c)
			return nil
		case <-c.Done():
			return c.Err()
		case <-t.Chan():
		}
	}
}

// leave demotes the supernode in order: its records go to their next holders first, then
// the login server takes it off the member list, so lookups move on without a gap.
func (sn *Supernode) leave(c *rpc.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	n := sn.ix.HandOff(ctx)
	if _, err := c.Call(ctx, &proto.SNLeave{}); err != nil {
		sn.log.Warn("leave: login server not told", "err", err)
	}
	sn.m.Inc("leaves")
	sn.log.Info("left the supernode layer", "records_handed", n)
}

func (sn *Supernode) register(ctx context.Context, c *rpc.Conn) (time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ok, err := rpc.Call[*proto.SNRegisterOK](cctx, c, &proto.SNRegister{
		Name: sn.cfg.Name, Addr: sn.cfg.Advertise, Since: sn.since, AdmitSecret: sn.cfg.AdmitSecret,
		UserCredential: sn.cfg.UserCredential,
	})
	if errors.Is(err, proto.ErrNotAdmitted) {
		return 0, ErrNotAdmitted
	}
	if err != nil {
		return 0, fmt.Errorf("register: %w", err)
	}
	cred, err := identity.VerifyHolder(ok.Credential, sn.cfg.LoginKey, sn.cfg.Key.Public().(ed25519.PublicKey), identity.KindSupernode, sn.clk.Now())
	if err != nil {
		return 0, fmt.Errorf("login server gave an unusable credential: %w", err)
	}
	sn.mu.Lock()
	sn.cred, sn.credIssued, sn.credExp, sn.registered = ok.Credential, cred.Issued, cred.Expires, true
	sn.mu.Unlock()
	if len(ok.RelaySecret) > 0 {
		if err := sn.startRelay(ok.RelaySecret); err != nil {
			sn.log.Warn("no TURN relay", "err", err)
		}
	}
	sn.log.Info("admitted by the login server", "expires", cred.Expires)
	interval := time.Duration(ok.HeartbeatInterval) * time.Millisecond
	if interval < 10*time.Millisecond {
		interval = 10 * time.Millisecond // a bogus answer must not make us spin
	}
	return interval, nil
}

// heartbeat tells the login server this supernode lives, and passes the member list's
// version it answers with to the sync loop.
func (sn *Supernode) heartbeat(ctx context.Context, c *rpc.Conn, want chan uint64) error {
	sn.mu.Lock()
	n := len(sn.clients)
	sn.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	peers, err := rpc.Call[*proto.SNPeers](cctx, c, &proto.SNHeartbeat{Addr: sn.cfg.Advertise, Since: sn.since, Clients: n, MaxClients: sn.cfg.MaxAttached})
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	sn.adm.setLoads(peers.Supernodes, peers.Layer, sn.clk.Now())
	select { // only the latest version matters
	case <-want:
	default:
	}
	want <- peers.Version
	return nil
}

// syncLoop brings the member list up to each version the heartbeats report, one fetch at
// a time, until ctx ends. A failed fetch is retried at the next heartbeat; a dead
// connection is the heartbeat's to notice.
func (sn *Supernode) syncLoop(ctx context.Context, c *rpc.Conn, want <-chan uint64) {
	for {
		select {
		case <-ctx.Done():
			return
		case v := <-want:
			if err := sn.syncMembers(ctx, c, v); err != nil && ctx.Err() == nil {
				sn.m.Inc("member_sync_failures")
				sn.log.Warn("member list not fetched", "err", err)
			}
		}
	}
}

// credential returns the supernode credential, nil until admitted.
func (sn *Supernode) credential() []byte {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	return sn.cred
}

// ClientCount reports the clients attached now.
func (sn *Supernode) ClientCount() int {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	return len(sn.clients)
}

// Registered reports whether the login server has admitted the supernode.
func (sn *Supernode) Registered() bool {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	return sn.registered
}

// Status is a snapshot for operators and tests.
type Status struct {
	Role       string                `json:"role"` // "supernode"
	Version    string                `json:"version"`
	RingSize   int                   `json:"ring_size"`
	Records    int                   `json:"records"`
	PeerConns  int                   `json:"peer_conns"` // connections to other supernodes
	ID         string                `json:"id"`
	Name       string                `json:"name"`
	Addr       string                `json:"addr"`
	Since      time.Time             `json:"since"`
	Registered bool                  `json:"registered"`
	Clients    []string              `json:"clients"`
	Peers      []proto.SupernodeInfo `json:"peers"`
	Counters   map[string]uint64     `json:"counters"`
	Load       LoadStatus            `json:"load"`
}

// LoadStatus is the supernode's load against its admission bounds, and what it knows of
// the layer.
type LoadStatus struct {
	Attached          int       `json:"attached"`           // clients attached now
	MaxAttached       int       `json:"max_attached"`       // the admission limit
	Attaching         int       `json:"attaching"`          // attachments in progress
	AttachConcurrency int       `json:"attach_concurrency"` // their limit
	OverloadedSince   time.Time `json:"overloaded_since,omitzero"`
	LayerSize         int       `json:"layer_size,omitempty"`   // from the login server
	LayerWanted       int       `json:"layer_wanted,omitempty"` // 0 = no target
	Headroom          int       `json:"headroom"`               // clients the less loaded supernodes it knows could take
}

// Status returns a snapshot of the supernode's state.
func (sn *Supernode) Status() Status {
	sn.mu.Lock()
	st := Status{Role: "supernode", Version: version.String(), ID: sn.id, Name: sn.cfg.Name, Addr: sn.cfg.Advertise, Since: sn.since,
		Registered: sn.registered}
	for name := range sn.clients {
		st.Clients = append(st.Clients, name)
	}
	st.Load = LoadStatus{Attached: len(sn.clients), MaxAttached: sn.cfg.MaxAttached, OverloadedSince: sn.overSince,
		Attaching: sn.adm.attaching(), AttachConcurrency: sn.cfg.AttachConcurrency}
	sn.mu.Unlock()
	layer := sn.Layer()
	st.Load.LayerSize, st.Load.LayerWanted, st.Load.Headroom = layer.LayerSize, layer.LayerWanted, sn.headroom()
	sort.Strings(st.Clients)
	st.Counters = sn.m.Snapshot()
	st.RingSize = sn.RingSize()
	st.Peers = sn.Peers()
	st.Records = sn.ix.Store().Len()
	st.PeerConns = sn.PeerConns()
	return st
}

// PeerConns reports the connections to other supernodes open or being dialled now.
func (sn *Supernode) PeerConns() int {
	sn.ov.peers.mu.Lock()
	defer sn.ov.peers.mu.Unlock()
	return len(sn.ov.peers.conns)
}
