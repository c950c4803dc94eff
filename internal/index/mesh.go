package index

import (
	"math/bits"
	"slices"
)

// The mesh: which supernode carries a message from one supernode to another that it has
// no connection to.
//
// A user's record lives at its holders, and its supernode talks to them at every
// keep-alive (publications) and so does the supernode of every buddy of the user
// (watches, and the presence pushed back). Holders are spread at random over the ring,
// so with a hundred users per supernode and a few buddies each, every supernode talked
// to about half of the others: 290,000 connections at 1,000 supernodes, each a TLS
// handshake to make and some 25 KB to keep at both ends.
//
// Instead the members fall into about √N groups by a hash of their id, as in Kelips
// (Gupta, Birman, Linga, Demers, van Renesse: "Kelips: building an efficient and stable
// P2P DHT through increased memory and background overhead", IPTPS 2003). A supernode
// reaches the members of its own group directly, and each other group through one
// contact in it: the member whose hash, within the group, is nearest its own. A message
// for a member of another group goes to the contact, which hands it on within its
// group. A supernode then keeps about 2√N connections for this traffic (62 at 1,000
// members) instead of one per peer it ever has something for; the price is a second hop
// for what finds no connection open (the supernode package says which messages take
// it). Lookups stay one hop: they take a connection for a moment, and answer the user
// who waits.
//
// Nearest "within the group" compares the hash bits below the group's: a member at
// offset o of its group picks the member nearest o in each other group, and that member
// usually picks it back (both are nearest each other's offsets), so that one
// connection serves both directions.

// meshMember is a member and its mesh key.
type meshMember struct {
	key uint64
	m   Member
}

// mesh is the grouping of one ring, worked out once per ring (see Ring.Via).
type mesh struct {
	bits   int               // groups = 1 << bits
	groups [][]meshMember    // by group, each sorted by key
	byID   map[string]uint64 // member id -> key
}

// meshBits is the number of group bits for n members: 2^bits groups of about √n
// members (1 group up to 3 members, 32 groups from 257 to 1,024, 64 to 4,096).
func meshBits(n int) int {
	if n < 4 {
		return 0
	}
	return (bits.Len(uint(n-1)) + 1) / 2
}

func meshKey(id string) uint64 { return hashKey("mesh:" + id) }

func (r *Ring) meshOf() *mesh {
	r.meshOnce.Do(func() {
		ms := &mesh{bits: meshBits(len(r.members)), byID: make(map[string]uint64, len(r.members))}
		ms.groups = make([][]meshMember, 1<<ms.bits)
		for id, m := range r.members {
			k := meshKey(id)
			ms.byID[id] = k
			g := ms.group(k)
			ms.groups[g] = append(ms.groups[g], meshMember{k, m})
		}
		for _, g := range ms.groups {
			slices.SortFunc(g, func(a, b meshMember) int {
				switch {
				case a.key < b.key:
					return -1
				case a.key > b.key:
					return 1
				}
				return 0
			})
		}
		r.mesh = ms
	})
	return r.mesh
}

func (ms *mesh) group(k uint64) int {
	if ms.bits == 0 {
		return 0
	}
	return int(k >> (64 - ms.bits))
}

// offset is k's position within its group, as a fraction of the group's span.
func (ms *mesh) offset(k uint64) uint64 { return k << ms.bits }

// Groups reports how many groups the ring's members fall into.
func (r *Ring) Groups() int { return len(r.meshOf().groups) }

// SameGroup reports whether a and b, both members, are in one group.
func (r *Ring) SameGroup(a, b string) bool {
	ms := r.meshOf()
	ka, okA := ms.byID[a]
	kb, okB := ms.byID[b]
	return okA && okB && ms.group(ka) == ms.group(kb)
}

// Via returns the member through which from reaches to, both members: to itself when
// they are in one group, else from's contact in to's group, which is to or the member
// that hands the message on to it. Members for which alive returns false are passed
// over (alive nil = all alive); ok is false if from or to is not a member or to's group
// has no live member but to, which is then reached directly.
func (r *Ring) Via(from, to string, alive func(id string) bool) (via Member, ok bool) {
	ms := r.meshOf()
	kf, okF := ms.byID[from]
	kt, okT := ms.byID[to]
	if !okF || !okT {
		return Member{}, false
	}
	g := ms.group(kt)
	if ms.group(kf) == g {
		return r.members[to], true
	}
	c, ok := ms.contact(kf, g, alive)
	if !ok {
		return Member{}, false
	}
	return c, true
}

// Contacts returns from's contact in every group but its own (the live ones, by alive):
// the members a supernode keeps connections to for mesh traffic, besides its group's.
func (r *Ring) Contacts(from string, alive func(id string) bool) []Member {
	ms := r.meshOf()
	kf, ok := ms.byID[from]
	if !ok {
		return nil
	}
	var out []Member
	for g := range ms.groups {
		if g == ms.group(kf) {
			continue
		}
		if c, ok := ms.contact(kf, g, alive); ok {
			out = append(out, c)
		}
	}
	return out
}

// contact returns the live member of group g whose offset is nearest kf's, the nearer
// of ties by key.
func (ms *mesh) contact(kf uint64, g int, alive func(string) bool) (Member, bool) {
	grp := ms.groups[g]
	if len(grp) == 0 {
		return Member{}, false
	}
	want := ms.offset(kf)
	// The members in key order are in offset order too (one group shares its top bits).
	i, _ := slices.BinarySearchFunc(grp, want, func(e meshMember, t uint64) int {
		switch o := ms.offset(e.key); {
		case o < t:
			return -1
		case o > t:
			return 1
		}
		return 0
	})
	// Walk outwards from i, both ways round the group, nearest first.
	n := len(grp)
	lo, hi := i-1, i
	for steps := 0; steps < n; steps++ {
		var pick int
		switch {
		case hi-lo-1 >= n:
			return Member{}, false
		case ms.dist(grp[mod(hi, n)].key, want) <= ms.dist(grp[mod(lo, n)].key, want):
			pick = mod(hi, n)
			hi++
		default:
			pick = mod(lo, n)
			lo--
		}
		if m := grp[pick].m; alive == nil || alive(m.ID) {
			return m, true
		}
	}
	return Member{}, false
}

// dist is the distance between k's offset and want, round the group's span.
func (ms *mesh) dist(k, want uint64) uint64 {
	d := ms.offset(k) - want
	return min(d, -d)
}

func mod(i, n int) int { return ((i % n) + n) % n }
