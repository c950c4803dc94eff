package client

import (
	"context"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	transport "github.com/pion/transport/v3"

	"github.com/peerline/peerline/internal/callsig"
	"github.com/peerline/peerline/internal/clocks"
	"github.com/peerline/peerline/internal/e2ee"
	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/index"
	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/proto"
)

// The phone is the client's calls: the calls ringing and in progress, the reports of the
// last ones, the work of the calls answered on their own. It keeps that state under a
// lock of its own, and reaches the rest of the client only through the three small
// interfaces below (signalling, network, events) and a clock. The client's lock guards
// nothing of a call's: a call takes it only inside the client's side of the interfaces,
// briefly, to read what the client owns (its credential, its NAT, its attachment), and
// never with the phone's lock held; the client calls into the phone with its own lock
// released.

// signalling is how calls reach their peers: a call's messages go end-to-end encrypted
// through our supernode, and a peer is found through the overlay.
type signalling interface {
	// online returns why no call message can go out now (no supernode), or nil.
	online() error
	// signal seals m for the user to, whose box key is box, and sends it through our
	// supernode.
	signal(ctx context.Context, to string, box [32]byte, m *callsig.Msg) error
	// locate finds where the online user name is now: a name that is not online, or no
	// user's, is an error (proto.ErrOffline, proto.ErrNoSuchUser).
	locate(ctx context.Context, name string) (index.Record, error)
	// self returns our credential as it is now: a call's media key is bound to its name
	// and key.
	self() identity.Credential
}

// network is what the legs of calls are built of.
type network interface {
	// listenPacket opens a UDP socket (a relay allocation's, the plain socket's).
	listenPacket(network, addr string) (net.PacketConn, error)
	// dial opens a connection (a TURN allocation over TCP).
	dial(ctx context.Context, network, addr string) (net.Conn, error)
	// iceNet is the network the ICE agents gather and check on; nil = the machine's,
	// and only there is the TCP hole punch tried (it needs the kernel's simultaneous
	// open).
	iceNet() transport.Net
	// natStatus is this client's NAT as last detected.
	natStatus() NATStatus
	// supernode returns the services of the supernode we are attached to; the zero
	// value when not attached.
	supernode() supernodeServices
	// turnCredentials asks the login server for TURN credentials: for the relay of the
	// supernode with id relay, or ("") for a standalone relay it knows.
	turnCredentials(ctx context.Context, relay string) ([]proto.TurnCred, error)
}

// supernodeServices are the services of the supernode a client is attached to that its
// calls use.
type supernodeServices struct {
	id   string // the supernode's id, which names its relay to the login server
	stun string // its STUN service, "" if none
	turn string // its TURN relay, "" if none
}

// events takes the events of calls (ringing, active, hung up, missed, ended).
type events interface {
	emit(Event)
}

// phone places, answers and runs a client's calls.
type phone struct {
	user   string           // our user name: a call to it is refused
	boxPub [32]byte         // our box key's public half, which an invite carries
	cfg    CallConfig       // read-only
	sig    signalling       // the peers' signalling
	net    network          // the legs' sockets, relays and NAT
	ev     events           // where the calls' events go
	clk    clockwork.Clock  // the timers of a call's set-up (Config.Clock)
	now    func() time.Time // the time reports and events carry (Config.Now)
	log    *slog.Logger
	m      *metrics.Set

	// wg counts the calls answered on their own and the signals sent in the background
	// (busy and timed-out rejects, urgent punch timing): Run waits for them.
	wg sync.WaitGroup

	// mu protects calls, reports and runCtx_, and nothing else: each call has a lock of
	// its own for its state. It is held only briefly, and nothing outside the phone is
	// called under it; a call's mu may be taken inside it, never the other way round.
	mu      sync.Mutex
	calls   map[string]*call // ringing and active calls, by id
	reports []CallReport     // of the last calls, at most maxReports
	runCtx_ context.Context  // Run's context, for calls answered on their own; nil = not running
}

// maxReports is how many reports of past calls a phone keeps.
const maxReports = 32

// newPhone builds the phone of client c, which it reaches only through the interfaces
// above.
func newPhone(c *Client) *phone {
	return &phone{
		user:   c.user,
		boxPub: c.box.Public,
		cfg:    c.cfg.Call,
		sig:    clientSignalling{c},
		net:    clientNetwork{c},
		ev:     c,
		clk:    c.clk,
		now:    c.cfg.Now,
		log:    c.log,
		m:      c.m,
		calls:  make(map[string]*call),
	}
}

// start gives the phone Run's context: calls answered on their own end with it.
func (p *phone) start(ctx context.Context) {
	p.mu.Lock()
	p.runCtx_ = ctx
	p.mu.Unlock()
}

// wait waits for the calls answered on their own and the signals sent in the
// background, once Run's context is done.
func (p *phone) wait() { p.wg.Wait() }

// runCtx is the context of Run: calls the phone answers on its own stop with it.
func (p *phone) runCtx() context.Context {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.runCtx_ == nil {
		return context.Background()
	}
	return p.runCtx_
}

// sleep waits d on the phone's clock, or until ctx ends; it reports whether the full
// delay passed.
func (p *phone) sleep(ctx context.Context, d time.Duration) bool {
	return clocks.Sleep(ctx, p.clk, d)
}

// The client's side of the interfaces: small adapters, so that the Client's own method
// set stays its own.

// clientSignalling is the signalling of client c: through the supernode it is attached
// to.
type clientSignalling struct{ c *Client }

func (s clientSignalling) online() error {
	_, err := s.c.attachedConn()
	return err
}

func (s clientSignalling) self() identity.Credential {
	s.c.mu.Lock()
	defer s.c.mu.Unlock()
	return s.c.credInfo
}

// signal seals one signalling message for the peer and sends it through our supernode.
func (s clientSignalling) signal(ctx context.Context, to string, box [32]byte, m *callsig.Msg) error {
	c := s.c
	a, err := c.attachedConn()
	if err != nil {
		return err
	}
	text, err := callsig.Encode(m)
	if err != nil {
		return err
	}
	c.mu.Lock()
	cred := c.cred
	c.mu.Unlock()
	env, err := e2ee.Seal(e2ee.Message{From: c.user, To: to, Sent: c.cfg.Now(), Kind: e2ee.KindCall, Text: string(text)}, c.key, cred, box)
	if err != nil {
		return err
	}
	_, err = a.conn.Call(ctx, &proto.Msg{To: to, Envelope: env})
	if err == nil {
		c.m.Inc("call_signals_sent")
	}
	return err
}

func (s clientSignalling) locate(ctx context.Context, name string) (index.Record, error) {
	a, err := s.c.attachedConn()
	if err != nil {
		return index.Record{}, err
	}
	return s.c.locate(ctx, a, name)
}

// clientNetwork is the network of client c, as its Config gives it.
type clientNetwork struct{ c *Client }

func (n clientNetwork) listenPacket(network, addr string) (net.PacketConn, error) {
	return n.c.cfg.ListenPacket(network, addr)
}

func (n clientNetwork) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	return n.c.cfg.Dialer.DialContext(ctx, network, addr)
}

func (n clientNetwork) iceNet() transport.Net { return n.c.cfg.Net }

func (n clientNetwork) natStatus() NATStatus {
	n.c.mu.Lock()
	defer n.c.mu.Unlock()
	return n.c.nat
}

func (n clientNetwork) supernode() supernodeServices {
	n.c.mu.Lock()
	a := n.c.attached
	n.c.mu.Unlock()
	if a == nil {
		return supernodeServices{}
	}
	return supernodeServices{id: a.id, stun: a.stun, turn: a.turn}
}

func (n clientNetwork) turnCredentials(ctx context.Context, relay string) ([]proto.TurnCred, error) {
	m, err := n.c.loginCall(ctx, &proto.TurnCreds{Relay: relay})
	if err != nil {
		return nil, err
	}
	ok, _ := m.(*proto.TurnCredsOK)
	if ok == nil {
		return nil, nil
	}
	return ok.Creds, nil
}

// The adapters, and the Client, are what the phone takes.
var (
	_ signalling = clientSignalling{}
	_ network    = clientNetwork{}
	_ events     = (*Client)(nil)
)
