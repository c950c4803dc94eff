package index

import (
	"crypto/sha256"
	"encoding/binary"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"weak"
)

// Member is a supernode on the ring.
type Member struct {
	ID    string // the supernode's public key (unpadded base64url)
	Addr  string
	Since time.Time // when it came up, as the login server says; zero = unknown
}

// VNodes is how many points each supernode takes on the ring. More points even out the
// share of names each supernode holds (with 1,000 supernodes and 16 points each, the
// busiest holds about twice the mean rather than five times).
const VNodes = 16

type point struct {
	h  uint64
	id string
}

// Ring places supernodes and names on a 64-bit hash circle. A name is held by the first R
// distinct supernodes clockwise from its hash. The zero value is an empty ring; a Ring is
// not safe for concurrent mutation (the supernode keeps one behind its own lock and swaps
// whole rings).
type Ring struct {
	points  []point
	members map[string]Member
	sum     [sha256.Size]byte // digest of the members, set by intern

	oldestOnce sync.Once
	oldest     []Member // every member, longest-lived first; see Oldest

	meshOnce sync.Once
	mesh     *mesh // the members' groups; see Via
}

// Oldest returns up to n members, longest-lived first (then by id). The order is worked
// out once per ring, which the supernodes of a simulated overlay share.
func (r *Ring) Oldest(n int) []Member {
	r.oldestOnce.Do(func() {
		r.oldest = make([]Member, 0, len(r.members))
		for _, m := range r.members {
			r.oldest = append(r.oldest, m)
		}
		slices.SortFunc(r.oldest, func(a, b Member) int {
			if c := a.Since.Compare(b.Since); c != 0 {
				return c
			}
			return strings.Compare(a.ID, b.ID)
		})
	})
	return r.oldest[:min(n, len(r.oldest))]
}

// NewRing builds a ring of the given members.
func NewRing(members []Member) *Ring {
	r := &Ring{members: make(map[string]Member, len(members))}
	for _, m := range members {
		r.members[m.ID] = m
	}
	r.points = make([]point, 0, len(r.members)*VNodes)
	for id := range r.members {
		for _, h := range vnodeHashes(id) {
			r.points = append(r.points, point{h, id})
		}
	}
	slices.SortFunc(r.points, cmpPoints)
	return intern(r)
}

// Rings are immutable once built, and the supernodes of one overlay converge on the same
// membership: in a process that simulates a thousand of them, a thousand copies of one
// ring (16,000 points and a member map each, half a megabyte) would hold half a gigabyte
// for nothing. intern returns the ring already built with the same members (ids and
// addresses) if one is still in use, else r. It holds rings weakly: a ring no supernode
// uses any more goes, and its entry with it. In a process of one supernode it costs a
// hash of the member list per ring built.
func intern(r *Ring) *Ring {
	r.sum = r.digest()
	return interned.put(r.sum, r)
}

var interned weakRings[[sha256.Size]byte]

// weakRings maps keys to rings without keeping the rings alive: an entry goes when its
// ring is collected.
type weakRings[K comparable] struct {
	mu sync.Mutex // mu protects m
	m  map[K]weak.Pointer[Ring]
}

// get returns the ring under k, or nil if there is none or it was collected.
func (w *weakRings[K]) get(k K) *Ring {
	w.mu.Lock()
	defer w.mu.Unlock()
	if wp, ok := w.m[k]; ok {
		return wp.Value()
	}
	return nil
}

// put returns the ring under k if it is still in use, else stores r under k and
// returns it.
func (w *weakRings[K]) put(k K, r *Ring) *Ring {
	w.mu.Lock()
	defer w.mu.Unlock()
	if wp, ok := w.m[k]; ok {
		if old := wp.Value(); old != nil {
			return old
		}
	}
	if w.m == nil {
		w.m = make(map[K]weak.Pointer[Ring])
	}
	w.m[k] = weak.Make(r)
	runtime.AddCleanup(r, func(k K) {
		w.mu.Lock()
		defer w.mu.Unlock()
		if wp, ok := w.m[k]; ok && wp.Value() == nil {
			delete(w.m, k)
		}
	}, k)
	return r
}

// digest identifies the ring's members: ids and addresses, in id order.
func (r *Ring) digest() [sha256.Size]byte {
	h := sha256.New()
	for _, m := range r.Members() {
		h.Write([]byte(m.ID))
		h.Write([]byte{0})
		h.Write([]byte(m.Addr))
		h.Write([]byte{0})
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(m.Since.UnixNano())))
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

// vnodeCache keeps each member's point hashes: every supernode rebuilds its ring whenever
// membership changes, and at 1,000 members hashing 16,000 points each time would cost
// more than the sort.
// It is dropped whole when it passes maxCached ids, which bounds it in a long run.
var (
	vnodeCache  sync.Map // id -> *[VNodes]uint64
	vnodeCached atomic.Int64
)

const maxCached = 100_000

func vnodeHashes(id string) *[VNodes]uint64 {
	if v, ok := vnodeCache.Load(id); ok {
		return v.(*[VNodes]uint64)
	}
	if vnodeCached.Add(1) > maxCached {
		vnodeCache.Clear()
		vnodeCached.Store(1)
	}
	var hs [VNodes]uint64
	for v := range hs {
		hs[v] = hashKey(id + "#" + strconv.Itoa(v))
	}
	actual, _ := vnodeCache.LoadOrStore(id, &hs)
	return actual.(*[VNodes]uint64)
}

func hashKey(s string) uint64 {
	sum := sha256.Sum256([]byte(s))
	return binary.BigEndian.Uint64(sum[:8])
}

// Len is the number of members.
func (r *Ring) Len() int { return len(r.members) }

// Has reports whether id is a member.
func (r *Ring) Has(id string) bool { _, ok := r.members[id]; return ok }

// Member returns the member with that id.
func (r *Ring) Member(id string) (Member, bool) { m, ok := r.members[id]; return m, ok }

// Members returns every member, sorted by id.
func (r *Ring) Members() []Member {
	out := make([]Member, 0, len(r.members))
	for _, m := range r.members {
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Member) int {
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
	return out
}

// Walk calls f with the distinct members clockwise from name's position, nearest first,
// until f returns false or every member has been visited. Lookups and publications walk
// the same order, skipping members they find dead, so both reach the same live holders.
func (r *Ring) Walk(name string, f func(Member) bool) {
	if len(r.points) == 0 {
		return
	}
	h := hashKey("user:" + name)
	i := sort.Search(len(r.points), func(i int) bool { return r.points[i].h >= h })
	seen := make(map[string]bool, 8)
	for n := 0; n < len(r.points) && len(seen) < len(r.members); n++ {
		p := r.points[(i+n)%len(r.points)]
		if seen[p.id] {
			continue
		}
		seen[p.id] = true
		if !f(r.members[p.id]) {
			return
		}
	}
}

// Holders returns the first n distinct members for name for which alive returns true
// (alive nil = all).
func (r *Ring) Holders(name string, n int, alive func(id string) bool) []Member {
	out := make([]Member, 0, n)
	r.Walk(name, func(m Member) bool {
		if alive == nil || alive(m.ID) {
			out = append(out, m)
		}
		return len(out) < n
	})
	return out
}

// With returns a ring with add joined (or their addresses updated) and remove gone,
// leaving r unchanged. It costs one pass over r's points plus sorting the new ones, so a
// supernode can follow churn in a large ring without rebuilding it.
//
// The supernodes of one overlay apply the same changes to the same (interned) ring, so
// the result is remembered, weakly, by the ring and the changes: in a process that
// simulates a thousand supernodes, each departure was otherwise worked out a thousand
// times (13% of the CPU after killing 10% of them). A process of one supernode pays a
// hash of the changes per call.
func (r *Ring) With(add []Member, remove []string) *Ring {
	key := withKey{base: r.sum, delta: changesDigest(add, remove)}
	if out := withMemo.get(key); out != nil {
		return out
	}
	return withMemo.put(key, r.with(add, remove))
}

// withKey names the result of applying changes (by digest) to a ring (by digest).
type withKey struct {
	base, delta [sha256.Size]byte
}

var withMemo weakRings[withKey]

// changesDigest identifies the arguments of With, in order.
func changesDigest(add []Member, remove []string) [sha256.Size]byte {
	h := sha256.New()
	var buf []byte
	for _, m := range add {
		buf = append(buf[:0], 'a')
		buf = append(buf, m.ID...)
		buf = append(buf, 0)
		buf = append(buf, m.Addr...)
		buf = append(buf, 0)
		buf = binary.BigEndian.AppendUint64(buf, uint64(m.Since.UnixNano()))
		h.Write(buf)
	}
	for _, id := range remove {
		buf = append(buf[:0], 'r')
		buf = append(buf, id...)
		buf = append(buf, 0)
		h.Write(buf)
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	return d
}

func (r *Ring) with(add []Member, remove []string) *Ring {
	out := &Ring{members: make(map[string]Member, len(r.members)+len(add))}
	for id, m := range r.members {
		out.members[id] = m
	}
	gone := make(map[string]bool, len(remove))
	for _, id := range remove {
		if _, ok := out.members[id]; ok {
			delete(out.members, id)
			gone[id] = true
		}
	}
	var fresh []point
	added := make(map[string]bool, len(add))
	for _, m := range add {
		out.members[m.ID] = m
		switch {
		case gone[m.ID]:
			delete(gone, m.ID) // left and came back in one step: its points stay
		case added[m.ID]:
		default:
			if _, inOld := r.members[m.ID]; !inOld {
				for _, h := range vnodeHashes(m.ID) {
					fresh = append(fresh, point{h, m.ID})
				}
			}
		}
		added[m.ID] = true
	}
	slices.SortFunc(fresh, cmpPoints)
	out.points = make([]point, 0, len(r.points)+len(fresh))
	i, j := 0, 0
	for i < len(r.points) || j < len(fresh) {
		if i < len(r.points) && gone[r.points[i].id] {
			i++
			continue
		}
		if j >= len(fresh) || (i < len(r.points) && less(r.points[i], fresh[j])) {
			out.points = append(out.points, r.points[i])
			i++
		} else {
			out.points = append(out.points, fresh[j])
			j++
		}
	}
	return intern(out)
}

// cmpPoints orders points as less does, for slices.SortFunc (which, unlike sort.Slice,
// swaps without reflection: rings of 16,000 points are rebuilt on every membership fetch).
func cmpPoints(a, b point) int {
	switch {
	case less(a, b):
		return -1
	case less(b, a):
		return 1
	}
	return 0
}

func less(a, b point) bool {
	if a.h != b.h {
		return a.h < b.h
	}
	return a.id < b.id
}
