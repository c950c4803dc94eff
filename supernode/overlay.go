package supernode

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
)

// The user index.
//
// Membership comes from the login server, which admits every supernode and so knows them
// all: each heartbeat answer carries the member list's version and a supernode with an
// older one fetches the list. Between fetches a supernode suspects, on its own, any member
// it fails to reach, and leaves it out of holder sets for SuspectTime. Publications and
// lookups walk the ring in the same order and skip members they find dead, so they meet
// at the same live holders; with the member list known, a lookup is one hop.
//
// Records live on Replicas holders. Users republish with every keep-alive, and when the
// ring changes each holder hands the records it no longer owns to their new holders and
// copies the ones it keeps to holders that joined their set: no record is lost while one
// holder lives.

// overlay is the index state of a supernode.
type overlay struct {
	store *index.Store
	peers *peerPool

	mu      sync.Mutex // mu protects the following fields
	ring    *index.Ring
	version uint64
	members map[string]proto.SupernodeInfo
	// A repair pass is pending; repairOld is the ring before the change (nil = unknown).
	repairPending bool
	repairOld     *index.Ring
	repairKick    chan struct{}
	peersList     []proto.SupernodeInfo            // cache for Peers; nil = stale
	dead          map[string]time.Time             // suspected members, until
	watchers      map[string]map[watcher]time.Time // name -> watcher -> expiry
	cache         map[string]cached
	subs          map[string][]string // attached user -> names they watch
}

type watcher struct{ sn, user string }

type cached struct {
	res   proto.IndexResult
	rec   index.Record
	until time.Time
}

const maxCache = 50_000

func (sn *Supernode) initOverlay() {
	sn.ov = &overlay{
		store:      index.NewStore(0),
		peers:      newPeerPool(sn, sn.cfg.MaxPeers),
		ring:       index.NewRing(nil),
		members:    make(map[string]proto.SupernodeInfo),
		repairKick: make(chan struct{}, 1),
		dead:       make(map[string]time.Time),
		watchers:   make(map[string]map[watcher]time.Time),
		cache:      make(map[string]cached),
		subs:       make(map[string][]string),
	}
}

// alive reports whether member id is not suspected dead.
func (sn *Supernode) alive(id string) bool {
	if id == sn.id {
		return true
	}
	ov := sn.ov
	ov.mu.Lock()
	defer ov.mu.Unlock()
	until, ok := ov.dead[id]
	if !ok {
		return true
	}
	if sn.cfg.Now().After(until) {
		delete(ov.dead, id)
		return true
	}
	return false
}

func (sn *Supernode) markDead(id string, why error) {
	if id == sn.id || sn.runCtx.Err() != nil {
		return
	}
	ov := sn.ov
	ov.mu.Lock()
	_, already := ov.dead[id]
	ov.dead[id] = sn.cfg.Now().Add(sn.cfg.SuspectTime)
	ov.cache = make(map[string]cached) // answers may name supernodes behind the dead one
	ov.mu.Unlock()
	if !already {
		sn.m.Inc("peers_suspected")
		sn.log.Warn("supernode suspected dead", "peer", id, "err", why)
		sn.requestRepair(nil)
	}
}

func (sn *Supernode) currentRing() *index.Ring {
	sn.ov.mu.Lock()
	defer sn.ov.mu.Unlock()
	return sn.ov.ring
}

// RingSize is the number of supernodes this supernode knows.
func (sn *Supernode) RingSize() int { return sn.currentRing().Len() }

// syncMembers brings the member list up to the login server's version: the changes
// since the version it knows when the login server still has them, else the whole list.
func (sn *Supernode) syncMembers(ctx context.Context, c *rpc.Conn, version uint64) error {
	ov := sn.ov
	ov.mu.Lock()
	have, ring := ov.version, ov.ring
	ov.mu.Unlock()
	if have == version && ring.Len() > 0 {
		return nil
	}
	if have != 0 && ring.Len() > 0 {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		ok, err := rpc.Call[*proto.MembersOK](cctx, c, &proto.Members{Since: have})
		cancel()
		if err != nil {
			return fmt.Errorf("members: %w", err)
		}
		if ok.Delta {
			var add []index.Member
			var remove []string
			ov.mu.Lock()
			for _, ch := range ok.Changes {
				if ch.Left {
					delete(ov.members, ch.ID)
					remove = append(remove, ch.ID)
				} else {
					ov.members[ch.ID] = ch.SupernodeInfo
					add = append(add, index.Member{ID: ch.ID, Addr: ch.Addr})
				}
			}
			ov.mu.Unlock()
			next := ring.With(add, remove)
			if next.Len() == ok.Total {
				sn.setRing(next, ok.Version, ring)
				return nil
			}
			// Out of step with the login server (changes missed): fetch the whole list.
			sn.m.Inc("member_resyncs")
		}
	}
	// A consistent snapshot needs every page from one version: a departure between two
	// pages would shift a member past us unseen. Retry a few times when it moves.
	var all []proto.SupernodeInfo
	for attempt := 0; ; attempt++ {
		var first uint64
		consistent := true
		all = all[:0]
		for page := 0; page < 1000; page++ {
			cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			ok, err := rpc.Call[*proto.MembersOK](cctx, c, &proto.Members{Offset: len(all), At: first})
			cancel()
			if err != nil {
				return fmt.Errorf("members: %w", err)
			}
			if page == 0 {
				first = ok.Version
			} else if ok.Version != first {
				consistent = false
			}
			all = append(all, ok.Members...)
			if len(ok.Members) == 0 || len(all) >= ok.Total {
				break
			}
		}
		version = first
		if consistent {
			break
		}
		if attempt == 4 {
			// Still moving: keep what we have under the oldest version, so the next
			// heartbeat's delta replays every change since.
			sn.m.Inc("member_sync_inconsistent")
			break
		}
	}
	ms := make([]index.Member, 0, len(all))
	ov.mu.Lock()
	ov.members = make(map[string]proto.SupernodeInfo, len(all))
	for _, m := range all {
		ov.members[m.ID] = m
		ms = append(ms, index.Member{ID: m.ID, Addr: m.Addr})
	}
	ov.mu.Unlock()
	sn.setRing(index.NewRing(ms), version, ring)
	return nil
}

// setRing installs a new ring and re-homes records for it.
func (sn *Supernode) setRing(ring *index.Ring, version uint64, old *index.Ring) {
	ov := sn.ov
	ov.mu.Lock()
	ov.ring, ov.version, ov.peersList = ring, version, nil
	// The login server's list is fresher than our suspicions of the members on it.
	for id := range ov.dead {
		if !ring.Has(id) {
			delete(ov.dead, id)
		}
	}
	ov.mu.Unlock()
	sn.m.Inc("member_syncs")
	sn.requestRepair(old)
}

// requestRepair asks the repair loop for a pass. Requests that arrive while one waits are
// merged into it (then every holder of each record is refreshed, not only new ones), so
// a burst of membership changes costs one pass, not one per change.
func (sn *Supernode) requestRepair(old *index.Ring) {
	ov := sn.ov
	ov.mu.Lock()
	if ov.repairPending {
		ov.repairOld = nil
	} else {
		ov.repairPending, ov.repairOld = true, old
	}
	ov.mu.Unlock()
	select {
	case ov.repairKick <- struct{}{}:
	default:
	}
}

// repairDebounce gathers the changes of a burst (a crash of many supernodes is seen one
// by one) into one repair pass.
const repairDebounce = 300 * time.Millisecond

// repairLoop runs repair passes one at a time until ctx ends.
func (sn *Supernode) repairLoop(ctx context.Context) {
	ov := sn.ov
	for {
		select {
		case <-ctx.Done():
			return
		case <-ov.repairKick:
		}
		t := time.NewTimer(repairDebounce)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		ov.mu.Lock()
		pending, old := ov.repairPending, ov.repairOld
		ov.repairPending, ov.repairOld = false, nil
		ov.mu.Unlock()
		if pending {
			sn.repair(ctx, old)
		}
	}
}

// Peers returns up to MaxList other live supernodes, longest-lived first, for clients'
// host caches.
func (sn *Supernode) Peers() []proto.SupernodeInfo {
	ov := sn.ov
	ov.mu.Lock()
	defer ov.mu.Unlock()
	if ov.peersList == nil {
		ov.peersList = make([]proto.SupernodeInfo, 0, len(ov.members))
		for id, m := range ov.members {
			if id != sn.id {
				ov.peersList = append(ov.peersList, m)
			}
		}
		sort.Slice(ov.peersList, func(i, j int) bool {
			a, b := ov.peersList[i], ov.peersList[j]
			if !a.Since.Equal(b.Since) {
				return a.Since.Before(b.Since)
			}
			return a.ID < b.ID
		})
		if len(ov.peersList) > proto.MaxList {
			ov.peersList = ov.peersList[:proto.MaxList]
		}
	}
	return append([]proto.SupernodeInfo(nil), ov.peersList...)
}

// holdersDo walks name's ring order and calls f on live members until Replicas calls
// succeeded; members whose transport fails are suspected and skipped. It returns the
// successes and the number of remote members contacted.
func (sn *Supernode) holdersDo(ctx context.Context, name string, f func(index.Member) (stop bool, err error)) (ok, hops int) {
	ring := sn.currentRing()
	tries := 0
	ring.Walk(name, func(m index.Member) bool {
		if !sn.alive(m.ID) {
			return true
		}
		if tries >= sn.cfg.Replicas+8 { // bound the walk when many members are dead
			return false
		}
		tries++
		if m.ID != sn.id {
			hops++
		}
		stop, err := f(m)
		switch {
		case errors.Is(err, errTransport):
			sn.markDead(m.ID, err)
			return true
		case err != nil:
			ok++ // the holder answered, just not with what we wanted
		default:
			ok++
		}
		return !stop && ok < sn.cfg.Replicas
	})
	return ok, hops
}

// storeRecord verifies and stores a record as a holder, and tells watchers if the user's
// presence changed.
func (sn *Supernode) storeRecord(raw []byte) error {
	now := sn.cfg.Now()
	rec, err := index.Verify(raw, sn.cfg.LoginKey, now)
	if err != nil {
		sn.m.Inc("records_rejected")
		return proto.ErrRefused.With("record refused: %v", err)
	}
	before, had := sn.ov.store.Get(rec.Name, now)
	if err := sn.ov.store.Put(raw, rec, now); err != nil {
		if errors.Is(err, index.ErrStale) {
			return nil // a replay or a race with a newer copy: nothing to do
		}
		return err
	}
	sn.m.Inc("records_stored")
	if !had || before.Offline != rec.Offline {
		sn.notifyWatchers(rec.Name)
	}
	return nil
}

// replicate sends a record to its holders.
func (sn *Supernode) replicate(ctx context.Context, name string, raw []byte) int {
	ok, _ := sn.holdersDo(ctx, name, func(m index.Member) (bool, error) {
		if m.ID == sn.id {
			return false, sn.storeRecord(raw)
		}
		_, err := sn.ov.peers.call(ctx, m, &proto.IndexStore{Record: raw})
		return false, err
	})
	return ok
}

// lookupLocal answers for a record this supernode holds. A user who blocked asker is not
// found: blocked users see nothing.
func (sn *Supernode) lookupLocal(name, asker string) proto.IndexResult {
	e, ok := sn.ov.store.Get(name, sn.cfg.Now())
	if !ok || (asker != "" && e.Rec.HasBlocked(asker)) {
		return proto.IndexResult{}
	}
	res := proto.IndexResult{Found: true, Online: !e.Offline, LastSeen: e.LastSeen}
	if !e.Offline {
		res.Record = e.Raw
	}
	return res
}

// Lookup finds name's record for asker: from the cache, or from the first holder that has
// it. hops counts the other supernodes contacted.
func (sn *Supernode) Lookup(ctx context.Context, name, asker string) (res proto.IndexResult, hops int, cachedHit bool) {
	now := sn.cfg.Now()
	sn.ov.mu.Lock()
	c, ok := sn.ov.cache[name]
	sn.ov.mu.Unlock()
	if ok && now.Before(c.until) && now.Before(c.rec.Expires) && !c.rec.HasBlocked(asker) {
		sn.m.Inc("lookup_cache_hits")
		return c.res, 0, true
	}
	sn.m.Inc("lookups")
	_, hops = sn.holdersDo(ctx, name, func(m index.Member) (bool, error) {
		var r proto.IndexResult
		if m.ID == sn.id {
			r = sn.lookupLocal(name, asker)
		} else {
			resp, err := sn.ov.peers.call(ctx, m, &proto.IndexLookup{Name: name, Asker: asker})
			if err != nil {
				return false, err
			}
			rr, ok := resp.(*proto.IndexResult)
			if !ok {
				return false, proto.ErrBadRequest
			}
			r = *rr
		}
		if !r.Found {
			return false, nil
		}
		if r.Online {
			// Never trust a holder blindly: the record must verify here too.
			rec, err := index.Verify(r.Record, sn.cfg.LoginKey, now)
			if err != nil || rec.Name != name {
				sn.m.Inc("records_rejected")
				return false, nil
			}
			sn.cacheResult(name, r, rec, now)
		}
		res = r
		return true, nil
	})
	return res, hops, false
}

func (sn *Supernode) cacheResult(name string, r proto.IndexResult, rec index.Record, now time.Time) {
	if sn.cfg.CacheTTL <= 0 {
		return
	}
	ov := sn.ov
	ov.mu.Lock()
	defer ov.mu.Unlock()
	if len(ov.cache) >= maxCache {
		for k := range ov.cache { // random eviction: map order
			delete(ov.cache, k)
			break
		}
	}
	ov.cache[name] = cached{res: r, rec: rec, until: now.Add(sn.cfg.CacheTTL)}
}

func (sn *Supernode) forget(name string) {
	sn.ov.mu.Lock()
	delete(sn.ov.cache, name)
	sn.ov.mu.Unlock()
}

// gone tells name's holders that the user's connection to this supernode died.
func (sn *Supernode) gone(ctx context.Context, name string, seq uint64) {
	sn.forget(name)
	sn.holdersDo(ctx, name, func(m index.Member) (bool, error) {
		if m.ID == sn.id {
			if sn.ov.store.Gone(name, sn.id, seq, sn.cfg.Now()) {
				sn.notifyWatchers(name)
			}
			return false, nil
		}
		_, err := sn.ov.peers.call(ctx, m, &proto.IndexGone{Name: name, Seq: seq})
		return false, err
	})
}

// addWatch registers w for name's presence at this holder and pushes the current state.
func (sn *Supernode) addWatch(name string, w watcher) {
	if e, ok := sn.ov.store.Get(name, sn.cfg.Now()); ok && e.Rec.HasBlocked(w.user) {
		return // blocked users see nothing
	}
	ov := sn.ov
	ov.mu.Lock()
	ws := ov.watchers[name]
	if ws == nil {
		ws = make(map[watcher]time.Time)
		ov.watchers[name] = ws
	}
	ws[w] = sn.cfg.Now().Add(3 * sn.cfg.KeepAlive)
	ov.mu.Unlock()
	if e, ok := sn.ov.store.Get(name, sn.cfg.Now()); ok {
		go sn.sendPresence(sn.runCtx, w, proto.Presence{Name: name, Online: !e.Offline, LastSeen: e.LastSeen})
	}
}

// notifyWatchers pushes name's current presence to everyone watching it.
func (sn *Supernode) notifyWatchers(name string) {
	now := sn.cfg.Now()
	e, ok := sn.ov.store.Get(name, now)
	if !ok {
		return
	}
	ov := sn.ov
	ov.mu.Lock()
	var ws []watcher
	for w, exp := range ov.watchers[name] {
		if now.After(exp) {
			delete(ov.watchers[name], w)
			continue
		}
		ws = append(ws, w)
	}
	ov.mu.Unlock()
	p := proto.Presence{Name: name, Online: !e.Offline, LastSeen: e.LastSeen}
	for _, w := range ws {
		if e.Rec.HasBlocked(w.user) {
			continue
		}
		go sn.sendPresence(sn.runCtx, w, p)
	}
}

func (sn *Supernode) sendPresence(ctx context.Context, w watcher, p proto.Presence) {
	p.To = w.user
	if w.sn == sn.id {
		sn.presenceToClient(p)
		return
	}
	m, ok := sn.currentRing().Member(w.sn)
	if !ok {
		return
	}
	if _, err := sn.ov.peers.call(ctx, m, &p); errors.Is(err, errTransport) {
		sn.markDead(m.ID, err)
	}
	sn.m.Inc("presence_sent")
}

// presenceToClient forwards a presence change to the attached user it is for.
func (sn *Supernode) presenceToClient(p proto.Presence) {
	sn.mu.Lock()
	cl, ok := sn.clients[p.To]
	sn.mu.Unlock()
	if !ok {
		return
	}
	p.To = ""
	cl.conn.Notify(&p)
}

// subscribe sets the names user watches and registers the watches at their holders.
func (sn *Supernode) subscribe(ctx context.Context, user string, names []string) {
	sn.ov.mu.Lock()
	sn.ov.subs[user] = append([]string(nil), names...)
	sn.ov.mu.Unlock()
	for _, name := range names {
		sn.watchAtHolder(ctx, name, user)
	}
}

func (sn *Supernode) watchAtHolder(ctx context.Context, name, user string) {
	w := watcher{sn: sn.id, user: user}
	// The first live holder sees every change of name's record.
	sn.holdersDo(ctx, name, func(m index.Member) (bool, error) {
		if m.ID == sn.id {
			sn.addWatch(name, w)
			return true, nil
		}
		_, err := sn.ov.peers.call(ctx, m, &proto.Watch{Name: name, Watcher: user})
		return err == nil, err
	})
}

// maintain runs the periodic work of the index: expiring records, renewing this
// supernode's clients' watches (their holders may have changed).
func (sn *Supernode) maintain(ctx context.Context) {
	t := time.NewTicker(sn.cfg.KeepAlive)
	defer t.Stop()
	overloaded := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if sn.cfg.Overload != nil {
			sn.mu.Lock()
			n := len(sn.clients)
			sn.mu.Unlock()
			if sn.cfg.Overload(n) {
				overloaded++
			} else {
				overloaded = 0
			}
			if overloaded >= 3 {
				sn.log.Warn("overloaded: demoting", "clients", n)
				sn.m.Inc("demotions")
				sn.demote()
				return
			}
		}
		for _, name := range sn.ov.store.Expire(sn.cfg.Now()) {
			sn.notifyWatchers(name)
		}
		sn.ov.mu.Lock()
		subs := make(map[string][]string, len(sn.ov.subs))
		for u, ns := range sn.ov.subs {
			subs[u] = ns
		}
		sn.ov.mu.Unlock()
		for u, ns := range subs {
			for _, n := range ns {
				sn.watchAtHolder(ctx, n, u)
			}
		}
	}
}

// repair re-homes held records after the ring or the set of live members changed: records
// this supernode no longer holds go to their holders and are dropped here; for the ones it
// keeps, holders that joined the set get a copy.
func (sn *Supernode) repair(ctx context.Context, old *index.Ring) {
	if ctx == nil || ctx.Err() != nil {
		return
	}
	// The users attached here are republished first: their records may have lost every
	// holder at once, and their next keep-alive could be most of a period away.
	sn.mu.Lock()
	var own [][]byte
	var names []string
	for name, cl := range sn.clients {
		if cl.raw != nil && !cl.offline && sn.cfg.Now().Before(cl.rec.Expires) {
			own, names = append(own, cl.raw), append(names, name)
		}
	}
	sn.mu.Unlock()
	for i, raw := range own {
		if ctx.Err() != nil {
			return
		}
		sn.replicate(ctx, names[i], raw)
	}
	ring := sn.currentRing()
	now := sn.cfg.Now()
	for _, e := range sn.ov.store.Snapshot() {
		if e.Offline || !now.Before(e.Rec.Expires) {
			continue
		}
		holders := ring.Holders(e.Rec.Name, sn.cfg.Replicas, sn.alive)
		mine := false
		for _, h := range holders {
			if h.ID == sn.id {
				mine = true
			}
		}
		var before map[string]bool
		if old != nil && mine {
			before = map[string]bool{}
			for _, h := range old.Holders(e.Rec.Name, sn.cfg.Replicas, sn.alive) {
				before[h.ID] = true
			}
		}
		for _, h := range holders {
			if h.ID == sn.id || (mine && before != nil && before[h.ID]) {
				continue
			}
			if _, err := sn.ov.peers.call(ctx, h, &proto.IndexStore{Record: e.Raw}); errors.Is(err, errTransport) {
				sn.markDead(h.ID, err)
			} else if err == nil {
				sn.m.Inc("records_handed")
			}
		}
		if !mine && ring.Len() > 0 {
			sn.ov.store.Delete(e.Rec.Name)
		}
	}
}

// handOff gives every record this supernode holds to the holders that follow it, before
// the supernode leaves the ring.
func (sn *Supernode) handOff(ctx context.Context) int {
	n := 0
	for _, e := range sn.ov.store.Snapshot() {
		if e.Offline || !sn.cfg.Now().Before(e.Rec.Expires) {
			continue
		}
		ring := sn.currentRing()
		for _, h := range ring.Holders(e.Rec.Name, sn.cfg.Replicas+1, func(id string) bool { return id != sn.id && sn.alive(id) }) {
			if _, err := sn.ov.peers.call(ctx, h, &proto.IndexStore{Record: e.Raw}); err == nil {
				n++
			}
		}
	}
	return n
}

// deliver hands an end-to-end message to an attached user, or forwards it to the
// supernode the recipient's record names.
func (sn *Supernode) deliver(ctx context.Context, d *proto.Deliver, rec *index.Record) error {
	if h := sn.cfg.TestHookForward; h != nil {
		h(d)
	}
	if rec == nil || rec.Supernode == sn.id {
		sn.mu.Lock()
		cl, ok := sn.clients[d.To]
		sn.mu.Unlock()
		if !ok {
			return proto.ErrOffline.With("%s is offline", d.To)
		}
		if cl.rec != nil && cl.rec.HasBlocked(d.From) {
			return proto.ErrBlocked.With("%s does not accept your messages", d.To)
		}
		sn.m.Inc("messages_delivered")
		return cl.conn.Notify(d)
	}
	m, ok := sn.currentRing().Member(rec.Supernode)
	if !ok {
		m = index.Member{ID: rec.Supernode, Addr: rec.SNAddr}
	}
	_, err := sn.ov.peers.call(ctx, m, d)
	if errors.Is(err, errTransport) {
		sn.markDead(m.ID, err)
		return proto.ErrOffline.With("%s's supernode is unreachable", d.To)
	}
	if err == nil {
		sn.m.Inc("messages_forwarded")
	}
	return err
}
