package supernode

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/proto"
)

// Presence. A client subscribes to its buddies at its supernode, which registers a watch
// for each buddy at a holder of the buddy's record. The holder pushes the buddy's
// presence to the watcher's supernode when it changes, and that supernode to the client.
// A watch lasts three keep-alive periods: the watcher's supernode renews its users'
// watches every period (the holders may have changed), with one WatchBatch per holder,
// and each answer carries the current presence of the names it renewed, so a push that
// was lost is made good within a period.

// renewParallel bounds the batches one pass of watchAtHolders has in flight. A pass sends
// one batch per holder, at once so that a holder that is slow to answer (or a dead one
// whose connection times out) holds up only its own watches: sent one after another, a
// few such holders made a pass outlast the watches it renewed (three periods), and some
// users saw a buddy offline who was online at every holder.
const renewParallel = 8

// watchLife is how long a watch lasts unless renewed.
func (sn *Supernode) watchLife() time.Duration { return 3 * sn.cfg.KeepAlive }

// registerWatch registers w's watch of name at this holder, or renews it, and returns name's
// presence as this holder knows it for w's user. ok is false if this holder has no
// record of name, or if the record blocks w's user; a blocked user's watch is not
// registered (blocked users see nothing).
func (sn *Supernode) registerWatch(name string, w watcher) (p proto.Presence, ok bool) {
	now := sn.clk.Now()
	e, found := sn.ix.Store().Get(name, now)
	if found && e.Rec.HasBlocked(w.user) {
		return proto.Presence{}, false
	}
	ov := sn.ov
	ov.mu.Lock()
	ws := ov.watchers[name]
	if ws == nil {
		ws = make(map[watcher]time.Time)
		ov.watchers[name] = ws
	}
	ws[w] = now.Add(sn.watchLife())
	ov.mu.Unlock()
	if !found {
		return proto.Presence{}, false
	}
	return proto.Presence{Name: name, Online: !e.Offline, LastSeen: e.LastSeen, Seq: e.Rec.Seq, To: w.user}, true
}

// addWatch registers w for name's presence at this holder and pushes the current state.
func (sn *Supernode) addWatch(name string, w watcher) {
	if p, ok := sn.registerWatch(name, w); ok {
		go sn.sendPresence(sn.runCtx, w, p)
	}
}

// addWatches serves a WatchBatch from supernode peer.
func (sn *Supernode) addWatches(peer string, ws []proto.Watch) *proto.WatchBatchOK {
	var ok proto.WatchBatchOK
	for _, w := range ws {
		if p, found := sn.registerWatch(w.Name, watcher{sn: peer, user: w.Watcher}); found {
			ok.Presences = append(ok.Presences, p)
		}
	}
	sn.m.Add("watches_registered", uint64(len(ws)))
	return &ok
}

// notifyWatchers pushes name's current presence to everyone watching it.
func (sn *Supernode) notifyWatchers(name string) {
	now := sn.clk.Now()
	e, ok := sn.ix.Store().Get(name, now)
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
	p := proto.Presence{Name: name, Online: !e.Offline, LastSeen: e.LastSeen, Seq: e.Rec.Seq}
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
	if _, err := sn.callVia(ctx, m, &p); errors.Is(err, errTransport) {
		sn.ix.MarkDead(m.ID, err)
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
	ws := make([]proto.Watch, len(names))
	for i, n := range names {
		ws[i] = proto.Watch{Name: n, Watcher: user}
	}
	// The answer waits for the watches for a while, not for as long as holders that do
	// not answer can take: a client takes a Subscribe unanswered in 10 s for a failed
	// attachment. The rest goes on without it, for at most a watch's life.
	wctx, cancel := context.WithTimeout(sn.runCtx, sn.watchLife())
	done := make(chan struct{})
	go func() {
		defer cancel()
		defer close(done)
		sn.watchAtHolders(wctx, ws)
	}()
	t := sn.clk.NewTimer(subscribeWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.Chan():
		sn.m.Inc("subscribes_answered_early")
	case <-ctx.Done():
	}
}

// subscribeWait is how long a Subscribe's answer waits for the watches to be placed.
const subscribeWait = 4 * time.Second

// renewWatches renews the watches of every attached user.
func (sn *Supernode) renewWatches(ctx context.Context) {
	sn.ov.mu.Lock()
	var ws []proto.Watch
	for u, ns := range sn.ov.subs {
		for _, n := range ns {
			ws = append(ws, proto.Watch{Name: n, Watcher: u})
		}
	}
	sn.ov.mu.Unlock()
	start := sn.clk.Now()
	placed := sn.watchAtHolders(ctx, ws)
	sn.ov.mu.Lock()
	sn.ov.renewals = renewals{passes: sn.ov.renewals.passes + 1, last: start, took: sn.clk.Now().Sub(start), placement: placed}
	sn.ov.mu.Unlock()
}

// Watching says, for failure messages, whether user is attached here with name among the
// names it watches, where the last renewal pass left that watch, and when that pass ran.
func (sn *Supernode) Watching(user, name string, nameOf func(id string) string) string {
	sn.ov.mu.Lock()
	defer sn.ov.mu.Unlock()
	r := sn.ov.renewals
	where, ok := r.placement[proto.Watch{Name: name, Watcher: user}]
	switch {
	case !ok:
		where = "not in the last pass"
	case strings.HasPrefix(where, "at "):
		where = "at " + nameOf(strings.TrimPrefix(where, "at "))
	}
	return fmt.Sprintf("%s watches %s here: %v; renewal passes %d, the last at %s took %v; its watch %s",
		user, name, slices.Contains(sn.ov.subs[user], name), r.passes, r.last.Format("15:04:05.000"), r.took, where)
}

// watchAtHolders registers each of ws (Watcher's watch of Name) at name's holders in
// ring order, one WatchBatch per holder, up to the first that answers with the record.
// Any holder tells its watchers of the changes it sees, but the first is the one every
// view of the ring agrees on most often: a later one can be a member that some
// supernodes count among the holders and others do not (while dead members are still on
// the list, as with the login server down), and may then see a departure but not the
// publication after it. A holder that answers without the record keeps the watch (the
// record may arrive there next) and the next holder is asked too (see sendWatches).
//
// The watches of a batch that failed go to their next holder as soon as it has failed:
// past a member marked dead (no connection), not ready (busy) or only passed over for
// those watches (slow to answer). As with a publication, each watch tries at most Replicas+1
// holders that were not busy. The presences that come back go to the users they are for.
//
// It returns where each watch was left: "at ID" (the holder with the record), or why not.
func (sn *Supernode) watchAtHolders(ctx context.Context, ws []proto.Watch) map[proto.Watch]string {
	placed := make(map[proto.Watch]string, len(ws))
	leave := func(w proto.Watch, where string) { placed[w] = where } // on this goroutine only
	var (
		sem      = make(chan struct{}, renewParallel)
		results  = make(chan sent)
		inFlight = 0
	)
	// dispatch sends each of ps to its next holder, one batch per holder: a watch goes
	// on as soon as its own batch is answered, not when every other batch is (a slow
	// holder in one watch's way then costs that watch alone its time).
	dispatch := func(ps []*pendingWatch) {
		groups := make(map[string][]*pendingWatch)
		var holders []index.Member // in the order first met
		for len(ps) > 0 {
			var more []*pendingWatch // past this supernode, without the record
			for _, p := range ps {
				m, ok := sn.firstHolder(p.w.Name, p.skip)
				switch {
				case !ok || p.sent > 2*(sn.cfg.Replicas+1):
					sn.m.Inc("watches_unplaced")
					leave(p.w, fmt.Sprintf("without a holder left to try (tried %d, passed over %d)", p.tried, len(p.skip)))
				case m.ID == sn.id:
					if pr, ok := sn.registerWatch(p.w.Name, watcher{sn: sn.id, user: p.w.Watcher}); ok {
						sn.presenceToClient(pr)
						leave(p.w, "at "+sn.id)
					} else if p.next(sn, m.ID, false) {
						more = append(more, p)
					} else {
						leave(p.w, "without the record at the holders tried")
					}
				default:
					if groups[m.ID] == nil {
						holders = append(holders, m)
					}
					p.sent++
					groups[m.ID] = append(groups[m.ID], p)
				}
			}
			ps = more
		}
		for _, m := range holders {
			inFlight++
			go func() {
				var r sent
				select {
				case sem <- struct{}{}:
					r = sn.sendWatches(ctx, m, groups[m.ID])
					<-sem
				case <-ctx.Done():
					for _, p := range groups[m.ID] {
						r.left = append(r.left, left{p.w, "unplaced: the pass ended"})
					}
				}
				results <- r
			}()
		}
	}
	todo := make([]*pendingWatch, len(ws))
	for i := range ws {
		todo[i] = &pendingWatch{w: ws[i]}
	}
	dispatch(todo)
	for inFlight > 0 {
		r := <-results
		inFlight--
		for _, l := range r.left {
			leave(l.w, l.where)
		}
		if ctx.Err() != nil {
			for _, p := range r.again {
				leave(p.w, "unplaced: the pass ended")
			}
			continue
		}
		dispatch(r.again)
	}
	return placed
}

// pendingWatch is a watch that watchAtHolders has yet to place.
type pendingWatch struct {
	w     proto.Watch
	sent  int      // batches it went in
	tried int      // holders that answered, or failed other than busy
	skip  []string // holders passed over: too slow, or without the record
}

// next passes the watch over holder id (counted unless the holder was busy, which marks
// it instead) and reports whether the watch has holders left to try.
func (p *pendingWatch) next(sn *Supernode, id string, busy bool) bool {
	if !busy {
		p.tried++
		p.skip = append(p.skip, id)
	}
	return p.tried <= sn.cfg.Replicas
}

// firstHolder returns the first of name's holders in ring order that this supernode
// takes for live and ready, other than those in skip.
func (sn *Supernode) firstHolder(name string, skip []string) (index.Member, bool) {
	for _, m := range sn.ix.Candidates(name) {
		if !slices.Contains(skip, m.ID) {
			return m, true
		}
	}
	return index.Member{}, false
}

// sent is what became of a batch of watches: those to place at their next holder, and
// where the others were left.
type sent struct {
	again []*pendingWatch
	left  []left
}

type left struct {
	w     proto.Watch
	where string // "at ID" (a holder with the record), or why not
}

// sendWatches sends ps to holder m in batches. The watches of a batch that failed go on
// to their next holder, and so do those of a name m holds no record of: they stay
// registered at m, where the record may yet arrive, but a watch must reach a holder that
// has it. Supernodes that disagree on a name's holders (one takes a member for not ready
// that another does not) could otherwise place the watch at a holder the publications
// pass over, and the watcher see the user offline for good.
func (sn *Supernode) sendWatches(ctx context.Context, m index.Member, ps []*pendingWatch) (r sent) {
	for len(ps) > 0 {
		n := watchBatchLen(ps)
		batch := ps[:n]
		ps = ps[n:]
		msg := &proto.WatchBatch{Watches: make([]proto.Watch, n)}
		for i, p := range batch {
			msg.Watches[i] = p.w
		}
		resp, err := sn.callVia(ctx, m, msg)
		if err == nil {
			held := sn.deliverPresences(msg.Watches, resp)
			for i, p := range batch {
				switch {
				case held[i]:
					r.left = append(r.left, left{p.w, "at " + m.ID})
				case p.next(sn, m.ID, false):
					r.again = append(r.again, p)
				default:
					r.left = append(r.left, left{p.w, "without the record at the holders tried"})
				}
			}
			continue
		}
		if errors.Is(err, proto.ErrBadRequest) {
			// A holder that does not serve batches (an older supernode): one at a time.
			for _, w := range msg.Watches {
				sn.callVia(ctx, m, &proto.Watch{Name: w.Name, Watcher: w.Watcher})
				r.left = append(r.left, left{w, "at " + m.ID + " (one at a time)"})
			}
			continue
		}
		busy := errors.Is(err, proto.ErrBusy)
		switch {
		case errors.Is(err, errTransport):
			sn.ix.MarkDead(m.ID, err)
		case errors.Is(err, errSlow):
			sn.m.Inc("holders_slow")
		case busy:
			sn.ix.MarkNotReady(m.ID)
		default:
			for _, p := range batch {
				r.left = append(r.left, left{p.w, fmt.Sprintf("at %s, refused: %v", m.ID, err)})
			}
			continue // an answer: the holder is there
		}
		// This batch and the rest go to their next holders.
		for _, p := range append(batch, ps...) {
			if p.next(sn, m.ID, busy) {
				r.again = append(r.again, p)
			} else {
				sn.m.Inc("watches_unplaced")
				r.left = append(r.left, left{p.w, fmt.Sprintf("unplaced, the last holder tried failing: %v", err)})
			}
		}
		return r
	}
	return r
}

// deliverPresences forwards the presences of a WatchBatchOK to the users they are for,
// those of the watches asked for only, and reports which of those got one.
func (sn *Supernode) deliverPresences(asked []proto.Watch, resp proto.Message) (held []bool) {
	held = make([]bool, len(asked))
	ok, _ := resp.(*proto.WatchBatchOK)
	if ok == nil {
		return held
	}
	for _, p := range ok.Presences {
		i := slices.Index(asked, proto.Watch{Name: p.Name, Watcher: p.To})
		if i < 0 || held[i] {
			continue
		}
		held[i] = true
		sn.presenceToClient(p)
	}
	return held
}

// watchBatchLen returns how many of ps, from the first, make one WatchBatch: at most
// MaxWatchBatch, and few enough that the batch fits in a Via however its names encode.
func watchBatchLen(ps []*pendingWatch) int {
	const budget = proto.MaxViaBody - 512
	size, n := 0, 0
	for n < len(ps) && n < proto.MaxWatchBatch {
		size += 32 + jsonLen(ps[n].w.Name) + jsonLen(ps[n].w.Watcher)
		if n > 0 && size > budget {
			break
		}
		n++
	}
	return n
}

// jsonLen bounds the length of s encoded as a JSON string, quotes aside: encoding/json
// writes a control character, a quote, a backslash, <, >, & or a byte of invalid UTF-8
// in at most six bytes, and every other byte as itself.
func jsonLen(s string) int {
	n := 0
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c < 0x20, c == '"', c == '\\', c == '<', c == '>', c == '&', c >= 0x80:
			n += 6
		default:
			n++
		}
	}
	return n
}
