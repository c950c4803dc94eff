// Package supernode runs a Peerline supernode: a well-connected node that clients attach
// to. This part of the role registers with the login server (which admits it and signs its
// supernode credential), heartbeats so that it stays in host-cache seeds, accepts clients'
// control connections, checks their credentials offline, answers keep-alives and shares
// its view of the other supernodes so clients can refresh their host caches.
//
// Trust runs both ways on an attachment: the client's TLS key must be the one its user
// credential names, and the supernode's TLS key must be the one in its supernode
// credential; both credentials are signed by the login server whose key everyone pins.
package supernode

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sort"
	"sync"
	"time"

	"github.com/peerline/peerline/internal/backoff"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
	"github.com/peerline/peerline/internal/secure"
	"github.com/peerline/peerline/internal/serve"
)

// Config configures a Supernode. Key, Advertise, LoginAddr and LoginKey are required.
type Config struct {
	Key         ed25519.PrivateKey // the supernode's identity key
	Name        string             // shown in credentials and logs; "" = "sn-" + start of the key
	Advertise   string             // host:port clients dial, as listed in host caches
	LoginAddr   string             // host:port of the login server
	LoginKey    ed25519.PublicKey  // the login server's pinned key
	AdmitSecret string             // the login server's supernode admission secret
	Dialer      secure.Dialer      // nil = &net.Dialer{}
	KeepAlive   time.Duration      // how often clients should ping; a client silent for 3 periods is dropped; 0 = 20s
	MaxClients  int                // attached clients at once, more are shed; 0 = 5000
	Logger      *slog.Logger       // nil = slog.Default()
	Metrics     *metrics.Set       // nil = a fresh set
	Now         func() time.Time   // nil = time.Now
}

// Supernode is one running supernode.
type Supernode struct {
	cfg   Config
	log   *slog.Logger
	m     *metrics.Set
	id    string
	since time.Time
	tls   *tls.Config

	mu         sync.Mutex // mu protects the following fields
	cred       []byte     // supernode credential; nil until admitted
	credIssued time.Time
	credExp    time.Time
	registered bool
	peers      []proto.SupernodeInfo
	clients    map[string]*client // by user name
}

type client struct {
	name     string
	conn     *rpc.Conn
	since    time.Time
	lastSeen time.Time
}

// ErrNotAdmitted is returned by Run when the login server refuses the admission secret.
var ErrNotAdmitted = errors.New("supernode: the login server refused admission (check --admit-secret)")

// New checks cfg and returns a supernode.
func New(cfg Config) (*Supernode, error) {
	if len(cfg.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("supernode: Config.Key is required")
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
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = &metrics.Set{}
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	tc, err := secure.ServerConfig(cfg.Key, true)
	if err != nil {
		return nil, err
	}
	return &Supernode{
		cfg:     cfg,
		log:     cfg.Logger.With("sn", cfg.Name),
		m:       cfg.Metrics,
		id:      id,
		since:   cfg.Now().UTC().Truncate(time.Second),
		tls:     tc,
		clients: make(map[string]*client),
	}, nil
}

// ID is the supernode's public key, as host caches name it.
func (sn *Supernode) ID() string { return sn.id }

// Metrics returns the supernode's counters.
func (sn *Supernode) Metrics() *metrics.Set { return sn.m }

// Run serves clients on ln and keeps the supernode registered with the login server until
// ctx ends. It returns ErrNotAdmitted if the login server refuses it.
func (sn *Supernode) Run(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	serveErr := make(chan error, 1)
	go func() { serveErr <- serve.Accept(ctx, ln, sn.cfg.MaxClients, sn.m, sn.serveConn) }()
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
		if !backoff.Sleep(ctx.Done(), bo.Next()) {
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
	go func() { c.Run(ctx); close(runDone) }()
	defer func() { c.Close(); <-runDone }()

	interval, err := sn.register(ctx, c)
	if err != nil {
		return err
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := sn.heartbeat(ctx, c); err != nil {
			return err
		}
		sn.mu.Lock()
		renew := sn.credExp.Sub(sn.cfg.Now()) < sn.credExp.Sub(sn.credIssued)/2
		sn.mu.Unlock()
		if renew {
			if _, err := sn.register(ctx, c); err != nil {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-c.Done():
			return c.Err()
		case <-t.C:
		}
	}
}

func (sn *Supernode) register(ctx context.Context, c *rpc.Conn) (time.Duration, error) {
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ok, err := rpc.Call[*proto.SNRegisterOK](cctx, c, &proto.SNRegister{
		Name: sn.cfg.Name, Addr: sn.cfg.Advertise, Since: sn.since, AdmitSecret: sn.cfg.AdmitSecret,
	})
	if errors.Is(err, proto.ErrNotAdmitted) {
		return 0, ErrNotAdmitted
	}
	if err != nil {
		return 0, fmt.Errorf("register: %w", err)
	}
	cred, err := identity.VerifyHolder(ok.Credential, sn.cfg.LoginKey, sn.cfg.Key.Public().(ed25519.PublicKey), identity.KindSupernode, sn.cfg.Now())
	if err != nil {
		return 0, fmt.Errorf("login server gave an unusable credential: %w", err)
	}
	sn.mu.Lock()
	sn.cred, sn.credIssued, sn.credExp, sn.registered = ok.Credential, cred.Issued, cred.Expires, true
	sn.mu.Unlock()
	sn.log.Info("admitted by the login server", "expires", cred.Expires)
	interval := time.Duration(ok.HeartbeatInterval) * time.Millisecond
	if interval < 10*time.Millisecond {
		interval = 10 * time.Millisecond // a bogus answer must not make us spin
	}
	return interval, nil
}

func (sn *Supernode) heartbeat(ctx context.Context, c *rpc.Conn) error {
	sn.mu.Lock()
	n := len(sn.clients)
	sn.mu.Unlock()
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	peers, err := rpc.Call[*proto.SNPeers](cctx, c, &proto.SNHeartbeat{Addr: sn.cfg.Advertise, Since: sn.since, Clients: n})
	if err != nil {
		return fmt.Errorf("heartbeat: %w", err)
	}
	sn.mu.Lock()
	sn.peers = peers.Supernodes
	sn.mu.Unlock()
	return nil
}

func (sn *Supernode) serveConn(ctx context.Context, nc net.Conn) {
	tc, key, err := secure.Accept(ctx, nc, sn.tls)
	if err != nil {
		sn.m.Inc("tls_errors")
		sn.log.Debug("handshake failed", "remote", nc.RemoteAddr(), "err", err)
		return
	}
	h := &handler{sn: sn, key: key, remote: nc.RemoteAddr().String()}
	c := rpc.New(tc, rpc.Options{
		Handler:     h,
		IdleTimeout: 3 * sn.cfg.KeepAlive,
		Counter:     sn.m,
		Logger:      sn.log,
	})
	h.conn = c
	c.Run(ctx)
	if name := h.name(); name != "" {
		sn.detach(name, c)
	}
}

func (sn *Supernode) detach(name string, c *rpc.Conn) {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if cl, ok := sn.clients[name]; ok && cl.conn == c {
		delete(sn.clients, name)
		sn.log.Info("client detached", "user", name)
	}
}

// handler serves one client connection.
type handler struct {
	sn     *Supernode
	key    ed25519.PublicKey
	remote string
	conn   *rpc.Conn

	mu   sync.Mutex // mu protects user
	user string
}

func (h *handler) name() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.user
}

// Handle implements rpc.Handler.
func (h *handler) Handle(ctx context.Context, c *rpc.Conn, m proto.Message) (proto.Message, error) {
	sn := h.sn
	if a, ok := m.(*proto.Attach); ok {
		return sn.attach(h, a)
	}
	name := h.name()
	if name == "" {
		sn.m.Inc("unauthenticated_requests")
		return nil, proto.ErrUnauthenticated.With("attach with a credential first")
	}
	switch m := m.(type) {
	case *proto.Ping:
		sn.mu.Lock()
		if cl, ok := sn.clients[name]; ok && cl.conn == c {
			cl.lastSeen = sn.cfg.Now()
		}
		sn.mu.Unlock()
		sn.m.Inc("keepalives")
		return &proto.Pong{Seq: m.Seq}, nil
	case *proto.Peers:
		return &proto.PeersOK{Supernodes: sn.Peers()}, nil
	}
	sn.m.Inc("unexpected_messages")
	return nil, proto.ErrBadRequest.With("message type %d is not served by supernodes", m.Type())
}

func (sn *Supernode) attach(h *handler, a *proto.Attach) (proto.Message, error) {
	sn.mu.Lock()
	own := sn.cred
	sn.mu.Unlock()
	if own == nil {
		sn.m.Inc("attach_not_ready")
		return nil, proto.ErrBusy.With("supernode not yet admitted by the login server").WithRetry(time.Second)
	}
	cred, err := identity.VerifyHolder(a.Credential, sn.cfg.LoginKey, h.key, identity.KindUser, sn.cfg.Now())
	switch {
	case errors.Is(err, identity.ErrExpired):
		sn.m.Inc("cred_expired")
		return nil, proto.ErrCredExpired
	case err != nil:
		sn.m.Inc("cred_invalid")
		sn.log.Info("attach refused", "remote", h.remote, "err", err)
		return nil, proto.ErrCredInvalid.With("%v", err)
	}
	h.mu.Lock()
	h.user = cred.Name
	h.mu.Unlock()
	now := sn.cfg.Now()
	sn.mu.Lock()
	old := sn.clients[cred.Name]
	sn.clients[cred.Name] = &client{name: cred.Name, conn: h.conn, since: now, lastSeen: now}
	sn.mu.Unlock()
	if old != nil && old.conn != h.conn {
		old.conn.Close() // the same user attached again: the newer session wins
	}
	sn.m.Inc("attaches")
	sn.log.Info("client attached", "user", cred.Name, "remote", h.remote)
	return &proto.AttachOK{Credential: own, Since: sn.since, KeepAliveMs: sn.cfg.KeepAlive.Milliseconds()}, nil
}

// Peers returns the supernode's current view of the other live supernodes.
func (sn *Supernode) Peers() []proto.SupernodeInfo {
	sn.mu.Lock()
	defer sn.mu.Unlock()
	return append([]proto.SupernodeInfo(nil), sn.peers...)
}

// Status is a snapshot for operators and tests.
type Status struct {
	Role       string                `json:"role"` // "supernode"
	ID         string                `json:"id"`
	Name       string                `json:"name"`
	Addr       string                `json:"addr"`
	Since      time.Time             `json:"since"`
	Registered bool                  `json:"registered"`
	Clients    []string              `json:"clients"`
	Peers      []proto.SupernodeInfo `json:"peers"`
	Counters   map[string]uint64     `json:"counters"`
}

// Status returns a snapshot of the supernode's state.
func (sn *Supernode) Status() Status {
	sn.mu.Lock()
	st := Status{Role: "supernode", ID: sn.id, Name: sn.cfg.Name, Addr: sn.cfg.Advertise, Since: sn.since,
		Registered: sn.registered, Peers: append([]proto.SupernodeInfo(nil), sn.peers...)}
	for name := range sn.clients {
		st.Clients = append(st.Clients, name)
	}
	sn.mu.Unlock()
	sort.Strings(st.Clients)
	st.Counters = sn.m.Snapshot()
	return st
}
