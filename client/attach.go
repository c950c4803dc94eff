package client

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/peerline/peerline/hostcache"
	"github.com/peerline/peerline/internal/backoff"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
	"github.com/peerline/peerline/internal/secure"
)

// ErrNoSupernodes means the host cache is empty and the login server gave no seed yet.
var ErrNoSupernodes = errors.New("client: no supernode known yet (host cache empty)")

// attachLoop keeps the client attached to one supernode, reattaching after every loss.
func (c *Client) attachLoop(ctx context.Context) {
	bo := backoff.Backoff{Base: c.cfg.RetryBase, Max: c.cfg.RetryMax}
	for ctx.Err() == nil {
		if c.credential() == nil {
			// Wait for the first login; the login loop reports fatal errors itself.
			c.mu.Lock()
			ch := c.loggedInCh
			c.mu.Unlock()
			if ch != nil {
				select {
				case <-ch:
				case <-ctx.Done():
					return
				}
			}
		}
		a, err := c.attach(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			c.setLastErr(err, true)
			c.m.Inc("attach_failures")
			if errors.Is(err, proto.ErrCredExpired) || errors.Is(err, proto.ErrCredInvalid) {
				select {
				case c.loginNow <- struct{}{}:
				default:
				}
			} else {
				// Every known supernode failed, or none is known: ask the login server
				// for a fresh seed before the next round.
				c.refreshSeed(ctx)
			}
			d := bo.Next()
			c.log.Warn("attach failed; retrying", "err", err, "in", d.Round(time.Millisecond))
			if !backoff.Sleep(ctx.Done(), d) {
				return
			}
			continue
		}
		bo.Reset()
		err = c.stayAttached(ctx, a)
		c.mu.Lock()
		c.attached = nil
		c.mu.Unlock()
		a.conn.Close()
		if ctx.Err() != nil {
			return
		}
		c.cache.MarkFailure(a.addr)
		c.cache.Save()
		c.m.Inc("supernode_lost")
		c.log.Warn("lost supernode; reattaching", "supernode", a.name, "addr", a.addr, "err", err)
		// A short pause only: the cache holds other supernodes to try at once.
		if !backoff.Sleep(ctx.Done(), bo.Next()/4) {
			return
		}
	}
}

// attach dials the best-ranked supernodes, ParallelAttach at a time, and keeps the first
// that completes an attachment; the others are closed.
func (c *Client) attach(ctx context.Context) (*attachment, error) {
	cands := c.cache.Ranked()
	if p := c.cfg.Prefer; p != "" {
		// The preferred supernode is tried alone first, so that a faster one from the
		// cache does not win the race against it.
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		a, err := c.attachTo(pctx, hostcache.Entry{Addr: p, Source: hostcache.SourceManual})
		cancel()
		if err == nil {
			return c.recordAttachment(a), nil
		}
		c.log.Info("preferred supernode unavailable", "addr", p, "err", err)
		rest := cands[:0:0]
		for _, e := range cands {
			if e.Addr != p {
				rest = append(rest, e)
			}
		}
		cands = rest
	}
	if len(cands) == 0 {
		return nil, ErrNoSupernodes
	}
	type res struct {
		a   *attachment
		e   hostcache.Entry
		err error
	}
	actx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	results := make(chan res, len(cands))
	next, running := 0, 0
	start := func() {
		e := cands[next]
		next++
		running++
		go func() {
			a, err := c.attachTo(actx, e)
			results <- res{a, e, err}
		}()
	}
	for next < len(cands) && running < c.cfg.ParallelAttach {
		start()
	}
	var errs []error
	var won *attachment
	for running > 0 {
		r := <-results
		running--
		switch {
		case r.err == nil && won == nil:
			won = r.a
			cancel() // stop the slower attempts
		case r.err == nil:
			r.a.conn.Close() // a slower success: not needed
		default:
			if actx.Err() == nil || won == nil {
				errs = append(errs, fmt.Errorf("%s: %w", r.e.Addr, r.err))
				c.cache.MarkFailure(r.e.Addr)
			}
			if won == nil && next < len(cands) && actx.Err() == nil {
				start()
			}
		}
	}
	if won == nil {
		c.cache.Save()
		return nil, errors.Join(errs...)
	}
	return c.recordAttachment(won), nil
}

// recordAttachment records a successful attachment.
func (c *Client) recordAttachment(won *attachment) *attachment {
	c.cache.MarkSuccess(won.addr)
	c.cache.Save()
	c.mu.Lock()
	c.attached = won
	c.attaches++
	if c.attachErr {
		// Attached again: the error about the supernodes that failed is history.
		c.lastErr, c.attachErr = "", false
	}
	c.mu.Unlock()
	c.m.Inc("attaches")
	c.log.Info("attached", "supernode", won.name, "addr", won.addr)
	return won
}

// attachTo opens a control connection to one supernode and attaches with the credential.
// The supernode must prove it holds the key named in a supernode credential signed by the
// pinned login server.
func (c *Client) attachTo(ctx context.Context, e hostcache.Entry) (*attachment, error) {
	cred := c.credential()
	if cred == nil {
		return nil, errors.New("not logged in")
	}
	var snKey ed25519.PublicKey
	cfg, err := secure.ClientConfig(c.key, func(k ed25519.PublicKey) error { snKey = k; return nil })
	if err != nil {
		return nil, err
	}
	tc, err := secure.Dial(ctx, c.cfg.Dialer, e.Addr, cfg)
	if err != nil {
		return nil, err
	}
	conn := rpc.New(tc, rpc.Options{Logger: c.log, Counter: c.m, Handler: clientHandler{c}})
	go conn.Run(context.WithoutCancel(ctx))
	ok, err := rpc.Call[*proto.AttachOK](ctx, conn, &proto.Attach{Credential: cred})
	if err != nil {
		conn.Close()
		return nil, err
	}
	sc, err := identity.VerifyHolder(ok.Credential, c.cfg.Login.Key, snKey, identity.KindSupernode, c.cfg.Now())
	if err != nil {
		conn.Close()
		c.m.Inc("supernode_cred_invalid")
		return nil, fmt.Errorf("supernode failed authentication: %w", err)
	}
	keep := c.cfg.KeepAlive
	if keep <= 0 {
		keep = time.Duration(ok.KeepAliveMs) * time.Millisecond
	}
	if keep < 100*time.Millisecond {
		keep = 20 * time.Second
	}
	return &attachment{conn: conn, addr: e.Addr, id: identity.EncodeKey(snKey), name: sc.Name,
		since: ok.Since, at: c.cfg.Now(), keep: keep, stun: ok.STUN, turn: ok.TURN}, nil
}

// buddyRefreshSpread is the window over which a client that knows its buddy list reads
// it again after attaching.
const buddyRefreshSpread = 2 * time.Minute

// buddyState is the buddy list and the blocked names, for telling whether they changed.
func (c *Client) buddyState() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return strings.Join(c.buddies, ",") + "|" + strings.Join(c.blocked, ",")
}

// stayAttached publishes the user's record, subscribes to the buddies' presence, then
// republishes every keep-alive period (the publication is the keep-alive) and refreshes
// the host cache from the supernode, until the connection fails.
func (c *Client) stayAttached(ctx context.Context, a *attachment) error {
	// The record carries the blocked names, so a client that does not know its buddy
	// list yet reads it before the first publication. One that knows it publishes first
	// and reads the list again later, at a random moment of the next minutes: after a
	// mass reboot the login server then sees the population spread out, not at once.
	// A slow login server must not hold up the first publication either: the supernode
	// drops a client that stays silent for two keep-alive periods.
	refreshBuddies := func() {
		bctx, cancel := context.WithTimeout(ctx, a.keep/2)
		err := c.refreshBuddies(bctx)
		cancel()
		if err != nil {
			c.log.Debug("buddy list unavailable; keeping the last one", "err", err)
		}
	}
	c.mu.Lock()
	known := c.buddiesKnown
	c.mu.Unlock()
	var later <-chan time.Time // the deferred buddy-list read
	if known {
		t := time.NewTimer(rand.N(buddyRefreshSpread))
		defer t.Stop()
		later = t.C
	} else {
		refreshBuddies()
	}
	if err := c.publish(ctx, a, false); err != nil {
		return err
	}
	if err := c.subscribe(ctx, a); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	c.refreshPeers(ctx, a)
	natDone := make(chan struct{})
	go func() { defer close(natDone); c.detectNAT(ctx, a) }()
	defer func() { <-natDone }()
	keep := time.NewTicker(a.keep)
	defer keep.Stop()
	refresh := time.NewTicker(c.cfg.RefreshInterval)
	defer refresh.Stop()
	for {
		select {
		case <-ctx.Done():
			// Log off cleanly: a signed offline record tells buddies at once.
			c.mu.Lock()
			crashed := c.crashed
			c.mu.Unlock()
			if !crashed {
				lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
				c.publish(lctx, a, true)
				cancel()
			}
			return ctx.Err()
		case <-a.conn.Done():
			return a.conn.Err()
		case <-refresh.C:
			c.refreshPeers(ctx, a)
		case <-later:
			later = nil
			before := c.buddyState()
			refreshBuddies()
			if c.buddyState() != before {
				if err := c.publish(ctx, a, false); err != nil {
					return fmt.Errorf("publish: %w", err)
				}
				if err := c.subscribe(ctx, a); err != nil {
					return fmt.Errorf("subscribe: %w", err)
				}
			}
		case <-keep.C:
			if err := c.publish(ctx, a, false); err != nil {
				if errors.Is(err, proto.ErrCredExpired) || errors.Is(err, proto.ErrRefused) {
					select {
					case c.loginNow <- struct{}{}:
					default:
					}
				}
				return fmt.Errorf("keep-alive: %w", err)
			}
			c.m.Inc("keepalives")
		}
	}
}

// refreshSeed merges the login server's current seed into the host cache.
func (c *Client) refreshSeed(ctx context.Context) {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	m, err := c.loginCall(sctx, &proto.Seed{})
	if err != nil {
		c.log.Debug("seed refresh failed", "err", err)
		return
	}
	if seed, ok := m.(*proto.SeedOK); ok {
		c.mergeSeed(seed.Supernodes, "login")
		c.m.Inc("seed_refreshes")
	}
}

func (c *Client) refreshPeers(ctx context.Context, a *attachment) {
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	peers, err := rpc.Call[*proto.PeersOK](pctx, a.conn, &proto.Peers{})
	if err != nil {
		c.log.Debug("peer refresh failed", "err", err)
		return
	}
	c.mergeSeed(peers.Supernodes, "supernode")
}
