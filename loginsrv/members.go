package loginsrv

import (
	"math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/peerline/peerline/internal/proto"
)

// members is the login server's live view of the supernode layer. The login server
// admits every supernode, so it is also where supernodes learn of each other: each
// heartbeat answer carries the list's version, and a supernode whose version is stale
// fetches the list page by page. A supernode leaves the list when it says so, when its
// connection to the login server closes, or when it is not heard from for
// Server.memberTimeout (three heartbeat intervals and one per doubling of the layer).
//
// It lives in memory: after a restart supernodes register again within their back-off.
type members struct {
	mu      sync.Mutex // mu protects the following fields
	m       map[string]*member
	version uint64
	sorted  []proto.SupernodeInfo // cache of the list, longest-lived first; nil = stale
	swept   time.Time             // last sweep
	log     []change              // the latest changes, oldest first, at most maxLog
	// snaps keeps the sorted list of the last few versions, so a supernode fetching the
	// list page by page gets every page from the same version.
	snaps map[uint64][]proto.SupernodeInfo
	// left, if set, hears of each member that leaves the list, with when it was last
	// heard from; it is called with mu held.
	left func(info proto.SupernodeInfo, heard time.Time)
}

// maxSnaps is how many versions of the list are kept for paged fetches.
const maxSnaps = 8

// change is one entry of the change log: the member list at version v differs from the
// one at v-1 by this join or departure.
type change struct {
	v uint64
	c proto.MemberChange
}

// maxLog bounds the change log; a supernode further behind fetches the whole list.
const maxLog = 2000

type member struct {
	info   proto.SupernodeInfo
	lastHB time.Time
	owner  *session // the connection that registered it
	// clients and maxClients are its load as its last heartbeat said; they are kept
	// beside info, not in it, so that a change of load is no change of the member list.
	clients, maxClients int
}

func newMembers() *members {
	// A random starting version, so a supernode that knew the list of a previous run of
	// this server refetches it.
	return &members{m: make(map[string]*member), version: rand.Uint64() >> 16, snaps: make(map[uint64][]proto.SupernodeInfo)}
}

func (ms *members) changedLocked(c proto.MemberChange) {
	ms.version++
	ms.sorted = nil
	ms.log = append(ms.log, change{ms.version, c})
	if len(ms.log) > maxLog {
		ms.log = append(ms.log[:0:0], ms.log[len(ms.log)-maxLog/2:]...)
	}
}

// since returns the changes after version v, or false when they are no longer all kept.
func (ms *members) since(v uint64) (uint64, []proto.MemberChange, bool) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if v == ms.version {
		return v, nil, true
	}
	if v > ms.version || len(ms.log) == 0 || ms.log[0].v > v+1 {
		return ms.version, nil, false
	}
	var out []proto.MemberChange
	for _, c := range ms.log {
		if c.v > v {
			out = append(out, c.c)
		}
	}
	return ms.version, out, true
}

// heard is when the member last sent anything on its connection to us.
func (m *member) heard() time.Time {
	t := m.lastHB
	if m.owner != nil {
		if n := m.owner.heard.Load(); n != 0 && time.Unix(0, n).After(t) {
			t = time.Unix(0, n)
		}
	}
	return t
}

// upsert records a registration or heartbeat.
func (ms *members) upsert(info proto.SupernodeInfo, owner *session, now time.Time) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	m, ok := ms.m[info.ID]
	if !ok || m.info.Addr != info.Addr || !m.info.Since.Equal(info.Since) {
		ms.m[info.ID] = &member{info: info, lastHB: now, owner: owner}
		ms.changedLocked(proto.MemberChange{SupernodeInfo: info})
		return
	}
	m.lastHB = now
	m.owner = owner
}

// setLoad records the load a heartbeat of id reported.
func (ms *members) setLoad(id string, clients, maxClients int) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if m, ok := ms.m[id]; ok {
		m.clients, m.maxClients = clients, maxClients
	}
}

// loads returns the n least loaded members (by clients against their limit, then by
// clients) with their load, the number of members and the clients attached to them all.
func (ms *members) loads(n int) (least []proto.SupernodeInfo, size, clients int) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	all := make([]*member, 0, len(ms.m))
	for _, m := range ms.m {
		all = append(all, m)
		clients += m.clients
	}
	fill := func(m *member) float64 {
		if m.maxClients <= 0 {
			return 1 // no limit said: last
		}
		return float64(m.clients) / float64(m.maxClients)
	}
	sort.Slice(all, func(i, j int) bool {
		if fi, fj := fill(all[i]), fill(all[j]); fi != fj {
			return fi < fj
		}
		return all[i].clients < all[j].clients
	})
	for _, m := range all[:min(n, len(all))] {
		info := m.info
		info.Clients, info.MaxClients = m.clients, m.maxClients
		least = append(least, info)
	}
	return least, len(ms.m), clients
}

// remove drops id if owner registered it (nil owner: unconditionally).
func (ms *members) remove(id string, owner *session) bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	m, ok := ms.m[id]
	if !ok || (owner != nil && m.owner != owner) {
		return false
	}
	ms.dropLocked(id, m)
	return true
}

// dropLocked takes m, member id, off the list.
func (ms *members) dropLocked(id string, m *member) {
	delete(ms.m, id)
	ms.changedLocked(proto.MemberChange{SupernodeInfo: m.info, Left: true})
	if ms.left != nil {
		ms.left(m.info, m.heard())
	}
}

// restore lists again, as heard from at now, the supernodes of rs that are not on the
// list: those a previous run of the server had on its list when it stopped. Each stays
// until it goes unheard for the member timeout, as if it had registered at now.
func (ms *members) restore(rs []SupernodeRecord, now time.Time) int {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	n := 0
	for _, r := range rs {
		if _, ok := ms.m[r.ID]; ok || r.ID == "" || r.Addr == "" {
			continue
		}
		info := proto.SupernodeInfo{ID: r.ID, Addr: r.Addr, Since: r.Since}
		ms.m[r.ID] = &member{info: info, lastHB: now}
		ms.changedLocked(proto.MemberChange{SupernodeInfo: info})
		n++
	}
	return n
}

// sweep drops members that nothing was heard from since deadline, unless the previous
// sweep was less than every ago. A heartbeat that arrived counts even while it waits to
// be answered: a login server too busy to answer its heartbeats in time must not drop
// the layer for it (every member would register again at once, on top of the load).
func (ms *members) sweep(now, deadline time.Time, every time.Duration) int {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if now.Sub(ms.swept) < every && !now.Before(ms.swept) {
		return 0
	}
	ms.swept = now
	n := 0
	for id, m := range ms.m {
		if m.heard().Before(deadline) {
			ms.dropLocked(id, m)
			n++
		}
	}
	return n
}

// list returns the version and the members, longest-lived first.
func (ms *members) list() (uint64, []proto.SupernodeInfo) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if ms.sorted == nil {
		ms.sorted = make([]proto.SupernodeInfo, 0, len(ms.m))
		for _, m := range ms.m {
			ms.sorted = append(ms.sorted, m.info)
		}
		sort.Slice(ms.sorted, func(i, j int) bool {
			a, b := ms.sorted[i], ms.sorted[j]
			if !a.Since.Equal(b.Since) {
				return a.Since.Before(b.Since)
			}
			return a.ID < b.ID
		})
		ms.snaps[ms.version] = ms.sorted
		for v := range ms.snaps {
			if v+maxSnaps <= ms.version {
				delete(ms.snaps, v)
			}
		}
	}
	return ms.version, ms.sorted
}

// size returns the number of members.
func (ms *members) size() int {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	return len(ms.m)
}

// has reports whether id is a live member.
func (ms *members) has(id string) bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	_, ok := ms.m[id]
	return ok
}

// at returns the list as it was at version v, if still kept.
func (ms *members) at(v uint64) ([]proto.SupernodeInfo, bool) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	l, ok := ms.snaps[v]
	return l, ok
}
