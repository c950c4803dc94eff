package loginsrv

import (
	"context"
	"crypto/ed25519"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math/bits"
	"math/rand/v2"
	"net"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/peerline/peerline/internal/clocks"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/ratelog"
	"github.com/peerline/peerline/internal/rpc"
	"github.com/peerline/peerline/internal/secure"
	"github.com/peerline/peerline/internal/serve"
	"github.com/peerline/peerline/internal/turncred"
)

// Config configures a Server. Key, Store and Listener are required.
type Config struct {
	Key ed25519.PrivateKey // signs credentials and authenticates the server
	// Listener accepts the control connections of clients and supernodes. Run owns it and
	// closes it when it returns; until Run is called (and when New fails) it is the
	// caller's.
	Listener          net.Listener
	Store             Store         // accounts, buddies, supernodes
	Hasher            *Hasher       // nil = NewHasher(DefaultArgon2Params, 0)
	AdmitSecret       string        // supernodes must present it to register; "" = refuse all
	CredentialTTL     time.Duration // lifetime of user and supernode credentials; 0 = 24h
	HeartbeatInterval time.Duration // asked of supernodes; one unheard for 3 intervals (and one per doubling of the layer) leaves the seed; 0 = 10s
	SeedSize          int           // supernodes in a host-cache seed; 0 = 200
	MaxConns          int           // connections served at once, more are shed; 0 = 10000
	// The admission policy (package serve): no source takes more than its share, and a
	// connection that has not logged in soon is closed, so that one address or one block
	// of addresses cannot fill the server while real users are shut out.
	PerAddr   int // connections at once from one address; 0 = max(MaxConns/100, 16)
	PerPrefix int // connections at once from one /24 (IPv4) or /64 (IPv6); 0 = max(MaxConns/25, 4*PerAddr)
	Reserve   int // of MaxConns, slots only sources that authenticated within the last hour get; 0 = MaxConns/10
	// AuthTimeout closes a connection that has not logged in, resumed or registered a
	// supernode this long after it was accepted (a registration does not count: it ends
	// well within it); 0 = 15s, negative = never.
	AuthTimeout time.Duration
	// IdleTimeout closes a connection that carried nothing for this long: clients open
	// another with their credential when they need one; supernodes heartbeat. 0 = 2
	// minutes, and never less than three heartbeat intervals.
	IdleTimeout  time.Duration
	FailsPerName int           // failed logins per name per FailWindow; 0 = 5
	FailsPerAddr int           // failed logins per source address per FailWindow; 0 = 20
	FailWindow   time.Duration // 0 = 1 minute
	Dialer       secure.Dialer // dials promoted supernodes back; nil = &net.Dialer{}
	NoPromotion  bool          // refuse to promote clients to supernodes
	// RelaySecret keys the TURN credentials the server issues: standalone relays (Relays)
	// share it, each supernode's relay gets its own secret derived from it at admission.
	// Empty = no TURN credentials are issued and supernodes run no relay.
	RelaySecret []byte
	Relays      []string      // host:port of standalone relays (peerline relay) sharing RelaySecret
	RelayTTL    time.Duration // lifetime of TURN credentials; 0 = 10 minutes
	// The supernode layer's target (layer.go): Wanted = max(MinSupernodes,
	// ceil(population / ClientsPerSupernode)); both 0 = no target, and clients promote
	// whenever eligible.
	ClientsPerSupernode int
	MinSupernodes       int
	PopulationWindow    time.Duration // the population is the peak within it; 0 = 10 minutes
	// Promotions of clients are admitted at PromotionsPerSecond (0 = 2) with bursts of
	// PromotionBurst (0 = 5); beyond it they are answered busy with a retry-after.
	PromotionsPerSecond float64
	PromotionBurst      int
	// MaxResumes bounds the resumes being answered at once (each reads and writes the
	// account's row); a resume waits up to ResumeWait for a turn and is then answered busy
	// with a retry-after (resumes_shed), so a reboot storm queues no deeper than this.
	// 0 = max(16, 8 x GOMAXPROCS); ResumeWait 0 = 1s.
	MaxResumes int
	ResumeWait time.Duration
	// SeenFlush is how often the last-seen times of logins and resumes, and the rows of
	// supernode registrations, are written, each kind in one batch; 0 = 5s.
	SeenFlush time.Duration
	Logger    *slog.Logger // nil = slog.Default()
	Metrics   *metrics.Set // nil = a fresh set
	// Clock runs the server's timers (the write-behind flushes, the wait for a resume's
	// turn, each connection's AuthTimeout) and tells its time: when credentials expire,
	// failures leave the rate limiters' windows, supernodes go unheard. nil = the real
	// clock, telling Now's time if Now is set. IdleTimeout is not on it: it is a deadline
	// on the socket, which only real time passes.
	Clock clockwork.Clock
	// Now tells the time for callers that give no Clock (its timers then run in real
	// time); with a Clock it is not read. nil = Clock's.
	Now func() time.Time
}

func (c *Config) setDefaults() error {
	if len(c.Key) != ed25519.PrivateKeySize {
		return errors.New("loginsrv: Config.Key is required")
	}
	if c.Store == nil {
		return errors.New("loginsrv: Config.Store is required")
	}
	if c.Listener == nil {
		return errors.New("loginsrv: Config.Listener is required")
	}
	if c.Hasher == nil {
		c.Hasher = NewHasher(DefaultArgon2Params, 0)
	}
	if c.CredentialTTL <= 0 {
		c.CredentialTTL = 24 * time.Hour
	}
	if c.PopulationWindow <= 0 {
		c.PopulationWindow = 10 * time.Minute
	}
	if c.MaxResumes <= 0 {
		c.MaxResumes = max(16, 8*runtime.GOMAXPROCS(0))
	}
	if c.ResumeWait <= 0 {
		c.ResumeWait = time.Second
	}
	if c.SeenFlush <= 0 {
		c.SeenFlush = 5 * time.Second
	}
	if c.PromotionsPerSecond <= 0 {
		c.PromotionsPerSecond = 2
	}
	if c.PromotionBurst <= 0 {
		c.PromotionBurst = 5
	}
	if c.RelayTTL <= 0 {
		c.RelayTTL = 10 * time.Minute
	}
	if c.HeartbeatInterval <= 0 {
		c.HeartbeatInterval = 10 * time.Second
	}
	if c.SeedSize <= 0 || c.SeedSize > proto.MaxList {
		c.SeedSize = proto.MaxList
	}
	if c.MaxConns <= 0 {
		c.MaxConns = 10000
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 2 * time.Minute
	}
	c.IdleTimeout = max(c.IdleTimeout, 3*c.HeartbeatInterval)
	if c.FailsPerName <= 0 {
		c.FailsPerName = 5
	}
	if c.FailsPerAddr <= 0 {
		c.FailsPerAddr = 20
	}
	if c.FailWindow <= 0 {
		c.FailWindow = time.Minute
	}
	if c.Dialer == nil {
		c.Dialer = &net.Dialer{}
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = &metrics.Set{}
	}
	// A flood of bad requests must not become a flood of log lines: each message is
	// bounded, and logged once per interval for one source (counted as log_suppressed).
	c.Logger = ratelog.Wrap(c.Logger, c.Metrics)
	c.Clock = clocks.Pick(c.Clock, c.Now)
	if c.Now == nil {
		c.Now = c.Clock.Now
	}
	return nil
}

// Server is a login server. Create it with New and run it with Run.
type Server struct {
	cfg      Config
	clk      clockwork.Clock // cfg.Clock: every timer and every reading of the time
	log      *slog.Logger
	m        *metrics.Set
	tls      *tls.Config
	ident    *secure.OverlayIdentity // dials promoted supernodes back, as the overlay does
	byName   *FailLimiter
	byAddr   *FailLimiter
	regLimit *FailLimiter
	members  *members
	gate     *serve.Gate
	// layerView is the supernode layer against its target, and the promotion bucket.
	layerView layerView
	resumes   chan struct{} // one per resume being answered
	writes    *writeBehind  // last-seen times and supernode rows not yet written
}

// New checks cfg and returns a server.
func New(cfg Config) (*Server, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	tc, err := secure.ServerConfig(cfg.Key, false)
	if err != nil {
		return nil, err
	}
	ident, err := secure.NewOverlayIdentity(cfg.Key)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:      cfg,
		clk:      cfg.Clock,
		log:      cfg.Logger,
		m:        cfg.Metrics,
		tls:      tc,
		ident:    ident,
		byName:   NewFailLimiter(cfg.FailsPerName, cfg.FailWindow, 100_000, cfg.Clock.Now),
		byAddr:   NewFailLimiter(cfg.FailsPerAddr, cfg.FailWindow, 100_000, cfg.Clock.Now),
		regLimit: NewFailLimiter(20, time.Minute, 100_000, cfg.Clock.Now),
		members:  newMembers(),
		resumes:  make(chan struct{}, cfg.MaxResumes),
		writes:   newWriteBehind(),
		gate: serve.NewGate(serve.Config{
			Max: cfg.MaxConns, PerAddr: cfg.PerAddr, PerPrefix: cfg.PerPrefix, Reserve: cfg.Reserve,
			AuthTimeout: cfg.AuthTimeout, Counter: cfg.Metrics, Clock: cfg.Clock,
		}),
	}
	s.members.left = func(info proto.SupernodeInfo, heard time.Time) {
		s.writes.noteSupernode(SupernodeRecord{ID: info.ID, Addr: info.Addr, Since: info.Since,
			LastHeartbeat: heard, Left: s.clk.Now()})
	}
	return s, nil
}

// restoreWindow bounds the rows a starting server lists again: the supernodes heard from
// this recently that had not left when the previous run stopped. A server down longer
// starts with an empty list, which the layer fills as it registers again.
const restoreWindow = 15 * time.Minute

// PublicKey is the key clients pin.
func (s *Server) PublicKey() ed25519.PublicKey { return s.cfg.Key.Public().(ed25519.PublicKey) }

// Metrics returns the server's counters.
func (s *Server) Metrics() *metrics.Set { return s.m }

// OpenConns reports the connections (clients and supernodes) open now.
func (s *Server) OpenConns() int { return s.gate.Open() }

// Hasher returns the password hasher (tests count its hashes).
func (s *Server) Hasher() *Hasher { return s.cfg.Hasher }

// Run accepts control connections on Config.Listener until ctx ends, then closes the
// listener and returns once every connection and every goroutine it started has ended.
// Last-seen times and supernode rows noted meanwhile are written every SeenFlush and
// once more at the end.
//
// It first lists again the supernodes that were on the list when a previous run stopped
// (or crashed, up to a SeenFlush before) and were heard from within restoreWindow: each
// stays until it goes unheard for the member timeout, as if it had just registered. A
// server that started with an empty list handed the first supernodes to register
// again a layer of one or two, which they took for the whole layer: every record
// re-homed onto them and lookups through them missed the users of the others.
func (s *Server) Run(ctx context.Context) error {
	ln := s.cfg.Listener
	defer ln.Close() // the gate closes it once ctx ends; this, when an accept error ends serving first
	s.restoreMembers(ctx)
	sctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); s.runWriteBehind(sctx) }()
	err := s.gate.Serve(ctx, ln, s.serveConn)
	stop()
	<-done
	return err
}

// restoreMembers lists again the supernodes the database says were listed lately.
func (s *Server) restoreMembers(ctx context.Context) {
	now := s.clk.Now()
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	rs, err := s.cfg.Store.Supernodes(rctx, now.Add(-restoreWindow), 100_000)
	cancel()
	if err != nil {
		s.log.Warn("supernode list not restored", "err", err)
		return
	}
	if n := s.members.restore(rs, now); n > 0 {
		s.m.Add("sn_restored", uint64(n))
		s.log.Info("supernode list restored from the database", "supernodes", n)
	}
}

func (s *Server) serveConn(ctx context.Context, nc net.Conn) {
	tc, key, err := secure.Accept(ctx, nc, s.tls)
	if err != nil {
		s.m.Inc("tls_errors")
		s.log.Debug("handshake failed", "remote", nc.RemoteAddr(), "err", err)
		return
	}
	sess := &session{s: s, remote: remoteHost(nc.RemoteAddr()), peerKey: key}
	c := rpc.New(tc, rpc.Options{
		Handler:     sess,
		IdleTimeout: s.cfg.IdleTimeout,
		Counter:     s.m,
		Logger:      s.log,
	})
	c.Run(ctx)
	// A supernode whose control connection closed is gone (a crashed process's kernel
	// closes it at once); it registers again when it reconnects. When this server is
	// what stops, the supernode stays listed in the database for the next run.
	sess.mu.Lock()
	id := sess.supernode
	sess.mu.Unlock()
	if id != "" && ctx.Err() == nil && s.members.remove(id, sess) {
		s.m.Inc("sn_disconnects")
	}
}

func remoteHost(a net.Addr) string {
	host, _, err := net.SplitHostPort(a.String())
	if err != nil {
		return a.String()
	}
	return host
}

// nameRE is the rule for user names: 3 to 32 characters, lower-case ASCII letters, digits,
// '.', '_' and '-', starting with a letter. Lower case only, so that "Alice" and "alice"
// cannot be two people.
var nameRE = regexp.MustCompile(`^[a-z][a-z0-9._-]{2,31}$`)

// ValidName reports whether name follows the user name rules.
func ValidName(name string) bool { return nameRE.MatchString(name) }

// MinPassword is the shortest password accepted at registration.
const MinPassword = 8

// session is the state of one control connection.
type session struct {
	s       *Server
	remote  string
	peerKey ed25519.PublicKey // nil if the client presented no certificate
	heard   atomic.Int64      // UnixNano (server clock) when the last request arrived

	mu        sync.Mutex // mu protects the following fields
	user      string     // authenticated user name
	supernode string     // registered supernode id
}

func (ss *session) supernodeID() string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.supernode
}

func (ss *session) authedUser() (string, error) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.user == "" {
		return "", proto.ErrUnauthenticated
	}
	return ss.user, nil
}

// Handle implements rpc.Handler.
func (ss *session) Handle(ctx context.Context, c *rpc.Conn, m proto.Message) (proto.Message, error) {
	s := ss.s
	ss.heard.Store(s.clk.Now().UnixNano())
	switch m := m.(type) {
	case *proto.Ping:
		return &proto.Pong{Seq: m.Seq}, nil
	case *proto.Register:
		return s.register(ctx, ss, m)
	case *proto.Login:
		return s.login(ctx, ss, m)
	case *proto.Resume:
		return s.resume(ctx, ss, m)
	case *proto.Seed:
		if _, err := ss.authedUser(); err != nil {
			return nil, err
		}
		seed, err := s.seed(ctx, "")
		return &proto.SeedOK{Supernodes: seed}, err
	case *proto.BuddyAdd, *proto.BuddyRemove, *proto.BuddyBlock, *proto.BuddyList, *proto.Directory:
		user, err := ss.authedUser()
		if err != nil {
			return nil, err
		}
		return s.userOp(ctx, user, m)
	case *proto.TurnCreds:
		user, err := ss.authedUser()
		if err != nil {
			return nil, err
		}
		return s.turnCreds(user, m)
	case *proto.SNRegister:
		return s.snRegister(ctx, ss, m)
	case *proto.SNHeartbeat:
		return s.snHeartbeat(ctx, ss, m)
	case *proto.Members:
		if ss.supernodeID() == "" {
			return nil, proto.ErrUnauthenticated.With("register the supernode first")
		}
		if m.Since != 0 {
			s.liveMembers()
			// A long list of changes goes as the whole list instead: it fits in pages.
			if v, changes, ok := s.members.since(m.Since); ok && len(changes) <= proto.MaxList {
				_, all := s.members.list()
				return &proto.MembersOK{Version: v, Delta: true, Changes: changes, Total: len(all)}, nil
			}
		}
		return s.membersPage(m.Offset, m.At), nil
	case *proto.SNLeave:
		if id := ss.supernodeID(); id != "" && s.members.remove(id, ss) {
			s.m.Inc("sn_leaves")
			s.log.Info("supernode left", "id", id)
		}
		return &proto.OK{}, nil
	}
	s.m.Inc("unexpected_messages")
	return nil, proto.ErrBadRequest.With("message type %d is not served by the login server", m.Type())
}

func (s *Server) register(ctx context.Context, ss *session, m *proto.Register) (proto.Message, error) {
	if ok, wait := s.regLimit.Allow(ss.remote); !ok {
		s.m.Inc("register_rate_limited")
		return nil, proto.ErrRateLimited.With("too many registrations from your address").WithRetry(wait)
	}
	if !ValidName(m.Name) {
		s.m.Inc("register_invalid")
		return nil, proto.ErrInvalidName.With("invalid user name %q: use 3-32 characters a-z 0-9 . _ -, starting with a letter", m.Name)
	}
	if len(m.Password) < MinPassword {
		s.m.Inc("register_invalid")
		return nil, proto.ErrWeakPassword.With("password must have at least %d characters", MinPassword)
	}
	if _, err := s.cfg.Store.User(ctx, m.Name); err == nil {
		s.m.Inc("register_exists")
		return nil, proto.ErrUserExists.With("the name %q is taken", m.Name)
	}
	hash, err := s.hash(ctx, func(ctx context.Context) ([]byte, error) { return s.cfg.Hasher.Hash(ctx, m.Password) })
	if err != nil {
		return nil, err
	}
	err = s.cfg.Store.CreateUser(ctx, User{Name: m.Name, PassHash: hash, Created: s.clk.Now()})
	if errors.Is(err, ErrUserExists) {
		s.m.Inc("register_exists")
		return nil, proto.ErrUserExists.With("the name %q is taken", m.Name)
	}
	if err != nil {
		return nil, fmt.Errorf("create user: %w", err)
	}
	s.regLimit.Fail(ss.remote) // counts registrations, not failures
	s.m.Inc("registrations")
	s.log.Info("registered", "user", m.Name, "from", ss.remote) // "from": not limited per source, as successes are not problems
	return &proto.OK{}, nil
}

// hash runs an argon2 operation under a deadline: when every slot stays busy that long the
// caller is told to come back later rather than queue without bound.
func (s *Server) hash(ctx context.Context, f func(context.Context) ([]byte, error)) ([]byte, error) {
	hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, err := f(hctx)
	if errors.Is(err, ErrBusy) {
		s.m.Inc("shed_busy")
		return nil, proto.ErrBusy.WithRetry(time.Second + rand.N(2*time.Second))
	}
	return out, err
}

func (s *Server) login(ctx context.Context, ss *session, m *proto.Login) (proto.Message, error) {
	if ss.peerKey == nil {
		return nil, proto.ErrBadRequest.With("login needs a client key: connect with a TLS client certificate")
	}
	for _, lim := range []struct {
		l   *FailLimiter
		key string
	}{{s.byName, "name:" + m.Name}, {s.byAddr, "addr:" + ss.remote}} {
		if ok, wait := lim.l.Allow(lim.key); !ok {
			s.m.Inc("login_rate_limited")
			return nil, proto.ErrRateLimited.WithRetry(wait)
		}
	}
	fail := func(counter string, e *proto.Error) (proto.Message, error) {
		s.byName.Fail("name:" + m.Name)
		s.byAddr.Fail("addr:" + ss.remote)
		s.m.Inc(counter)
		s.log.Info("login failed", "user", m.Name, "remote", ss.remote, "reason", e.Code)
		return nil, e
	}
	u, err := s.cfg.Store.User(ctx, m.Name)
	if errors.Is(err, ErrNoSuchUser) {
		// Spend the same work as a real check, so timing does not tell names apart
		// more than the directory already does.
		if _, err := s.hash(ctx, func(ctx context.Context) ([]byte, error) {
			s.cfg.Hasher.DummyVerify(ctx, m.Password)
			if err := ctx.Err(); err != nil {
				// Same answer as a real user's check under load: busy, not "no such user".
				return nil, fmt.Errorf("%w: %w", ErrBusy, err)
			}
			return nil, nil
		}); err != nil {
			return nil, err
		}
		return fail("login_unknown_user", proto.ErrNoSuchUser.With("no such user %q", m.Name))
	}
	if err != nil {
		return nil, fmt.Errorf("load user: %w", err)
	}
	var ok bool
	if _, err := s.hash(ctx, func(ctx context.Context) ([]byte, error) {
		var err error
		ok, err = s.cfg.Hasher.Verify(ctx, m.Password, u.PassHash)
		return nil, err
	}); err != nil {
		return nil, err
	}
	if !ok {
		return fail("login_wrong_password", proto.ErrWrongPassword)
	}
	s.byName.Reset("name:" + m.Name)
	s.m.Inc("logins")
	return s.issue(ctx, ss, m.Name, nil)
}

func (s *Server) resume(ctx context.Context, ss *session, m *proto.Resume) (proto.Message, error) {
	if ss.peerKey == nil {
		return nil, proto.ErrBadRequest.With("resume needs the client key the credential names")
	}
	cred, err := identity.VerifyHolder(m.Credential, s.PublicKey(), ss.peerKey, identity.KindUser, s.clk.Now())
	switch {
	case errors.Is(err, identity.ErrExpired):
		s.m.Inc("cred_expired")
		return nil, proto.ErrCredExpired
	case err != nil:
		s.m.Inc("cred_invalid")
		s.log.Info("bad credential", "remote", ss.remote, "err", err) // once per interval per source
		return nil, proto.ErrCredInvalid.With("%v", err)
	}
	// The signature was checked on this goroutine (cheap); the account's row is read and
	// written under the bound.
	if !s.resumeTurn(ctx) {
		s.m.Inc("resumes_shed")
		return nil, proto.ErrBusy.With("login server busy with resumes; retry later").WithRetry(time.Second + rand.N(2*time.Second))
	}
	defer func() { <-s.resumes }()
	if _, err := s.cfg.Store.User(ctx, cred.Name); errors.Is(err, ErrNoSuchUser) {
		s.m.Inc("cred_invalid")
		return nil, proto.ErrNoSuchUser.With("account %q no longer exists", cred.Name)
	} else if err != nil {
		return nil, err
	}
	s.m.Inc("resumes")
	keep := m.Credential
	if cred.Expires.Sub(s.clk.Now()) < s.cfg.CredentialTTL/2 {
		keep = nil // past half-life: renew
	}
	return s.issue(ctx, ss, cred.Name, keep)
}

// resumeTurn waits up to ResumeWait for one of the MaxResumes turns; false = none came.
func (s *Server) resumeTurn(ctx context.Context) bool {
	select {
	case s.resumes <- struct{}{}:
		return true
	default:
	}
	done := serve.Working(ctx) // waiting is serving: the auth deadline must not cut it
	defer done()
	t := s.clk.NewTimer(s.cfg.ResumeWait)
	defer t.Stop()
	select {
	case s.resumes <- struct{}{}:
		return true
	case <-t.Chan():
	case <-ctx.Done():
	}
	return false
}

// issue marks the session logged in as name and answers with a credential (a new one
// unless keep is given) and the host-cache seed.
func (s *Server) issue(ctx context.Context, ss *session, name string, keep []byte) (proto.Message, error) {
	now := s.clk.Now()
	credBytes := keep
	if credBytes == nil {
		var err error
		credBytes, err = identity.Sign(s.cfg.Key, identity.Credential{
			Kind: identity.KindUser, Name: name, PubKey: ss.peerKey,
			Issued: now, Expires: now.Add(s.cfg.CredentialTTL),
		})
		if err != nil {
			return nil, err
		}
		s.m.Inc("credentials_issued")
	}
	cred, err := identity.Parse(credBytes)
	if err != nil {
		return nil, err
	}
	s.writes.noteSeen(name, now)
	seed, err := s.seed(ctx, "")
	if err != nil {
		return nil, err
	}
	ss.mu.Lock()
	ss.user = name
	ss.mu.Unlock()
	serve.Authenticated(ctx)
	return &proto.LoginOK{Name: name, Credential: credBytes, Expires: cred.Expires, ServerTime: now, Seed: seed}, nil
}

// seed lists the live supernodes, longest-lived first, leaving out the one named except.
func (s *Server) seed(_ context.Context, except string) ([]proto.SupernodeInfo, error) {
	_, all := s.liveMembers()
	out := make([]proto.SupernodeInfo, 0, min(len(all), s.cfg.SeedSize))
	for _, m := range all {
		if m.ID == except {
			continue
		}
		if len(out) == s.cfg.SeedSize {
			break
		}
		out = append(out, m)
	}
	return out, nil
}

// MembersPage is how many supernodes one Members answer carries.
const MembersPage = proto.MaxList

// liveMembers drops supernodes not heard from for memberTimeout (at most ten times per
// heartbeat interval, so a crowd of heartbeats does not rescan the table each time) and
// returns the list.
func (s *Server) liveMembers() (uint64, []proto.SupernodeInfo) {
	now := s.clk.Now()
	if n := s.members.sweep(now, now.Add(-s.memberTimeout()), s.cfg.HeartbeatInterval/10); n > 0 {
		s.m.Add("sn_timeouts", uint64(n))
	}
	return s.members.list()
}

// memberTimeout is how long a supernode may go unheard before it leaves the list: three
// heartbeat intervals, and one more per doubling of the layer (as SWIM's suspicion
// timeout grows with log n). Each departure makes every supernode fetch the list and
// rebuild its ring, so the larger the layer, the dearer dropping a live member that was
// only late, and the likelier lateness is: a thousand supernodes heartbeating through
// one login server wait their turn. A supernode that crashed is dropped sooner anyway:
// its connection closes.
func (s *Server) memberTimeout() time.Duration {
	n := s.members.size()
	return time.Duration(3+bits.Len(uint(n))) * s.cfg.HeartbeatInterval
}

func (s *Server) membersPage(offset int, at uint64) *proto.MembersOK {
	version, all := s.liveMembers()
	if at != 0 && at != version {
		if old, ok := s.members.at(at); ok {
			version, all = at, old
		}
	}
	out := &proto.MembersOK{Version: version, Total: len(all)}
	if offset < len(all) {
		out.Members = append([]proto.SupernodeInfo(nil), all[offset:min(len(all), offset+MembersPage)]...)
	}
	return out
}

func (s *Server) userOp(ctx context.Context, user string, m proto.Message) (proto.Message, error) {
	st, now := s.cfg.Store, s.clk.Now()
	mapErr := func(err error, name string) error {
		if errors.Is(err, ErrNoSuchUser) {
			return proto.ErrNoSuchUser.With("no such user %q", name)
		}
		return err
	}
	switch m := m.(type) {
	case *proto.BuddyAdd:
		if m.Name == user {
			return nil, proto.ErrBadRequest.With("you cannot add yourself")
		}
		return nil, mapErr(st.AddBuddy(ctx, user, m.Name, now), m.Name)
	case *proto.BuddyRemove:
		return nil, mapErr(st.RemoveBuddy(ctx, user, m.Name), m.Name)
	case *proto.BuddyBlock:
		if m.Name == user {
			return nil, proto.ErrBadRequest.With("you cannot block yourself")
		}
		if _, err := st.User(ctx, m.Name); err != nil {
			return nil, mapErr(err, m.Name)
		}
		return nil, mapErr(st.SetBlocked(ctx, user, m.Name, m.Blocked, now), m.Name)
	case *proto.BuddyList:
		bs, err := st.Buddies(ctx, user)
		if err != nil {
			return nil, err
		}
		out := &proto.BuddyListOK{Buddies: make([]proto.Buddy, 0, len(bs))}
		for _, b := range bs {
			pb := proto.Buddy{Name: b.Name, Blocked: b.Blocked}
			if seen, ok := s.visibleLastSeen(ctx, b.Name, user); ok {
				pb.LastSeen = seen
			}
			out.Buddies = append(out.Buddies, pb)
		}
		return out, nil
	case *proto.Directory:
		s.m.Inc("directory_queries")
		return s.directory(ctx, user, m.Query)
	}
	return nil, proto.ErrBadRequest
}

// visibleLastSeen returns when name was last seen, unless name has blocked viewer.
func (s *Server) visibleLastSeen(ctx context.Context, name, viewer string) (time.Time, bool) {
	if blocked, err := s.cfg.Store.IsBlocked(ctx, name, viewer); err != nil || blocked {
		return time.Time{}, false
	}
	u, err := s.cfg.Store.User(ctx, name)
	if err != nil {
		return time.Time{}, false
	}
	if t, ok := s.writes.lastSeen(name); ok && t.After(u.LastSeen) {
		return t, true
	}
	return u.LastSeen, true
}

// MaxDirectoryResults bounds a prefix search.
const MaxDirectoryResults = 50

func (s *Server) directory(ctx context.Context, viewer, q string) (proto.Message, error) {
	prefix, isPrefix := strings.CutSuffix(q, "*")
	if isPrefix {
		if prefix == "" || !prefixRE.MatchString(prefix) {
			return nil, proto.ErrBadRequest.With("prefix search needs at least one character before '*', e.g. 'al*'")
		}
		users, err := s.cfg.Store.SearchUsers(ctx, prefix, MaxDirectoryResults)
		if err != nil {
			return nil, err
		}
		out := &proto.DirectoryOK{Results: make([]proto.DirEntry, 0, len(users))}
		for _, u := range users {
			e := proto.DirEntry{Name: u.Name}
			if seen, ok := s.visibleLastSeen(ctx, u.Name, viewer); ok {
				e.LastSeen = seen
			}
			out.Results = append(out.Results, e)
		}
		return out, nil
	}
	if !ValidName(q) {
		return &proto.DirectoryOK{}, nil // cannot exist
	}
	if _, err := s.cfg.Store.User(ctx, q); errors.Is(err, ErrNoSuchUser) {
		return &proto.DirectoryOK{}, nil
	} else if err != nil {
		return nil, err
	}
	e := proto.DirEntry{Name: q}
	if seen, ok := s.visibleLastSeen(ctx, q, viewer); ok {
		e.LastSeen = seen
	}
	return &proto.DirectoryOK{Results: []proto.DirEntry{e}}, nil
}

var prefixRE = regexp.MustCompile(`^[a-z][a-z0-9._-]{0,31}$`)

func (s *Server) snRegister(ctx context.Context, ss *session, m *proto.SNRegister) (proto.Message, error) {
	if ss.peerKey == nil {
		return nil, proto.ErrBadRequest.With("supernodes must present their key")
	}
	if len(m.UserCredential) > 0 {
		if err := s.admitPromoted(ctx, ss, m); errors.Is(err, proto.ErrBusy) {
			s.m.Inc("sn_promotions_paced")
			return nil, err
		} else if err != nil {
			s.m.Inc("sn_not_admitted")
			s.log.Warn("promotion refused", "remote", ss.remote, "addr", m.Addr, "err", err)
			return nil, err
		}
	} else if s.cfg.AdmitSecret == "" || subtle.ConstantTimeCompare([]byte(m.AdmitSecret), []byte(s.cfg.AdmitSecret)) != 1 {
		s.m.Inc("sn_not_admitted")
		s.log.Warn("supernode refused", "remote", ss.remote, "addr", m.Addr)
		return nil, proto.ErrNotAdmitted
	}
	now := s.clk.Now()
	cred, err := identity.Sign(s.cfg.Key, identity.Credential{
		Kind: identity.KindSupernode, Name: m.Name, PubKey: ss.peerKey,
		Issued: now, Expires: now.Add(s.cfg.CredentialTTL),
	})
	if err != nil {
		return nil, err
	}
	id := identity.EncodeKey(ss.peerKey)
	// The row is written behind (writebehind.go): a layer registering at once must not
	// queue on the database.
	s.writes.noteSupernode(SupernodeRecord{ID: id, Addr: m.Addr, Since: m.Since, FirstSeen: now, LastHeartbeat: now})
	ss.mu.Lock()
	ss.supernode = id
	ss.mu.Unlock()
	serve.Authenticated(ctx)
	s.members.upsert(proto.SupernodeInfo{ID: id, Addr: m.Addr, Since: m.Since}, ss, now)
	s.m.Inc("sn_registrations")
	s.log.Info("supernode admitted", "id", id, "advertised", m.Addr, "from", ss.remote)
	ok := &proto.SNRegisterOK{Credential: cred, HeartbeatInterval: s.cfg.HeartbeatInterval.Milliseconds()}
	if len(s.cfg.RelaySecret) > 0 {
		ok.RelaySecret = turncred.Derive(s.cfg.RelaySecret, id)
	}
	return ok, nil
}

// turnCreds issues short-lived TURN credentials to a logged-in user: for one
// supernode's relay, or for every standalone relay.
func (s *Server) turnCreds(user string, m *proto.TurnCreds) (proto.Message, error) {
	if len(s.cfg.RelaySecret) == 0 {
		return nil, proto.ErrRefused.With("this login server issues no relay credentials")
	}
	now := s.clk.Now()
	var ok proto.TurnCredsOK
	if m.Relay != "" {
		if !s.members.has(m.Relay) {
			return nil, proto.ErrRefused.With("no live supernode %s", m.Relay)
		}
		u, p, exp := turncred.New(turncred.Derive(s.cfg.RelaySecret, m.Relay), user, s.cfg.RelayTTL, now)
		ok.Creds = append(ok.Creds, proto.TurnCred{Relay: m.Relay, Username: u, Password: p, Expires: exp})
	} else {
		for _, addr := range s.cfg.Relays {
			u, p, exp := turncred.New(s.cfg.RelaySecret, user, s.cfg.RelayTTL, now)
			ok.Creds = append(ok.Creds, proto.TurnCred{Addr: addr, Username: u, Password: p, Expires: exp})
		}
	}
	s.m.Inc("turn_credentials")
	return &ok, nil
}

func (s *Server) snHeartbeat(ctx context.Context, ss *session, m *proto.SNHeartbeat) (proto.Message, error) {
	ss.mu.Lock()
	id := ss.supernode
	ss.mu.Unlock()
	if id == "" {
		return nil, proto.ErrUnauthenticated.With("register the supernode first")
	}
	// Heartbeats reach the database only behind (one row per supernode per SeenFlush,
	// in one transaction): what a restarted server lists again (Run).
	now := s.clk.Now()
	s.members.upsert(proto.SupernodeInfo{ID: id, Addr: m.Addr, Since: m.Since}, ss, now)
	s.writes.noteSupernode(SupernodeRecord{ID: id, Addr: m.Addr, Since: m.Since, FirstSeen: now, LastHeartbeat: now})
	s.members.setLoad(id, m.Clients, m.MaxClients)
	s.m.Inc("sn_heartbeats")
	version, _ := s.liveMembers()
	least, layer := s.layer()
	others := make([]proto.SupernodeInfo, 0, len(least))
	for _, o := range least {
		if o.ID != id {
			others = append(others, o)
		}
	}
	return &proto.SNPeers{Version: version, Supernodes: others, Layer: layer}, nil
}

// admitPromoted checks a client's request to become a supernode: a valid user credential
// for the key of this connection, an account that still exists, and a node at the
// advertised address that proves the same key when the login server dials it. Dialling
// back is what keeps a node behind a NAT, or one naming someone else's address, out of
// host caches.
func (s *Server) admitPromoted(ctx context.Context, ss *session, m *proto.SNRegister) error {
	if s.cfg.NoPromotion {
		return proto.ErrNotAdmitted.With("this login server does not promote clients")
	}
	cred, err := identity.VerifyHolder(m.UserCredential, s.PublicKey(), ss.peerKey, identity.KindUser, s.clk.Now())
	if err != nil {
		return proto.ErrNotAdmitted.With("promotion needs your own valid credential: %v", err)
	}
	if !s.members.has(identity.EncodeKey(ss.peerKey)) {
		// A new supernode: only into a layer that is short, and at the paced rate.
		if _, l := s.layer(); l.LayerWanted > 0 && !l.Short() {
			s.m.Inc("sn_promotions_unneeded")
			return proto.ErrNotAdmitted.With("the supernode layer is full (%d of %d wanted)", l.LayerSize, l.LayerWanted)
		}
		if ok, wait := s.pacePromotion(); !ok {
			return proto.ErrBusy.With("promotions are admitted at %.3g per second", s.cfg.PromotionsPerSecond).WithRetry(wait)
		}
	}
	if _, err := s.cfg.Store.User(ctx, cred.Name); err != nil {
		return proto.ErrNotAdmitted.With("no account %q", cred.Name)
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tc, err := s.ident.DialOverlay(dctx, s.cfg.Dialer, m.Addr, secure.PinnedKey(ss.peerKey))
	if err != nil {
		s.m.Inc("sn_dialback_failed")
		return proto.ErrNotAdmitted.With("could not reach you at %s: %v", m.Addr, err)
	}
	tc.Close()
	s.m.Inc("sn_promotions")
	s.log.Info("client promoted to supernode", "user", cred.Name, "addr", m.Addr)
	return nil
}
