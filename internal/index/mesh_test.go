package index

import (
	"fmt"
	"math"
	"testing"
)

func meshRing(n int) *Ring {
	ms := make([]Member, n)
	for i := range ms {
		ms[i] = Member{ID: fmt.Sprintf("sn%04d", i), Addr: fmt.Sprintf("192.0.2.%d:4000", i%250+1)}
	}
	return NewRing(ms)
}

func TestMeshBits(t *testing.T) {
	for _, c := range []struct{ n, groups int }{{1, 1}, {3, 1}, {4, 2}, {16, 4}, {17, 8}, {20, 8}, {256, 16}, {257, 32}, {1000, 32}, {1024, 32}, {1025, 64}, {100000, 512}} {
		if got := 1 << meshBits(c.n); got != c.groups {
			t.Errorf("%d members: %d groups, want %d", c.n, got, c.groups)
		}
	}
}

// Every message reaches its target in at most two hops: Via is the target itself within
// a group, else a member of the target's group, which reaches the target directly.
func TestViaReachesTargetsGroup(t *testing.T) {
	for _, n := range []int{1, 2, 5, 20, 300} {
		r := meshRing(n)
		ms := r.Members()
		for _, a := range ms {
			for _, b := range ms {
				if a.ID == b.ID {
					continue
				}
				v, ok := r.Via(a.ID, b.ID, nil)
				if !ok {
					t.Fatalf("n=%d: no way from %s to %s", n, a.ID, b.ID)
				}
				if r.SameGroup(a.ID, b.ID) {
					if v.ID != b.ID {
						t.Fatalf("n=%d: %s and %s share a group, via %s", n, a.ID, b.ID, v.ID)
					}
					continue
				}
				if !r.SameGroup(v.ID, b.ID) || v.ID == a.ID {
					t.Fatalf("n=%d: %s to %s via %s, not in the target's group", n, a.ID, b.ID, v.ID)
				}
			}
		}
	}
	if _, ok := meshRing(5).Via("sn0000", "nobody", nil); ok {
		t.Error("Via to a non-member succeeded")
	}
}

// The point of the mesh: a member needs its group and one contact per other group, about
// 2√N peers, and contacts mostly pick each other, so connections serve both ways.
func TestMeshPeersPerMember(t *testing.T) {
	const n = 1000
	r := meshRing(n)
	ms := r.Members()
	pairs := map[[2]string]bool{}
	peers := map[string]map[string]bool{}
	add := func(a, b string) {
		if a > b {
			a, b = b, a
		}
		pairs[[2]string{a, b}] = true
		for _, x := range [][2]string{{a, b}, {b, a}} {
			if peers[x[0]] == nil {
				peers[x[0]] = map[string]bool{}
			}
			peers[x[0]][x[1]] = true
		}
	}
	for _, a := range ms {
		for _, b := range ms {
			if a.ID == b.ID {
				continue
			}
			v, _ := r.Via(a.ID, b.ID, nil)
			add(a.ID, v.ID)
			if v.ID != b.ID {
				add(v.ID, b.ID) // the contact's hop, within the target's group
			}
		}
	}
	maxPeers := 0
	for _, p := range peers {
		maxPeers = max(maxPeers, len(p))
	}
	mean := 2 * float64(len(pairs)) / n
	t.Logf("%d members, %d groups: %d connections, %.1f peers per member (max %d)", n, r.Groups(), len(pairs), mean, maxPeers)
	if bound := 3 * math.Sqrt(n); mean > bound {
		t.Errorf("%.1f peers per member, want at most 3√N = %.0f", mean, bound)
	}
	if len(pairs) > n*n/10 {
		t.Errorf("%d connections for %d members: no better than a full mesh", len(pairs), n)
	}
}

// A dead contact is passed over for the next nearest member of its group; a group with
// no live member but the target sends to the target.
func TestViaSkipsDead(t *testing.T) {
	r := meshRing(300)
	ms := r.Members()
	var a, b Member
	for _, x := range ms[1:] {
		if !r.SameGroup(ms[0].ID, x.ID) {
			a, b = ms[0], x
			break
		}
	}
	v, _ := r.Via(a.ID, b.ID, nil)
	dead := map[string]bool{v.ID: true}
	alive := func(id string) bool { return !dead[id] }
	w, ok := r.Via(a.ID, b.ID, alive)
	if !ok || w.ID == v.ID || !r.SameGroup(w.ID, b.ID) {
		t.Fatalf("with %s dead: via %s (%v), want another member of %s's group", v.ID, w.ID, ok, b.ID)
	}
	for _, x := range ms {
		if r.SameGroup(x.ID, b.ID) && x.ID != b.ID {
			dead[x.ID] = true
		}
	}
	if w, ok := r.Via(a.ID, b.ID, alive); !ok || w.ID != b.ID {
		t.Fatalf("with the rest of the group dead: via %s (%v), want %s", w.ID, ok, b.ID)
	}
	if got := len(r.Contacts(a.ID, nil)); got != r.Groups()-1 {
		t.Errorf("%d contacts, want one per other group (%d)", got, r.Groups()-1)
	}
}
