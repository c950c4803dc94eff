// Package dht is the user index's protocol, as one supernode runs it: membership (the
// ring and this node's suspicions of its members), placement of records on their
// holders, publication, lookup with its cache and hedging, repair after the ring changed,
// and hand-off before leaving. A Node talks to the other members only through its
// Transport and tells time only by its Clock, so tests drive it with fakes of both
// (dht_test.go), and the supernode composes it with its peer connections and the mesh.
//
// Membership comes from the login server, which admits every supernode and so knows them
// all: the supernode hands each new list to SetRing. Between lists a node suspects, on
// its own, any member it fails to reach (MarkDead), and leaves it out of holder sets for
// SuspectTime. Publications and lookups walk the ring in the same order and skip members
// they find dead, so they meet at the same live holders; with the member list known, a
// lookup is one hop.
//
// Records live on Replicas holders. Users republish with every keep-alive, and when the
// ring changes the records are re-homed (Repair): no record is lost while one holder
// lives. A repair pass compares the view it repairs for (the ring less the members
// suspected dead) with the view of the previous pass, so it sends each record only to
// the holders that are new to it, and it sends them one batch per holder: after a crash
// of a tenth of the ring a survivor sends a few batches, not a copy of every record it
// holds to every holder.
//
// A publication goes to one holder, which passes it on to the others. A lookup asks the
// first live holder and, if no answer came within LookupHedge, the next as well, so that
// a holder that died unnoticed or is slow costs a fraction of a second, not a timeout.
package dht

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/proto"
)

// Transport is how a Node reaches the other members. Each call returns nil, an answer
// of the member (a proto error such as proto.ErrBusy, which says it holds nothing it can
// vouch for: it has no member list), or one of ErrUnreachable and ErrSlow.
type Transport interface {
	// Store gives member m the record raw. With replicate, m is the first holder reached
	// for the record's user, and passes the record on to the other holders.
	Store(ctx context.Context, m index.Member, raw []byte, replicate bool) error
	// StoreBatch gives member m copies of records it holds (repair and hand-off).
	StoreBatch(ctx context.Context, m index.Member, raws [][]byte) error
	// Lookup asks member m for name's record, for user asker.
	Lookup(ctx context.Context, m index.Member, name, asker string) (proto.IndexResult, error)
	// Gone tells member m that user name, at record sequence seq, left this node.
	Gone(ctx context.Context, m index.Member, name string, seq uint64) error
	// Open reports whether a connection to member id is open: where any of several
	// holders will do, one reached without a handshake is preferred.
	Open(id string) bool
}

// ErrUnreachable marks a failure of the connection to a member itself (refused, reset,
// closed, host unreachable), as opposed to an answer. The Node suspects the member.
var ErrUnreachable = errors.New("peer unreachable")

// ErrSlow marks a member that did not answer (or complete a handshake) in time. The Node
// moves on to another holder but does not suspect it: a member that is only slow, if
// suspected, would be sent the repair traffic of every record it holds on top of its
// load. A member really gone without a word leaves the member list after missed
// heartbeats.
var ErrSlow = errors.New("peer too slow")

// Own is the record of a user attached to this node, which this node republishes to
// the holders new to it at each repair pass.
type Own struct {
	Name    string
	Raw     []byte
	Expires time.Time // the record's; an expired one is not republished
}

// Config configures a Node.
type Config struct {
	Self        string        // this node's member ID
	Replicas    int           // holders of each record; 0 = 3
	CacheTTL    time.Duration // how long a lookup's result is kept; <= 0 = no cache
	SuspectTime time.Duration // how long a member suspected or not ready is passed over; 0 = 10s
	LookupHedge time.Duration // how long a lookup waits for one holder before asking the next too; 0 = 250ms
	// RepairDebounce gathers the changes of a burst (a crash of many members is seen one
	// by one) into one repair pass; 0 = 300ms.
	RepairDebounce time.Duration
	Transport      Transport
	Clock          clockwork.Clock // nil = the real clock
	Creds          *identity.Cache // verifies the records stored and looked up
	Metrics        *metrics.Set    // nil = a fresh set
	Logger         *slog.Logger    // nil = discarded
	// Attached returns the records of the users attached to this node; nil = none.
	Attached func() []Own
	// Changed hears of each user whose held record appeared, went online or offline, or
	// expired here (for the watchers of their presence); nil = nobody.
	Changed func(name string)
}

// maxCache bounds the lookup cache.
const maxCache = 50_000

// Node is one member's share of the index.
type Node struct {
	cfg   Config
	clk   clockwork.Clock
	m     *metrics.Set
	log   *slog.Logger
	store *index.Store
	kick  chan struct{} // a repair pass is wanted

	mu            sync.Mutex // mu protects the following fields
	runCtx        context.Context
	ring          *index.Ring
	version       uint64
	repairPending bool
	repaired      *view                // the view the last repair pass made the records fit; nil = none
	dead          map[string]time.Time // suspected members, until
	notReady      map[string]time.Time // members without a member list, until
	cache         map[string]cached
}

type cached struct {
	res   proto.IndexResult
	rec   index.Record
	until time.Time
}

// New returns a Node of an empty ring.
func New(cfg Config) *Node {
	if cfg.Replicas <= 0 {
		cfg.Replicas = 3
	}
	if cfg.SuspectTime <= 0 {
		cfg.SuspectTime = 10 * time.Second
	}
	if cfg.LookupHedge <= 0 {
		cfg.LookupHedge = 250 * time.Millisecond
	}
	if cfg.RepairDebounce <= 0 {
		cfg.RepairDebounce = 300 * time.Millisecond
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = &metrics.Set{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Attached == nil {
		cfg.Attached = func() []Own { return nil }
	}
	if cfg.Changed == nil {
		cfg.Changed = func(string) {}
	}
	return &Node{
		cfg: cfg, clk: cfg.Clock, m: cfg.Metrics, log: cfg.Logger,
		store:    index.NewStore(0),
		kick:     make(chan struct{}, 1),
		runCtx:   context.Background(),
		ring:     index.NewRing(nil),
		dead:     make(map[string]time.Time),
		notReady: make(map[string]time.Time),
		cache:    make(map[string]cached),
	}
}

// Store is the records this node holds.
func (n *Node) Store() *index.Store { return n.store }

// Replicas is the number of holders of each record.
func (n *Node) Replicas() int { return n.cfg.Replicas }

// Run runs repair passes, one at a time, as SetRing and the suspicions ask for them,
// until ctx ends. Once ctx has ended the node suspects nobody: failures then are its own.
func (n *Node) Run(ctx context.Context) {
	n.mu.Lock()
	n.runCtx = ctx
	n.mu.Unlock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-n.kick:
		}
		t := n.clk.NewTimer(n.cfg.RepairDebounce)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.Chan():
		}
		n.mu.Lock()
		pending := n.repairPending
		n.repairPending = false
		n.mu.Unlock()
		if pending {
			n.Repair(ctx)
		}
	}
}

// RequestRepair asks Run for a pass. Requests that arrive while one waits are merged into
// it, so a burst of membership changes costs one pass, not one per change; the pass
// compares against the view of the previous one, so nothing is missed.
func (n *Node) RequestRepair() {
	n.mu.Lock()
	n.repairPending = true
	n.mu.Unlock()
	select {
	case n.kick <- struct{}{}:
	default:
	}
}

func (n *Node) stopping() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.runCtx.Err() != nil
}

// SetRing installs the member list of the given version, drops the suspicions of members
// no longer on it (the login server's list is fresher), and asks for a repair pass.
func (n *Node) SetRing(ring *index.Ring, version uint64) {
	n.mu.Lock()
	n.ring, n.version = ring, version
	for _, set := range []map[string]time.Time{n.dead, n.notReady} {
		for id := range set {
			if !ring.Has(id) {
				delete(set, id)
			}
		}
	}
	n.mu.Unlock()
	n.m.Inc("member_syncs")
	n.RequestRepair()
}

// Ring returns the member list installed last and its version.
func (n *Node) Ring() (*index.Ring, uint64) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ring, n.version
}

func (n *Node) currentRing() *index.Ring {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ring
}

// Alive reports whether member id is not suspected dead.
func (n *Node) Alive(id string) bool { return n.unmarked(id, n.dead) }

// Holds reports whether member id can hold records: not suspected dead and not known to
// be without a member list.
func (n *Node) Holds(id string) bool { return n.unmarked(id, n.dead, n.notReady) }

// unmarked reports whether member id has no unexpired mark in any of marks (n.dead,
// n.notReady), removing the expired ones. This node is never marked.
func (n *Node) unmarked(id string, marks ...map[string]time.Time) bool {
	if id == n.cfg.Self {
		return true
	}
	now := n.clk.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
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

// MarkDead suspects member id for SuspectTime: it failed to be reached (why).
func (n *Node) MarkDead(id string, why error) {
	if id == n.cfg.Self || n.stopping() {
		return
	}
	n.mu.Lock()
	_, already := n.dead[id]
	n.dead[id] = n.clk.Now().Add(n.cfg.SuspectTime)
	n.cache = make(map[string]cached) // answers may name members behind the dead one
	n.mu.Unlock()
	if !already {
		n.m.Inc("peers_suspected")
		n.log.Warn("supernode suspected dead", "peer", id, "err", why)
		n.RequestRepair()
	}
}

// MarkNotReady leaves member id out of holder sets for SuspectTime: it answered that it
// has no member list (a supernode restarted while the login server is down, or one just
// started), so it keeps no records and passes none on. It is alive, unlike a suspected
// member: it still serves its clients, and their records stand. Publications, copies and
// watches go to the next members in ring order meanwhile, and a repair pass moves its
// share of the records there; with the login server down after a collapse, the promoted
// third of the layer restarts this way, and four busy members in a row had left users
// with no holder at all.
func (n *Node) MarkNotReady(id string) {
	n.m.Inc("holders_busy")
	if id == n.cfg.Self || n.stopping() {
		return
	}
	n.mu.Lock()
	_, already := n.notReady[id]
	n.notReady[id] = n.clk.Now().Add(n.cfg.SuspectTime)
	n.mu.Unlock()
	if !already {
		n.m.Inc("peers_not_ready")
		n.RequestRepair()
	}
}

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

// currentView returns the ring and the members marked now.
func (n *Node) currentView() *view {
	now := n.clk.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	v := &view{self: n.cfg.Self, ring: n.ring, dead: make(map[string]bool, len(n.dead)), notReady: make(map[string]bool, len(n.notReady))}
	for _, set := range []struct {
		from map[string]time.Time
		to   map[string]bool
	}{{n.dead, v.dead}, {n.notReady, v.notReady}} {
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

// Holders returns name's first Replicas holders in the current view: the members its
// publications and lookups meet at.
func (n *Node) Holders(name string) []index.Member {
	return n.currentView().holders(name, n.cfg.Replicas)
}

// Candidates returns the members name's operations should try, in ring order: the ones
// that can hold records (live, with a member list), Replicas+8 at most (a bound on the
// walk when many members are dead).
func (n *Node) Candidates(name string) []index.Member {
	var out []index.Member
	n.currentRing().Walk(name, func(m index.Member) bool {
		if n.Holds(m.ID) {
			out = append(out, m)
		}
		return len(out) < n.cfg.Replicas+8
	})
	return out
}

// preferOpen reorders the first k of cands, name's holders, so that this node comes
// first and then the holders it has a connection open to, each group in ring order. Any
// holder serves as well as another for a record it holds (it passes a publication on to
// the others, and answers a lookup), and one reached over an open connection costs no
// handshake: at 1,000 supernodes a handshake costs more CPU than a hundred lookups,
// and every connection kept costs both ends about 15 KB of heap and stack (go test
// ./internal/rpc -bench IdleConn). Sending to the first holder in ring order instead
// keeps a connection from each supernode to one holder of each of its users' records,
// about as many as it has users; with a choice of Replicas holders, records share the
// connections other records and the supernodes publishing here opened.
func (n *Node) preferOpen(cands []index.Member, k int) {
	k = min(k, len(cands))
	placed := 0 // cands[:placed] are placed
	for _, want := range []func(index.Member) bool{
		func(m index.Member) bool { return m.ID == n.cfg.Self },
		func(m index.Member) bool { return n.cfg.Transport.Open(m.ID) },
	} {
		for i := placed; i < k; i++ {
			if m := cands[i]; want(m) {
				copy(cands[placed+1:i+1], cands[placed:i]) // a stable move to position placed
				cands[placed] = m
				placed++
			}
		}
	}
}
