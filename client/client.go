// Package client is Peerline's client node: the long-running process of one user.
//
// It logs in (or resumes with an unexpired credential, which costs the login server no
// password hash), keeps a host cache of supernodes, attaches to one supernode by trying
// several in parallel and keeping the first that answers, keeps the attachment alive with
// pings, refreshes its host cache from its supernode, and reattaches to another supernode
// from the cache within seconds when its supernode dies. Every retry backs off
// exponentially with jitter and spends from one retry budget that all reconnect paths
// share; a busy answer's retry-after is honoured and the less loaded supernodes it names
// are tried first (attach.go). A control socket in the data directory lets the peerline
// commands (status, buddy, search) drive the running client.
package client

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	transport "github.com/pion/transport/v3"

	"github.com/peerline/peerline/hostcache"
	"github.com/peerline/peerline/internal/atomicfile"
	"github.com/peerline/peerline/internal/backoff"
	"github.com/peerline/peerline/internal/clocks"
	"github.com/peerline/peerline/internal/ctl"
	"github.com/peerline/peerline/internal/datadir"
	"github.com/peerline/peerline/internal/e2ee"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
	"github.com/peerline/peerline/internal/secure"
)

// Files kept in the data directory (internal/datadir names them for every role).
const (
	KeyFile        = datadir.KeyFile
	CredentialFile = datadir.CredentialFile
	HostCacheFile  = datadir.HostCacheFile
	BuddiesFile    = datadir.BuddiesFile
	BoxKeyFile     = datadir.BoxKeyFile
	SeqFile        = datadir.SeqFile
	NATFile        = datadir.NATFile
	SessionsFile   = datadir.SessionsFile
	SocketFile     = datadir.SocketFile
)

// Config configures a Client. DataDir and Login are required.
type Config struct {
	DataDir string      // holds the key, the credential, the host cache and the control socket
	Login   LoginServer // the login server and its pinned key
	// User is the account to log in as. "" = the user of the saved credential.
	User string
	// Password is asked only when no valid credential is saved. nil = fail with
	// ErrNeedPassword in that case.
	Password        func(ctx context.Context) (string, error)
	Dialer          secure.Dialer // nil = &net.Dialer{}
	ParallelAttach  int           // supernodes tried at once when attaching; 0 = 3
	Prefer          string        // a supernode address tried before the host cache ranking; "" = none
	KeepAlive       time.Duration // ping period; 0 = what the supernode asks for
	RefreshInterval time.Duration // host-cache refresh from the supernode; 0 = 5 minutes
	RetryBase       time.Duration // first back-off ceiling; 0 = 200ms
	RetryMax        time.Duration // largest back-off ceiling; 0 = 30s
	// LoginIdle closes the connection to the login server once it has carried nothing
	// for this long; the next request resumes a new one with the saved credential. The
	// login server pushes nothing, so a client needs it only at login, at renewal and
	// for buddy and directory requests: a population kept connected would hold one
	// connection per user there. 0 = 20s.
	LoginIdle time.Duration
	// The retry budget that every reconnect path (login, attach, reattach) shares
	// (backoff.Budget): a retry spends a token, a success gives one back, time gives
	// RetryPerSecond back; with none left the client waits RetryMax before each retry.
	RetryBurst     float64 // tokens the budget holds, and starts with; 0 = 10
	RetryPerSecond float64 // tokens given back per second; 0 = 0.1
	NoControl      bool    // do not open the control socket
	// JSONOnly makes the client speak to its supernode as one from before binary bodies
	// (package proto) would: JSON only. For tests of networks that mix versions.
	JSONOnly bool
	Events   chan<- Event // presence changes and messages; nil = none; dropped when full
	// ListenPacket opens the UDP sockets of NAT detection and of relayed calls; nil =
	// net.ListenPacket.
	ListenPacket func(network, addr string) (net.PacketConn, error)
	// Net is the network a call's ICE agent gathers candidates and runs its checks on
	// (pion/transport/v3); nil = the machine's. With an in-process network
	// (internal/memnet's Host.TransportV3), Dialer and ListenPacket must be the same
	// network's; the TCP hole punch, which needs the kernel's simultaneous open, is not
	// tried there.
	Net        transport.Net
	NATTimeout time.Duration    // per NAT test; 0 = 2s
	Promote    PromoteConfig    // when to become a supernode
	Call       CallConfig       // placing and answering calls
	Logger     *slog.Logger     // nil = slog.Default()
	Metrics    *metrics.Set     // nil = a fresh set
	Now        func() time.Time // nil = Clock's
	// Clock runs the client's timers (keep-alives, retries and their back-off, the
	// refreshes, the renewal of the credential, the timers of a call's set-up) and tells
	// its time; nil = the real clock, telling Now's time if Now is set. A test that
	// passes a fake clock drives the client's protocol by advancing it. The ICE agents
	// and TURN clients of calls, the media sessions and socket deadlines keep to real
	// time.
	Clock clockwork.Clock
}

// Errors.
var (
	ErrNeedPassword = errors.New("client: no valid saved credential, and no password given (set PEERLINE_PASSWORD or run interactively)")
	ErrNoUser       = errors.New("client: no user name given and no saved credential")
)

// Client is one user's running node.
type Client struct {
	cfg   Config
	clk   clockwork.Clock // cfg.Clock, or the real clock
	log   *slog.Logger
	m     *metrics.Set
	key   ed25519.PrivateKey
	ident *secure.OverlayIdentity // key, for the overlay's connections
	box   e2ee.BoxKey
	cache *hostcache.Cache
	saver cacheSaver

	sessMu      sync.Mutex // sessMu protects sessions
	sessions    []session  // saved session tickets, the newest first (sessions.go)
	sessDirty   bool       // sessions changed since SessionsFile was written
	sessWriteMu sync.Mutex // one writer of SessionsFile at a time
	checkedCred []byte     // the user credential SessionsFile says was checked (New only)

	phone  *phone         // the calls, with their own lock (phone.go)
	login  loginLoop      // keeps the credential fresh while Run runs
	lsWG   sync.WaitGroup // the readers of connections to the login server
	budget *backoff.Budget
	// loginSem serialises logins: the login loop's and the ones loginCall makes when
	// the connection to the login server has closed, so that a restarted client costs
	// the login server one resume, not one per path that needs the server.
	loginSem chan struct{}
	callBo   backoff.Backoff // of the logins loginCall makes; used under loginSem
	seq      recordSeq       // with a lock of its own: saving it does not hold mu

	mu           sync.Mutex // mu protects the following fields
	user         string
	cred         []byte
	credInfo     identity.Credential
	attached     *attachment
	attaches     int
	lastErr      string               // the last login or attach error, "" once resolved
	lastErrAt    time.Time            // when lastErr happened; Status hides it after lastErrorAge
	attachErr    bool                 // lastErr is an attach error: the next attachment resolves it
	lsConn       *rpc.Conn            // authenticated connection to the login server, reused
	loginRetry   time.Time            // a login failed: no other path logs in before this
	busyUntil    map[string]time.Time // supernodes that answered busy (or shed), by address
	loggedInCh   chan struct{}
	buddies      []string             // buddies to watch (not blocked)
	blocked      []string             // names this user blocked
	buddiesKnown bool                 // buddies and blocked were read (from the login server or the saved list)
	buddiesRead  time.Time            // when the list was last read from the login server (saved: the file's time)
	presence     map[string]*Presence // by buddy name
	inbox        []Event
	natClassic   string
	nat          NATStatus
	promotion    PromotionStatus
	layer        proto.Layer   // the supernode layer against its target, as the supernode said
	sn           SupernodeRole // the supernode role, while promoted
	crashed      bool          // Crash was called: no goodbye
}

// Crash makes the client fall silent at once, as a killed process would: its connections
// close without a signed log-off. Tests use it to check how the overlay notices. Run
// still has to be stopped through its context.
func (c *Client) Crash() {
	c.mu.Lock()
	c.crashed = true
	a, ls := c.attached, c.lsConn
	c.mu.Unlock()
	if a != nil {
		a.conn.Close()
	}
	if ls != nil {
		ls.Close()
	}
}

type attachment struct {
	conn  *rpc.Conn
	addr  string
	id    string
	name  string
	since time.Time
	at    time.Time
	keep  time.Duration
	stun  string // the supernode's STUN service, "" if none
	turn  string // the supernode's TURN relay, "" if none

	// What resumes the session next time (sessions.go): the supernode's ticket, the
	// secret it seals and the supernode credential checked.
	ticket, secret, cred []byte
	resumed              bool // the saved ticket resumed this session
}

// New prepares a client: it loads or creates the key, the saved credential and the host
// cache. Nothing touches the network until Run.
func New(cfg Config) (*Client, error) {
	if cfg.DataDir == "" {
		return nil, errors.New("client: Config.DataDir is required")
	}
	if cfg.Login.Addr == "" || len(cfg.Login.Key) != ed25519.PublicKeySize {
		return nil, errors.New("client: the login server's address and key are required")
	}
	if cfg.Dialer == nil {
		cfg.Dialer = &net.Dialer{}
	}
	if cfg.ParallelAttach <= 0 {
		cfg.ParallelAttach = 3
	}
	if cfg.LoginIdle <= 0 {
		cfg.LoginIdle = 20 * time.Second
	}
	cfg.Promote.setDefaults()
	if cfg.ListenPacket == nil {
		cfg.ListenPacket = defaultListenPacket
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = 5 * time.Minute
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = &metrics.Set{}
	}
	cfg.Clock = clocks.Pick(cfg.Clock, cfg.Now)
	if cfg.Now == nil {
		cfg.Now = cfg.Clock.Now
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, err
	}
	key, err := identity.LoadOrCreateKey(filepath.Join(cfg.DataDir, KeyFile))
	if err != nil {
		return nil, err
	}
	ident, err := secure.NewOverlayIdentity(key)
	if err != nil {
		return nil, err
	}
	box, err := e2ee.LoadOrCreateBoxKey(filepath.Join(cfg.DataDir, BoxKeyFile))
	if err != nil {
		return nil, err
	}
	cache, err := hostcache.Open(filepath.Join(cfg.DataDir, HostCacheFile), hostcache.Options{Logger: cfg.Logger, Now: cfg.Now})
	if err != nil {
		return nil, err
	}
	c := &Client{
		cfg:        cfg,
		clk:        cfg.Clock,
		log:        cfg.Logger,
		m:          cfg.Metrics,
		key:        key,
		ident:      ident,
		box:        box,
		cache:      cache,
		presence:   make(map[string]*Presence),
		user:       cfg.User,
		loginSem:   make(chan struct{}, 1),
		callBo:     backoff.Backoff{Base: cfg.RetryBase, Max: cfg.RetryMax},
		loggedInCh: make(chan struct{}),
		busyUntil:  make(map[string]time.Time),
		budget:     &backoff.Budget{Burst: cfg.RetryBurst, PerSecond: cfg.RetryPerSecond, Now: cfg.Now},
	}
	if cache.Corrupted() {
		c.m.Inc("hostcache_corrupt")
	}
	c.loadSessions()
	c.loadCredential()
	if c.user == "" {
		return nil, ErrNoUser
	}
	c.log = c.log.With("user", c.user)
	c.phone = newPhone(c)
	c.loadBuddies()
	c.loadSeq()
	c.loadNAT()
	return c, nil
}

// loadCredential picks up a saved credential that is still valid for this key and user.
func (c *Client) loadCredential() {
	b, err := os.ReadFile(filepath.Join(c.cfg.DataDir, CredentialFile))
	if err != nil {
		return
	}
	var cred identity.Credential
	if bytes.Equal(b, c.checkedCred) {
		// Checked against this login server's key before (SessionsFile): its signature
		// has not changed since. Expiry, kind and key are checked all the same.
		cred, err = identity.VerifyHolderChecked(b, c.key.Public().(ed25519.PublicKey), identity.KindUser, c.cfg.Now())
	} else {
		cred, err = identity.VerifyHolder(b, c.cfg.Login.Key, c.key.Public().(ed25519.PublicKey), identity.KindUser, c.cfg.Now())
	}
	if err != nil {
		c.log.Info("saved credential not usable; a password login is needed", "err", err)
		return
	}
	if c.user != "" && cred.Name != c.user {
		return
	}
	c.user, c.cred, c.credInfo = cred.Name, b, cred
}

// Metrics returns the client's counters.
func (c *Client) Metrics() *metrics.Set { return c.m }

// User returns the client's user name.
func (c *Client) User() string { return c.user }

// HostCache returns the client's host cache.
func (c *Client) HostCache() *hostcache.Cache { return c.cache }

// SupernodeRole returns the supernode the client runs while promoted, or nil.
func (c *Client) SupernodeRole() SupernodeRole {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sn
}

// Run logs in, attaches and stays attached until ctx ends. It returns early only for
// errors that retrying cannot fix (wrong password, no such user, no password to use).
func (c *Client) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	c.phone.start(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
		c.phone.wait()
		c.flushCache()
		c.mu.Lock()
		if c.lsConn != nil {
			c.lsConn.Close()
			c.lsConn = nil
		}
		c.mu.Unlock()
		c.lsWG.Wait()
	}()
	if !c.cfg.NoControl {
		ln, err := ctl.Listen(filepath.Join(c.cfg.DataDir, SocketFile))
		if err != nil {
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctl.Serve(ctx, ln, c.handleControl, c.m)
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		c.promoteLoop(ctx)
	}()
	fatal := c.login.start(ctx, c, cancel)
	// The attach loop runs on Run's own goroutine, and the login loop only while it logs
	// in: a simulated population of 100,000 clients pays for every goroutine a client
	// keeps.
	c.attachLoop(ctx)
	cancel()
	wg.Wait()
	return fatal()
}

// credential returns the current credential, or nil.
func (c *Client) credential() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cred
}

// loginLoop obtains a credential and keeps it fresh: it logs in with the password only
// when no valid credential exists, resumes otherwise (renewing past half-life), and
// refills the host cache from the seed each time. Between logins it holds no goroutine:
// a timer starts it again at the credential's half-life, and kickLogin when a supernode
// refused the credential.
//
// A client restarted with a saved credential that needs no renewal yet does not call the
// login server at all: after a mass reboot the login server would otherwise see the whole
// population at once (Skype, August 2007). The host cache and the buddy list are on disk,
// and the login server is asked when the credential is half-way to expiry, when a
// supernode refuses it, or when a request needs it.
type loginLoop struct {
	mu      sync.Mutex // mu protects the following fields
	c       *Client
	ctx     context.Context
	stop    context.CancelFunc // Run's cancel, for a fatal error
	running bool               // a goroutine is logging in
	again   bool               // kicked while running: log in once more
	ended   bool               // Run is returning: start nothing more
	timer   clockwork.Timer    // the next renewal
	fatal   error
	wg      sync.WaitGroup
}

// start begins the loop for a Run with context ctx (cancelled by stop on a fatal error).
// It returns the function that ends the loop and reports the fatal error, if any.
func (l *loginLoop) start(ctx context.Context, c *Client, stop context.CancelFunc) func() error {
	saved := c.credential() != nil
	var wait time.Duration
	if saved {
		wait = c.renewalIn() // takes c.mu, which is never held inside l.mu
	}
	l.mu.Lock()
	l.c, l.ctx, l.stop = c, ctx, stop
	l.running, l.again, l.ended, l.fatal = false, false, false, nil
	if saved {
		l.scheduleLocked(wait)
	}
	l.mu.Unlock()
	if !saved {
		l.kick()
	}
	return func() error {
		l.mu.Lock()
		l.ended = true
		if l.timer != nil {
			l.timer.Stop()
		}
		l.mu.Unlock()
		l.wg.Wait()
		return l.fatal
	}
}

// kick logs in now (or once more after the login under way).
func (l *loginLoop) kick() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.ended || l.c == nil {
		return
	}
	if l.running {
		l.again = true
		return
	}
	if l.timer != nil {
		l.timer.Stop()
	}
	l.running = true
	l.wg.Add(1)
	go l.run()
}

// scheduleLocked starts the loop again after wait (the credential's half-life).
func (l *loginLoop) scheduleLocked(wait time.Duration) {
	if l.ended {
		return
	}
	if l.timer != nil {
		l.timer.Stop()
	}
	l.timer = l.c.clk.AfterFunc(wait, l.kick)
}

// renewalIn returns how long until the credential is half-way to expiry (a second at
// least).
func (c *Client) renewalIn() time.Duration {
	c.mu.Lock()
	exp, issued := c.credInfo.Expires, c.credInfo.Issued
	c.mu.Unlock()
	return max(issued.Add(exp.Sub(issued)/2).Sub(c.cfg.Now()), time.Second)
}

func (l *loginLoop) run() {
	defer l.wg.Done()
	for {
		err := l.c.loginRetrying(l.ctx)
		wait := l.c.renewalIn()
		l.mu.Lock()
		if err != nil || l.ctx.Err() != nil {
			if err != nil {
				l.fatal = err
				l.stop()
			}
			l.running = false
			l.mu.Unlock()
			return
		}
		if !l.again {
			l.running = false
			l.scheduleLocked(wait)
			l.mu.Unlock()
			return
		}
		l.again = false
		l.mu.Unlock()
	}
}

// kickLogin asks for a login now: a supernode refused the credential.
func (c *Client) kickLogin() { c.login.kick() }

// loginRetrying logs in, retrying with back-off, until it succeeds, ctx ends (nil), or an
// error that retrying cannot fix.
func (c *Client) loginRetrying(ctx context.Context) error {
	bo := backoff.Backoff{Base: c.cfg.RetryBase, Max: c.cfg.RetryMax}
	for ctx.Err() == nil {
		err := c.loginSerial(ctx)
		if err == nil {
			c.budget.Success()
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		c.setErr(err)
		if errors.Is(err, proto.ErrWrongPassword) || errors.Is(err, proto.ErrNoSuchUser) ||
			errors.Is(err, ErrNeedPassword) || errors.Is(err, proto.ErrInvalidName) {
			return fmt.Errorf("login as %q: %w", c.user, err)
		}
		var ra time.Duration
		if pe, ok := proto.AsError(err); ok {
			ra = pe.RetryAfter()
			if errors.Is(err, proto.ErrBusy) {
				c.m.Inc("login_busy")
			}
		}
		d, spent := c.budget.Delay(&bo, ra)
		if spent {
			c.m.Inc("retry_budget_spent")
		}
		c.mu.Lock()
		c.loginRetry = c.cfg.Now().Add(d)
		c.mu.Unlock()
		c.m.Inc("login_retries")
		c.log.Warn("login failed; retrying", "err", err, "in", d.Round(time.Millisecond))
		if !c.sleep(ctx, d) {
			return nil
		}
	}
	return nil
}

// sleep waits d on the client's clock, or until ctx ends; it reports whether the full
// delay passed. Every back-off of the client waits here.
func (c *Client) sleep(ctx context.Context, d time.Duration) bool {
	return clocks.Sleep(ctx, c.clk, d)
}

// loginSerial logs in once, after any login under way on another path has ended.
func (c *Client) loginSerial(ctx context.Context) error {
	select {
	case c.loginSem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.loginSem }()
	return c.loginOnce(ctx)
}

// loginOnce logs in or resumes on a new connection; callers hold loginSem.
func (c *Client) loginOnce(ctx context.Context) error {
	c.m.Inc("login_attempts")
	conn, err := dialLogin(ctx, c.cfg.Dialer, c.cfg.Login, c.key, c.cfg.LoginIdle, &c.lsWG)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	var ok *proto.LoginOK
	if cred := c.credential(); cred != nil {
		ok, err = rpc.Call[*proto.LoginOK](cctx, conn, &proto.Resume{Credential: cred})
		if errors.Is(err, proto.ErrCredExpired) || errors.Is(err, proto.ErrCredInvalid) {
			c.log.Info("saved credential refused; logging in with the password", "err", err)
			c.mu.Lock()
			c.cred = nil
			c.mu.Unlock()
			err = nil
			ok = nil
		} else if err == nil {
			c.m.Inc("resumes")
		}
	}
	if ok == nil && err == nil {
		if c.cfg.Password == nil {
			conn.Close()
			return ErrNeedPassword
		}
		var pw string
		pw, err = c.cfg.Password(ctx)
		if err == nil {
			ok, err = rpc.Call[*proto.LoginOK](cctx, conn, &proto.Login{Name: c.user, Password: pw})
			if err == nil {
				c.m.Inc("password_logins")
			}
		}
	}
	if err != nil {
		conn.Close()
		return err
	}
	cred, err := identity.VerifyHolder(ok.Credential, c.cfg.Login.Key, c.key.Public().(ed25519.PublicKey), identity.KindUser, c.cfg.Now())
	if err != nil {
		conn.Close()
		return fmt.Errorf("login server gave an unusable credential: %w", err)
	}
	if err := atomicfile.WriteFile(filepath.Join(c.cfg.DataDir, CredentialFile), ok.Credential, 0o600); err != nil {
		conn.Close()
		return err
	}
	c.mergeSeed(ok.Seed, "login")
	c.mu.Lock()
	c.cred, c.credInfo, c.lastErr, c.loginRetry = ok.Credential, cred, "", time.Time{}
	old := c.lsConn
	c.lsConn = conn
	first := c.loggedInCh
	c.loggedInCh = nil
	c.mu.Unlock()
	if old != nil {
		old.Close()
	}
	if first != nil {
		close(first)
	}
	c.log.Info("logged in", "expires", cred.Expires.Format(time.RFC3339), "seed", len(ok.Seed))
	return nil
}

func (c *Client) mergeSeed(list []proto.SupernodeInfo, source string) {
	if len(list) == 0 {
		return
	}
	es := make([]hostcache.Entry, 0, len(list))
	for _, s := range list {
		es = append(es, hostcache.Entry{Addr: s.Addr, PubKey: s.ID, Since: s.Since, Source: source})
	}
	c.cache.Merge(es...)
	c.saveCache()
}

// cacheSaveDelay is how long after a change the host cache is written. An attach
// changes it two or three times within a second (the seed, the supernode reached, the
// peers it names), and a storm of a population attaching at once pays for every write:
// the changes of a few seconds go out in one write, and the last ones at Run's end.
const cacheSaveDelay = 2 * time.Second

// cacheSaver writes the host cache cacheSaveDelay after the first change since its last
// write, on a timer rather than a goroutine of its own.
type cacheSaver struct {
	mu    sync.Mutex      // mu protects timer
	timer clockwork.Timer // non-nil while a write is due
}

// saveCache has the host cache written soon.
func (c *Client) saveCache() {
	c.saver.mu.Lock()
	defer c.saver.mu.Unlock()
	if c.saver.timer != nil {
		return // a write is due and will carry this change
	}
	c.saver.timer = c.clk.AfterFunc(cacheSaveDelay, func() {
		c.saver.mu.Lock()
		c.saver.timer = nil
		c.saver.mu.Unlock()
		c.writeCache()
	})
}

// flushCache writes the host cache now if a write is due (Run's end).
func (c *Client) flushCache() {
	c.saver.mu.Lock()
	due := c.saver.timer != nil && c.saver.timer.Stop()
	c.saver.timer = nil
	c.saver.mu.Unlock()
	if due {
		c.writeCache()
	}
}

func (c *Client) writeCache() {
	if err := c.cache.Save(); err != nil {
		c.log.Warn("saving the host cache failed", "err", err)
	}
	c.writeSessions()
}

func (c *Client) setErr(err error) { c.setLastErr(err, false) }

func (c *Client) setLastErr(err error, attach bool) {
	c.mu.Lock()
	c.lastErr, c.lastErrAt, c.attachErr = err.Error(), c.cfg.Now(), attach
	c.mu.Unlock()
}

// ErrLoginUnavailable is what a request for the login server gets while the login loop
// waits out its back-off after a failed login: the request fails at once instead of
// adding a login attempt of its own to a storm.
var ErrLoginUnavailable = errors.New("client: login server unavailable; the client retries on its own")

// loginCall sends m to the login server over the client's authenticated connection,
// resuming a new one if the old one died (unless a login failed and its retry is not
// due yet).
func (c *Client) loginCall(ctx context.Context, m proto.Message) (proto.Message, error) {
	resp, err := c.loginCallOnce(ctx, m)
	if errors.Is(err, rpc.ErrClosed) && ctx.Err() == nil {
		// The connection closed as idle (LoginIdle) just as m went out: once more, on a
		// new one.
		resp, err = c.loginCallOnce(ctx, m)
	}
	return resp, err
}

func (c *Client) loginCallOnce(ctx context.Context, m proto.Message) (proto.Message, error) {
	conn := c.liveLoginConn()
	if conn == nil {
		if c.credential() == nil {
			return nil, errors.New("not logged in yet")
		}
		select {
		case c.loginSem <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		// A login that ran meanwhile may have left a connection to use.
		if conn = c.liveLoginConn(); conn == nil {
			c.mu.Lock()
			wait := c.loginRetry.Sub(c.cfg.Now())
			c.mu.Unlock()
			var err error
			if wait > 0 {
				c.m.Inc("login_calls_deferred")
				err = fmt.Errorf("%w (next try in %v)", ErrLoginUnavailable, wait.Round(time.Millisecond))
			} else if err = c.loginOnce(ctx); err != nil && ctx.Err() == nil {
				var ra time.Duration
				if pe, ok := proto.AsError(err); ok {
					ra = pe.RetryAfter()
				}
				d, _ := c.budget.Delay(&c.callBo, ra)
				c.mu.Lock()
				c.loginRetry = c.cfg.Now().Add(d)
				c.mu.Unlock()
			} else if err == nil {
				c.callBo.Reset()
			}
			if err != nil {
				<-c.loginSem
				return nil, err
			}
			conn = c.liveLoginConn()
		}
		<-c.loginSem
		if conn == nil {
			return nil, ErrLoginUnavailable
		}
	}
	return conn.Call(ctx, m)
}

// liveLoginConn returns the connection to the login server if it is still open.
func (c *Client) liveLoginConn() *rpc.Conn {
	c.mu.Lock()
	conn := c.lsConn
	c.mu.Unlock()
	if conn == nil {
		return nil
	}
	select {
	case <-conn.Done():
		return nil
	default:
		return conn
	}
}
