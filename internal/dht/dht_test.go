package dht

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"fmt"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/proto"
)

// The tests drive Nodes through a fake transport, which calls the target Node's serving
// methods directly, and a fake clock: nothing here sleeps or waits on real time, and
// every outcome is decided by the ring, the marks and what the test makes each member
// do (answer, be unreachable, answer busy, or answer only when released).

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

// cluster is a set of Nodes that reach each other through fakeTransport.
type cluster struct {
	t     *testing.T
	clk   *clockwork.FakeClock
	login ed25519.PrivateKey
	ctx   context.Context

	mu       sync.Mutex // mu protects the following fields
	nodes    map[string]*Node
	members  map[string]index.Member
	down     map[string]bool          // unreachable: ErrUnreachable
	busy     map[string]bool          // answers busy, as one without a member list
	slow     map[string]chan struct{} // answers once the channel closes, or ErrSlow at ctx's end
	open     map[string]bool          // members every node has a connection open to
	attached map[string]map[string]Own
	changed  map[string][]string // node -> names Changed was told of
	calls    map[string]int      // "kind from->to" counts
}

func newCluster(t *testing.T, n int) *cluster {
	t.Helper()
	_, login, _ := ed25519.GenerateKey(rand.Reader)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c := &cluster{
		t: t, clk: clockwork.NewFakeClockAt(t0), login: login, ctx: ctx,
		nodes: map[string]*Node{}, members: map[string]index.Member{},
		down: map[string]bool{}, busy: map[string]bool{}, slow: map[string]chan struct{}{}, open: map[string]bool{},
		attached: map[string]map[string]Own{}, changed: map[string][]string{}, calls: map[string]int{},
	}
	for i := range n {
		c.add(fmt.Sprintf("sn%02d", i))
	}
	c.setRing()
	return c
}

// add starts a node with member ID id (replacing one of that ID, as a restart does: a
// later Since, an empty store); it is on nobody's ring until setRing.
func (c *cluster) add(id string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	nd := New(Config{
		Self: id, Replicas: 3, CacheTTL: 5 * time.Second, SuspectTime: 10 * time.Second, LookupHedge: 250 * time.Millisecond,
		Transport: fakeTransport{c, id}, Clock: c.clk, Creds: identity.NewCache(c.login.Public().(ed25519.PublicKey), 0),
		Attached: func() []Own {
			c.mu.Lock()
			defer c.mu.Unlock()
			var out []Own
			for _, o := range c.attached[id] {
				out = append(out, o)
			}
			sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
			return out
		},
		Changed: func(name string) {
			c.mu.Lock()
			c.changed[id] = append(c.changed[id], name)
			c.mu.Unlock()
		},
	})
	c.nodes[id] = nd
	c.members[id] = index.Member{ID: id, Addr: "203.0.113.1:7100", Since: c.clk.Now()}
	c.attached[id] = map[string]Own{}
	return nd
}

// remove takes id off the member list (it is not stopped: see down).
func (c *cluster) remove(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.members, id)
}

// setRing hands every node on the member list the list, as the login server would.
func (c *cluster) setRing() *index.Ring {
	c.mu.Lock()
	var ms []index.Member
	for _, m := range c.members {
		ms = append(ms, m)
	}
	c.mu.Unlock()
	ring := index.NewRing(ms)
	for _, m := range ms {
		c.node(m.ID).SetRing(ring, uint64(len(ms)))
	}
	return ring
}

func (c *cluster) node(id string) *Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// live returns the IDs on the member list and not down, sorted.
func (c *cluster) live() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []string
	for id := range c.members {
		if !c.down[id] {
			out = append(out, id)
		}
	}
	sort.Strings(out)
	return out
}

// repairAll runs one repair pass on every live node, in ID order.
func (c *cluster) repairAll() {
	for _, id := range c.live() {
		c.node(id).Repair(c.ctx)
	}
}

// user signs a record of name attached to home, valid for ttl, and attaches it there.
func (c *cluster) user(name, home string, seq uint64, ttl time.Duration) []byte {
	c.t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	now := c.clk.Now()
	cred, err := identity.Sign(c.login, identity.Credential{Kind: identity.KindUser, Name: name,
		PubKey: key.Public().(ed25519.PublicKey), Issued: now.Add(-time.Hour), Expires: now.Add(24 * time.Hour)})
	if err != nil {
		c.t.Fatal(err)
	}
	raw, err := index.Sign(key, index.Record{Name: name, Credential: cred, Supernode: home, SNAddr: "203.0.113.1:7100",
		Seq: seq, Expires: now.Add(ttl)})
	if err != nil {
		c.t.Fatal(err)
	}
	c.mu.Lock()
	c.attached[home][name] = Own{name, raw, now.Add(ttl)}
	c.mu.Unlock()
	return raw
}

// publish attaches a new user to home and publishes the record from there.
func (c *cluster) publish(name, home string) {
	c.t.Helper()
	raw := c.user(name, home, 1, time.Minute)
	if got := c.node(home).Publish(c.ctx, name, raw); got != 1 {
		c.t.Fatalf("publish %s at %s: %d holders reached", name, home, got)
	}
}

// holding returns the live nodes that hold name's record, sorted.
func (c *cluster) holding(name string) []string {
	var out []string
	for _, id := range c.live() {
		if _, ok := c.node(id).Held(name); ok {
			out = append(out, id)
		}
	}
	return out
}

// nonHolder returns the first live node, by ID, that is not one of name's holders in
// ring.
func (c *cluster) nonHolder(ring *index.Ring, name string) string {
	for _, id := range c.live() {
		if !slices.Contains(holdersIn(ring, name), id) {
			return id
		}
	}
	c.t.Fatalf("every live node holds %s", name)
	return ""
}

// holdersIn returns name's first Replicas holders in ring, sorted.
func holdersIn(ring *index.Ring, name string) []string {
	var out []string
	for _, m := range ring.Holders(name, 3, nil) {
		out = append(out, m.ID)
	}
	sort.Strings(out)
	return out
}

// reach is what the fake network does with a call from one member to another.
func (c *cluster) reach(ctx context.Context, kind, from, to string) (*Node, error) {
	c.mu.Lock()
	c.calls[kind]++
	c.calls[kind+" "+from+"->"+to]++
	nd, down, busy, slow := c.nodes[to], c.down[to], c.busy[to], c.slow[to]
	c.mu.Unlock()
	switch {
	case nd == nil || down:
		return nil, fmt.Errorf("%w: %s is down", ErrUnreachable, to)
	case slow != nil:
		select {
		case <-slow:
		case <-ctx.Done():
			return nil, fmt.Errorf("%w: %s", ErrSlow, to)
		}
	}
	if r, _ := nd.Ring(); busy || r.Len() == 0 {
		return nil, proto.ErrBusy.With("no member list")
	}
	return nd, nil
}

func (c *cluster) count(kind string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.calls[kind]
}

// fakeTransport is member from's Transport in a cluster.
type fakeTransport struct {
	c    *cluster
	from string
}

func (f fakeTransport) Store(ctx context.Context, m index.Member, raw []byte, replicate bool) error {
	nd, err := f.c.reach(ctx, "store", f.from, m.ID)
	if err != nil {
		return err
	}
	if !replicate {
		return nd.Put(raw)
	}
	if err := nd.Put(raw); err != nil {
		return err
	}
	rec, err := index.Parse(raw)
	if err != nil {
		return err
	}
	nd.Replicate(ctx, rec.Name, raw)
	return nil
}

func (f fakeTransport) StoreBatch(ctx context.Context, m index.Member, raws [][]byte) error {
	nd, err := f.c.reach(ctx, "batch", f.from, m.ID)
	if err != nil {
		return err
	}
	for _, raw := range raws {
		nd.Put(raw)
	}
	return nil
}

func (f fakeTransport) Lookup(ctx context.Context, m index.Member, name, asker string) (proto.IndexResult, error) {
	nd, err := f.c.reach(ctx, "lookup", f.from, m.ID)
	if err != nil {
		return proto.IndexResult{}, err
	}
	return nd.Local(name, asker), nil
}

func (f fakeTransport) Gone(ctx context.Context, m index.Member, name string, seq uint64) error {
	nd, err := f.c.reach(ctx, "gone", f.from, m.ID)
	if err != nil {
		return err
	}
	nd.GoneFrom(name, f.from, seq)
	return nil
}

func (f fakeTransport) Open(id string) bool {
	f.c.mu.Lock()
	defer f.c.mu.Unlock()
	return f.c.open[id]
}

// TestPlacementAndOneHopLookup: with the member list known and every member up, each
// record is held by exactly its Replicas holders, and a lookup from any member finds it
// online in at most one hop (none from a holder), without hedging.
func TestPlacementAndOneHopLookup(t *testing.T) {
	c := newCluster(t, 20)
	ring := c.setRing()
	ids := c.live()
	for i := range 100 {
		c.publish(fmt.Sprintf("user%03d", i), ids[i%len(ids)])
	}
	hopsSeen := map[int]int{}
	for i := range 100 {
		name := fmt.Sprintf("user%03d", i)
		if got, want := c.holding(name), holdersIn(ring, name); !slices.Equal(got, want) {
			t.Fatalf("%s held by %v, want its holders %v", name, got, want)
		}
		for _, id := range ids {
			res, hops, cached := c.node(id).Lookup(c.ctx, name, "")
			if !res.Found || !res.Online || cached {
				t.Fatalf("lookup of %s from %s: %+v (cached %v), want found online", name, id, res, cached)
			}
			holder := slices.Contains(holdersIn(ring, name), id)
			if (holder && hops != 0) || (!holder && hops != 1) {
				t.Fatalf("lookup of %s from %s (holder %v): %d hops", name, id, holder, hops)
			}
			hopsSeen[hops]++
		}
	}
	for _, id := range ids {
		if h := c.node(id).m.Get("lookup_hedges"); h != 0 {
			t.Fatalf("%s hedged %d lookups with every member answering at once", id, h)
		}
	}
	t.Logf("2,000 lookups: %d at 0 hops, %d at 1", hopsSeen[0], hopsSeen[1])
	// A second lookup of the same name from a non-holder is answered from its cache.
	for _, id := range ids {
		if slices.Contains(holdersIn(ring, "user000"), id) {
			continue
		}
		if _, hops, cached := c.node(id).Lookup(c.ctx, "user000", ""); !cached || hops != 0 {
			t.Fatalf("second lookup from %s: cached %v, %d hops", id, cached, hops)
		}
		break
	}
}

// TestChurnRehomes: members die, the login server drops them, members join; after one
// repair pass per member each record is held by exactly its holders in the new ring
// (the new ones got it, the old ones dropped it), and lookups stay one hop.
func TestChurnRehomes(t *testing.T) {
	c := newCluster(t, 20)
	ids := c.live()
	for i := range 300 {
		c.publish(fmt.Sprintf("user%03d", i), ids[i%len(ids)])
	}
	// Three die: their users' records lose a holder each (the users are attached
	// elsewhere), and the three users attached to them are reattaching, so their records
	// are orphans the survivors re-home.
	for _, id := range ids[:3] {
		c.mu.Lock()
		c.down[id] = true
		c.mu.Unlock()
		c.remove(id)
	}
	for _, id := range []string{"sn20", "sn21"} {
		c.add(id)
	}
	ring := c.setRing()
	c.repairAll()
	for i := range 300 {
		name := fmt.Sprintf("user%03d", i)
		if got, want := c.holding(name), holdersIn(ring, name); !slices.Equal(got, want) {
			t.Fatalf("after churn %s is held by %v, want its holders %v", name, got, want)
		}
		from := c.live()[i%len(c.live())]
		res, hops, _ := c.node(from).Lookup(c.ctx, name, "")
		if !res.Found || !res.Online || hops > 1 {
			t.Fatalf("after churn, lookup of %s from %s: %+v in %d hops", name, from, res, hops)
		}
	}
	// Only holders new to a record were sent it: a second pass sends nothing.
	before := c.count("batch")
	c.repairAll()
	if got := c.count("batch"); got != before {
		t.Fatalf("a second repair pass with nothing changed sent %d batches", got-before)
	}
}

// TestSlowHolderHedged: a first holder that does not answer costs a lookup LookupHedge:
// the next holder is asked then, its answer wins (two hops), and the slow one is not
// suspected.
func TestSlowHolderHedged(t *testing.T) {
	c := newCluster(t, 10)
	ring := c.setRing()
	c.publish("alice", "sn00")
	holders := ring.Holders("alice", 3, nil)
	from := c.nonHolder(ring, "alice")
	first := holders[0].ID
	c.mu.Lock()
	c.slow[first] = make(chan struct{})
	c.mu.Unlock()
	type result struct {
		res  proto.IndexResult
		hops int
	}
	done := make(chan result, 1)
	go func() {
		res, hops, _ := c.node(from).Lookup(c.ctx, "alice", "")
		done <- result{res, hops}
	}()
	if err := c.clk.BlockUntilContext(c.ctx, 1); err != nil { // the hedge timer
		t.Fatal(err)
	}
	c.clk.Advance(250 * time.Millisecond)
	r := <-done
	close(c.slow[first])
	if !r.res.Found || !r.res.Online || r.hops != 2 {
		t.Fatalf("lookup past a slow first holder: %+v in %d hops, want found online in 2", r.res, r.hops)
	}
	nd := c.node(from)
	if got := nd.m.Get("lookup_hedges"); got != 1 {
		t.Fatalf("lookup_hedges = %d, want 1", got)
	}
	if !nd.Alive(first) {
		t.Fatal("the slow holder was suspected")
	}
}

// TestDeadHolderSuspected: a lookup that meets an unreachable first holder moves on at
// once (no hedge), suspects it, and later walks past it; the suspicion lapses after
// SuspectTime.
func TestDeadHolderSuspected(t *testing.T) {
	c := newCluster(t, 10)
	ring := c.setRing()
	c.publish("alice", "sn00")
	from := c.nonHolder(ring, "alice")
	first := ring.Holders("alice", 3, nil)[0].ID
	c.mu.Lock()
	c.down[first] = true
	c.mu.Unlock()
	nd := c.node(from)
	res, hops, _ := nd.Lookup(c.ctx, "alice", "")
	if !res.Found || hops != 2 || nd.m.Get("lookup_hedges") != 0 {
		t.Fatalf("lookup past a dead first holder: %+v in %d hops, %d hedges", res, hops, nd.m.Get("lookup_hedges"))
	}
	if nd.Alive(first) || nd.m.Get("peers_suspected") != 1 {
		t.Fatalf("the dead holder is not suspected (peers_suspected %d)", nd.m.Get("peers_suspected"))
	}
	nd.Forget("alice")
	before := c.count("lookup " + from + "->" + first)
	if res, hops, _ := nd.Lookup(c.ctx, "alice", ""); !res.Found || hops != 1 || c.count("lookup "+from+"->"+first) != before {
		t.Fatalf("lookup with the dead holder suspected: %+v in %d hops, it was asked again", res, hops)
	}
	c.clk.Advance(10*time.Second + time.Millisecond)
	if !nd.Alive(first) {
		t.Fatal("still suspected after SuspectTime")
	}
}

// TestExpiredRecords: a record past its expiry reads offline, last seen at its expiry,
// and Expire tells Changed (the watchers) once; a lookup answers offline, and repair
// does not re-home it. Past the keep period (72 hours) Expire drops it.
func TestExpiredRecords(t *testing.T) {
	c := newCluster(t, 6)
	ring := c.setRing()
	c.publish("alice", "sn00")
	if got := c.holding("alice"); len(got) != 3 {
		t.Fatalf("alice held by %v", got)
	}
	expires := t0.Add(time.Minute)
	c.clk.Advance(time.Minute + time.Second)
	for _, id := range holdersIn(ring, "alice") {
		for range 2 {
			c.node(id).Expire()
		}
		c.mu.Lock()
		got := c.changed[id]
		c.mu.Unlock()
		if !slices.Equal(got, []string{"alice", "alice"}) { // stored, then expired once
			t.Fatalf("%s told of %v, want alice stored and expired", id, got)
		}
		if e, ok := c.node(id).Held("alice"); !ok || !e.Offline || !e.LastSeen.Equal(expires) {
			t.Fatalf("%s holds %+v, %v after expiry; want offline, last seen %v", id, e, ok, expires)
		}
	}
	for _, id := range c.live() {
		c.node(id).Forget("alice")
		if res, _, _ := c.node(id).Lookup(c.ctx, "alice", ""); !res.Found || res.Online || !res.LastSeen.Equal(expires) {
			t.Fatalf("lookup from %s of an expired record: %+v, want offline, last seen %v", id, res, expires)
		}
	}
	// Her supernode still has her (expired) record attached, and a holder leaves:
	// repair sends nothing.
	c.mu.Lock()
	c.down["sn05"] = true
	c.mu.Unlock()
	c.remove("sn05")
	c.setRing()
	before := c.count("batch")
	c.repairAll()
	if got := c.count("batch"); got != before {
		t.Fatalf("repair sent %d batches for an expired record", got-before)
	}
	c.clk.Advance(72*time.Hour + time.Second)
	for _, id := range c.live() {
		c.node(id).Expire()
	}
	if got := c.holding("alice"); got != nil {
		t.Fatalf("72 hours after expiry alice is still held by %v", got)
	}
}

// TestRestartedHolderGetsRecords: a member restarted with the same ID and a later Since
// comes back empty; the supernode of each user whose holder it is hands it the record in
// the next repair pass, and nobody else sends anything.
func TestRestartedHolderGetsRecords(t *testing.T) {
	c := newCluster(t, 8)
	ids := c.live()
	for i := range 100 {
		c.publish(fmt.Sprintf("user%03d", i), ids[i%len(ids)])
	}
	c.repairAll() // settle: every node's last view is the current ring
	restarted := ids[3]
	c.clk.Advance(time.Second)
	c.add(restarted) // same ID, later Since, empty store
	ring := c.setRing()
	c.repairAll()
	want := 0
	for i := range 100 {
		name := fmt.Sprintf("user%03d", i)
		if ids[i%len(ids)] == restarted || !slices.Contains(holdersIn(ring, name), restarted) {
			continue // its own users reattach and publish again (not modelled here)
		}
		want++
		if _, ok := c.node(restarted).Held(name); !ok {
			t.Fatalf("the restarted holder did not get %s back", name)
		}
	}
	if want == 0 {
		t.Fatal("the restarted member holds no user's record: no case tested")
	}
	if got := c.node(restarted).Store().Len(); got != want {
		t.Fatalf("the restarted holder holds %d records, want its %d", got, want)
	}
}

// TestCopyPassesOverBusyHolder: a holder that answers a copy busy (no member list) keeps
// nothing, so the next member in ring order gets the copy instead; a busy answer is not
// one of the Replicas copies made, and the busy member is left out of holder sets for a
// while (not suspected: it is alive).
func TestCopyPassesOverBusyHolder(t *testing.T) {
	c := newCluster(t, 6)
	raw := c.user("alice", "sn00", 1, time.Minute)
	from := c.nonHolder(c.setRing(), "alice")
	nd := c.node(from)
	cands := nd.Candidates("alice")
	busy := cands[0].ID
	c.mu.Lock()
	c.busy[busy] = true
	c.mu.Unlock()
	if n := nd.Replicate(c.ctx, "alice", raw); n != 3 || nd.m.Get("holders_busy") != 1 {
		t.Fatalf("copies: %d made, holders_busy %d; want 3 made past %s", n, nd.m.Get("holders_busy"), busy)
	}
	if _, ok := c.node(cands[3].ID).Held("alice"); !ok {
		t.Errorf("the next in ring order, %s, got no copy", cands[3].ID)
	}
	if !nd.Alive(busy) {
		t.Error("the busy member is suspected dead")
	}
	for _, m := range nd.Candidates("alice") {
		if m.ID == busy {
			t.Error("the busy member is still a candidate holder")
		}
	}
	if hs := nd.Holders("alice"); containsMember(hs, busy) || len(hs) != 3 {
		t.Errorf("holders %v: want 3, without the busy %s", hs, busy)
	}
}

// TestPreferOpen: among a record's holders, this node comes first, then the ones it has a
// connection open to, each in ring order, and the candidates past the holders keep their
// places.
func TestPreferOpen(t *testing.T) {
	c := newCluster(t, 1)
	nd := c.node("sn00")
	c.open["c"], c.open["e"] = true, true // e is past the holders: it stays where it is
	members := func(ids ...string) []index.Member {
		out := make([]index.Member, len(ids))
		for i, id := range ids {
			out[i] = index.Member{ID: id}
		}
		return out
	}
	for _, tc := range []struct {
		in   []string
		n    int
		want []string
	}{
		{[]string{"a", "b", "c", "d", "e"}, 3, []string{"c", "a", "b", "d", "e"}},
		{[]string{"a", "b", "sn00", "c", "e"}, 3, []string{"sn00", "a", "b", "c", "e"}},
		{[]string{"b", "c", "sn00"}, 3, []string{"sn00", "c", "b"}},
		{[]string{"a", "b"}, 3, []string{"a", "b"}},
		{[]string{"c"}, 3, []string{"c"}},
	} {
		got := members(tc.in...)
		nd.preferOpen(got, tc.n)
		var g []string
		for _, m := range got {
			g = append(g, m.ID)
		}
		if !slices.Equal(g, tc.want) {
			t.Errorf("preferOpen(%v, %d) = %v, want %v", tc.in, tc.n, g, tc.want)
		}
	}
}

// TestDepartureAndOfflineAnswer: Gone makes the holders' copies offline; a lookup then
// answers offline (last seen) once Replicas holders said so, and keeps it out of the
// cache.
func TestDepartureAndOfflineAnswer(t *testing.T) {
	c := newCluster(t, 8)
	ring := c.setRing()
	c.publish("alice", "sn00")
	c.node("sn00").Gone(c.ctx, "alice", 1)
	for _, id := range holdersIn(ring, "alice") {
		e, ok := c.node(id).Held("alice")
		if !ok || !e.Offline {
			t.Fatalf("%s after the departure: %+v, %v; want an offline copy", id, e, ok)
		}
	}
	for _, id := range c.live() {
		res, _, cached := c.node(id).Lookup(c.ctx, "alice", "")
		if !res.Found || res.Online || res.LastSeen.IsZero() || cached {
			t.Fatalf("lookup from %s after the departure: %+v (cached %v), want offline with a last-seen time", id, res, cached)
		}
	}
}
