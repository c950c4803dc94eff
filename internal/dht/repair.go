package dht

import (
	"context"
	"errors"
	"sync"

	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/proto"
)

// Repair re-homes records after the ring or the set of live members changed: the holders
// in the current view that were not holders in the view of the previous pass get a copy;
// records this node no longer holds are dropped here after that.
//
// Each record is re-homed by one node, not by all its holders at once: by the node its
// user is attached to, which republishes its users' records (they may have lost every
// holder at once, and their next keep-alive could be most of a period away). A holder
// re-homes only records whose user's node is gone from its view; those users are
// reattaching elsewhere and will republish, and until then the copies keep answering
// with where they were last seen. After a crash of a tenth of the ring this costs a
// survivor a few batches to holders new to it, where copying from every holder would
// triple the traffic and the handshakes that come with it.
func (n *Node) Repair(ctx context.Context) {
	if ctx == nil || ctx.Err() != nil {
		return
	}
	cur := n.currentView()
	if cur.ring.Len() == 0 {
		return
	}
	n.mu.Lock()
	last := n.repaired
	n.mu.Unlock()
	R := n.cfg.Replicas
	self := n.cfg.Self
	now := n.clk.Now()
	out := newOutbox()
	var drop []string
	// fresh returns the holders of name in cur that last did not have, leaving out this
	// node; with known false, all of them (nobody can be assumed to hold a copy). A
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
			if h.ID != self && !containsIncarnation(before, h) {
				out = append(out, h)
			}
		}
		return out
	}

	for _, a := range n.cfg.Attached() {
		if !now.Before(a.Expires) {
			continue
		}
		holders := cur.holders(a.Name, R)
		if containsMember(holders, self) {
			n.Put(a.Raw)
		}
		for _, h := range fresh(a.Name, holders, true) {
			out.add(h, a.Raw)
		}
	}
	for _, e := range n.store.Snapshot() {
		if e.Offline || !now.Before(e.Rec.Expires) {
			continue
		}
		holders := cur.holders(e.Rec.Name, R)
		mine := containsMember(holders, self)
		// The other holders of the last view got the record when this node did, as long
		// as it was one of them.
		if orphan := e.Rec.Supernode != self && (!cur.ring.Has(e.Rec.Supernode) || cur.dead[e.Rec.Supernode]); orphan {
			wasMine := last != nil && containsMember(last.holders(e.Rec.Name, R), self)
			for _, h := range fresh(e.Rec.Name, holders, wasMine) {
				out.add(h, e.Raw)
			}
		}
		if !mine {
			drop = append(drop, e.Rec.Name)
		}
	}
	sent := n.sendBatches(ctx, out)
	n.m.Add("records_handed", uint64(sent))
	for _, name := range drop {
		n.store.Delete(name)
	}
	if ctx.Err() == nil {
		n.mu.Lock()
		n.repaired = cur
		n.mu.Unlock()
	}
	n.m.Inc("repairs")
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

// maxBatchBytes bounds the records of one batch: base64 makes 4 bytes of 3, and the
// frame must stay under wire.MaxBody.
const maxBatchBytes = 44 << 10

// batchConcurrency is how many holders a node sends batches to at once.
const batchConcurrency = 8

// sendBatches sends each holder its records in as few batches as fit, a few holders at a
// time, and returns how many records were accepted. A holder whose transport fails is
// suspected, and one without a member list passed over, each of which asks for another
// repair pass.
func (n *Node) sendBatches(ctx context.Context, o *outbox) int {
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
				k, size := 0, 0
				for k < len(recs) && k < proto.MaxBatch && size+len(recs[k]) <= maxBatchBytes {
					size += len(recs[k])
					k++
				}
				k = max(k, 1)
				err := n.cfg.Transport.StoreBatch(ctx, m, recs[:k])
				if errors.Is(err, ErrUnreachable) {
					n.MarkDead(m.ID, err)
					return
				}
				if errors.Is(err, proto.ErrBusy) {
					n.MarkNotReady(m.ID) // the next pass sends its copies to the next members
					return
				}
				if err == nil {
					mu.Lock()
					sent += k
					mu.Unlock()
				}
				recs = recs[k:]
			}
		}()
	}
	wg.Wait()
	return sent
}

// HandOff gives every record this node holds to the holders that follow it, before the
// node leaves the ring, and returns how many copies were taken.
func (n *Node) HandOff(ctx context.Context) int {
	out := newOutbox()
	ring := n.currentRing()
	now := n.clk.Now()
	for _, e := range n.store.Snapshot() {
		if e.Offline || !now.Before(e.Rec.Expires) {
			continue
		}
		for _, h := range ring.Holders(e.Rec.Name, n.cfg.Replicas+1, func(id string) bool { return id != n.cfg.Self && n.Holds(id) }) {
			out.add(h, e.Raw)
		}
	}
	return n.sendBatches(ctx, out)
}
