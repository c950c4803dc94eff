package supernode

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
	"github.com/peerline/peerline/internal/secure"
	"github.com/peerline/peerline/internal/serve"
)

func (sn *Supernode) serveConn(ctx context.Context, nc net.Conn) {
	tc, err := sn.ident.AcceptOverlay(ctx, nc)
	if err != nil {
		sn.m.Inc("handshake_errors")
		sn.log.Debug("handshake failed", "remote", nc.RemoteAddr(), "err", err)
		return
	}
	h := &handler{sn: sn, key: tc.PeerKey(), remote: nc.RemoteAddr().String(), tc: tc}
	if tc.Resumed() {
		sn.m.Inc("handshakes_resumed")
	}
	c := rpc.New(tc, rpc.Options{
		Handler: h,
		// Clients ping every KeepAlive; one silent for two periods is gone, so its
		// buddies learn it within the two periods presence promises.
		IdleTimeout: 2 * sn.cfg.KeepAlive,
		Counter:     sn.m,
		Logger:      sn.log,
		JSONOnly:    sn.cfg.JSONOnly,
	})
	h.conn = c
	c.Run(ctx)
	h.settled()
	if name := h.name(); name != "" {
		sn.detach(ctx, name, c)
	}
	if peer := h.peer(); peer != "" {
		sn.ov.peers.drop(peer, c) // if adopted
	}
}

// detach forgets an attached user whose connection ended and, unless the user logged off
// with a signed record, tells the user's holders the user is gone.
func (sn *Supernode) detach(ctx context.Context, name string, c *rpc.Conn) {
	sn.mu.Lock()
	cl, ok := sn.clients[name]
	if ok && cl.conn == c {
		delete(sn.clients, name)
	} else {
		ok = false
	}
	sn.mu.Unlock()
	if !ok {
		return
	}
	sn.ov.mu.Lock()
	delete(sn.ov.subs, name)
	sn.ov.mu.Unlock()
	sn.log.Info("client detached", "user", name)
	if cl.rec != nil && !cl.offline && ctx.Err() == nil {
		sn.ix.Gone(ctx, name, cl.rec.Seq)
	}
}

// handler serves one connection: a client's (after Attach) or another supernode's (after
// SNHello, or from the start when this side dialled).
type handler struct {
	sn     *Supernode
	key    ed25519.PublicKey
	remote string
	conn   *rpc.Conn
	tc     *secure.OverlayConn // the channel conn runs on

	mu      sync.Mutex // mu protects the following fields
	user    string     // attached user
	peerSN  string     // authenticated supernode
	release func()     // gives back the attachment slot; nil = none held
}

// settled ends the attachment in progress, if one is: its slot goes back.
func (h *handler) settled() {
	h.mu.Lock()
	r := h.release
	h.release = nil
	h.mu.Unlock()
	if r != nil {
		r()
	}
}

func (h *handler) name() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.user
}

func (h *handler) peer() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.peerSN
}

// Handle implements rpc.Handler.
func (h *handler) Handle(ctx context.Context, c *rpc.Conn, m proto.Message) (proto.Message, error) {
	sn := h.sn
	switch m := m.(type) {
	case *proto.Attach:
		return sn.attach(ctx, h, m)
	case *proto.SNHello:
		return sn.hello(ctx, h, m)
	}
	if peer := h.peer(); peer != "" {
		return sn.handlePeer(ctx, peer, m)
	}
	name := h.name()
	if name == "" {
		sn.m.Inc("unauthenticated_requests")
		return nil, proto.ErrUnauthenticated.With("attach with a credential first")
	}
	return sn.handleClient(ctx, h, name, m)
}

// Retry-after bases of the two busy answers (jittered to [base/2, 1.5 base]): a full
// supernode stays full for a while, so its clients go elsewhere; attachments in
// progress finish in moments.
const (
	fullRetry        = 10 * time.Second
	concurrencyRetry = 500 * time.Millisecond
)

func (sn *Supernode) attach(ctx context.Context, h *handler, a *proto.Attach) (proto.Message, error) {
	if a.Binary {
		h.conn.PeerReadsBinary()
	}
	own := sn.credential()
	if own == nil {
		sn.m.Inc("attach_not_ready")
		return nil, proto.ErrBusy.With("supernode not yet admitted by the login server").WithRetry(time.Second)
	}
	sn.mu.Lock()
	n := len(sn.clients)
	sn.mu.Unlock()
	if n >= sn.cfg.MaxAttached {
		sn.m.Inc("attach_shed_full")
		return nil, sn.busy("full", fullRetry, n)
	}
	// One slot per connection, taken under h.mu: Attach requests pipelined on one
	// connection must not take (and leak) several.
	h.mu.Lock()
	if h.release == nil {
		if !sn.adm.acquire() {
			h.mu.Unlock()
			sn.m.Inc("attach_shed_concurrency")
			return nil, sn.busy("attachments in progress", concurrencyRetry, n)
		}
		var once sync.Once
		// A client that never publishes gives its slot back after a keep-alive period.
		t := sn.clk.AfterFunc(sn.cfg.KeepAlive, h.settled)
		h.release = func() { t.Stop(); once.Do(sn.adm.release) }
	}
	h.mu.Unlock()
	cred, err := sn.creds.VerifyHolder(a.Credential, h.key, identity.KindUser, sn.clk.Now())
	if err != nil {
		h.settled()
	}
	switch {
	case errors.Is(err, identity.ErrExpired):
		sn.m.Inc("cred_expired")
		return nil, proto.ErrCredExpired
	case err != nil:
		sn.m.Inc("cred_invalid")
		sn.log.Info("attach refused", "remote", h.remote, "err", err)
		return nil, proto.ErrCredInvalid.With("%v", err)
	}
	now := sn.clk.Now()
	sn.mu.Lock()
	old := sn.clients[cred.Name]
	if old == nil && len(sn.clients) >= sn.cfg.MaxAttached {
		// Filled up while this one was checked: the limit holds at every moment.
		n := len(sn.clients)
		sn.mu.Unlock()
		h.settled()
		sn.m.Inc("attach_shed_full")
		return nil, sn.busy("full", fullRetry, n)
	}
	sn.clients[cred.Name] = &client{name: cred.Name, conn: h.conn, since: now, lastSeen: now}
	sn.mu.Unlock()
	h.mu.Lock()
	h.user = cred.Name
	h.mu.Unlock()
	select {
	case <-h.conn.Done():
		// Closed while attaching: serveConn may have looked for the user before it was
		// entered, and an entry left behind would hold a place under MaxAttached.
		sn.detach(ctx, cred.Name, h.conn)
	default:
	}
	serve.Authenticated(ctx)
	if old != nil && old.conn != h.conn {
		old.conn.Close() // the same user attached again: the newer session wins
	}
	sn.m.Inc("attaches")
	sn.log.Info("client attached", "user", cred.Name, "from", h.remote) // "from": a success is not limited per source
	ok := &proto.AttachOK{Credential: own, Since: sn.since, KeepAliveMs: sn.cfg.KeepAlive.Milliseconds(), Layer: sn.Layer()}
	ok.TURN = sn.TURNAddr()
	if c := sn.cfg.STUN[0]; c != nil {
		ok.STUN = c.LocalAddr().String()
	}
	if sn.tickets != nil && h.tc != nil {
		if t, err := sn.tickets.Issue(h.tc); err == nil {
			ok.Ticket = t
		}
	}
	return ok, nil
}

// hello authenticates another supernode: its credential must be a supernode credential
// for the key it proved in the overlay handshake.
func (sn *Supernode) hello(ctx context.Context, h *handler, m *proto.SNHello) (proto.Message, error) {
	cred, err := sn.creds.VerifyHolder(m.Credential, h.key, identity.KindSupernode, sn.clk.Now())
	if err != nil {
		sn.m.Inc("peer_cred_invalid")
		return nil, proto.ErrCredInvalid.With("%v", err)
	}
	if m.Binary {
		h.conn.PeerReadsBinary() // and the OK below is this end's first binary frame
	}
	id := identity.EncodeKey(cred.PubKey)
	h.mu.Lock()
	h.peerSN = id
	h.mu.Unlock()
	serve.Authenticated(ctx)
	sn.ov.peers.adopt(id, h.conn)
	return &proto.OK{}, nil
}

// handlePeer serves another supernode.
func (sn *Supernode) handlePeer(ctx context.Context, peer string, m proto.Message) (proto.Message, error) {
	if err := sn.indexReady(m); err != nil {
		return nil, err
	}
	switch m := m.(type) {
	case *proto.IndexStore:
		if !m.Replicate {
			return &proto.OK{}, sn.ix.Put(m.Record)
		}
		// The first holder reached: keep the record and pass it on to the others
		// (checked once here, so a record that does not verify goes nowhere).
		if err := sn.ix.Put(m.Record); err != nil {
			return nil, err
		}
		rec, err := index.Parse(m.Record)
		if err != nil {
			return nil, proto.ErrBadRequest.With("record: %v", err)
		}
		rctx, cancel := context.WithTimeout(ctx, sn.cfg.KeepAlive/2)
		defer cancel()
		sn.ix.Replicate(rctx, rec.Name, m.Record)
		sn.m.Inc("records_passed_on")
		return &proto.OK{}, nil
	case *proto.IndexStoreBatch:
		// Each record stands alone; storeRecord counts the ones refused.
		for _, raw := range m.Records {
			sn.ix.Put(raw)
		}
		return &proto.OK{}, nil
	case *proto.IndexLookup:
		sn.m.Inc("index_lookups_served")
		r := sn.ix.Local(m.Name, m.Asker)
		return &r, nil
	case *proto.IndexGone:
		sn.ix.GoneFrom(m.Name, peer, m.Seq)
		return &proto.OK{}, nil
	case *proto.Via:
		return sn.serveVia(ctx, peer, m)
	case *proto.Watch:
		sn.addWatch(m.Name, watcher{sn: peer, user: m.Watcher})
		return &proto.OK{}, nil
	case *proto.WatchBatch:
		return sn.addWatches(peer, m.Watches), nil
	case *proto.Presence:
		sn.presenceToClient(*m)
		return &proto.OK{}, nil
	case *proto.Deliver:
		return &proto.OK{}, sn.deliver(ctx, m, nil)
	case *proto.Ping:
		return &proto.Pong{Seq: m.Seq}, nil
	}
	sn.m.Inc("unexpected_messages")
	return nil, proto.ErrBadRequest.With("message type %d is not served between supernodes", m.Type())
}

// indexReady refuses the index's messages while this supernode has no member list: a
// supernode that restarted while the login server is down (a promoted user's, after a
// mass reboot) is still on its peers' lists and takes their connections, but holds no
// view of the ring. As the first holder of a publication it would keep the record
// and pass it on to nobody, and as a watch's holder it could not push presence to the
// watchers' supernodes, which it does not know: every record that reached it would
// expire at the holders that count, and its users be seen offline. The answer is busy,
// which the callers take as "ask the next holder", not as a death.
func (sn *Supernode) indexReady(m proto.Message) error {
	switch m.(type) {
	case *proto.Ping, *proto.Deliver, *proto.Presence:
		return nil
	case *proto.Via:
		return nil // serveVia: a contact without a list answers unreachable, a target busy
	}
	return sn.listReady()
}

// listReady is indexReady's answer for any message: busy (counted) without a member
// list, nil with one.
func (sn *Supernode) listReady() error {
	if sn.currentRing().Len() > 0 {
		return nil
	}
	sn.m.Inc("index_not_ready")
	return proto.ErrBusy.With("supernode has no member list yet").WithRetry(time.Second)
}

// handleClient serves an attached client.
func (sn *Supernode) handleClient(ctx context.Context, h *handler, name string, m proto.Message) (proto.Message, error) {
	switch m := m.(type) {
	case *proto.Ping:
		sn.touch(name, h.conn)
		sn.m.Inc("keepalives")
		return &proto.Pong{Seq: m.Seq}, nil
	case *proto.Peers:
		return &proto.PeersOK{Supernodes: sn.Peers(), Layer: sn.Layer()}, nil
	case *proto.Publish:
		return sn.publish(ctx, h, name, m.Record)
	case *proto.Search:
		res, hops, hit := sn.Lookup(ctx, m.Name, name)
		sn.m.Inc("searches")
		return &proto.SearchOK{Found: res.Found, Online: res.Online, Record: res.Record, LastSeen: res.LastSeen, Hops: hops, Cached: hit}, nil
	case *proto.Subscribe:
		sn.subscribe(ctx, name, m.Names)
		return &proto.OK{}, nil
	case *proto.Msg:
		res, _, cached := sn.Lookup(ctx, m.To, name)
		err := sn.message(ctx, name, m, res)
		if cached && errors.Is(err, proto.ErrOffline) {
			// The cached record may name the supernode the user has just left (a
			// reboot storm moves users between supernodes within the cache's life):
			// ask the holders again.
			sn.ix.Forget(m.To)
			sn.m.Inc("message_relookups")
			res, _, _ = sn.Lookup(ctx, m.To, name)
			err = sn.message(ctx, name, m, res)
		}
		if err != nil {
			return nil, err
		}
		return &proto.OK{}, nil
	case *proto.DialBack:
		return &proto.OK{}, sn.dialBack(ctx, h.key, m.Addr)
	case *proto.Bandwidth:
		return &proto.BandwidthOK{Bytes: len(m.Payload)}, nil
	}
	sn.m.Inc("unexpected_messages")
	return nil, proto.ErrBadRequest.With("message type %d is not served to clients", m.Type())
}

// message delivers an attached user's message to the user res names.
func (sn *Supernode) message(ctx context.Context, from string, m *proto.Msg, res proto.IndexResult) error {
	if !res.Found || !res.Online {
		return proto.ErrOffline.With("%s is offline", m.To)
	}
	rec, err := index.Parse(res.Record)
	if err != nil {
		return proto.ErrOffline
	}
	return sn.deliver(ctx, &proto.Deliver{From: from, To: m.To, Envelope: m.Envelope}, &rec)
}

func (sn *Supernode) touch(name string, c *rpc.Conn) {
	sn.mu.Lock()
	if cl, ok := sn.clients[name]; ok && cl.conn == c {
		cl.lastSeen = sn.clk.Now()
	}
	sn.mu.Unlock()
}

// publish accepts an attached user's own record, naming this supernode, and stores it at
// the record's holders. It doubles as the user's keep-alive.
func (sn *Supernode) publish(ctx context.Context, h *handler, name string, raw []byte) (proto.Message, error) {
	rec, err := index.VerifyCached(raw, sn.creds, sn.clk.Now())
	if err != nil {
		sn.m.Inc("records_rejected")
		return nil, proto.ErrRefused.With("record refused: %v", err)
	}
	if rec.Name != name || !bytes.Equal(identityKey(rec.Credential), h.key) {
		sn.m.Inc("records_rejected")
		return nil, proto.ErrRefused.With("a client may publish only its own record")
	}
	if rec.Supernode != sn.id {
		sn.m.Inc("records_rejected")
		return nil, proto.ErrRefused.With("the record must name this supernode")
	}
	sn.touch(name, h.conn)
	sn.mu.Lock()
	if cl, ok := sn.clients[name]; ok && cl.conn == h.conn {
		cl.rec, cl.raw, cl.offline = &rec, raw, rec.Offline
	}
	sn.mu.Unlock()
	sn.ix.Forget(name)
	defer h.settled() // the first publication answered: the attachment is complete
	// The client waits a keep-alive period for the answer and then gives up on this
	// supernode: answer within half of it. Stores still under way then go on in the
	// background for up to a keep-alive, so that a slow holder still gets the record
	// rather than keep an older one that expires before the next publication.
	rctx, cancel := context.WithTimeout(sn.runCtx, sn.cfg.KeepAlive)
	done := make(chan int, 1)
	go func() {
		defer cancel()
		done <- sn.ix.Publish(rctx, name, raw)
	}()
	wait := sn.clk.NewTimer(sn.cfg.KeepAlive / 2)
	defer wait.Stop()
	select {
	case n := <-done:
		if n == 0 {
			return nil, proto.ErrBusy.With("no holder reachable for your record").WithRetry(time.Second)
		}
	case <-wait.Chan():
		sn.m.Inc("publishes_answered_early")
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	sn.m.Inc("publishes")
	return &proto.OK{}, nil
}

func identityKey(cred []byte) ed25519.PublicKey {
	c, err := identity.Parse(cred)
	if err != nil {
		return nil
	}
	return c.PubKey
}

// dialBack connects to addr and checks that the node there proves the key want, which
// confirms to a client that its address is reachable from outside.
func (sn *Supernode) dialBack(ctx context.Context, want ed25519.PublicKey, addr string) error {
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	tc, err := sn.ident.DialOverlay(dctx, sn.cfg.Dialer, addr, secure.PinnedKey(want))
	if err != nil {
		sn.m.Inc("dialbacks_failed")
		return proto.ErrRefused.With("could not reach %s: %v", addr, err)
	}
	tc.Close()
	sn.m.Inc("dialbacks_ok")
	return nil
}
