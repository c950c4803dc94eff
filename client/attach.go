package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"syscall"
	"time"

	"github.com/peerline/peerline/hostcache"
	"github.com/peerline/peerline/internal/backoff"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
)

// ErrNoSupernodes means the host cache is empty and the login server gave no seed yet.
var ErrNoSupernodes = errors.New("client: no supernode known yet (host cache empty)")

// attachLoop keeps the client attached to one supernode, reattaching after every loss.
// Every failed round backs off with jitter and spends from the retry budget the login
// loop shares; a round that found every supernode busy waits at least until the first
// of them said it could come back.
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
				c.kickLogin()
			} else if !errors.Is(err, ErrAllBusy) {
				// Every known supernode failed, or none is known: ask the login server
				// for a fresh seed before the next round.
				c.refreshSeed(ctx)
			}
			d, spent := c.budget.Delay(&bo, c.busyWait())
			if spent {
				c.m.Inc("retry_budget_spent")
			}
			c.log.Warn("attach failed; retrying", "err", err, "in", d.Round(time.Millisecond))
			if !c.sleep(ctx, d) {
				return
			}
			continue
		}
		// The attachment counts as a success once the supernode took the first
		// publication: one that accepts the connection but cannot publish (its view
		// of the ring full of dead members, say) must not be retried at once, again
		// and again, on a back-off reset by each accept (536 attaches in 10 s by one
		// client of the login-down storm at 4,000 users).
		settled := false
		err = c.stayAttached(ctx, a, func() {
			settled = true
			bo.Reset()
			c.budget.Success()
		})
		c.mu.Lock()
		c.attached = nil
		c.mu.Unlock()
		a.conn.Close()
		if ctx.Err() != nil {
			return
		}
		c.cache.MarkFailure(a.addr)
		c.saveCache()
		c.m.Inc("supernode_lost")
		if !settled {
			c.setLastErr(err, true)
			c.m.Inc("attach_unsettled")
			d, spent := c.budget.Delay(&bo, c.busyWait())
			if spent {
				c.m.Inc("retry_budget_spent")
			}
			c.log.Warn("supernode took the attachment but not the publication; retrying", "supernode", a.name, "addr", a.addr, "err", err, "in", d.Round(time.Millisecond))
			if !c.sleep(ctx, d) {
				return
			}
			continue
		}
		c.log.Warn("lost supernode; reattaching", "supernode", a.name, "addr", a.addr, "err", err)
		// A short pause only: the cache holds other supernodes to try at once.
		if !c.sleep(ctx, bo.Next()/4) {
			return
		}
	}
}

// ErrAllBusy means every supernode the client knows answered busy (or shed its
// connection) within its retry-after: the client waits, it does not hammer them.
var ErrAllBusy = errors.New("client: every known supernode is busy; waiting for their retry-after")

// Busy answers: how long a supernode that shed the connection at accept (no answer to
// read, so no retry-after) is left alone, and the retry-after assumed when a busy answer
// names none.
const (
	shedRetry = 5 * time.Second
	busyRetry = time.Second
)

// markBusy leaves addr out of attach rounds for d.
func (c *Client) markBusy(addr string, d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.cfg.Now()
	for a, until := range c.busyUntil {
		if !now.Before(until) {
			delete(c.busyUntil, a)
		}
	}
	c.busyUntil[addr] = now.Add(d)
}

// isBusy reports whether addr asked to be left alone until later.
func (c *Client) isBusy(addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	until, ok := c.busyUntil[addr]
	return ok && c.cfg.Now().Before(until)
}

// busyWait is how long until the first busy supernode may be tried again when the host
// cache holds no other: the retry-after to honour; 0 when some supernode is not busy.
func (c *Client) busyWait() time.Duration {
	now := c.cfg.Now()
	var wait time.Duration
	for _, e := range c.cache.Ranked() {
		c.mu.Lock()
		until, ok := c.busyUntil[e.Addr]
		c.mu.Unlock()
		if !ok || !now.Before(until) {
			return 0
		}
		if d := until.Sub(now); wait == 0 || d < wait {
			wait = d
		}
	}
	return wait
}

// shedAtAccept reports whether err is what a supernode's listener does to a connection
// it sheds beyond its connection limit: it accepts and closes at once, so the
// handshake ends with EOF or a reset. A dead supernode refuses or times out instead.
func shedAtAccept(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET)
}

// attach dials the best-ranked supernodes, ParallelAttach at a time, and keeps the first
// that completes an attachment; the others are closed. A supernode that answers busy is
// left alone for its retry-after, and the less loaded supernodes it names are merged
// into the host cache and tried next, in this round; one that shed the connection is
// treated as busy too, not as dead.
func (c *Client) attach(ctx context.Context) (*attachment, error) {
	c.m.Inc("attach_rounds")
	cands, busy := c.cache.Ranked(), 0 // a copy: filtered in place
	n := 0
	for _, e := range cands {
		if c.isBusy(e.Addr) {
			busy++
			continue
		}
		cands[n] = e
		n++
	}
	cands = cands[:n]
	if p := c.cfg.Prefer; p != "" && !c.isBusy(p) {
		// The preferred supernode is tried alone first, so that a faster one from the
		// cache does not win the race against it.
		pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		a, err := c.attachTo(pctx, hostcache.Entry{Addr: p, Source: hostcache.SourceManual})
		cancel()
		if err == nil {
			return c.recordAttachment(a), nil
		}
		c.noteBusy(p, err)
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
		if busy > 0 {
			return nil, ErrAllBusy
		}
		return nil, ErrNoSupernodes
	}
	type res struct {
		a   *attachment
		e   hostcache.Entry
		err error
	}
	actx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	results := make(chan res, c.cfg.ParallelAttach)
	var tried map[string]bool // the candidates and alternatives of this round, once a supernode names alternatives
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
	allBusy := true
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
				if alts := c.noteBusy(r.e.Addr, r.err); alts != nil {
					if tried == nil {
						tried = make(map[string]bool, len(cands)+len(alts))
						for _, e := range cands {
							tried[e.Addr] = true
						}
					}
					// Try the supernodes it points at before the rest of the cache.
					var front []hostcache.Entry
					for _, s := range alts {
						if !tried[s.Addr] && !c.isBusy(s.Addr) && len(tried) < maxRound {
							tried[s.Addr] = true
							front = append(front, hostcache.Entry{Addr: s.Addr, PubKey: s.ID, Since: s.Since, Source: "supernode"})
						}
					}
					c.m.Add("alternatives_tried", uint64(len(front)))
					cands = append(cands[:next:next], append(front, cands[next:]...)...)
				} else if !c.isBusy(r.e.Addr) {
					allBusy = false
					c.cache.MarkFailure(r.e.Addr)
				}
			}
			if won == nil && next < len(cands) && actx.Err() == nil {
				start()
			}
		}
	}
	if won == nil {
		c.saveCache()
		if allBusy {
			errs = append(errs, ErrAllBusy)
		}
		return nil, errors.Join(errs...)
	}
	return c.recordAttachment(won), nil
}

// maxRound bounds the supernodes one attach round tries, alternatives included.
const maxRound = 2 * proto.MaxList

// noteBusy records a busy answer or a shed connection from addr: the supernode is left
// alone for its retry-after, and the alternatives it named (non-nil when it named any)
// go into the host cache.
func (c *Client) noteBusy(addr string, err error) []proto.SupernodeInfo {
	if pe, ok := proto.AsError(err); ok && errors.Is(err, proto.ErrBusy) {
		c.m.Inc("attach_busy")
		ra := pe.RetryAfter()
		if ra <= 0 {
			ra = busyRetry
		}
		c.markBusy(addr, ra)
		if len(pe.Alternatives) == 0 {
			return nil
		}
		c.m.Add("alternatives_received", uint64(len(pe.Alternatives)))
		c.mergeSeed(pe.Alternatives, "supernode")
		return pe.Alternatives
	}
	if shedAtAccept(err) {
		c.m.Inc("attach_shed")
		c.markBusy(addr, shedRetry)
	}
	return nil
}

// recordAttachment records a successful attachment.
func (c *Client) recordAttachment(won *attachment) *attachment {
	c.cache.MarkSuccess(won.addr)
	c.saveCache()
	c.keepSession(won, won.ticket, won.secret, won.cred)
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
	c.m.Inc("attach_attempts")
	tc, err := c.dialSupernode(ctx, e.Addr)
	if err != nil {
		return nil, err
	}
	snKey := tc.PeerKey()
	conn := rpc.New(tc, rpc.Options{Logger: c.log, Counter: c.m, Handler: clientHandler{c}, JSONOnly: c.cfg.JSONOnly})
	go conn.Run(context.WithoutCancel(ctx))
	ok, err := rpc.Call[*proto.AttachOK](ctx, conn, &proto.Attach{Credential: cred, Binary: conn.ReadsBinary()})
	if err != nil {
		conn.Close()
		return nil, err
	}
	var sc identity.Credential
	if c.checkedCredential(e.Addr, snKey, ok.Credential) {
		sc, err = identity.VerifyHolderChecked(ok.Credential, snKey, identity.KindSupernode, c.cfg.Now())
	} else {
		sc, err = identity.VerifyHolder(ok.Credential, c.cfg.Login.Key, snKey, identity.KindSupernode, c.cfg.Now())
	}
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
	c.setLayer(ok.Layer)
	return &attachment{conn: conn, addr: e.Addr, id: identity.EncodeKey(snKey), name: sc.Name,
		since: ok.Since, at: c.cfg.Now(), keep: keep, stun: ok.STUN, turn: ok.TURN,
		ticket: ok.Ticket, secret: tc.ResumptionSecret(), cred: ok.Credential, resumed: tc.Resumed()}, nil
}

// jittered returns a period drawn uniformly from [0.8 d, d]: never later than d, which
// the supernodes' timeouts and a record's lifetime (two keep-alive periods) count on.
func jittered(d time.Duration) time.Duration {
	return d - rand.N(d/5+1)
}

// stockedCache is how many supernodes a host cache must hold for a client to put off its
// refresh from the supernode it attached to: enough to find a live one after losing many
// (Skype's December 2010 collapse took 25-30% of its supernodes).
const stockedCache = proto.MaxList / 4

// buddyRefreshSpread is the window over which a client that knows its buddy list reads
// it again after attaching.
const buddyRefreshSpread = 2 * time.Minute

// buddyFresh is how long a buddy list read from the login server is taken as current.
// A client restarted within it (a mass reboot) reads it again only between buddyFresh
// and twice that after the last read, at random: a population that rebooted at once
// does not come back to the login server at once, not even minutes later.
const buddyFresh = 10 * time.Minute

// buddyReread is how long after attaching a client that knows its buddy list, last read
// at readAt, reads it again.
func (c *Client) buddyReread(readAt time.Time) time.Duration {
	age := c.cfg.Now().Sub(readAt)
	if readAt.IsZero() || age < 0 || age >= buddyFresh {
		return rand.N(buddyRefreshSpread)
	}
	return buddyFresh - age + rand.N(buddyFresh)
}

// stayAttached publishes the user's record, subscribes to the buddies' presence, then
// republishes every keep-alive period (the publication is the keep-alive) and refreshes
// the host cache from the supernode, until the connection fails.
//
// settled is called once the first publication succeeded.
func (c *Client) stayAttached(ctx context.Context, a *attachment, settled func()) error {
	// The record carries the blocked names, so a client that knows no buddy list yet
	// (neither from the login server nor saved by an earlier run) reads it before the
	// first publication. One that knows it publishes and subscribes at once, and reads
	// the list again at a random moment of the next minutes (republishing and
	// resubscribing if it changed): the first publication completes the attachment at
	// the supernode, which admits only so many in progress, and after a mass reboot the
	// login server then sees the population spread out, not at once. Neither may wait
	// for a slow or absent login server long: the supernode drops a client silent for
	// two keep-alive periods.
	refresh := func() error {
		c.mu.Lock()
		buddies, blocked := c.buddies, c.blocked
		c.mu.Unlock()
		bctx, cancel := context.WithTimeout(ctx, a.keep/2)
		err := c.refreshBuddies(bctx)
		cancel()
		if err != nil {
			c.log.Debug("buddy list unavailable; keeping the last one", "err", err)
			return nil
		}
		c.mu.Lock()
		changedBlocked := !slices.Equal(blocked, c.blocked)
		changedBuddies := !slices.Equal(buddies, c.buddies)
		c.mu.Unlock()
		if changedBlocked {
			if err := c.publish(ctx, a, false); err != nil {
				return err
			}
		}
		if changedBuddies {
			if err := c.subscribe(ctx, a); err != nil {
				return fmt.Errorf("subscribe: %w", err)
			}
		}
		return nil
	}
	c.mu.Lock()
	known, readAt := c.buddiesKnown, c.buddiesRead
	c.mu.Unlock()
	if !known {
		if err := refresh(); err != nil {
			return err
		}
	}
	if err := c.publish(ctx, a, false); err != nil {
		return err
	}
	settled()
	if err := c.subscribe(ctx, a); err != nil {
		return fmt.Errorf("subscribe: %w", err)
	}
	// The deferred buddy-list read: for a client that knew its list, at a random moment
	// of the spread, or past buddyFresh if the list is recent (buddyReread); soon, and again with back-off until it succeeds, for one whose
	// first read failed (it has no list to watch its buddies with).
	listBo := backoff.Backoff{Base: c.cfg.RetryBase, Max: c.cfg.RetryMax}
	laterTimer := c.clk.NewTimer(c.buddyReread(readAt))
	defer laterTimer.Stop()
	later := laterTimer.Chan()
	if !known {
		c.mu.Lock()
		readNow := c.buddiesKnown
		c.mu.Unlock()
		if readNow {
			later = nil // just read
		} else {
			laterTimer.Reset(listBo.Next())
		}
	}
	// The host cache is refreshed from the supernode now only when it holds few
	// supernodes (a first start); a client restarted with a stocked cache refreshes it at
	// a random moment of the refresh interval instead. After a mass reboot every client
	// would otherwise fetch and merge a full list at once, the supernodes encoding a
	// population's worth of lists while they admit it.
	firstPeers := jittered(c.cfg.RefreshInterval)
	if c.cache.Len() < stockedCache {
		c.refreshPeers(ctx, a)
	} else {
		firstPeers = c.cfg.RefreshInterval/10 + rand.N(c.cfg.RefreshInterval*9/10+1)
	}
	natDone := make(chan struct{})
	go func() { defer close(natDone); c.detectNAT(ctx, a) }()
	defer func() { <-natDone }()
	// Both periods are jittered, each one anew: clients that attached in the same
	// moment (after a mass reboot, or a supernode's crash) would otherwise keep
	// republishing in step, the whole population's keep-alives arriving at one instant
	// every period for as long as they run.
	keep := c.clk.NewTimer(jittered(a.keep))
	defer keep.Stop()
	peers := c.clk.NewTimer(firstPeers)
	defer peers.Stop()
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
		case <-peers.Chan():
			peers.Reset(jittered(c.cfg.RefreshInterval))
			c.refreshPeers(ctx, a)
		case <-later:
			later = nil
			if err := refresh(); err != nil {
				return err
			}
			c.mu.Lock()
			known := c.buddiesKnown
			c.mu.Unlock()
			if !known {
				laterTimer.Reset(listBo.Next())
				later = laterTimer.Chan()
			}
		case <-keep.Chan():
			keep.Reset(jittered(a.keep))
			if err := c.publish(ctx, a, false); err != nil {
				if errors.Is(err, proto.ErrCredExpired) || errors.Is(err, proto.ErrRefused) {
					c.kickLogin()
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
	c.setLayer(peers.Layer)
}

func (c *Client) setLayer(l proto.Layer) {
	c.mu.Lock()
	c.layer = l
	c.mu.Unlock()
}
