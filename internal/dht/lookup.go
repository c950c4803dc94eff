package dht

import (
	"context"
	"errors"
	"time"

	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/proto"
)

// Lookup finds name's record for asker: from the cache, or from the first holder that has
// it. It asks one holder at a time, in ring order, and moves on to the next when one
// answers without the record, fails, or keeps it waiting longer than LookupHedge (then
// both are asked, and the first to find it wins). It gives up when Replicas holders
// answered without the record. hops counts the other members asked.
func (n *Node) Lookup(ctx context.Context, name, asker string) (res proto.IndexResult, hops int, cachedHit bool) {
	now := n.clk.Now()
	n.mu.Lock()
	c, ok := n.cache[name]
	n.mu.Unlock()
	if ok && now.Before(c.until) && now.Before(c.rec.Expires) && !c.rec.HasBlocked(asker) {
		n.m.Inc("lookup_cache_hits")
		return c.res, 0, true
	}
	n.m.Inc("lookups")
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the holders still being asked are not waited for
	cands := n.Candidates(name)
	n.preferOpen(cands, n.cfg.Replicas)
	type answer struct {
		m   index.Member
		r   proto.IndexResult
		err error
	}
	answers := make(chan answer, len(cands))
	ask := func(m index.Member) {
		if m.ID == n.cfg.Self {
			answers <- answer{m: m, r: n.Local(name, asker)}
			return
		}
		hops++
		go func() {
			r, err := n.cfg.Transport.Lookup(ctx, m, name, asker)
			answers <- answer{m: m, r: r, err: err}
		}()
	}
	hedge := n.clk.NewTimer(n.cfg.LookupHedge)
	defer hedge.Stop()
	// Ask up to twice Replicas holders: just after the ring changed, the first holders in
	// the new order may not have been given the record yet while later ones still hold it.
	next, running, answered := 0, 0, 0
	limit := min(len(cands), 2*n.cfg.Replicas)
	more := func() bool { return next < limit && answered+running < limit }
	var offline *proto.IndexResult // the first "offline" answer, kept in case nobody has it online
	if more() {
		ask(cands[next])
		next, running = next+1, running+1
	}
	for running > 0 {
		var a answer
		select {
		case a = <-answers:
		case <-hedge.Chan():
			if more() {
				n.m.Inc("lookup_hedges")
				ask(cands[next])
				next, running = next+1, running+1
			}
			hedge.Reset(n.cfg.LookupHedge)
			continue
		case <-ctx.Done():
			return res, hops, false
		}
		running--
		switch {
		case errors.Is(a.err, ErrUnreachable):
			n.MarkDead(a.m.ID, a.err)
		case errors.Is(a.err, ErrSlow):
			n.m.Inc("holders_slow")
		case errors.Is(a.err, proto.ErrBusy):
			n.MarkNotReady(a.m.ID) // holds nothing it can vouch for: ask another
		case a.err != nil:
			answered++ // the holder answered, just not with what we wanted
		case !a.r.Found:
			answered++
		case a.r.Online:
			// Never trust a holder blindly: the record must verify here too.
			rec, err := index.VerifyCached(a.r.Record, n.cfg.Creds, now)
			if err != nil || rec.Name != name {
				n.m.Inc("records_rejected")
				answered++
				break
			}
			n.cacheResult(name, a.r, rec, now)
			return a.r, hops, false
		default: // offline, last seen then; another holder may have a newer, online record
			if offline == nil {
				r := a.r
				offline = &r
			}
			answered++
			if answered >= n.cfg.Replicas {
				return *offline, hops, false
			}
		}
		if running == 0 && more() {
			ask(cands[next])
			next, running = next+1, running+1
			hedge.Reset(n.cfg.LookupHedge)
		}
	}
	if offline != nil {
		return *offline, hops, false
	}
	return res, hops, false
}

func (n *Node) cacheResult(name string, r proto.IndexResult, rec index.Record, now time.Time) {
	if n.cfg.CacheTTL <= 0 {
		return
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.cache) >= maxCache {
		for k := range n.cache { // random eviction: map order
			delete(n.cache, k)
			break
		}
	}
	n.cache[name] = cached{res: r, rec: rec, until: now.Add(n.cfg.CacheTTL)}
}

// Forget drops name's cached lookup result.
func (n *Node) Forget(name string) {
	n.mu.Lock()
	delete(n.cache, name)
	n.mu.Unlock()
}
