package supernode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
)

// pipePeers connects sn to a stand-in supernode for each of ids over net.Pipe, served by
// handle (for the member it stands for). The connections close when the test ends.
func pipePeers(t *testing.T, sn *Supernode, ids []string, handle func(id string, ctx context.Context, m proto.Message) (proto.Message, error)) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() { cancel(); wg.Wait() })
	run := func(c *rpc.Conn) {
		wg.Add(1)
		go func() { defer wg.Done(); c.Run(ctx) }()
	}
	for _, id := range ids {
		a, b := net.Pipe()
		ready := make(chan struct{})
		close(ready)
		ours := rpc.New(a, rpc.Options{})
		sn.ov.peers.conns[id] = &peerConn{ready: ready, conn: ours}
		run(ours)
		run(rpc.New(b, rpc.Options{Logger: slog.New(slog.DiscardHandler), Handler: rpc.HandlerFunc(func(ctx context.Context, _ *rpc.Conn, m proto.Message) (proto.Message, error) {
			return handle(id, ctx, m)
		})}))
	}
}

// ringOfPipes returns an unstarted supernode (mesh off) on a ring with n other members,
// m0 to m(n-1), whose ids it returns too.
func ringOfPipes(t *testing.T, n int) (*Supernode, []string) {
	sn := newUnstarted(t)
	sn.cfg.NoMesh = true
	ms := []index.Member{{ID: sn.id, Addr: "192.0.2.1:4000"}}
	var ids []string
	for i := range n {
		id := fmt.Sprintf("m%d", i)
		ids = append(ids, id)
		ms = append(ms, index.Member{ID: id, Addr: fmt.Sprintf("192.0.2.%d:4000", 10+i)})
	}
	sn.ix.SetRing(index.NewRing(ms), 1)
	return sn, ids
}

// TestWatchRenewalNotHeldUpBySlowHolders: a supernode renews its users' watches with one
// batch per holder, all at once, so that a holder that does not answer costs the watches
// in its way one call timeout, not one per watch: the pass ends well within a watch's
// life, and every watch is placed at the holders of its name in ring order up to the
// first that answers with the record, with the presences that come back delivered to the
// users they are for (and no others).
func TestWatchRenewalNotHeldUpBySlowHolders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sn, ids := ringOfPipes(t, 9)
		stalled := map[string]bool{ids[2]: true, ids[5]: true}
		empty := ids[7] // answers, but holds no record: the watch goes on to the next holder

		var (
			mu      sync.Mutex
			placed  = make(map[proto.Watch][]string) // watch -> members that registered it
			batches int
		)
		pipePeers(t, sn, ids, func(id string, ctx context.Context, m proto.Message) (proto.Message, error) {
			b, ok := m.(*proto.WatchBatch)
			if !ok {
				return nil, proto.ErrBadRequest
			}
			if stalled[id] {
				<-ctx.Done() // never answers
				return nil, ctx.Err()
			}
			mu.Lock()
			batches++
			var out proto.WatchBatchOK
			for _, w := range b.Watches {
				placed[w] = append(placed[w], id)
				if id != empty {
					out.Presences = append(out.Presences, proto.Presence{Name: w.Name, Online: true, Seq: 1, To: w.Watcher})
				}
			}
			mu.Unlock()
			// A presence for a watch not asked for is not passed on.
			out.Presences = append(out.Presences, proto.Presence{Name: "mallory", Online: true, To: "alice"})
			return &out, nil
		})

		// alice is attached here; her client side records the presences pushed to it.
		a, b := net.Pipe()
		ctx, cancel := context.WithCancel(context.Background())
		var pushed []string
		var wg sync.WaitGroup
		clientEnd := rpc.New(b, rpc.Options{Handler: rpc.HandlerFunc(func(_ context.Context, _ *rpc.Conn, m proto.Message) (proto.Message, error) {
			if p, ok := m.(*proto.Presence); ok {
				mu.Lock()
				pushed = append(pushed, p.Name)
				mu.Unlock()
			}
			return nil, nil
		})})
		snEnd := rpc.New(a, rpc.Options{})
		for _, c := range []*rpc.Conn{clientEnd, snEnd} {
			wg.Add(1)
			go func() { defer wg.Done(); c.Run(ctx) }()
		}
		defer func() { cancel(); wg.Wait() }()
		sn.clients["alice"] = &client{name: "alice", conn: snEnd}

		var ws []proto.Watch
		for i := range 60 {
			ws = append(ws, proto.Watch{Name: fmt.Sprintf("buddy%02d", i), Watcher: "alice"})
		}
		start := time.Now()
		sn.watchAtHolders(context.Background(), ws)
		took := time.Since(start)
		synctest.Wait() // the pushes to alice's client

		// Two holders that never answer: a watch waits for those in its own way only,
		// at most both, two call timeouts.
		if limit := 2*5*time.Second + time.Second; took > limit || took >= sn.watchLife() {
			t.Errorf("the pass took %v (watches live %v), want at most %v", took, sn.watchLife(), limit)
		}
		// Each watch is registered at the holders in ring order, past those that do not
		// answer, up to the first that answers with the record: this supernode and
		// the empty one hold none. Each holder that answers, or not, counts toward
		// the Replicas+1 tried.
		local, withRecord := 0, 0
		for _, w := range ws {
			var want []string
			tried, found := 0, false
			for _, m := range sn.ix.Candidates(w.Name) {
				if tried > sn.cfg.Replicas {
					break
				}
				tried++
				if stalled[m.ID] {
					continue
				}
				if m.ID == sn.id {
					local++
					if _, ok := sn.ov.watchers[w.Name][watcher{sn: sn.id, user: "alice"}]; !ok {
						t.Errorf("%s: this supernode is among its holders asked, but no watch is registered here", w.Name)
					}
					continue
				}
				want = append(want, m.ID)
				if m.ID != empty {
					found = true
					break
				}
			}
			if found {
				withRecord++
			}
			if got := placed[w]; !slices.Equal(got, want) {
				t.Errorf("%s: registered at %v, want %v (up to the first holder with the record)", w.Name, got, want)
			}
		}
		if len(pushed) != withRecord {
			t.Errorf("%d presences pushed to alice (%v), want %d: one per watch that reached the record", len(pushed), pushed, withRecord)
		}
		if batches >= len(ws)/2 {
			t.Errorf("%d batches for %d watches, want them batched (fewer than half as many)", batches, len(ws))
		}
		if sn.m.Get("holders_slow") == 0 || !sn.ix.Alive(ids[2]) {
			t.Errorf("holders_slow %d, the slow holder alive %v: want it passed over, not suspected", sn.m.Get("holders_slow"), sn.ix.Alive(ids[2]))
		}
		t.Logf("%d watches: %d registered here, %d reached the record, %d batches, in %v", len(ws), local, withRecord, batches, took)
	})
}

// TestWatchBatchFitsVia: a batch of watches is as long as MaxWatchBatch allows for plain
// names, and shorter for names that encode long, so that it always fits in a Via.
func TestWatchBatchFitsVia(t *testing.T) {
	for _, c := range []struct {
		char string
		want int // 0: fewer than MaxWatchBatch
	}{{"a", proto.MaxWatchBatch}, {"<", 0}, {"\x01", 0}, {"é", 0}, {"\xff", 0}} {
		name := strings.Repeat(c.char, proto.MaxName/len(c.char))
		var ps []*pendingWatch
		for range 2 * proto.MaxWatchBatch {
			ps = append(ps, &pendingWatch{w: proto.Watch{Name: name, Watcher: name}})
		}
		n := watchBatchLen(ps)
		if (c.want != 0 && n != c.want) || n < 1 || n > proto.MaxWatchBatch {
			t.Errorf("%q names: batch of %d, want %d", c.char, n, c.want)
		}
		b := &proto.WatchBatch{}
		for _, p := range ps[:n] {
			b.Watches = append(b.Watches, p.w)
		}
		body, err := proto.Encode(b)
		if err != nil {
			t.Fatal(err)
		}
		if len(body) > proto.MaxViaBody {
			t.Errorf("%q names: a batch of %d encodes in %d bytes, more than a Via carries (%d)", c.char, n, len(body), proto.MaxViaBody)
		}
		via, err := proto.Encode(&proto.Via{To: "k", Kind: proto.TWatchBatch, Body: body})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := proto.Decode(proto.TVia, via); err != nil {
			t.Errorf("%q names: a batch of %d: %v", c.char, n, err)
		}
	}
}

// TestSubscribeAnswersBeforeSlowHolders: a client's Subscribe is answered within
// subscribeWait even when the holders in its watches' way do not answer (a client takes
// a Subscribe unanswered for 10 s for a failed attachment), and the watches are placed
// after the answer all the same.
func TestSubscribeAnswersBeforeSlowHolders(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sn, ids := ringOfPipes(t, 4)
		var mu sync.Mutex
		placed := map[string]bool{}
		first := func(name string) string {
			for _, m := range sn.ix.Candidates(name) {
				if m.ID != sn.id {
					return m.ID
				}
			}
			return ""
		}
		pipePeers(t, sn, ids, func(id string, ctx context.Context, m proto.Message) (proto.Message, error) {
			b := m.(*proto.WatchBatch)
			var out proto.WatchBatchOK
			for _, w := range b.Watches {
				if id == first(w.Name) {
					<-ctx.Done() // the first remote holder of every name never answers
					return nil, ctx.Err()
				}
				mu.Lock()
				placed[w.Name] = true
				mu.Unlock()
				out.Presences = append(out.Presences, proto.Presence{Name: w.Name, Online: true, To: w.Watcher})
			}
			return &out, nil
		})
		var names []string
		for i := range 20 {
			names = append(names, fmt.Sprintf("buddy%02d", i))
		}
		start := time.Now()
		sn.subscribe(context.Background(), "alice", names)
		if took := time.Since(start); took > subscribeWait {
			t.Errorf("Subscribe answered after %v, want at most %v", took, subscribeWait)
		}
		time.Sleep(sn.watchLife()) // virtual time in the bubble: the watches' life passes
		synctest.Wait()
		mu.Lock()
		defer mu.Unlock()
		for _, n := range names {
			if _, here := sn.ov.watchers[n][watcher{sn: sn.id, user: "alice"}]; !placed[n] && !here {
				t.Errorf("%s: watch placed nowhere after the answer", n)
			}
		}
		if sn.m.Get("subscribes_answered_early") != 1 {
			t.Errorf("subscribes_answered_early %d, want 1", sn.m.Get("subscribes_answered_early"))
		}
	})
}

// TestDialAfterStopClosed: a dial that completes after the supernode stopped closes the
// connection it opened, and one after that is not made: a connection that outlived the
// supernode would go on serving its peer with the stopped supernode's records and
// watches, as a second, stale supernode of the same member.
func TestDialAfterStopClosed(t *testing.T) {
	sn := newUnstarted(t)
	p := sn.ov.peers
	pc := &peerConn{ready: make(chan struct{})}
	p.conns["m1"] = pc
	p.closeAll() // while the dial is under way
	a, b := net.Pipe()
	defer b.Close()
	c := rpc.New(a, rpc.Options{})
	p.finishDial("m1", pc, c, nil)
	select {
	case <-c.Done():
	default:
		t.Errorf("the connection dialled after the stop is open")
	}
	if pc.conn != nil || !errors.Is(pc.err, errPoolClosed) {
		t.Errorf("the dial's callers get %v, %v; want no connection and errPoolClosed", pc.conn, pc.err)
	}
	if _, _, err := p.get(context.Background(), index.Member{ID: "m2", Addr: "192.0.2.9:4000"}, true); !errors.Is(err, errPoolClosed) {
		t.Errorf("a call after the stop: %v, want errPoolClosed", err)
	}
	p.adopt("m3", rpc.New(b, rpc.Options{}))
	if len(p.conns) != 0 {
		t.Errorf("%d connections pooled after the stop", len(p.conns))
	}
}
