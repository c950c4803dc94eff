package dht

import (
	"bytes"
	"context"
	"errors"

	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/proto"
)

// Put verifies and stores a record as one of its holders, and tells Changed if the
// user's presence changed. The copy already held, or an older one, is dropped before
// its signatures are checked: repairs and republications send many of those.
func (n *Node) Put(raw []byte) error {
	now := n.clk.Now()
	if rec, err := index.Parse(raw); err == nil {
		if e, ok := n.store.Get(rec.Name, now); ok && (e.Rec.Seq > rec.Seq || bytes.Equal(e.Raw, raw)) {
			return nil
		}
	}
	rec, err := index.VerifyCached(raw, n.cfg.Creds, now)
	if err != nil {
		n.m.Inc("records_rejected")
		return proto.ErrRefused.With("record refused: %v", err)
	}
	before, had := n.store.Get(rec.Name, now)
	if err := n.store.Put(raw, rec, now); err != nil {
		if errors.Is(err, index.ErrStale) {
			return nil // a replay or a race with a newer copy: nothing to do
		}
		return err
	}
	n.m.Inc("records_stored")
	if !had || before.Offline != rec.Offline {
		n.cfg.Changed(rec.Name)
	}
	return nil
}

// Local answers a lookup of name for asker from the records held here.
func (n *Node) Local(name, asker string) proto.IndexResult {
	e, ok := n.store.Get(name, n.clk.Now())
	if !ok || (asker != "" && e.Rec.HasBlocked(asker)) {
		return proto.IndexResult{}
	}
	res := proto.IndexResult{Found: true, Online: !e.Offline, LastSeen: e.LastSeen}
	if !e.Offline {
		res.Record = e.Raw
	}
	return res
}

// Held returns the entry held here for name, if any.
func (n *Node) Held(name string) (index.Entry, bool) { return n.store.Get(name, n.clk.Now()) }

// GoneFrom serves member from's word that user name, at record sequence seq, left it: the
// record held here says offline if it still names from.
func (n *Node) GoneFrom(name, from string, seq uint64) {
	if n.store.Gone(name, from, seq, n.clk.Now()) {
		n.cfg.Changed(name)
	}
}

// Expire drops the records past their expiry, telling Changed of each.
func (n *Node) Expire() {
	for _, name := range n.store.Expire(n.clk.Now()) {
		n.cfg.Changed(name)
	}
}

// toHolders calls f on name's first Replicas live holders at once, and on the next
// member in ring order for each that fails or answers busy (suspected if its transport
// failed, not if it was only slow or busy). It returns how many answered.
func (n *Node) toHolders(ctx context.Context, name string, f func(index.Member) error) int {
	cands := n.Candidates(name)
	type result struct {
		m   index.Member
		err error
	}
	results := make(chan result, len(cands))
	next, running, ok := 0, 0, 0
	for ; next < len(cands) && running < n.cfg.Replicas; next, running = next+1, running+1 {
		go func(m index.Member) { results <- result{m, f(m)} }(cands[next])
	}
	for running > 0 {
		r := <-results
		running--
		switch {
		case errors.Is(r.err, ErrUnreachable):
			n.MarkDead(r.m.ID, r.err)
		case errors.Is(r.err, ErrSlow), ctx.Err() != nil:
			n.m.Inc("holders_slow")
		case errors.Is(r.err, proto.ErrBusy):
			// Not ready to hold (no member list): it keeps nothing, so the next member
			// in ring order takes its copy.
			n.MarkNotReady(r.m.ID)
		default:
			ok++ // an answer, even a refusal, means the holder is there
			continue
		}
		if next < len(cands) && ok+running < n.cfg.Replicas && ctx.Err() == nil {
			go func(m index.Member) { results <- result{m, f(m)} }(cands[next])
			next, running = next+1, running+1
		}
	}
	return ok
}

// Replicate sends a record to its holders, all at once, and returns how many took it.
// The first holder a publication reached calls it to pass the record on.
func (n *Node) Replicate(ctx context.Context, name string, raw []byte) int {
	return n.toHolders(ctx, name, func(m index.Member) error {
		if m.ID == n.cfg.Self {
			return n.Put(raw)
		}
		return n.cfg.Transport.Store(ctx, m, raw, false)
	})
}

// Publish stores an attached user's record at its holders through the first of them
// that answers, which passes it on to the others (Replicate): one message per record
// from here instead of one per holder. At a hundred users per supernode and a thousand
// supernodes, storing at every holder directly kept a connection open to some 260 of
// them from each supernode; the first holders are about a hundred, and the rest of the
// copies go between ring neighbours. A first holder that is slow or gone is passed over
// for the next, which then does the passing on. It returns 1 once a holder has the
// record (an answer, even a refusal, means the holder is there), 0 if none could be
// reached.
func (n *Node) Publish(ctx context.Context, name string, raw []byte) int {
	cands := n.Candidates(name)
	n.preferOpen(cands, n.cfg.Replicas)
	tried := 0 // holders tried that could have held it; busy ones hold nothing
	for _, m := range cands {
		if tried > n.cfg.Replicas || ctx.Err() != nil {
			break // past every holder: the ring view is far off, or the time is up
		}
		if m.ID == n.cfg.Self {
			tried++
			if n.Replicate(ctx, name, raw) > 0 {
				return 1
			}
			continue
		}
		err := n.cfg.Transport.Store(ctx, m, raw, true)
		if !errors.Is(err, proto.ErrBusy) {
			tried++
		}
		switch {
		case err == nil:
			return 1
		case errors.Is(err, ErrUnreachable):
			n.MarkDead(m.ID, err)
		case errors.Is(err, ErrSlow):
			n.m.Inc("holders_slow")
		case errors.Is(err, proto.ErrBusy):
			n.MarkNotReady(m.ID)
		default:
			return 1 // an answer, even a refusal, means the holder is there
		}
	}
	return 0
}

// Gone tells name's holders that the user, at record sequence seq, left this node (its
// connection died).
func (n *Node) Gone(ctx context.Context, name string, seq uint64) {
	n.Forget(name)
	n.toHolders(ctx, name, func(m index.Member) error {
		if m.ID == n.cfg.Self {
			n.GoneFrom(name, n.cfg.Self, seq)
			return nil
		}
		return n.cfg.Transport.Gone(ctx, m, name, seq)
	})
}
