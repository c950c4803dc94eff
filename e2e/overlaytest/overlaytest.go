// Package overlaytest starts in-process overlays for tests: a login server and supernodes
// on loopback sockets, with helpers to register users and run clients. Everything stops
// when the test ends.
package overlaytest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/cmd/peerline/compose"
	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/memnet"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/secure"
	"github.com/peerline/peerline/internal/stunsrv"
	"github.com/peerline/peerline/loginsrv"
	"github.com/peerline/peerline/relay"
	"github.com/peerline/peerline/supernode"
)

// Overlay is a running test overlay.
type Overlay struct {
	t      testing.TB
	Login  *loginsrv.Server
	LS     client.LoginServer
	Secret string
	Key    ed25519.PrivateKey // the login server's signing key, for tests that forge
	Log    *slog.Logger

	cacheTTL time.Duration
	stun     bool
	relay    bool
	forward  func(string, *proto.Deliver)
	snConfig func(*supernode.Config)

	net       *memnet.Network // nil: loopback
	loginHost *memnet.Host

	lcfg      loginsrv.Config // as started, for RestartLogin
	stopLogin func()          // stops the login server and waits for it

	mu  sync.Mutex
	sns []*SN
}

// SN is one running supernode.
type SN struct {
	*supernode.Supernode
	Addr   string
	cancel context.CancelFunc
	done   chan struct{}
	err    error // what Run returned; set before done closes

	cfg  supernode.Config // as started, for Restart
	host *memnet.Host     // nil: loopback
}

// Done is closed when the supernode has stopped.
func (s *SN) Done() <-chan struct{} { return s.done }

// Err is what Run returned; valid after Done.
func (s *SN) Err() error { return s.err }

// Stop stops the supernode and waits until it has closed every connection.
func (s *SN) Stop() {
	s.cancel()
	<-s.done
}

// Options configure Start.
type Options struct {
	Supernodes int           // 0 = 2; negative = none
	Heartbeat  time.Duration // 0 = 200ms
	KeepAlive  time.Duration // 0 = 500ms
	CacheTTL   time.Duration // supernodes' lookup cache; 0 = their default, negative = off
	STUN       bool          // supernodes serve RFC 5780 STUN on 127.0.0.1 and 127.0.0.2
	// Relay runs a TURN relay on every supernode (loopback peers allowed), keyed by the
	// login server's relay secret.
	Relay bool
	// Forward, if set, sees every end-to-end message any supernode handles.
	Forward func(sn string, d *proto.Deliver)
	Verbose bool // log to the test log... to stderr
	// LoginConfig and SupernodeConfig, if set, adjust the login server's config and
	// every supernode's before they start.
	LoginConfig     func(*loginsrv.Config)
	SupernodeConfig func(*supernode.Config)
	// Logger, if set, is what every role (login server, supernodes and their relays,
	// clients) logs to, at whatever level its handler takes; nil = Verbose or discarded.
	Logger *slog.Logger
	// Net, if set, runs the overlay on an in-process network instead of loopback: the
	// login server at 192.0.2.1 and supernode i at 203.0.113.i (STUN's alternate address
	// at 203.0.113.100+i) on its internet. Clients go where the test puts them (Site).
	Net *memnet.Network
}

// Addresses of an overlay on an in-process network (Options.Net): documentation ranges.
const (
	netLoginIP = "192.0.2.1"
	netSNBase  = "203.0.113."
)

// Start runs a login server (test argon2 parameters) and opts.Supernodes supernodes, and
// waits until every supernode is admitted.
func Start(t testing.TB, opts Options) *Overlay {
	t.Helper()
	if opts.Supernodes == 0 {
		opts.Supernodes = 2
	}
	if opts.Heartbeat == 0 {
		opts.Heartbeat = 200 * time.Millisecond
	}
	if opts.KeepAlive == 0 {
		opts.KeepAlive = 500 * time.Millisecond
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if os.Getenv("OVL_DEBUG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	if opts.Verbose {
		log = slog.Default()
	}
	if opts.Logger != nil {
		log = opts.Logger
	}
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	store, err := loginsrv.OpenSQLite(filepath.Join(t.TempDir(), "accounts.db"))
	if err != nil {
		t.Fatal(err)
	}
	o := &Overlay{t: t, Secret: "test-secret", Key: key, Log: log, snConfig: opts.SupernodeConfig}
	lcfg := loginsrv.Config{
		Key: key, Store: store, Hasher: loginsrv.NewHasher(loginsrv.TestArgon2Params, 0),
		AdmitSecret: o.Secret, HeartbeatInterval: opts.Heartbeat, Logger: log,
		RelaySecret: relaySecret(opts.Relay),
	}
	if opts.LoginConfig != nil {
		opts.LoginConfig(&lcfg)
	}
	o.net = opts.Net
	var ln net.Listener
	if o.net != nil {
		o.loginHost = o.net.Host(netLoginIP)
		ln, err = o.loginHost.Listen("tcp", ":7000")
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		t.Fatal(err)
	}
	o.lcfg = lcfg
	o.serveLogin(ln)
	o.LS = client.LoginServer{Addr: ln.Addr().String(), Key: o.Login.PublicKey()}
	t.Cleanup(func() {
		o.mu.Lock()
		sns := o.sns
		o.mu.Unlock()
		for _, s := range sns {
			s.Stop()
		}
		o.stopLogin()
		store.Close()
	})
	o.cacheTTL, o.stun, o.forward, o.relay = opts.CacheTTL, opts.STUN, opts.Forward, opts.Relay
	for i := 0; i < max(opts.Supernodes, 0); i++ {
		o.AddSupernode(opts.KeepAlive)
	}
	o.Eventually("supernodes admitted", func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		for _, s := range o.sns {
			if !s.Status().Registered {
				return false
			}
		}
		return true
	})
	return o
}

// serveLogin makes o.Login, a login server of o.lcfg on ln, and runs it until stopLogin.
func (o *Overlay) serveLogin(ln net.Listener) {
	o.t.Helper()
	cfg := o.lcfg
	cfg.Listener = ln
	srv, err := loginsrv.New(cfg)
	if err != nil {
		ln.Close()
		o.t.Fatal(err)
	}
	o.Login = srv
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { srv.Run(ctx); close(done) }()
	o.stopLogin = func() { cancel(); <-done }
}

// RestartLogin stops the login server and starts another on the same address, key and
// database, as a login-server process restarted would be: what it keeps in memory (the
// supernode list, sessions) starts empty.
func (o *Overlay) RestartLogin() {
	o.t.Helper()
	o.stopLogin()
	var ln net.Listener
	var err error
	if o.loginHost != nil {
		ln, err = o.loginHost.Listen("tcp", ":7000")
	} else {
		ln, err = net.Listen("tcp", o.LS.Addr)
	}
	if err != nil {
		o.t.Fatalf("restart the login server: %v", err)
	}
	o.serveLogin(ln)
}

func relaySecret(on bool) []byte {
	if !on {
		return nil
	}
	return []byte("test relay secret")
}

// AddSupernode starts one more supernode.
func (o *Overlay) AddSupernode(keepAlive time.Duration) *SN {
	o.t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	o.mu.Lock()
	i := len(o.sns) + 1
	o.mu.Unlock()
	name := fmt.Sprintf("sn%d", i)
	var host *memnet.Host
	var ln net.Listener
	var err error
	if o.net != nil {
		host = o.net.Host(fmt.Sprintf("%s%d", netSNBase, i))
		ln, err = host.Listen("tcp", ":7100")
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0")
	}
	if err != nil {
		o.t.Fatal(err)
	}
	var stun [4]net.PacketConn
	switch {
	case o.stun && host != nil:
		if stun, err = NetSTUN(host, o.net.Host(fmt.Sprintf("%s%d", netSNBase, 100+i))); err != nil {
			o.t.Fatal(err)
		}
	case o.stun:
		stun = LoopbackSTUN(o.t)
	}
	cfg := supernode.Config{
		STUN: stun, Key: key, Name: name, Advertise: ln.Addr().String(),
		LoginAddr: o.LS.Addr, LoginKey: o.LS.Key, AdmitSecret: o.Secret,
		KeepAlive: keepAlive, CacheTTL: o.cacheTTL, Logger: o.Log,
	}
	if host != nil {
		cfg.Dialer = host
	}
	switch {
	case o.relay && host != nil:
		// The simulated internet is in documentation ranges, which a relay refuses as
		// peers unless told otherwise.
		cfg.NewRelay = compose.Relay(relay.Config{Listen: host.IP().String() + ":3478", AllowPrivatePeers: true, MaxAllocsPerUser: 8,
			Net: host.TransportV4()})
	case o.relay:
		cfg.NewRelay = compose.Relay(relay.Config{Listen: "127.0.0.1:0", AllowPrivatePeers: true, Listeners: 1, MaxAllocsPerUser: 8})
	}
	if fwd := o.forward; fwd != nil {
		cfg.TestHookForward = func(d *proto.Deliver) { fwd(name, d) }
	}
	if o.snConfig != nil {
		o.snConfig(&cfg)
	}
	s := o.run(cfg, host, ln)
	o.mu.Lock()
	o.sns = append(o.sns, s)
	o.mu.Unlock()
	return s
}

// run starts a supernode of cfg on ln.
func (o *Overlay) run(cfg supernode.Config, host *memnet.Host, ln net.Listener) *SN {
	o.t.Helper()
	cfg.Listener = ln
	sn, err := supernode.New(cfg)
	if err != nil {
		ln.Close()
		o.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &SN{Supernode: sn, Addr: ln.Addr().String(), cancel: cancel, done: make(chan struct{}), cfg: cfg, host: host}
	go func() { s.err = sn.Run(ctx); close(s.done) }()
	return s
}

// Restart stops s and starts it again with the same key, name and address, as a
// supernode process restarted with its data directory would be, and returns the new
// one, which takes s's place in Supernodes. Its STUN service, if any, does not come
// back.
func (o *Overlay) Restart(s *SN) *SN {
	o.t.Helper()
	s.Stop()
	var ln net.Listener
	var err error
	if s.host != nil {
		ln, err = s.host.Listen("tcp", ":7100")
	} else {
		ln, err = net.Listen("tcp", s.Addr)
	}
	if err != nil {
		o.t.Fatalf("restart %s: %v", s.cfg.Name, err)
	}
	cfg := s.cfg
	cfg.STUN = [4]net.PacketConn{} // closed with the first run
	n := o.run(cfg, s.host, ln)
	o.mu.Lock()
	for i, x := range o.sns {
		if x == s {
			o.sns[i] = n
		}
	}
	o.mu.Unlock()
	return n
}

// Supernodes returns the supernodes started so far.
func (o *Overlay) Supernodes() []*SN {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]*SN(nil), o.sns...)
}

// SupernodeAt returns the supernode listening on addr, or nil.
func (o *Overlay) SupernodeAt(addr string) *SN {
	for _, s := range o.Supernodes() {
		if s.Addr == addr {
			return s
		}
	}
	return nil
}

// Register creates an account.
func (o *Overlay) Register(name, password string) {
	o.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var d secure.Dialer
	if o.loginHost != nil {
		d = o.loginHost // any host of the internet reaches the login server
	}
	if err := client.Register(ctx, d, o.LS, name, password); err != nil {
		o.t.Fatalf("register %s: %v", name, err)
	}
}

// Client is a running client.
type Client struct {
	*client.Client
	Dir    string
	cancel context.CancelFunc
	done   chan error
	ended  chan struct{} // closed when Run has returned
}

// Stop stops the client and returns what Run returned.
func (c *Client) Stop() error {
	c.cancel()
	return <-c.done
}

// Kill stops the client as a crash would: its connections close at once, and it logs off
// from nothing.
func (c *Client) Kill() {
	c.Client.Crash()
	c.cancel()
	<-c.done
}

// Done delivers Run's result if the client stops by itself.
func (c *Client) Done() <-chan error { return c.done }

// StartClient runs a client in dir; password "" means none is available (the client must
// resume with a saved credential). mod may adjust the config.
func (o *Overlay) StartClient(dir, user, password string, mod func(*client.Config)) *Client {
	o.t.Helper()
	cfg := client.Config{
		DataDir: dir, Login: o.LS, User: user, Logger: o.Log,
		RetryBase: 50 * time.Millisecond, RetryMax: time.Second,
	}
	if password != "" {
		cfg.Password = func(context.Context) (string, error) { return password, nil }
	}
	if mod != nil {
		mod(&cfg)
	}
	cl, err := client.New(cfg)
	if err != nil {
		o.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c := &Client{Client: cl, Dir: dir, cancel: cancel, done: make(chan error, 1), ended: make(chan struct{})}
	go func() { c.done <- cl.Run(ctx); close(c.ended) }()
	// Wait for Run to return: a client writes its data directory as it exits, and the
	// directory is usually the test's, removed by a cleanup registered before this one.
	o.t.Cleanup(func() {
		cancel()
		select {
		case <-c.ended:
		case <-time.After(10 * time.Second):
			o.t.Errorf("client %s still running 10 s after its cleanup", user)
		}
	})
	return c
}

// Eventually waits up to 20 s for cond, polling every 10 ms, and fails the test if it
// never holds. Call it from the test's goroutine only; elsewhere use Await.
func (o *Overlay) Eventually(what string, cond func() bool) {
	o.t.Helper()
	Eventually(o.t, 20*time.Second, what, cond)
}

// Eventually is eventually.That.
func Eventually(t testing.TB, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	eventually.That(t, limit, what, cond)
}

// Await is eventually.Await: any goroutine may call it.
func Await(limit time.Duration, what string, cond func() bool) error {
	return eventually.Await(limit, what, cond)
}

// Leftover is eventually.Leftover.
func Leftover(limit time.Duration, funcs ...string) []string {
	return eventually.Leftover(limit, funcs...)
}

// Site returns what puts a client on host of the overlay's in-process network (a host
// on its internet, or behind a NAT): its dials, UDP sockets and ICE agents use host.
// Pass it to StartClient.
func Site(host *memnet.Host) func(*client.Config) {
	return func(c *client.Config) {
		c.Dialer, c.ListenPacket, c.Net = host, host.ListenPacket, host.TransportV3()
	}
}

// NetSTUN opens the four sockets of an RFC 5780 STUN service on two hosts of an
// in-process network, which have one address each: ports 3479 and 3480 on each.
func NetSTUN(primary, alt *memnet.Host) ([4]net.PacketConn, error) {
	var conns [4]net.PacketConn
	for i, a := range []struct {
		h    *memnet.Host
		port string
	}{{primary, ":3479"}, {primary, ":3480"}, {alt, ":3479"}, {alt, ":3480"}} {
		pc, err := a.h.ListenPacket("udp4", a.port)
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return conns, err
		}
		conns[i] = pc
	}
	return conns, nil
}

// LoopbackSTUN opens the four sockets of an RFC 5780 STUN service on 127.0.0.1 and
// 127.0.0.2 (Linux routes all of 127/8 to lo).
func LoopbackSTUN(t testing.TB) [4]net.PacketConn {
	t.Helper()
	conns, err := stunsrv.ListenFree(netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"))
	if err != nil {
		t.Fatal(err)
	}
	return conns
}
