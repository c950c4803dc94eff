// Package overlaysim runs a whole overlay (the real login server, supernodes and clients,
// unchanged) on the in-memory network of package memnet, so that one process can hold
// 1,000 supernodes and 10,000 clients and measure the user index under churn.
//
// Supernodes live on 2001:db8::/48 and clients on 2001:db8:1::/48 (IPv6 documentation
// ranges, large enough for any population), each host in a /64 of its own (two per /64
// past 65,535 clients), as on the internet: the servers' admission limits per /64 then
// apply to the simulation as they would to real users. Users get their credentials from
// the login server's key directly, and their buddy lists saved in their data
// directories, as clients that logged in before and restart within their credential's
// lifetime have them: a boot of the population costs no password hashing, and the
// login server sees each client again only when its saved list is due to be read.
package overlaysim

import (
	"context"
	"crypto/ed25519"
	crand "crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/peerline/peerline/client"
	"github.com/peerline/peerline/cmd/peerline/compose"
	"github.com/peerline/peerline/e2e/overlaytest"
	"github.com/peerline/peerline/hostcache"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/memnet"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/loginsrv"
	"github.com/peerline/peerline/relay"
	"github.com/peerline/peerline/supernode"
)

// Options size and pace a simulation.
type Options struct {
	Supernodes int           // required
	Users      int           // required
	KeepAlive  time.Duration // clients' keep-alive (record refresh) period; 0 = 5s
	Heartbeat  time.Duration // supernodes' heartbeat to the login server; 0 = 1s
	Replicas   int           // 0 = supernode default (3)
	CacheTTL   time.Duration // supernodes' lookup cache; 0 = their default, negative = off
	PeerIdle   time.Duration // supernodes' Config.PeerIdle; 0 = their default (2 x KeepAlive)
	NoMesh     bool          // supernodes' Config.NoMesh
	Dir        string        // state; "" = a temporary directory (in /dev/shm when present)
	Logger     *slog.Logger  // nil = discard
	// Joining bounds the clients that have started but not yet published, so that the
	// population boots at the pace the machine takes; 0 = 200.
	Joining int
	// Buddies gives every user this many buddies (the users after it, each way); 0 = none.
	Buddies int
	// MaxClients is each supernode's connection limit (clients and other supernodes at
	// once); 0 = 20,000.
	MaxClients int
	// MaxAttached is each supernode's admission limit (clients attached at once); 0 =
	// the supernode's default, nine tenths of MaxClients. The rest of MaxClients is the
	// room the supernode keeps for its connections to other supernodes: a supernode
	// whose listener is full closes a new peer's connection unanswered, and the peer
	// takes that for a dead supernode (with the mesh, messages to the full supernode's
	// users then fail). The storms set it to three times a supernode's share.
	MaxAttached int
	// StartWithin, if set, starts the clients at an even pace over this long, whatever
	// the overlay takes (a cold-start storm), instead of Joining at a time.
	StartWithin time.Duration
	// StartTick, with StartWithin, starts the clients in groups, one every StartTick
	// (0 = each at its own moment). On a virtual clock a start takes no time, and
	// clients started one instant at a time would run one after another.
	StartTick time.Duration
	// BeforeUsers, if set, is called once the users are prepared, before the first
	// client starts (a cold-start storm watches from there).
	BeforeUsers func(*Sim)
	// Progress, if set, is told every 10 seconds how far a wait in Start has come.
	Progress func(format string, args ...any)
	// PromoteEvery, if set, lets one user in PromoteEvery promote itself to supernode
	// while the layer is short of the login server's target (Users/Supernodes clients
	// per supernode, so the layer started is the layer wanted), as public clients with
	// the capacity do: the others stand for clients behind NATs. Every supernode then
	// serves STUN (promoted ones too), so that every client learns it has a public
	// address. Those users check every KeepAlive/5 once up a KeepAlive, and read the
	// layer's size with their host cache every KeepAlive.
	PromoteEvery int
	// CallNATs, if set, makes the first len(CallNATs) users callers: user i sits behind a
	// NAT of its own with CallNATs[i] (nil: on a public host), answers calls, and attaches
	// to supernode i%2. Those two supernodes are then on IPv4 (the call path is IPv4, the
	// simulation's other hosts IPv6) and serve RFC 5780 STUN and a TURN relay.
	CallNATs []*memnet.NATConfig
}

// Addresses of the callers' part of the network (Options.CallNATs): supernode i at
// 203.0.113.1+i (its STUN's alternate address at 203.0.113.101+i), caller i's NAT (or
// public host) at 198.51.100.1+i, and the caller at 10.0.0.2 behind it.
const (
	callSNNet   = "203.0.113."
	callSiteNet = "198.51.100."
)

// callSNs is how many supernodes serve the callers.
const callSNs = 2

// Sim is a running simulated overlay.
type Sim struct {
	opts   Options
	Net    *memnet.Network
	Login  *loginsrv.Server
	SNs    []*SN
	Users  []*User
	loginK ed25519.PrivateKey
	dir    string
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
	store  *loginsrv.SQLiteStore

	// retired holds the counters of supernode roles that ended with their user's
	// client (RebootUsers), so that the storms' sums never go back.
	retired struct {
		mu          sync.Mutex
		shed, dials float64
	}
}

// SN is a simulated supernode.
type SN struct {
	*supernode.Supernode
	Host   *memnet.Host
	Addr   string
	killed atomic.Bool // set by KillSupernodes; read by the storms' sampler meanwhile
	stop   context.CancelFunc
	done   chan struct{} // closed when Run returned (killed, or demoted itself)
	// ran is set when Run returned, before done closes: Running reads it, so that the
	// storms' wall-clock sampler, outside the synctest bubble that made done, may ask.
	ran atomic.Bool
}

// Killed reports whether KillSupernodes crashed the supernode.
func (sn *SN) Killed() bool { return sn.killed.Load() }

// Running reports whether the supernode's Run has not returned.
func (sn *SN) Running() bool { return !sn.ran.Load() }

// User is a simulated user with a running client.
type User struct {
	Name string
	cfg  client.Config

	mu   sync.Mutex // mu protects the following fields
	cl   *client.Client
	stop context.CancelFunc
	done chan struct{}
}

// Client returns the user's running client (a new one after each reboot).
func (u *User) Client() *client.Client {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.cl
}

// Start builds the overlay and waits until every supernode is admitted and every client
// attached, or ctx ends.
func Start(ctx context.Context, opts Options) (*Sim, error) {
	if opts.KeepAlive <= 0 {
		opts.KeepAlive = 5 * time.Second
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = time.Second
	}
	if opts.Logger == nil {
		// Discarded before it is formatted: a text handler writing to io.Discard
		// formatted every line of 101,000 nodes for nothing (1.4% of a reboot storm).
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.MaxClients <= 0 {
		opts.MaxClients = 20_000
	}
	dir := opts.Dir
	if dir == "" {
		base := ""
		if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
			base = "/dev/shm"
		}
		removeStale(base)
		var err error
		if dir, err = os.MkdirTemp(base, fmt.Sprintf("%s%d-", simDirPrefix, os.Getpid())); err != nil {
			return nil, err
		}
	}
	s := &Sim{opts: opts, Net: memnet.New(memnet.Options{}), dir: dir}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.startLogin(); err != nil {
		s.Close()
		return nil, err
	}
	for i := 0; i < opts.Supernodes; i++ {
		if err := s.startSupernode(i); err != nil {
			s.Close()
			return nil, err
		}
	}
	if err := s.waitFor(ctx, "supernodes admitted and ring complete", func() (int, int) {
		n := 0
		for _, sn := range s.SNs {
			if sn.Registered() && sn.RingSize() == len(s.SNs) {
				n++
			}
		}
		return n, len(s.SNs)
	}); err != nil {
		hist := map[int]int{}
		admitted := 0
		for _, sn := range s.SNs {
			hist[sn.RingSize()]++
			if sn.Registered() {
				admitted++
			}
		}
		s.Close()
		return nil, fmt.Errorf("%w (%d of %d admitted; ring sizes: %v)", err, admitted, len(s.SNs), hist)
	}
	if err := s.startUsers(ctx); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

func (s *Sim) startLogin() error {
	_, key, _ := ed25519.GenerateKey(crand.Reader)
	s.loginK = key
	store, err := loginsrv.OpenSQLite(filepath.Join(s.dir, "accounts.db"))
	if err != nil {
		return err
	}
	s.store = store
	host := s.Net.Host(loginIP)
	cfg := loginsrv.Config{
		Key: key, Store: store, Hasher: loginsrv.NewHasher(loginsrv.TestArgon2Params, 0),
		AdmitSecret: "sim", HeartbeatInterval: s.opts.Heartbeat, Dialer: host,
		MaxConns: 100_000, Logger: s.opts.Logger,
	}
	if s.opts.PromoteEvery > 0 {
		cfg.ClientsPerSupernode = (s.opts.Users + s.opts.Supernodes - 1) / s.opts.Supernodes
	}
	if len(s.opts.CallNATs) > 0 {
		cfg.RelaySecret = []byte("sim relay secret")
	}
	if cfg.Listener, err = host.Listen("tcp", s.LoginAddr()); err != nil {
		return err
	}
	s.Login, err = loginsrv.New(cfg)
	if err != nil {
		cfg.Listener.Close()
		return err
	}
	s.wg.Add(1)
	go func() { defer s.wg.Done(); s.Login.Run(s.ctx) }()
	return nil
}

// simDirPrefix starts the name of every simulation's state directory, followed by the
// process id of the simulation that made it.
const simDirPrefix = "peerline-sim-"

// removeStale removes the state directories of simulations whose process is gone (killed
// before Close ran). In /dev/shm they hold memory: a killed run at full scale leaves
// gigabytes behind.
func removeStale(base string) {
	if base == "" {
		base = os.TempDir()
	}
	ents, err := os.ReadDir(base)
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), simDirPrefix)
		if !ok || !e.IsDir() {
			continue
		}
		pidStr, _, ok := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if !ok || err != nil || pid <= 0 || pid == os.Getpid() {
			continue
		}
		if err := syscall.Kill(pid, 0); errors.Is(err, syscall.ESRCH) {
			os.RemoveAll(filepath.Join(base, e.Name()))
		}
	}
}

// loginIP is the login server's host on the simulated network.
const loginIP = "2001:db8:ffff::1"

// LoginAddr is the login server's address on the simulated network.
func (s *Sim) LoginAddr() string { return "[" + loginIP + "]:7000" }

func (s *Sim) startSupernode(i int) error {
	ip := fmt.Sprintf("2001:db8:0:%x::1", i+1)
	calls := len(s.opts.CallNATs) > 0 && i < callSNs
	if calls {
		ip = fmt.Sprintf("%s%d", callSNNet, 1+i)
	}
	host := s.Net.Host(ip)
	_, key, _ := ed25519.GenerateKey(crand.Reader)
	addr := net.JoinHostPort(ip, "7100")
	ln, err := host.Listen("tcp", addr)
	if err != nil {
		return err
	}
	cfg := supernode.Config{
		Key: key, Name: fmt.Sprintf("sn%d", i+1), Advertise: addr, Listener: ln,
		LoginAddr: s.LoginAddr(), LoginKey: s.Login.PublicKey(), AdmitSecret: "sim",
		Dialer: host, MaxClients: s.opts.MaxClients, Logger: s.opts.Logger,
	}
	s.snConfig(host)(&cfg)
	if calls {
		if cfg.STUN[0] != nil {
			cfg.STUN[0].Close()
		}
		if cfg.STUN, err = overlaytest.NetSTUN(host, s.Net.Host(fmt.Sprintf("%s%d", callSNNet, 101+i))); err != nil {
			ln.Close()
			return err
		}
		// The simulated internet is in documentation ranges, which a relay refuses as
		// peers unless told otherwise.
		cfg.NewRelay = compose.Relay(relay.Config{Listen: ip + ":3478", AllowPrivatePeers: true, Net: host.TransportV4()})
	}
	sn, err := supernode.New(cfg)
	if err != nil {
		ln.Close()
		for _, pc := range cfg.STUN {
			if pc != nil {
				pc.Close()
			}
		}
		return err
	}
	ctx, stop := context.WithCancel(s.ctx)
	h := &SN{Supernode: sn, Host: host, Addr: addr, stop: stop, done: make(chan struct{})}
	s.SNs = append(s.SNs, h)
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(h.done)
		sn.Run(ctx)
		h.ran.Store(true)
	}()
	return nil
}

// snConfig returns what sets the config of a supernode on host, promoted ones included:
// the simulation's pace and, with PromoteEvery, STUN on the supernode's own address (left
// out if the port is taken; the supernode then serves without).
func (s *Sim) snConfig(host *memnet.Host) func(*supernode.Config) {
	return func(c *supernode.Config) {
		c.KeepAlive, c.Replicas, c.CacheTTL, c.PeerIdle = s.opts.KeepAlive, s.opts.Replicas, s.opts.CacheTTL, s.opts.PeerIdle
		c.NoMesh = s.opts.NoMesh
		if s.opts.MaxAttached > 0 {
			c.MaxAttached = s.opts.MaxAttached
		}
		if s.opts.PromoteEvery > 0 {
			if pc, err := host.ListenPacket("udp", c.Advertise); err == nil {
				c.STUN[0] = pc
			}
		}
	}
}

// startUsers creates accounts and credentials in bulk and starts one client per user,
// each preferring a random supernode (a population's host caches differ). Clients start
// at the pace the overlay takes them: at most Options.Joining are between start and
// first publication at once. A real population does not boot in one instant either, and
// on a machine of two cores ten thousand simultaneous TLS handshakes would only time
// out and retry.
func (s *Sim) startUsers(ctx context.Context) error {
	now := time.Now()
	for i := 0; i < s.opts.Users; i++ {
		u, err := s.prepareUser(ctx, i, now)
		if err != nil {
			return err
		}
		s.Users = append(s.Users, u)
	}
	if err := s.addBuddies(ctx, now); err != nil {
		return err
	}
	if s.opts.BeforeUsers != nil {
		s.opts.BeforeUsers(s)
	}
	joining := s.opts.Joining
	if joining <= 0 {
		joining = 200
	}
	if s.opts.StartWithin > 0 {
		joining = len(s.Users) // the storm is the point
	}
	var pending []*User // started, not yet published
	done, told, started := 0, time.Now(), time.Now()
	for i, u := range s.Users {
		if w := s.opts.StartWithin; w > 0 {
			at := started.Add(time.Duration(int64(w) * int64(i) / int64(len(s.Users))))
			if tick := s.opts.StartTick; tick > 0 {
				at = started.Add(at.Sub(started).Truncate(tick))
			}
			if d := time.Until(at); d > 0 {
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-time.After(d):
				}
			}
			if s.opts.Progress != nil && time.Since(told) >= 10*time.Second {
				told = time.Now()
				ready := 0
				for _, u := range s.Users[:i] {
					if u.Ready() {
						ready++
					}
				}
				s.opts.Progress("clients started: %d of %d, %d attached, after %v (%s)", i, s.opts.Users, ready,
					time.Since(started).Round(time.Second), s.Health())
			}
		}
		for len(pending) >= joining {
			kept := pending[:0]
			for _, u := range pending {
				if u.Ready() {
					done++
				} else {
					kept = append(kept, u)
				}
			}
			pending = kept
			if len(pending) < joining {
				break
			}
			if s.opts.Progress != nil && time.Since(told) >= 10*time.Second {
				told = time.Now()
				s.opts.Progress("clients attached: %d of %d after %v (%s)", done, s.opts.Users, time.Since(started).Round(time.Second), s.Health())
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("overlaysim: starting users (%d of %d attached): %w", done, s.opts.Users, ctx.Err())
			case <-time.After(20 * time.Millisecond):
			}
		}
		if err := s.runUser(u); err != nil {
			return err
		}
		pending = append(pending, u)
	}
	// Users found ready stay counted: a client that reattaches later has published before.
	left := make(map[*User]bool, len(pending))
	for _, u := range pending {
		left[u] = true
	}
	return s.waitFor(ctx, "clients attached", func() (int, int) {
		for u := range left {
			if u.Ready() {
				delete(left, u)
			}
		}
		return s.opts.Users - len(left), s.opts.Users
	})
}

// addBuddies gives each user the Options.Buddies users after it (in order, wrapping
// round) as buddies, each way, and saves each user's list in its data directory, as a
// client that has logged in before keeps it (client.BuddiesFile).
func (s *Sim) addBuddies(ctx context.Context, now time.Time) error {
	k := min(s.opts.Buddies, len(s.Users)-1)
	lists := make([]map[string]bool, len(s.Users))
	for i := range lists {
		lists[i] = map[string]bool{}
	}
	for i, u := range s.Users {
		for j := 1; j <= k; j++ {
			bi := (i + j) % len(s.Users)
			b := s.Users[bi]
			if err := s.store.AddBuddy(ctx, u.Name, b.Name, now); err != nil {
				return err
			}
			if err := s.store.AddBuddy(ctx, b.Name, u.Name, now); err != nil {
				return err
			}
			lists[i][b.Name], lists[bi][u.Name] = true, true
		}
	}
	for i, u := range s.Users {
		list := make([]proto.Buddy, 0, len(lists[i]))
		for name := range lists[i] {
			list = append(list, proto.Buddy{Name: name})
		}
		sort.Slice(list, func(a, b int) bool { return list[a].Name < list[b].Name })
		data, err := json.Marshal(list)
		if err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(u.cfg.DataDir, client.BuddiesFile), data, 0o600); err != nil {
			return err
		}
	}
	return nil
}

// prepareUser creates user i's account, key and credential, and its client's config.
func (s *Sim) prepareUser(ctx context.Context, i int, now time.Time) (*User, error) {
	name := fmt.Sprintf("user%05d", i)
	if err := s.store.CreateUser(ctx, loginsrv.User{Name: name, PassHash: []byte("$sim$"), Created: now}); err != nil {
		return nil, err
	}
	dir := filepath.Join(s.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := identity.LoadOrCreateKey(filepath.Join(dir, client.KeyFile))
	if err != nil {
		return nil, err
	}
	cred, err := identity.Sign(s.loginK, identity.Credential{Kind: identity.KindUser, Name: name,
		PubKey: key.Public().(ed25519.PublicKey), Issued: now, Expires: now.Add(24 * time.Hour)})
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, client.CredentialFile), cred, 0o600); err != nil {
		return nil, err
	}
	// The host cache a first login left: a few supernodes of the seed, the preferred one
	// first (a population's caches differ).
	prefer := s.SNs[rand.IntN(len(s.SNs))]
	caller := i < len(s.opts.CallNATs)
	if caller {
		prefer = s.SNs[i%callSNs]
	}
	hc, err := hostcache.Open(filepath.Join(dir, client.HostCacheFile), hostcache.Options{Logger: s.opts.Logger})
	if err != nil {
		return nil, err
	}
	for j, sn := range append([]*SN{prefer}, randomSNs(s.SNs, cachedSNs-1)...) {
		hc.Merge(hostcache.Entry{Addr: sn.Addr, PubKey: sn.ID(), Since: now.Add(-time.Duration(j) * time.Second), Source: hostcache.SourceLogin})
	}
	if err := hc.Save(); err != nil {
		return nil, err
	}
	ip := fmt.Sprintf("2001:db8:1:%x:%x::1", i%0xffff+1, i/0xffff)
	host := s.Net.Host(ip)
	if caller {
		site := fmt.Sprintf("%s%d", callSiteNet, 1+i)
		if nat := s.opts.CallNATs[i]; nat != nil {
			ip, host = "10.0.0.2", s.Net.NAT(site, *nat).Host("10.0.0.2")
		} else {
			ip, host = site, s.Net.Host(site)
		}
	}
	u := &User{Name: name, cfg: client.Config{
		DataDir: dir, Login: client.LoginServer{Addr: s.LoginAddr(), Key: s.Login.PublicKey()},
		Dialer: host, ParallelAttach: 1, Prefer: prefer.Addr,
		RefreshInterval: time.Hour, NoControl: true, RetryBase: 100 * time.Millisecond, RetryMax: 2 * time.Second,
		Promote: client.PromoteConfig{Disabled: true}, Logger: s.opts.Logger,
	}}
	if caller {
		u.cfg.ListenPacket, u.cfg.Net = host.ListenPacket, host.TransportV3()
		u.cfg.Call.AutoAnswer = true
		u.cfg.NATTimeout = time.Second // each test; a simulation loads the machine
	}
	if n := s.opts.PromoteEvery; n > 0 && !caller {
		u.cfg.ListenPacket = host.ListenPacket
		if i%n == n-1 {
			keep := s.opts.KeepAlive
			u.cfg.RefreshInterval = keep
			u.cfg.Promote = client.PromoteConfig{MinUptime: keep, CheckInterval: keep / 5,
				Listen: host.Listen, ListenAddr: net.JoinHostPort(ip, "7100"), MaxClients: s.opts.MaxClients,
				NewSupernode: compose.Supernode(s.snConfig(host))}
		}
	}
	return u, nil
}

// cachedSNs is how many supernodes each user's saved host cache names at the start. A
// client that cannot reach its preferred supernode in time tries these before it asks the
// login server for a seed: at scale, a population asking at once overloads it.
const cachedSNs = 8

// randomSNs returns n supernodes chosen at random (repeats possible; the cache merges them).
func randomSNs(sns []*SN, n int) []*SN {
	out := make([]*SN, n)
	for i := range out {
		out[i] = sns[rand.IntN(len(sns))]
	}
	return out
}

// runUser starts a client for u from its data directory, as a process started anew
// would: key, credential and host cache come from the files.
func (s *Sim) runUser(u *User) error {
	cl, err := client.New(u.cfg)
	if err != nil {
		return err
	}
	ctx, stop := context.WithCancel(s.ctx)
	done := make(chan struct{})
	u.mu.Lock()
	u.cl, u.stop, u.done = cl, stop, done
	u.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer close(done)
		cl.Run(ctx)
	}()
	return nil
}

// crashUser stops u's client as a power cut would: its connections close without a
// signed log-off. It returns when the client has stopped.
func (u *User) crash() <-chan struct{} {
	u.mu.Lock()
	cl, stop, done := u.cl, u.stop, u.done
	u.mu.Unlock()
	cl.Crash()
	stop()
	return done
}

// KillSupernodes crashes n random live supernodes at once and returns them.
func (s *Sim) KillSupernodes(n int) []*SN {
	var live []*SN
	for _, sn := range s.SNs {
		if !sn.Killed() {
			live = append(live, sn)
		}
	}
	rand.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
	victims := live[:min(n, len(live))]
	for _, sn := range victims {
		sn.killed.Store(true)
		sn.Host.Kill() // the network dies first, so the process stops without a goodbye
		sn.stop()
	}
	return victims
}

// MemPeak samples the process's memory until Stop and reports the largest figures seen.
type MemPeak struct {
	stop chan struct{}
	done chan struct{}
	mu   sync.Mutex // mu protects the following fields
	heap uint64     // largest HeapInuse
	sys  uint64     // largest Sys (memory obtained from the OS)
}

// WatchMemory starts sampling memory every interval.
func WatchMemory(interval time.Duration) *MemPeak {
	p := &MemPeak{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(p.done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			p.sample()
			select {
			case <-p.stop:
				return
			case <-t.C:
			}
		}
	}()
	return p
}

func (p *MemPeak) sample() {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	p.mu.Lock()
	p.heap, p.sys = max(p.heap, ms.HeapInuse), max(p.sys, ms.Sys)
	p.mu.Unlock()
}

// Peak returns the largest heap in use and memory obtained from the OS so far, in MiB,
// and resets them.
func (p *MemPeak) Peak() (heapMiB, sysMiB uint64) {
	p.sample()
	p.mu.Lock()
	defer p.mu.Unlock()
	heapMiB, sysMiB = p.heap>>20, p.sys>>20
	p.heap = 0
	return heapMiB, sysMiB
}

// Stop ends the sampling.
func (p *MemPeak) Stop() { close(p.stop); <-p.done }

// LookupStats is the outcome of looking every user up.
type LookupStats struct {
	Users, Found int
	// NotFound names the users a lookup did not find online, and FoundOnRetry counts
	// those of them found by a second lookup, from another random supernode, once every
	// user had been looked up: a lookup whose holders were all too slow to answer (the
	// machine's two cores saturated) fails without the record being gone, and a user's
	// search would be repeated, or answered by the login server's directory.
	NotFound     []string
	FoundOnRetry int
	MeanHops     float64
	P99Hops      int
	MaxHops      int
	Elapsed      time.Duration
}

// FoundAll reports whether every user was found, at the first lookup or the second.
func (st LookupStats) FoundAll() bool { return st.Found+st.FoundOnRetry == st.Users }

// String says what the lookups found and how far they went.
func (st LookupStats) String() string {
	return fmt.Sprintf("found %d/%d (%d more on a second lookup), hops mean %.2f p99 %d max %d, in %v",
		st.Found, st.Users, st.FoundOnRetry, st.MeanHops, st.P99Hops, st.MaxHops, st.Elapsed.Round(time.Millisecond))
}

// LookupAll looks every user up from a random live supernode, workers at a time.
func (s *Sim) LookupAll(ctx context.Context, workers int) LookupStats {
	var live []*SN
	for _, sn := range s.SNs {
		if !sn.Killed() {
			live = append(live, sn)
		}
	}
	start := time.Now()
	hops := make([]int, len(s.Users))
	found := make([]bool, len(s.Users))
	next := make(chan int)
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				sn := live[rand.IntN(len(live))]
				res, h, _ := sn.Lookup(ctx, s.Users[i].Name, "")
				hops[i], found[i] = h, res.Found && res.Online
			}
		}()
	}
	for i := range s.Users {
		next <- i
	}
	close(next)
	wg.Wait()
	st := LookupStats{Users: len(s.Users)}
	sum := 0
	for i := range hops {
		if found[i] {
			st.Found++
		} else {
			st.NotFound = append(st.NotFound, s.Users[i].Name)
		}
		sum += hops[i]
	}
	for _, name := range st.NotFound {
		if res, _, _ := live[rand.IntN(len(live))].Lookup(ctx, name, ""); res.Found && res.Online {
			st.FoundOnRetry++
		}
	}
	st.Elapsed = time.Since(start)
	sort.Ints(hops)
	if len(hops) > 0 {
		st.MeanHops = float64(sum) / float64(len(hops))
		st.P99Hops = hops[(len(hops)*99)/100]
		st.MaxHops = hops[len(hops)-1]
	}
	return st
}

// waitFor polls progress until it reports all done, telling Options.Progress every 10
// seconds.
func (s *Sim) waitFor(ctx context.Context, what string, progress func() (done, all int)) error {
	t := time.NewTicker(50 * time.Millisecond)
	defer t.Stop()
	start, told := time.Now(), time.Now()
	for {
		done, all := progress()
		if done >= all {
			return nil
		}
		if s.opts.Progress != nil && time.Since(told) >= 10*time.Second {
			told = time.Now()
			s.opts.Progress("%s: %d of %d after %v (%s)", what, done, all, time.Since(start).Round(time.Second), s.Health())
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("overlaysim: waiting for %s (%d of %d): %w", what, done, all, ctx.Err())
		case <-t.C:
		}
	}
}

// Close stops everything and removes the state directory.
func (s *Sim) Close() error {
	// Clients log off cleanly, which at 10,000 users takes most of a minute. Powering
	// the supernodes off first is worse: the clients of each reattach to the next
	// until the last one holds them all.
	s.cancel()
	s.wg.Wait()
	var err error
	if s.store != nil {
		err = s.store.Close()
	}
	return errors.Join(err, os.RemoveAll(s.dir))
}

// Holdings says which running supernodes (promoted users' included) hold a record of
// name and what each holds, and what the supernode the user is attached to counted of
// its publications, for failure messages.
func (s *Sim) Holdings(name string) string {
	all, nameOf := s.running()
	var out, views []string
	for _, sn := range all {
		e, ok := sn.Held(name)
		if !ok {
			continue
		}
		state := "online"
		switch {
		case !time.Now().Before(e.Rec.Expires):
			state = "expired"
		case e.Offline:
			state = "offline"
		}
		out = append(out, fmt.Sprintf("%s: seq %d %s at %s", nameOf(sn.ID()), e.Rec.Seq, state, nameOf(e.Rec.Supernode)))
		views = append(views, viewOf(sn, name, nameOf))
	}
	var watched []string
	for _, sn := range all {
		if ws := sn.WatchersOf(name, nameOf); len(ws) > 0 {
			watched = append(watched, fmt.Sprintf("at %s by %v", nameOf(sn.ID()), ws))
		}
	}
	res := name + " held by [" + strings.Join(out, "; ") + "]; their views: " + strings.Join(views, "; ") +
		"; watched " + strings.Join(watched, ", ")
	for _, u := range s.Users {
		if u.Name != name || u.Client() == nil || u.Client().Status().Supernode == nil {
			continue
		}
		at := u.Client().Status().Supernode.ID
		for _, sn := range all {
			if sn.ID() != at {
				continue
			}
			var cs []string
			m := sn.Metrics()
			for _, k := range []string{"publishes", "publishes_answered_early", "holders_slow", "records_rejected",
				"via_sent", "via_contact_lost", "via_unreachable", "via_refused", "peers_suspected", "holders_busy",
				"records_passed_on", "records_stored"} {
				cs = append(cs, fmt.Sprintf("%s %d", k, m.Get(k)))
			}
			res += "; its supernode " + nameOf(at) + ": " + strings.Join(cs, ", ")
			res += "; " + viewOf(sn, name, nameOf)
		}
	}
	return res
}

// ViewFrom says, for failure messages, which members the supernode user is attached to
// takes for name's holders, and where its last renewal of user's watch of name left it.
func (s *Sim) ViewFrom(user, name string) string {
	var at string
	for _, u := range s.Users {
		if u.Name == user && u.Client() != nil && u.Client().Status().Supernode != nil {
			at = u.Client().Status().Supernode.ID
		}
	}
	all, nameOf := s.running()
	for _, sn := range all {
		if sn.ID() == at {
			return user + "'s " + viewOf(sn, name, nameOf) + "; " + sn.Watching(user, name, nameOf)
		}
	}
	return user + ": not attached to a running supernode"
}

// running returns every running supernode, promoted users' included, and what names
// one by its id in failure messages.
func (s *Sim) running() ([]*supernode.Supernode, func(id string) string) {
	var all []*supernode.Supernode
	for _, sn := range s.SNs {
		if !sn.Killed() && sn.Running() {
			all = append(all, sn.Supernode)
		}
	}
	for _, u := range s.Users {
		if cl := u.Client(); cl != nil {
			if sn, _ := cl.SupernodeRole().(*supernode.Supernode); sn != nil {
				all = append(all, sn) // registered or not: it may hold records
			}
		}
	}
	names := map[string]string{}
	for _, sn := range all {
		names[sn.ID()] = sn.Status().Name
	}
	return all, func(id string) string {
		if n, ok := names[id]; ok && n != "" {
			return n
		}
		return fmt.Sprintf("%.8s", id)
	}
}

// viewOf says which members sn takes for name's holders, with its ring's size.
func viewOf(sn *supernode.Supernode, name string, nameOf func(string) string) string {
	return fmt.Sprintf("%s (ring %d) takes holders %v", nameOf(sn.ID()), sn.RingSize(), sn.HolderView(name, nameOf))
}

// Describe says what the client of user name believes, for failure messages.
func (s *Sim) Describe(name string) string {
	for _, u := range s.Users {
		if u.Name != name {
			continue
		}
		st := u.Client().Status()
		sn := "none"
		if st.Supernode != nil {
			sn = st.Supernode.Name + " attached " + st.Supernode.AttachedAt.Format("15:04:05.000")
		}
		return fmt.Sprintf("%s: supernode %s, attaches %d, publishes %d, last error %q", name, sn,
			st.Attaches, st.Counters["publishes"], st.LastError)
	}
	return name + ": no such user"
}
