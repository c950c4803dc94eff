package portmap

import (
	"context"
	"net/netip"
	"time"

	"github.com/peerline/peerline/internal/backoff"
	"github.com/peerline/peerline/internal/clocks"
)

// Run's schedule apart from the Config's.
const (
	retryBase = 5 * time.Second // first back-off ceiling after a failed Map
	retryMax  = 5 * time.Minute // largest one
	minRenew  = time.Second     // a router granting a second or less is not renewed faster
)

// Run maps Config.LocalPort and keeps it mapped until ctx ends. It renews the mapping at
// half its lifetime; every Config.CheckInterval it asks the router whether it restarted
// or changed its external address, and maps again at once if so; after a failure it
// tries again with a growing, jittered back-off; and it forgets a mapping that expired
// unrenewed. When ctx ends, Run deletes the mapping, giving up after
// Config.DeleteTimeout, and returns the deletion's error (nil if there was nothing to
// delete). It returns only once everything it started has stopped. Call it once.
func (c *Client) Run(ctx context.Context) error {
	bo := backoff.Backoff{Base: retryBase, Max: retryMax}
	next := c.clk.Now()   // when to map, or renew
	var checked time.Time // when the router last answered for the mapping
	for ctx.Err() == nil {
		cur, held := c.Current()
		wake, act := next, "map"
		if held && c.cfg.CheckInterval > 0 {
			if at := checked.Add(c.cfg.CheckInterval); at.Before(wake) {
				wake, act = at, "check"
			}
		}
		if exp := cur.Expiry(); held && !exp.IsZero() && exp.Before(wake) {
			wake, act = exp, "expire"
		}
		if d := wake.Sub(c.clk.Now()); d > 0 && !clocks.Sleep(ctx, c.clk, d) {
			break
		}
		switch act {
		case "expire":
			c.expire(cur)
			continue
		case "check":
			checked = c.clk.Now()
			if !c.check(ctx, cur) {
				continue
			}
		}
		m, err := c.Map(ctx)
		if ctx.Err() != nil {
			break
		}
		now := c.clk.Now()
		if err != nil {
			d := bo.Next()
			c.log.Warn("portmap: no port mapping; trying again later", "in", d, "err", err)
			next = now.Add(d)
			continue
		}
		bo.Reset()
		next, checked = now.Add(renewAfter(m, c.cfg.Lifetime)), now
	}
	dctx, cancel := withTimeout(context.WithoutCancel(ctx), c.clk, c.cfg.DeleteTimeout)
	defer cancel()
	return c.Delete(dctx)
}

// renewAfter is how long after it was obtained m is renewed: at half its lifetime, or
// half of the lifetime asked for if m is permanent (to put it back if the router lost
// it), and not sooner than minRenew.
func renewAfter(m Mapping, asked time.Duration) time.Duration {
	life := m.Lifetime
	if life <= 0 {
		life = asked
	}
	return max(life/2, minRenew)
}

// expire forgets cur, which the router has forgotten by now, unless a Map replaced it.
func (c *Client) expire(cur Mapping) {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	if m, held := c.Current(); !held || m != cur {
		return
	}
	c.m.Inc("portmap_expired")
	c.log.Warn("portmap: the mapping expired before it could be renewed", "protocol", cur.Protocol, "external", cur.External)
	c.setCurrent(Mapping{}, igdService{})
}

// check asks the router whether cur still stands: for NAT-PMP and PCP, whether the epoch
// shows no restart, and for NAT-PMP and UPnP, whether the external address is still
// cur's. It reports whether to map again now, which it also says if the router did not
// answer or this host moved to another network.
func (c *Client) check(ctx context.Context, cur Mapping) (remap bool) {
	defer c.m.Inc("portmap_checks") // once the check's timers are stopped, which tests count on
	p, err := c.findPath()
	if err != nil || p.local != cur.Internal.Addr() {
		c.log.Info("portmap: the route to the router changed; mapping again", "err", err)
		return true
	}
	ctx, cancel := withTimeout(ctx, c.clk, c.cfg.Timeout)
	defer cancel()
	var a answer
	switch cur.Protocol {
	case PCP:
		a = c.probePCP(ctx, p)
	case NATPMP:
		a = c.probeNATPMP(ctx, p)
	case UPnP:
		igd := c.heldIGD()
		if len(igd) == 0 {
			return true
		}
		text, err := igd[0].GetExternalIPAddressCtx(ctx)
		a = answer{ok: err == nil, err: err}
		if ip, perr := netip.ParseAddr(text); err == nil && perr == nil {
			a.ext = ip.Unmap()
		}
	}
	switch {
	case !a.ok:
		c.log.Info("portmap: the router did not confirm the mapping; mapping again", "protocol", cur.Protocol, "err", a.err)
		return true
	case a.restarted:
		return true // noteEpoch logged it
	case a.ext.IsValid() && a.ext != cur.External.Addr():
		c.log.Info("portmap: the router's external address changed; mapping again", "was", cur.External.Addr(), "now", a.ext)
		return true
	}
	return false
}
