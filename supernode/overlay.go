package supernode

import (
	"bytes"
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
// holder lives. A repair pass compares the view it repairs for (the ring less the members
// suspected dead) with the view of the previous pass, so it sends each record only to the
// holders that are new to it, and it sends them one IndexStoreBatch per holder: after a
// crash of a tenth of the ring a survivor sends a few batches, not a copy of every
// record it holds to every holder.
//
// A publication goes to a record's holders in parallel. A lookup asks the first live
// holder and, if no answer came within LookupHedge, the next as well, so that a holder
// that died unnoticed or is slow costs a fraction of a second, not a timeout.

// overlay is the index state of a supernode.
type overlay struct {
	store *index.Store
	peers *peerPool

	mu            sync.Mutex // mu protects the following fields
	ring          *index.Ring
	version       uint64
	repairPending bool  // a repair pass is pending
	repaired      *view // the view the last repair pass made the records fit; nil = none
	repairKick    chan struct{}
	dead          map[string]time.Time             // suspected members, until
	notReady      map[string]time.Time             // members without a member list (see indexReady), until
	watchers      map[string]map[watcher]time.Time // name -> watcher -> expiry
	cache         map[string]cached
	subs          map[string][]string // attached user -> names they watch
	renewals      renewals
}

// renewals is what the passes of renewWatches did, for failure messages and status.
type renewals struct {
	passes    int
	last      time.Time              // when the last pass began
	took      time.Duration          // how long it took
	placement map[proto.Watch]string // where the last pass left each watch
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
		peers:      newPeerPool(sn, sn.cfg.MaxPeers, sn.cfg.PeerIdle),
		ring:       index.NewRing(nil),
		repairKick: make(chan struct{}, 1),
		dead:       make(map[string]time.Time),
		notReady:   make(map[string]time.Time),
		watchers:   make(map[string]map[watcher]time.Time),
		cache:      make(map[string]cached),
		subs:       make(map[string][]string),
	}
}

// alive reports whether member id is not suspected dead.
func (sn *Supernode) alive(id string) bool { return sn.unmarked(id, sn.ov.dead) }

// unmarked reports whether member id has no unexpired mark in any of marks (ov.dead,
// ov.notReady), removing the expired ones. This supernode is never marked.
func (sn *Supernode) unmarked(id string, marks ...map[string]time.Time) bool {
	if id == sn.id {
		return true
	}
	now := sn.cfg.Now()
	ov := sn.ov
	ov.mu.Lock()
	defer ov.mu.Unlock()
	for _, m := range marks {
		until, ok := m[id]
		if !ok {
			continue
		}
		if !now.After(until) {
			return false
		}
		delete(m, id)
	}
	return true
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
		sn.requestRepair()
	}
}

// markNotReady leaves member id out of holder sets for SuspectTime: it answered that it
// has no member list (a supernode restarted while the login server is down, or one just
// started), so it keeps no records and passes none on. It is alive, unlike a suspected
// member: it still serves its clients, and their records stand. Publications, copies and
// watches go to the next members in ring order meanwhile, and a repair pass moves this
// supernode's share of the records there; with the login server down after a collapse,
// the promoted third of the layer restarts this way, and four busy members in a row had
// left users with no holder at all.
func (sn *Supernode) markNotReady(id string) {
	sn.m.Inc("holders_busy")
	if id == sn.id || sn.runCtx.Err() != nil {
		return
	}
	ov := sn.ov
	ov.mu.Lock()
	_, already := ov.notReady[id]
	ov.notReady[id] = sn.cfg.Now().Add(sn.cfg.SuspectTime)
	ov.mu.Unlock()
	if !already {
		sn.m.Inc("peers_not_ready")
		sn.requestRepair()
	}
}

// holds reports whether member id can hold records: not suspected dead and not known to
// be without a member list.
func (sn *Supernode) holds(id string) bool { return sn.unmarked(id, sn.ov.dead, sn.ov.notReady) }

// view is what decides the holders of a record: the ring, less the members suspected
// dead (dead) and those without a member list (notReady).
type view struct {
	self     string
	ring     *index.Ring
	dead     map[string]bool
	notReady map[string]bool
}

// holders returns name's first n live holders in v.
func (v *view) holders(name string, n int) []index.Member {
	return v.ring.Holders(name, n, func(id string) bool { return id == v.self || !v.dead[id] && !v.notReady[id] })
}

// currentView returns the ring and the members suspected dead now.
func (sn *Supernode) currentView() *view {
	ov := sn.ov
	now := sn.cfg.Now()
	ov.mu.Lock()
	defer ov.mu.Unlock()
	v := &view{self: sn.id, ring: ov.ring, dead: make(map[string]bool, len(ov.dead)), notReady: make(map[string]bool, len(ov.notReady))}
	for _, set := range []struct {
		from map[string]time.Time
		to   map[string]bool
	}{{ov.dead, v.dead}, {ov.notReady, v.notReady}} {
		for id, until := range set.from {
			if now.After(until) {
				delete(set.from, id)
				continue
			}
			set.to[id] = true
		}
	}
	return v
}

func (sn *Supernode) currentRing() *index.Ring {
	sn.ov.mu.Lock()
	defer sn.ov.mu.Unlock()
	return sn.ov.ring
}

// Held reports the entry this supernode holds for name, if any, as its own lookups and
// watches see it.
func (sn *Supernode) Held(name string) (index.Entry, bool) {
	return sn.ov.store.Get(name, sn.cfg.Now())
}

// HolderView says, for failure messages, which members this supernode takes for
// name's holders: the first Replicas+3 in ring order, each named by nameOf(id) and
// followed by " suspected" when it is not taken for alive, " not-ready" when it answered
// it has no member list, and " open" when a connection to it is open.
func (sn *Supernode) HolderView(name string, nameOf func(id string) string) []string {
	var out []string
	sn.currentRing().Walk(name, func(m index.Member) bool {
		d := nameOf(m.ID)
		switch {
		case !sn.alive(m.ID):
			d += " suspected"
		case !sn.holds(m.ID):
			d += " not-ready"
		}
		if m.ID != sn.id && sn.ov.peers.open(m.ID) {
			d += " open"
		}
		out = append(out, d)
		return len(out) < sn.cfg.Replicas+3
	})
	return out
}

// WatchersOf says, for failure messages, who watches name's presence here: "USER of
// SUPERNODE" for each watch not expired, the supernode named by nameOf(id).
func (sn *Supernode) WatchersOf(name string, nameOf func(id string) string) []string {
	now := sn.cfg.Now()
	sn.ov.mu.Lock()
	defer sn.ov.mu.Unlock()
	var out []string
	for w, exp := range sn.ov.watchers[name] {
		if !now.After(exp) {
			out = append(out, w.user+" of "+nameOf(w.sn))
		}
	}
	sort.Strings(out)
	return out
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
					remove = append(remove, ch.ID)
				} else {
					add = append(add, index.Member{ID: ch.ID, Addr: ch.Addr, Since: ch.Since})
				}
			}
			ov.mu.Unlock()
			next := ring.With(add, remove)
			if next.Len() == ok.Total {
				sn.setRing(next, ok.Version)
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
	for _, m := range all {
		ms = append(ms, index.Member{ID: m.ID, Addr: m.Addr, Since: m.Since})
	}
	sn.setRing(index.NewRing(ms), version)
	return nil
}

// setRing installs a new ring and re-homes records for it.
func (sn *Supernode) setRing(ring *index.Ring, version uint64) {
	ov := sn.ov
	ov.mu.Lock()
	ov.ring, ov.version = ring, version
	// The login server's list is fresher than our suspicions of the members on it.
	for _, set := range []map[string]time.Time{ov.dead, ov.notReady} {
		for id := range set {
			if !ring.Has(id) {
				delete(set, id)
			}
		}
	}
	ov.mu.Unlock()
	sn.m.Inc("member_syncs")
	sn.requestRepair()
}

// requestRepair asks the repair loop for a pass. Requests that arrive while one waits are
// merged into it, so a burst of membership changes costs one pass, not one per change;
// the pass compares against the view of the previous one, so nothing is missed.
func (sn *Supernode) requestRepair() {
	ov := sn.ov
	ov.mu.Lock()
	ov.repairPending = true
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
		pending := ov.repairPending
		ov.repairPending = false
		ov.mu.Unlock()
		if pending {
			sn.repair(ctx)
		}
	}
}

// Peers returns up to MaxList other live supernodes, longest-lived first, for clients'
// host caches.
func (sn *Supernode) Peers() []proto.SupernodeInfo {
	ring := sn.currentRing()
	out := make([]proto.SupernodeInfo, 0, min(ring.Len(), proto.MaxList))
	for _, m := range ring.Oldest(proto.MaxList + 1) {
		if m.ID != sn.id && len(out) < proto.MaxList {
			out = append(out, proto.SupernodeInfo{ID: m.ID, Addr: m.Addr, Since: m.Since})
		}
	}
	return out
}

// candidates returns the members name's operations should try, in ring order: the ones
// that can hold records (live, with a member list), Replicas+8 at most (a bound on the
// walk when many members are dead).
func (sn *Supernode) candidates(name string) []index.Member {
	var out []index.Member
	sn.currentRing().Walk(name, func(m index.Member) bool {
		if sn.holds(m.ID) {
			out = append(out, m)
		}
		return len(out) < sn.cfg.Replicas+8
	})
	return out
}

// preferOpen reorders the first n of cands, name's holders, so that this supernode comes
// first and then the holders it has a connection open to, each group in ring order. Any
// holder serves as well as another for a record it holds (it passes a publication on to
// the others, and answers a lookup), and one reached over an open connection costs no
// handshake: at 1,000 supernodes a handshake costs more CPU than a hundred lookups,
// and every connection kept costs both ends about 15 KB of heap and stack (go test
// ./internal/rpc -bench IdleConn). Sending to the first holder in ring order instead keeps a connection from
// each supernode to one holder of each of its users' records, about as many as it has
// users; with a choice of Replicas holders, records share the connections other records
// and the supernodes publishing here opened.
func (sn *Supernode) preferOpen(cands []index.Member, n int) {
	n = min(n, len(cands))
	k := 0 // cands[:k] are placed
	for _, want := range []func(index.Member) bool{
		func(m index.Member) bool { return m.ID == sn.id },
		func(m index.Member) bool { return sn.ov.peers.open(m.ID) },
	} {
		for i := k; i < n; i++ {
			if m := cands[i]; want(m) {
				copy(cands[k+1:i+1], cands[k:i]) // a stable move to position k
				cands[k] = m
				k++
			}
		}
	}
}

// toHolders calls f on name's first Replicas live holders at once, and on the next
// member in ring order for each that fails or answers busy (suspected if its transport
// failed, not if it was only slow or busy). It returns how many answered.
func (sn *Supernode) toHolders(ctx context.Context, name string, f func(index.Member) error) int {
	cands := sn.candidates(name)
	type result struct {
		m   index.Member
		err error
	}
	results := make(chan result, len(cands))
	next, running, ok := 0, 0, 0
	for ; next < len(cands) && running < sn.cfg.Replicas; next, running = next+1, running+1 {
		go func(m index.Member) { results <- result{m, f(m)} }(cands[next])
	}
	for running > 0 {
		r := <-results
		running--
		switch {
		case errors.Is(r.err, errTransport):
			sn.markDead(r.m.ID, r.err)
		case errors.Is(r.err, errSlow), ctx.Err() != nil:
			sn.m.Inc("holders_slow")
		case errors.Is(r.err, proto.ErrBusy):
			// Not ready to hold (no member list, see indexReady): it keeps nothing, so
			// the next member in ring order takes its copy.
			sn.markNotReady(r.m.ID)
		default:
			ok++ // an answer, even a refusal, means the holder is there
			continue
		}
		if next < len(cands) && ok+running < sn.cfg.Replicas && ctx.Err() == nil {
			go func(m index.Member) { results <- result{m, f(m)} }(cands[next])
			next, running = next+1, running+1
		}
	}
	return ok
}

// storeRecord verifies and stores a record as a holder, and tells watchers if the user's
// presence changed. The copy already held, or an older one, is dropped before its
// signatures are checked: repairs and republications send many of those.
func (sn *Supernode) storeRecord(raw []byte) error {
	now := sn.cfg.Now()
	if rec, err := index.Parse(raw); err == nil {
		if e, ok := sn.ov.store.Get(rec.Name, now); ok && (e.Rec.Seq > rec.Seq || bytes.Equal(e.Raw, raw)) {
			return nil
		}
	}
	rec, err := index.VerifyCached(raw, sn.creds, now)
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

// replicate sends a record to its holders, all at once.
func (sn *Supernode) replicate(ctx context.Context, name string, raw []byte) int {
	return sn.toHolders(ctx, name, func(m index.Member) error {
		if m.ID == sn.id {
			return sn.storeRecord(raw)
		}
		_, err := sn.ov.peers.call(ctx, m, &proto.IndexStore{Record: raw})
		return err
	})
}

// publishRecord stores an attached user's record at its holders through the first of
// them that answers, which passes it on to the others (IndexStore.Replicate): one
// message per record from here instead of one per holder, over the mesh (callVia) when
// no holder has a connection open. At a hundred users per
// supernode and a thousand supernodes, storing at every holder directly kept a
// connection open to some 260 of them from each supernode; the first holders are about
// a hundred, and the rest of the copies go between ring neighbours. A first holder that
// is slow or gone is passed over for the next, which then does the passing on. It
// returns 1 once a holder has the record, 0 if none could be reached.
func (sn *Supernode) publishRecord(ctx context.Context, name string, raw []byte) int {
	cands := sn.candidates(name)
	sn.preferOpen(cands, sn.cfg.Replicas)
	tried := 0 // holders tried that could have held it; busy ones hold nothing
	for _, m := range cands {
		if tried > sn.cfg.Replicas || ctx.Err() != nil {
			break // past every holder: the ring view is far off, or the time is up
		}
		if m.ID == sn.id {
			tried++
			if sn.replicate(ctx, name, raw) > 0 {
				return 1
			}
			continue
		}
		_, err := sn.callVia(ctx, m, &proto.IndexStore{Record: raw, Replicate: true})
		if !errors.Is(err, proto.ErrBusy) {
			tried++
		}
		switch {
		case err == nil:
			return 1
		case errors.Is(err, errTransport):
			sn.markDead(m.ID, err)
		case errors.Is(err, errSlow):
			sn.m.Inc("holders_slow")
		case errors.Is(err, proto.ErrBusy):
			sn.markNotReady(m.ID) // not ready to hold (see indexReady): the next one
		default:
			return 1 // an answer, even a refusal, means the holder is there
		}
	}
	return 0
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
// it. It asks one holder at a time, in ring order, and moves on to the next when one
// answers without the record, fails, or keeps it waiting longer than LookupHedge (then
// both are asked, and the first to find it wins). It gives up when Replicas holders
// answered without the record. hops counts the other supernodes contacted.
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
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // the holders still being asked are not waited for
	cands := sn.candidates(name)
	sn.preferOpen(cands, sn.cfg.Replicas)
	type answer struct {
		m   index.Member
		r   proto.IndexResult
		err error
	}
	answers := make(chan answer, len(cands))
	ask := func(m index.Member) {
		if m.ID == sn.id {
			answers <- answer{m: m, r: sn.lookupLocal(name, asker)}
			return
		}
		hops++
		go func() {
			resp, err := sn.ov.peers.call(ctx, m, &proto.IndexLookup{Name: name, Asker: asker})
			if err != nil {
				answers <- answer{m: m, err: err}
				return
			}
			r, ok := resp.(*proto.IndexResult)
			if !ok {
				answers <- answer{m: m, err: proto.ErrBadRequest}
				return
			}
			answers <- answer{m: m, r: *r}
		}()
	}
	hedge := time.NewTimer(sn.cfg.LookupHedge)
	defer hedge.Stop()
	// Ask up to twice Replicas holders: just after the ring changed, the first holders in
	// the new order may not have been given the record yet while later ones still hold it.
	next, running, answered := 0, 0, 0
	limit := min(len(cands), 2*sn.cfg.Replicas)
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
		case <-hedge.C:
			if more() {
				sn.m.Inc("lookup_hedges")
				ask(cands[next])
				next, running = next+1, running+1
			}
			hedge.Reset(sn.cfg.LookupHedge)
			continue
		case <-ctx.Done():
			return res, hops, false
		}
		running--
		switch {
		case errors.Is(a.err, errTransport):
			sn.markDead(a.m.ID, a.err)
		case errors.Is(a.err, errSlow):
			sn.m.Inc("holders_slow")
		case errors.Is(a.err, proto.ErrBusy):
			sn.markNotReady(a.m.ID) // holds nothing it can vouch for: ask another
		case a.err != nil:
			answered++ // the holder answered, just not with what we wanted
		case !a.r.Found:
			answered++
		case a.r.Online:
			// Never trust a holder blindly: the record must verify here too.
			rec, err := index.VerifyCached(a.r.Record, sn.creds, now)
			if err != nil || rec.Name != name {
				sn.m.Inc("records_rejected")
				answered++
				break
			}
			sn.cacheResult(name, a.r, rec, now)
			return a.r, hops, false
		default: // offline, last seen then; another holder may have a newer, online record
			if offline == nil {
				r := a.r
				offline = &r
			}
			answered++
			if answered >= sn.cfg.Replicas {
				return *offline, hops, false
			}
		}
		if running == 0 && more() {
			ask(cands[next])
			next, running = next+1, running+1
			hedge.Reset(sn.cfg.LookupHedge)
		}
	}
	if offline != nil {
		return *offline, hops, false
	}
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
	sn.toHolders(ctx, name, func(m index.Member) error {
		if m.ID == sn.id {
			if sn.ov.store.Gone(name, sn.id, seq, sn.cfg.Now()) {
				sn.notifyWatchers(name)
			}
			return nil
		}
		_, err := sn.callVia(ctx, m, &proto.IndexGone{Name: name, Seq: seq})
		return err
	})
}

// maintain runs the periodic work of the index: expiring records, renewing this
// supernode's clients' watches (their holders may have changed).
func (sn *Supernode) maintain(ctx context.Context) {
	t := time.NewTicker(sn.cfg.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if sn.shouldDemote() {
			sn.m.Inc("demotions")
			sn.demote()
			return
		}
		for _, name := range sn.ov.store.Expire(sn.cfg.Now()) {
			sn.notifyWatchers(name)
		}
		sn.renewWatches(ctx)
	}
}

// repair re-homes records after the ring or the set of live members changed: the holders
// in the current view that were not holders in the view of the previous pass get a copy;
// records this supernode no longer holds are dropped here after that.
//
// Each record is re-homed by one supernode, not by all its holders at once: by the
// supernode its user is attached to, which republishes its users' records (they may
// have lost every holder at once, and their next keep-alive could be most of a period
// away). A holder re-homes only records whose user's supernode is gone from its view;
// those users are reattaching elsewhere and will republish, and until then the copies
// keep answering with where they were last seen. After a crash of a tenth of the ring
// this costs a survivor a few batches to holders new to it, where copying from every
// holder would triple the traffic and the handshakes that come with it.
func (sn *Supernode) repair(ctx context.Context) {
	if ctx == nil || ctx.Err() != nil {
		return
	}
	cur := sn.currentView()
	if cur.ring.Len() == 0 {
		return
	}
	sn.ov.mu.Lock()
	last := sn.ov.repaired
	sn.ov.mu.Unlock()
	R := sn.cfg.Replicas
	now := sn.cfg.Now()
	out := newOutbox()
	var drop []string
	// fresh returns the holders of name in cur that last did not have, leaving out this
	// supernode; with known false, all of them (nobody can be assumed to hold a copy). A
	// holder that restarted (same ID, a later Since: it came back with no records) is
	// new: the login server keeps the Since a supernode registered with, so its own
	// restart changes no member's.
	fresh := func(name string, holders []index.Member, known bool) []index.Member {
		var before []index.Member
		if known && last != nil {
			before = last.holders(name, R)
		}
		var out []index.Member
		for _, h := range holders {
			if h.ID != sn.id && !containsIncarnation(before, h) {
				out = append(out, h)
			}
		}
		return out
	}

	sn.mu.Lock()
	type own struct {
		name string
		raw  []byte
	}
	var attached []own
	for name, cl := range sn.clients {
		if cl.raw != nil && !cl.offline && now.Before(cl.rec.Expires) {
			attached = append(attached, own{name, cl.raw})
		}
	}
	sn.mu.Unlock()
	for _, a := range attached {
		holders := cur.holders(a.name, R)
		if containsMember(holders, sn.id) {
			sn.storeRecord(a.raw)
		}
		for _, h := range fresh(a.name, holders, true) {
			out.add(h, a.raw)
		}
	}
	for _, e := range sn.ov.store.Snapshot() {
		if e.Offline || !now.Before(e.Rec.Expires) {
			continue
		}
		holders := cur.holders(e.Rec.Name, R)
		mine := containsMember(holders, sn.id)
		// The other holders of the last view got the record when this supernode did, as
		// long as it was one of them.
		if orphan := e.Rec.Supernode != sn.id && (!cur.ring.Has(e.Rec.Supernode) || cur.dead[e.Rec.Supernode]); orphan {
			wasMine := last != nil && containsMember(last.holders(e.Rec.Name, R), sn.id)
			for _, h := range fresh(e.Rec.Name, holders, wasMine) {
				out.add(h, e.Raw)
			}
		}
		if !mine {
			drop = append(drop, e.Rec.Name)
		}
	}
	sent := sn.sendBatches(ctx, out)
	sn.m.Add("records_handed", uint64(sent))
	for _, name := range drop {
		sn.ov.store.Delete(name)
	}
	if ctx.Err() == nil {
		sn.ov.mu.Lock()
		sn.ov.repaired = cur
		sn.ov.mu.Unlock()
	}
	sn.m.Inc("repairs")
}

// containsIncarnation reports whether ms holds m as it is: the same ID, up since the same
// moment.
func containsIncarnation(ms []index.Member, m index.Member) bool {
	for _, x := range ms {
		if x.ID == m.ID && x.Since.Equal(m.Since) {
			return true
		}
	}
	return false
}

func containsMember(ms []index.Member, id string) bool {
	for _, m := range ms {
		if m.ID == id {
			return true
		}
	}
	return false
}

// outbox gathers records by the holder they go to.
type outbox struct {
	to      map[string]index.Member
	records map[string][][]byte
}

func newOutbox() *outbox {
	return &outbox{to: map[string]index.Member{}, records: map[string][][]byte{}}
}

func (o *outbox) add(m index.Member, raw []byte) {
	o.to[m.ID] = m
	o.records[m.ID] = append(o.records[m.ID], raw)
}

// maxBatchBytes bounds the records of one IndexStoreBatch: base64 makes 4 bytes of 3, and
// the frame must stay under wire.MaxBody.
const maxBatchBytes = 44 << 10

// batchConcurrency is how many holders a supernode sends batches to at once.
const batchConcurrency = 8

// sendBatches sends each holder its records in as few IndexStoreBatch messages as fit,
// a few holders at a time, and returns how many records were accepted. A holder whose
// transport fails is suspected, and one without a member list passed over, each of which
// asks for another repair pass.
func (sn *Supernode) sendBatches(ctx context.Context, o *outbox) int {
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		sent int
	)
	sem := make(chan struct{}, batchConcurrency)
	for id, recs := range o.records {
		m := o.to[id]
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return sent
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			for len(recs) > 0 && ctx.Err() == nil {
				n, size := 0, 0
				for n < len(recs) && n < proto.MaxBatch && size+len(recs[n]) <= maxBatchBytes {
					size += len(recs[n])
					n++
				}
				n = max(n, 1)
				_, err := sn.ov.peers.call(ctx, m, &proto.IndexStoreBatch{Records: recs[:n]})
				if errors.Is(err, errTransport) {
					sn.markDead(m.ID, err)
					return
				}
				if errors.Is(err, proto.ErrBusy) {
					sn.markNotReady(m.ID) // the next pass sends its copies to the next members
					return
				}
				if err == nil {
					mu.Lock()
					sent += n
					mu.Unlock()
				}
				recs = recs[n:]
			}
		}()
	}
	wg.Wait()
	return sent
}

// handOff gives every record this supernode holds to the holders that follow it, before
// the supernode leaves the ring.
func (sn *Supernode) handOff(ctx context.Context) int {
	out := newOutbox()
	ring := sn.currentRing()
	now := sn.cfg.Now()
	for _, e := range sn.ov.store.Snapshot() {
		if e.Offline || !now.Before(e.Rec.Expires) {
			continue
		}
		for _, h := range ring.Holders(e.Rec.Name, sn.cfg.Replicas+1, func(id string) bool { return id != sn.id && sn.holds(id) }) {
			out.add(h, e.Raw)
		}
	}
	return sn.sendBatches(ctx, out)
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
		var conn *rpc.Conn
		var own *index.Record
		if ok {
			conn, own = cl.conn, cl.rec // publish replaces cl.rec under sn.mu
		}
		sn.mu.Unlock()
		if !ok {
			return proto.ErrOffline.With("%s is offline (not attached to the supernode its record names)", d.To)
		}
		if own != nil && own.HasBlocked(d.From) {
			return proto.ErrBlocked.With("%s does not accept your messages", d.To)
		}
		sn.m.Inc("messages_delivered")
		return conn.Notify(d)
	}
	m, ok := sn.currentRing().Member(rec.Supernode)
	if !ok {
		m = index.Member{ID: rec.Supernode, Addr: rec.SNAddr}
	}
	_, err := sn.ov.peers.call(ctx, m, d)
	if errors.Is(err, errTransport) {
		sn.markDead(m.ID, err)
		return proto.ErrOffline.With("%s's supernode is unreachable (%v)", d.To, err)
	}
	if err == nil {
		sn.m.Inc("messages_forwarded")
	}
	return err
}
