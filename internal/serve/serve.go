// Package serve runs the accept loop that every Peerline server shares: admission per
// source address and prefix, a deadline for connections that have not authenticated,
// slots kept for sources that behaved, back-off on transient accept errors, and an orderly
// stop.
//
// The admission policy, in the order it is applied to each accepted connection (the
// first rule that refuses it names the counter it is shed under):
//
//  1. Beyond Max, nobody (conns_shed).
//  2. No more than PerAddr connections at once from one address, nor PerPrefix from one
//     /24 (IPv4) or /64 (IPv6): one host, or one attacker's block of addresses, cannot
//     take more than its share (shed as conns_shed_addr, conns_shed_prefix).
//  3. Once Max-Reserve connections are open, only sources that authenticated within the
//     last GoodFor are admitted, into the Reserve slots: during a flood the users who
//     logged in before it can still log in again (conns_shed_busy).
//
// A connection that has not called Authenticated within AuthTimeout of being accepted
// is closed (conns_auth_timeout): a handshake that completes and then idles holds a slot
// for seconds, not minutes. A request being served then (see Working) is not cut short:
// under a boot storm a login may wait for the password hasher longer than AuthTimeout.
package serve

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/peerline/peerline/internal/clocks"
	"github.com/peerline/peerline/internal/metrics"
)

// Config is the admission policy of one listener. The zero value of each field takes the
// default it names.
type Config struct {
	Max         int             // connections at once; 0 = 10000
	PerAddr     int             // connections at once from one address; 0 = max(Max/100, 16)
	PerPrefix   int             // from one /24 or /64; 0 = max(Max/25, 4*PerAddr)
	Reserve     int             // slots for sources that authenticated recently; 0 = Max/10; <0 = none
	AuthTimeout time.Duration   // a connection must authenticate within this; 0 = 15 s; <0 = no limit
	GoodFor     time.Duration   // how long an authenticated source counts as good; 0 = 1 h
	Counter     metrics.Counter // where shed connections are counted; nil = not counted
	// ResetShed sheds TCP connections with a reset instead of a close: no FIN exchange,
	// no TIME_WAIT entry left here for each one refused during a storm. The dialler may
	// then see its connect fail with ECONNRESET. false = a plain close.
	ResetShed bool
	Now       func() time.Time // when sources authenticated, for GoodFor; nil = Clock's
	// Clock runs the AuthTimeout of each connection and the back-off after accept errors,
	// and tells the time; nil = the real clock, telling Now's time if Now is set.
	Clock clockwork.Clock
}

func (c *Config) setDefaults() {
	if c.Max <= 0 {
		c.Max = 10000
	}
	if c.PerAddr <= 0 {
		c.PerAddr = max(c.Max/100, 16)
	}
	if c.PerPrefix <= 0 {
		c.PerPrefix = max(c.Max/25, 4*c.PerAddr)
	}
	switch {
	case c.Reserve == 0:
		c.Reserve = c.Max / 10
	case c.Reserve < 0:
		c.Reserve = 0 // a service nobody authenticates to
	}
	if c.AuthTimeout == 0 {
		c.AuthTimeout = 15 * time.Second
	}
	if c.GoodFor <= 0 {
		c.GoodFor = time.Hour
	}
	if c.Counter == nil {
		c.Counter = metrics.Discard
	}
	c.Clock = clocks.Pick(c.Clock, c.Now)
	if c.Now == nil {
		c.Now = c.Clock.Now
	}
}

// maxGood bounds the set of remembered good sources; the oldest are forgotten first.
const maxGood = 100000

// Gate decides which connections a listener admits. It is safe for concurrent use.
type Gate struct {
	cfg Config

	mu       sync.Mutex // mu protects the following fields
	total    int
	byAddr   map[netip.Addr]int
	byPrefix map[netip.Prefix]int
	good     map[netip.Addr]time.Time // source -> last authentication
}

// NewGate returns a gate with the policy cfg.
func NewGate(cfg Config) *Gate {
	cfg.setDefaults()
	return &Gate{
		cfg:      cfg,
		byAddr:   make(map[netip.Addr]int),
		byPrefix: make(map[netip.Prefix]int),
		good:     make(map[netip.Addr]time.Time),
	}
}

// AddrOf returns the IP address of a connection's remote end, unmapped from IPv4-in-IPv6;
// the zero Addr if it has none (a pipe, say).
func AddrOf(a net.Addr) netip.Addr {
	switch a := a.(type) {
	case *net.TCPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case *net.UDPAddr:
		ip, _ := netip.AddrFromSlice(a.IP)
		return ip.Unmap()
	case nil:
		return netip.Addr{}
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// PrefixOf returns the /24 of an IPv4 address or the /64 of an IPv6 address.
func PrefixOf(ip netip.Addr) netip.Prefix {
	bits := 64
	if ip.Is4() {
		bits = 24
	}
	p, _ := ip.Prefix(bits)
	return p
}

// Admit reports whether a new connection from ip may be served, and why not (the name
// of the counter it was shed under). Each admitted connection must be released once.
func (g *Gate) Admit(ip netip.Addr) (ok bool, shedAs string) {
	pfx := PrefixOf(ip)
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.total >= g.cfg.Max:
		return false, "conns_shed"
	case ip.IsValid() && g.byAddr[ip] >= g.cfg.PerAddr:
		return false, "conns_shed_addr"
	case ip.IsValid() && g.byPrefix[pfx] >= g.cfg.PerPrefix:
		return false, "conns_shed_prefix"
	case g.total >= g.cfg.Max-g.cfg.Reserve && !g.isGoodLocked(ip):
		return false, "conns_shed_busy"
	}
	g.total++
	if ip.IsValid() {
		g.byAddr[ip]++
		g.byPrefix[pfx]++
	}
	return true, ""
}

// Release gives back the slot of a connection from ip that Admit admitted.
func (g *Gate) Release(ip netip.Addr) {
	pfx := PrefixOf(ip)
	g.mu.Lock()
	defer g.mu.Unlock()
	g.total--
	if !ip.IsValid() {
		return
	}
	if g.byAddr[ip]--; g.byAddr[ip] <= 0 {
		delete(g.byAddr, ip)
	}
	if g.byPrefix[pfx]--; g.byPrefix[pfx] <= 0 {
		delete(g.byPrefix, pfx)
	}
}

// MarkGood records that ip authenticated now: it may use the reserved slots for GoodFor.
func (g *Gate) MarkGood(ip netip.Addr) {
	if !ip.IsValid() {
		return
	}
	now := g.cfg.Now()
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, ok := g.good[ip]; !ok && len(g.good) >= maxGood {
		g.pruneLocked(now)
	}
	g.good[ip] = now
}

func (g *Gate) isGoodLocked(ip netip.Addr) bool {
	t, ok := g.good[ip]
	return ok && g.cfg.Now().Sub(t) < g.cfg.GoodFor
}

// pruneLocked forgets expired good sources and, if that freed too little, half of the rest
// at random (map order): a flood of fresh authentications cannot grow the set without bound.
func (g *Gate) pruneLocked(now time.Time) {
	for ip, t := range g.good {
		if now.Sub(t) >= g.cfg.GoodFor {
			delete(g.good, ip)
		}
	}
	for ip := range g.good {
		if len(g.good) < maxGood/2 {
			break
		}
		delete(g.good, ip)
	}
}

// Open reports the connections open now.
func (g *Gate) Open() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.total
}

// conn is what the handler's context carries of its connection.
type conn struct {
	g     *Gate
	ip    netip.Addr
	nc    net.Conn
	m     metrics.Counter
	timer clockwork.Timer

	mu       sync.Mutex // mu protects the following fields
	authed   bool
	inflight int  // requests being served (Working)
	expired  bool // AuthTimeout passed while a request was in flight
}

// expire runs when AuthTimeout passes: an unauthenticated connection is closed, unless a
// request is being served (a login waiting for its turn at the password hasher, say);
// then it is closed when the last such request ends without having authenticated.
func (c *conn) expire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.authed {
		return
	}
	if c.inflight > 0 {
		c.expired = true
		return
	}
	c.closeLocked()
}

func (c *conn) closeLocked() {
	c.m.Inc("conns_auth_timeout")
	c.nc.Close()
}

func fromContext(ctx context.Context) *conn {
	c, _ := ctx.Value(connKey{}).(*conn)
	return c
}

// Working tells the server that the connection whose handler was given ctx is serving a
// request, until the returned function is called: the AuthTimeout does not cut a request
// short, it takes effect when the request ends unauthenticated. For a context that no
// Serve handler was given it does nothing.
func Working(ctx context.Context) (done func()) {
	c := fromContext(ctx)
	if c == nil {
		return func() {}
	}
	c.mu.Lock()
	c.inflight++
	c.mu.Unlock()
	return func() {
		c.mu.Lock()
		defer c.mu.Unlock()
		c.inflight--
		if c.inflight == 0 && c.expired && !c.authed {
			c.expired = false
			c.closeLocked()
		}
	}
}

type connKey struct{}

// Authenticated tells the server that the connection whose handler was given ctx has
// authenticated: its AuthTimeout no longer applies and its source counts as good. It does
// nothing for a context that no Serve handler was given.
func Authenticated(ctx context.Context) {
	c := fromContext(ctx)
	if c == nil {
		return
	}
	c.mu.Lock()
	was := c.authed
	c.authed = true
	c.mu.Unlock()
	if was {
		return
	}
	if c.timer != nil {
		c.timer.Stop()
	}
	c.g.MarkGood(c.ip)
}

// Serve calls handle in a new goroutine for each connection accepted on ln that the gate
// admits, until ctx ends; then it closes ln and waits for every handler to return. Shed
// connections are closed at once and counted under the reason Admit gave. Transient accept
// errors (out of descriptors, aborted connections, timeouts) pause the loop with a capped
// back-off instead of ending it.
func (g *Gate) Serve(ctx context.Context, ln net.Listener, handle func(context.Context, net.Conn)) error {
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	m := g.cfg.Counter
	bo := AcceptBackoff{Clock: g.cfg.Clock}
	for {
		nc, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if Temporary(err) {
				m.Inc("accept_errors")
				if !bo.Wait(ctx) {
					return nil
				}
				continue
			}
			return err
		}
		bo.Reset()
		ip := AddrOf(nc.RemoteAddr())
		if ok, why := g.Admit(ip); !ok {
			m.Inc(why)
			g.shed(nc)
			continue
		}
		m.Inc("conns")
		c := &conn{g: g, ip: ip, nc: nc, m: m}
		if g.cfg.AuthTimeout > 0 {
			c.timer = g.cfg.Clock.AfterFunc(g.cfg.AuthTimeout, c.expire)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer g.Release(ip)
			defer nc.Close()
			if c.timer != nil {
				defer c.timer.Stop()
			}
			handle(context.WithValue(ctx, connKey{}, c), nc)
		}()
	}
}

// shed closes a connection the gate refused, before a byte is read; with ResetShed as
// cheaply as the kernel allows. Peerline clients take a connection closed or reset
// before the TLS handshake completes for a busy server (they leave it alone for a while
// and try another), not for a dead one.
func (g *Gate) shed(nc net.Conn) {
	if tc, ok := nc.(*net.TCPConn); ok && g.cfg.ResetShed {
		tc.SetLinger(0)
	}
	nc.Close()
}

// Temporary reports whether an Accept error is one a server should wait out and go on
// after: descriptor exhaustion, a connection aborted before it was accepted, a timeout,
// or lack of memory. Any other error (the listener closed) ends the loop.
func Temporary(err error) bool {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return true
	}
	for _, e := range []error{syscall.EMFILE, syscall.ENFILE, syscall.ECONNABORTED, syscall.ECONNRESET, syscall.ENOBUFS, syscall.ENOMEM, syscall.EAGAIN, syscall.EINTR, syscall.EPROTO, syscall.EPERM} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// AcceptBackoff is the pause after a transient accept error: 5 ms doubling up to 1 s, as
// net/http's Serve does. The zero value is ready, on the real clock.
type AcceptBackoff struct {
	Clock clockwork.Clock // the clock the pauses are measured on; nil = the real clock
	delay time.Duration
}

// Wait waits for the next delay; it returns false if ctx ended first.
func (b *AcceptBackoff) Wait(ctx context.Context) bool {
	b.delay = min(max(2*b.delay, 5*time.Millisecond), time.Second)
	return clocks.Sleep(ctx, clocks.Pick(b.Clock, nil), b.delay)
}

// Reset starts the delays again from the shortest, after a successful accept.
func (b *AcceptBackoff) Reset() { b.delay = 0 }
