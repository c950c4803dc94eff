package supernode

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/peerline/peerline/internal/dht"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
)

// peerPool keeps control connections to other supernodes, dialled on demand and
// authenticated both ways: the dialled supernode must hold the key its member id names,
// and the dialler proves itself with its supernode credential (SNHello).
//
// Which connections stay open follows from use, not from a fixed set: a connection that
// carries nothing for PeerIdle closes, and one that only ever carried lookups closes
// after lookupIdle. The peers a supernode talks to at every keep-alive period (its
// contacts and group in the mesh, see callVia, and its ring neighbours, which it passes
// records on to) therefore keep theirs, and the ones a lookup
// reached once let theirs go within seconds: a lookup goes to the holders of a random
// name, and keeping those connections would hold one per lookup. MaxPeers caps the pool
// on top of that (by default sized from the clients attached), closing the least
// recently used, and at most maxDials handshakes run at once, so that a burst of new
// peers (after a crash, every survivor re-homes records at once) queues rather than
// holding thousands of half-open handshakes.
type peerPool struct {
	sn    *Supernode
	max   int // Config.MaxPeers; 0 = sized by limit
	idle  time.Duration
	dials chan struct{} // semaphore of dials under way

	mu     sync.Mutex // mu protects conns and closed
	conns  map[string]*peerConn
	closed bool // closeAll ran: the supernode stopped
}

// errPoolClosed: the supernode stopped, and with it every connection to its peers.
var errPoolClosed = errors.New("supernode: stopped")

// limit returns how many connections the pool keeps at most.
func (p *peerPool) limit() int {
	if p.max > 0 {
		return p.max
	}
	p.sn.mu.Lock()
	n := len(p.sn.clients)
	p.sn.mu.Unlock()
	return 128 + 2*n
}

// open reports whether a connection to id is pooled, dialled and not closed.
func (p *peerPool) open(id string) bool {
	p.mu.Lock()
	pc, ok := p.conns[id]
	p.mu.Unlock()
	if !ok {
		return false
	}
	select {
	case <-pc.ready:
		return pc.live()
	default:
		return false // still dialling
	}
}

// maxDials bounds the handshakes one supernode runs at once.
const maxDials = 4

// lookupIdle is how long a connection that only carried lookups stays open unused.
const lookupIdle = 2 * time.Second

type peerConn struct {
	ready chan struct{} // closed when dialling finished
	conn  *rpc.Conn     // nil if dialling failed
	err   error
	used  time.Time // guarded by peerPool.mu
	long  bool      // carried more than lookups; guarded by peerPool.mu
	busy  int       // calls under way, which the janitor waits for; guarded by peerPool.mu
}

// live reports whether a dialled connection (ready is closed) can carry calls.
func (pc *peerConn) live() bool {
	if pc.err != nil {
		return false
	}
	select {
	case <-pc.conn.Done():
		return false
	default:
		return true
	}
}

func newPeerPool(sn *Supernode, max int, idle time.Duration) *peerPool {
	return &peerPool{sn: sn, max: max, idle: idle, dials: make(chan struct{}, maxDials), conns: make(map[string]*peerConn)}
}

// errTransport marks failures of the connection itself (as opposed to an answer): the
// peer refused, reset or closed it, or its host is unreachable. They make the caller
// suspect the peer is dead.
var errTransport = dht.ErrUnreachable

// errSlow marks a peer that did not answer or complete a handshake in time, or a dial
// that waited too long for a slot here. Callers move on to another holder but do not
// suspect the peer: an overloaded supernode is not a dead one, and suspecting it would
// send it the repair traffic of every record it holds, on top of its load. A peer that
// is really gone without a word (a black hole) leaves the member list after three
// missed heartbeats.
var errSlow = dht.ErrSlow

// errNoDialSlot: every dial slot stayed busy for the whole dial timeout.
var errNoDialSlot = errors.New("supernode: no dial slot")

// peerErr classifies a failure to reach a peer.
func peerErr(addr string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, errNoDialSlot) {
		return fmt.Errorf("%w: %s: %v", errSlow, addr, err)
	}
	return fmt.Errorf("%w: %s: %v", errTransport, addr, err)
}

// errNotAdmitted: this supernode has no credential yet to show its peers.
var errNotAdmitted = errors.New("supernode: not admitted yet")

// call sends m to member and returns the answer. Transport failures wrap errTransport,
// timeouts errSlow. A pooled connection may have died since its last use (the peer
// restarted, or closed it as idle): that costs one fresh dial, not a suspicion.
// peerCallTimeout bounds each call to another supernode.
const peerCallTimeout = 5 * time.Second

func (p *peerPool) call(ctx context.Context, m index.Member, msg proto.Message) (proto.Message, error) {
	for attempt := 0; ; attempt++ {
		c, fresh, err := p.get(ctx, m, !isLookup(msg))
		if err != nil {
			if errors.Is(err, errNotAdmitted) || errors.Is(err, errPoolClosed) {
				return nil, err
			}
			if ctx.Err() != nil {
				return nil, ctx.Err() // gave up waiting for someone else's dial
			}
			return nil, peerErr(m.Addr, err)
		}
		resp, err := c.CallTimeout(ctx, msg, peerCallTimeout)
		p.done(m.ID, c)
		if err == nil {
			return resp, nil
		}
		if _, ok := proto.AsError(err); ok {
			return nil, err
		}
		if ctx.Err() != nil {
			return nil, ctx.Err() // our caller gave up: says nothing about the peer
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, peerErr(m.Addr, err) // the connection may still serve others
		}
		p.drop(m.ID, c)
		if fresh || attempt > 0 || !errors.Is(err, rpc.ErrClosed) {
			return nil, peerErr(m.Addr, err)
		}
	}
}

func isLookup(m proto.Message) bool {
	_, ok := m.(*proto.IndexLookup)
	return ok
}

// get returns a connection to m, and whether it was dialled just now. long marks the
// connection as carrying more than lookups.
func (p *peerPool) get(ctx context.Context, m index.Member, long bool) (*rpc.Conn, bool, error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, false, errPoolClosed
	}
	pc, ok := p.conns[m.ID]
	if ok {
		p.mu.Unlock()
		select {
		case <-pc.ready:
		case <-ctx.Done():
			return nil, false, ctx.Err()
		}
		if pc.live() {
			p.mu.Lock()
			pc.used = p.sn.clk.Now()
			pc.long = pc.long || long
			pc.busy++
			p.mu.Unlock()
			return pc.conn, false, nil
		}
		p.drop(m.ID, pc.conn)
		p.mu.Lock()
	}
	pc = &peerConn{ready: make(chan struct{}), used: p.sn.clk.Now(), long: long, busy: 1}
	p.conns[m.ID] = pc
	p.mu.Unlock()
	limit := p.limit() // takes sn.mu, which is never held inside p.mu
	p.mu.Lock()
	p.evictLocked(limit)
	p.mu.Unlock()
	// The dial serves every caller waiting for this peer, so one caller giving up must
	// not cancel it: it runs under the supernode's own context and timeout.
	c, err := p.dial(p.sn.runCtx, m)
	p.finishDial(m.ID, pc, c, err)
	return pc.conn, true, pc.err
}

// finishDial settles pc, the dial of peer id, with its outcome.
func (p *peerPool) finishDial(id string, pc *peerConn, c *rpc.Conn, err error) {
	p.mu.Lock()
	if err == nil && p.closed {
		// The supernode stopped during the dial. A connection that outlived it would
		// go on serving its peer with the stopped supernode's records and watches (a
		// peer adopts the connection for its calls to this member): after a restart
		// the member answered as two supernodes, one of them stale, and a watch
		// placed at the stale one was at no running supernode.
		c.Close()
		c, err = nil, errPoolClosed
	}
	pc.conn, pc.err = c, err
	if err != nil && p.conns[id] == pc {
		delete(p.conns, id)
	}
	p.mu.Unlock()
	close(pc.ready)
}

// adopt makes a connection that the supernode id dialled, and that proved its
// credential, serve this supernode's calls to it too, unless one is pooled or being
// dialled already. One connection per pair instead of one per direction halves what the
// mesh of supernodes holds: at 1,000 supernodes every one of them talks to a few hundred
// others. The connection leaves the pool when it closes (see serveConn).
func (p *peerPool) adopt(id string, c *rpc.Conn) {
	limit := p.limit()
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.conns[id]; ok || p.closed {
		return
	}
	if len(p.conns) >= limit {
		// Never evict for an adoption: the evicted connection may be one the peer at its
		// other end is using, and a burst of hellos would then close connection after
		// connection across the layer.
		return
	}
	ready := make(chan struct{})
	close(ready)
	p.conns[id] = &peerConn{ready: ready, conn: c, used: p.sn.clk.Now(), long: true}
	p.sn.m.Inc("peer_adopted")
}

// done ends a call that get began on c.
func (p *peerPool) done(id string, c *rpc.Conn) {
	p.mu.Lock()
	if pc, ok := p.conns[id]; ok {
		select {
		case <-pc.ready: // pc.conn is set before ready closes
			if pc.conn == c {
				pc.busy--
				pc.used = p.sn.clk.Now()
			}
		default: // a newer dial is under way: not the connection c came from
		}
	}
	p.mu.Unlock()
}

// evictLocked closes the least recently used connection when the pool is full.
func (p *peerPool) evictLocked(limit int) {
	if len(p.conns) <= limit {
		return
	}
	var oldID string
	var old *peerConn
	for id, pc := range p.conns {
		select {
		case <-pc.ready:
		default:
			continue
		}
		if old == nil || pc.used.Before(old.used) {
			oldID, old = id, pc
		}
	}
	if old != nil {
		delete(p.conns, oldID)
		if old.conn != nil {
			old.conn.Close()
		}
	}
}

func (p *peerPool) drop(id string, c *rpc.Conn) {
	p.mu.Lock()
	if pc, ok := p.conns[id]; ok {
		select {
		case <-pc.ready: // pc.conn is set before ready closes
			if pc.conn == c || c == nil {
				delete(p.conns, id)
			}
		default: // a newer dial is under way: not the connection being dropped
		}
	}
	p.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

func (p *peerPool) dial(ctx context.Context, m index.Member) (*rpc.Conn, error) {
	sn := p.sn
	want, err := identity.DecodeKey(m.ID)
	if err != nil {
		return nil, err
	}
	cred := sn.credential()
	if cred == nil {
		return nil, errNotAdmitted
	}
	verify := func(k ed25519.PublicKey) error {
		if !k.Equal(want) {
			return fmt.Errorf("supernode at %s is not %s", m.Addr, m.ID)
		}
		return nil
	}
	// A supernode that is leaving still hands its records off over fresh connections.
	// The wait for a dial slot counts against the same 5 seconds as the dial.
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	select {
	case p.dials <- struct{}{}:
	case <-dctx.Done():
		sn.m.Inc("peer_dial_queue_timeouts")
		return nil, errNoDialSlot
	}
	tc, err := sn.ident.DialOverlay(dctx, sn.cfg.Dialer, m.Addr, verify)
	<-p.dials
	if err != nil {
		return nil, err
	}
	c := rpc.New(tc, rpc.Options{Logger: sn.log, Counter: sn.m, JSONOnly: sn.cfg.JSONOnly,
		Handler: &handler{sn: sn, key: want, remote: m.Addr, peerSN: m.ID}})
	// Closed by closeAll, eviction, the janitor or the peer; a closed connection leaves
	// the pool at once, so that its buffers go with it.
	go func() {
		c.Run(context.Background())
		p.drop(m.ID, c)
	}()
	if _, err := c.Call(dctx, &proto.SNHello{Credential: cred, Binary: c.ReadsBinary()}); err != nil {
		c.Close()
		return nil, err
	}
	sn.m.Inc("peer_dials")
	return c, nil
}

// janitor closes idle connections until ctx ends.
func (p *peerPool) janitor(ctx context.Context) {
	t := p.sn.clk.NewTicker(lookupIdle / 2)
	defer t.Stop()
	var idle []*rpc.Conn
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		now := p.sn.clk.Now()
		p.mu.Lock()
		for id, pc := range p.conns {
			select {
			case <-pc.ready:
			default:
				continue // still dialling
			}
			limit := lookupIdle
			if pc.long {
				limit = p.idle
			}
			// The peer may use the connection too (it is shared both ways): it is idle
			// only when neither end sent anything.
			if pc.conn != nil && pc.busy == 0 && now.Sub(pc.used) > limit && now.Sub(pc.conn.LastRead()) > limit {
				delete(p.conns, id)
				idle = append(idle, pc.conn)
			}
		}
		p.mu.Unlock()
		for _, c := range idle {
			c.Close()
		}
		p.sn.m.Add("peer_idle_closes", uint64(len(idle)))
		idle = idle[:0]
	}
}

func (p *peerPool) closeAll() {
	p.mu.Lock()
	conns := p.conns
	p.conns = make(map[string]*peerConn)
	p.closed = true // dials under way close what they open (see get)
	p.mu.Unlock()
	for _, pc := range conns {
		select {
		case <-pc.ready:
			if pc.conn != nil {
				pc.conn.Close()
			}
		default:
		}
	}
}
