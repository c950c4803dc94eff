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
// connection to the login server closes, or when it misses three heartbeats.
//
// It lives in memory: after a restart supernodes register again within their back-off.
type members struct {
	mu      sync.Mutex // mu protects the following fields
	m       map[string]*member
	version uint64
	sorted  []proto.SupernodeInfo // cache of the list, longest-lived first; nil = stale
	swept   time.Time             // last sweep
}

type member struct {
	info   proto.SupernodeInfo
	lastHB time.Time
	owner  *session // the connection that registered it
}

func newMembers() *members {
	// A random starting version, so a supernode that knew the list of a previous run of
	// this server refetches it.
	return &members{m: make(map[string]*member), version: rand.Uint64() >> 16}
}

func (ms *members) changedLocked() {
	ms.version++
	ms.sorted = nil
}

// upsert records a registration or heartbeat.
func (ms *members) upsert(info proto.SupernodeInfo, owner *session, now time.Time) {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	m, ok := ms.m[info.ID]
	if !ok || m.info.Addr != info.Addr || !m.info.Since.Equal(info.Since) {
		ms.m[info.ID] = &member{info: info, lastHB: now, owner: owner}
		ms.changedLocked()
		return
	}
	m.lastHB = now
	m.owner = owner
}

// remove drops id if owner registered it (nil owner: unconditionally).
func (ms *members) remove(id string, owner *session) bool {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	m, ok := ms.m[id]
	if !ok || (owner != nil && m.owner != owner) {
		return false
	}
	delete(ms.m, id)
	ms.changedLocked()
	return true
}

// sweep drops members whose last heartbeat is older than deadline, unless the previous
// sweep was less than every ago.
func (ms *members) sweep(now, deadline time.Time, every time.Duration) int {
	ms.mu.Lock()
	defer ms.mu.Unlock()
	if now.Sub(ms.swept) < every && !now.Before(ms.swept) {
		return 0
	}
	ms.swept = now
	n := 0
	for id, m := range ms.m {
		if m.lastHB.Before(deadline) {
			delete(ms.m, id)
			n++
		}
	}
	if n > 0 {
		ms.changedLocked()
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
	}
	return ms.version, ms.sorted
}
