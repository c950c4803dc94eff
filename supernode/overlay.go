package supernode

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/peerline/peerline/internal/dht"
	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
)

// The user index is a dht.Node (internal/dht: membership, placement, publication,
// lookup, repair, hand-off), which this package composes: its Transport is the
// supernode's peer connections and the mesh (dhtTransport), its members come from the
// login server (syncMembers), and the watchers of each user's presence, the attached
// users and the messages stay here.

// overlay is the overlay state of a supernode beside its dht.Node.
type overlay struct {
	peers *peerPool

	mu       sync.Mutex                       // mu protects the following fields
	watchers map[string]map[watcher]time.Time // name -> watcher -> expiry
	subs     map[string][]string              // attached user -> names they watch
	renewals renewals
}

// renewals is what the passes of renewWatches did, for failure messages and status.
type renewals struct {
	passes    int
	last      time.Time              // when the last pass began
	took      time.Duration          // how long it took
	placement map[proto.Watch]string // where the last pass left each watch
}

type watcher struct{ sn, user string }

func (sn *Supernode) initOverlay() {
	sn.ov = &overlay{
		peers:    newPeerPool(sn, sn.cfg.MaxPeers, sn.cfg.PeerIdle),
		watchers: make(map[string]map[watcher]time.Time),
		subs:     make(map[string][]string),
	}
	sn.ix = dht.New(dht.Config{
		Self: sn.id, Replicas: sn.cfg.Replicas, CacheTTL: sn.cfg.CacheTTL, SuspectTime: sn.cfg.SuspectTime,
		LookupHedge: sn.cfg.LookupHedge, Transport: dhtTransport{sn}, Clock: sn.clk, Creds: sn.creds,
		Metrics: sn.m, Logger: sn.log, Attached: sn.attachedRecords, Changed: sn.notifyWatchers,
	})
}

// attachedRecords returns the records of the users attached here, online and unexpired,
// for repair passes.
func (sn *Supernode) attachedRecords() []dht.Own {
	now := sn.clk.Now()
	sn.mu.Lock()
	defer sn.mu.Unlock()
	var out []dht.Own
	for name, cl := range sn.clients {
		if cl.raw != nil && !cl.offline && now.Before(cl.rec.Expires) {
			out = append(out, dht.Own{Name: name, Raw: cl.raw, Expires: cl.rec.Expires})
		}
	}
	return out
}

// currentRing is the member list installed last.
func (sn *Supernode) currentRing() *index.Ring {
	r, _ := sn.ix.Ring()
	return r
}

// Lookup finds name's record for asker (dht.Node.Lookup).
func (sn *Supernode) Lookup(ctx context.Context, name, asker string) (res proto.IndexResult, hops int, cachedHit bool) {
	return sn.ix.Lookup(ctx, name, asker)
}

// dhtTransport is the dht.Node's way to the other members: the peer connections, and the
// mesh for what no user waits on (a record passed on by its first holder is one hop from
// here; a publication to that first holder, and a departure, cross the mesh).
type dhtTransport struct{ sn *Supernode }

func (t dhtTransport) Store(ctx context.Context, m index.Member, raw []byte, replicate bool) error {
	if replicate {
		_, err := t.sn.callVia(ctx, m, &proto.IndexStore{Record: raw, Replicate: true})
		return err
	}
	_, err := t.sn.ov.peers.call(ctx, m, &proto.IndexStore{Record: raw})
	return err
}

func (t dhtTransport) StoreBatch(ctx context.Context, m index.Member, raws [][]byte) error {
	_, err := t.sn.ov.peers.call(ctx, m, &proto.IndexStoreBatch{Records: raws})
	return err
}

func (t dhtTransport) Lookup(ctx context.Context, m index.Member, name, asker string) (proto.IndexResult, error) {
	resp, err := t.sn.ov.peers.call(ctx, m, &proto.IndexLookup{Name: name, Asker: asker})
	if err != nil {
		return proto.IndexResult{}, err
	}
	r, ok := resp.(*proto.IndexResult)
	if !ok {
		return proto.IndexResult{}, proto.ErrBadRequest
	}
	return *r, nil
}

func (t dhtTransport) Gone(ctx context.Context, m index.Member, name string, seq uint64) error {
	_, err := t.sn.callVia(ctx, m, &proto.IndexGone{Name: name, Seq: seq})
	return err
}

func (t dhtTransport) Open(id string) bool { return t.sn.ov.peers.open(id) }

// Held reports the entry this supernode holds for name, if any, as its own lookups and
// watches see it.
func (sn *Supernode) Held(name string) (index.Entry, bool) { return sn.ix.Held(name) }

// HolderView says, for failure messages, which members this supernode takes for
// name's holders: the first Replicas+3 in ring order, each named by nameOf(id) and
// followed by " suspected" when it is not taken for alive, " not-ready" when it answered
// it has no member list, and " open" when a connection to it is open.
func (sn *Supernode) HolderView(name string, nameOf func(id string) string) []string {
	var out []string
	sn.currentRing().Walk(name, func(m index.Member) bool {
		d := nameOf(m.ID)
		switch {
		case !sn.ix.Alive(m.ID):
			d += " suspected"
		case !sn.ix.Holds(m.ID):
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
	now := sn.clk.Now()
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
	ring, have := sn.ix.Ring()
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
			for _, ch := range ok.Changes {
				if ch.Left {
					remove = append(remove, ch.ID)
				} else {
					add = append(add, index.Member{ID: ch.ID, Addr: ch.Addr, Since: ch.Since})
				}
			}
			next := ring.With(add, remove)
			if next.Len() == ok.Total {
				sn.ix.SetRing(next, ok.Version)
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
	sn.ix.SetRing(index.NewRing(ms), version)
	return nil
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

// maintain runs the periodic work of the index: expiring records, renewing this
// supernode's clients' watches (their holders may have changed).
func (sn *Supernode) maintain(ctx context.Context) {
	t := sn.clk.NewTicker(sn.cfg.KeepAlive)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		if sn.shouldDemote() {
			sn.m.Inc("demotions")
			sn.demote()
			return
		}
		sn.ix.Expire()
		sn.renewWatches(ctx)
	}
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
		sn.ix.MarkDead(m.ID, err)
		return proto.ErrOffline.With("%s's supernode is unreachable (%v)", d.To, err)
	}
	if err == nil {
		sn.m.Inc("messages_forwarded")
	}
	return err
}
