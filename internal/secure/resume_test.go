package secure

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/flynn/noise"
	"github.com/jonboulle/clockwork"
)

// pipeDialer dials a responder that accepts each connection with accept.
type pipeDialer struct {
	accept func(net.Conn) (*OverlayConn, error)
	got    chan acceptResult
	first  *bytes.Buffer // if set, what the initiator wrote first is copied here
}

type acceptResult struct {
	c   *OverlayConn
	err error
}

func (d *pipeDialer) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	a, b := net.Pipe()
	go func() {
		var nc net.Conn = b
		if d.first != nil {
			nc = &recordConn{Conn: b, w: d.first}
		}
		c, err := d.accept(nc)
		if err != nil {
			b.Close()
		}
		d.got <- acceptResult{c, err}
	}()
	return a, nil
}

// recordConn copies what it reads into w.
type recordConn struct {
	net.Conn
	w *bytes.Buffer
}

func (c *recordConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.w.Write(p[:n])
	return n, err
}

func newDialer(srv *OverlayIdentity) *pipeDialer {
	return &pipeDialer{got: make(chan acceptResult, 4), accept: func(nc net.Conn) (*OverlayConn, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.AcceptOverlay(ctx, nc)
	}}
}

// session runs a full handshake from cli to srv and returns the resumption srv's keys
// give cli.
func session(t *testing.T, cli, srv *OverlayIdentity, keys *TicketKeys) Resumption {
	t.Helper()
	d := newDialer(srv)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := cli.DialOverlay(ctx, d, "srv", PinnedKey(srv.PublicKey()))
	if err != nil {
		t.Fatal(err)
	}
	r := <-d.got
	if r.err != nil {
		t.Fatal(r.err)
	}
	defer c.Close()
	ticket, err := keys.Issue(r.c)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(c.ResumptionSecret(), r.c.ResumptionSecret()) {
		t.Fatal("the two ends draw different resumption secrets")
	}
	return Resumption{Ticket: ticket, Secret: c.ResumptionSecret(), Peer: c.PeerKey()}
}

// exchange checks that bytes cross c and s both ways.
func exchange(t *testing.T, c, s net.Conn) {
	t.Helper()
	go c.Write([]byte("ping"))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("responder read %q, %v", buf, err)
	}
	go s.Write([]byte("pong"))
	if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("initiator read %q, %v", buf, err)
	}
}

func resume(t *testing.T, cli *OverlayIdentity, d *pipeDialer, r Resumption) (*OverlayConn, acceptResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := cli.ResumeOverlay(ctx, d, "srv", r, PinnedKey(r.Peer))
	res := <-d.got
	t.Cleanup(func() {
		if c != nil {
			c.Close()
		}
		if res.c != nil {
			res.c.Close()
		}
	})
	return c, res, err
}

// resumable runs a full handshake between two new identities, the responder's tickets
// on clock now (nil: time.Now), and returns them with the ticket the initiator got.
func resumable(t *testing.T, now func() time.Time) (cli, srv *OverlayIdentity, keys *TicketKeys, r Resumption) {
	t.Helper()
	cli, srv = newIdentity(t), newIdentity(t)
	keys = NewTicketKeys(now)
	srv.ResumeTickets(keys)
	return cli, srv, keys, session(t, cli, srv, keys)
}

func TestResumeSession(t *testing.T) {
	cli, srv, keys, r := resumable(t, nil)
	c, s, err := resume(t, cli, newDialer(srv), r)
	if err != nil || s.err != nil {
		t.Fatalf("resumption: initiator %v, responder %v", err, s.err)
	}
	if !c.Resumed() || !s.c.Resumed() {
		t.Fatalf("resumed: initiator %v, responder %v", c.Resumed(), s.c.Resumed())
	}
	if !c.PeerKey().Equal(srv.PublicKey()) || !s.c.PeerKey().Equal(cli.PublicKey()) {
		t.Fatal("a resumed connection names the wrong peer")
	}
	exchange(t, c, s.c)
	if bytes.Equal(c.ResumptionSecret(), r.Secret) || !bytes.Equal(c.ResumptionSecret(), s.c.ResumptionSecret()) {
		t.Fatal("a resumed session must draw a new secret, the same at both ends")
	}
	// Its own ticket resumes again.
	t2, err := keys.Issue(s.c)
	if err != nil {
		t.Fatal(err)
	}
	c2, s2, err := resume(t, cli, newDialer(srv), Resumption{Ticket: t2, Secret: c.ResumptionSecret(), Peer: r.Peer})
	if err != nil || s2.err != nil || !c2.Resumed() {
		t.Fatalf("second resumption: %v, %v", err, s2.err)
	}
	exchange(t, c2, s2.c)
}

// A ticket the responder cannot open leads to the XX handshake on the same connection.
func TestResumeRefusedFallsBackToXX(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Unix(1_800_000_000, 0))
	cli, srv, _, r := resumable(t, clock.Now)

	tampered := r
	tampered.Ticket = bytes.Clone(r.Ticket)
	tampered.Ticket[TicketLen-1] ^= 1
	restarted := newIdentity(t) // another process: same address, new keys
	restarted.ResumeTickets(NewTicketKeys(clock.Now))

	cases := []struct {
		name string
		srv  *OverlayIdentity
		r    Resumption
		wait time.Duration
	}{
		{"tampered", srv, tampered, 0},
		{"no-tickets", newIdentity(t), r, 0},
		{"another-process", restarted, r, 0},
		{"expired", srv, r, TicketLifetime},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			clock.Advance(tc.wait)
			c, s, err := resume(t, cli, newDialer(tc.srv), Resumption{Ticket: tc.r.Ticket, Secret: tc.r.Secret, Peer: tc.srv.PublicKey()})
			if err != nil || s.err != nil {
				t.Fatalf("fallback: initiator %v, responder %v", err, s.err)
			}
			if c.Resumed() || s.c.Resumed() {
				t.Fatal("a refused ticket resumed")
			}
			if !c.PeerKey().Equal(tc.srv.PublicKey()) || !s.c.PeerKey().Equal(cli.PublicKey()) {
				t.Fatal("the fallback handshake names the wrong peer")
			}
			exchange(t, c, s.c)
		})
	}
}

// Keys change every half lifetime; a ticket lives one lifetime and no longer.
func TestTicketLifetime(t *testing.T) {
	clock := clockwork.NewFakeClockAt(time.Unix(1_800_000_000, 0))
	cli, srv, keys, r := resumable(t, clock.Now)
	clock.Advance(TicketLifetime * 3 / 4)
	fresh := session(t, cli, srv, keys) // sealed with a newer key
	if bytes.Equal(r.Ticket[:ticketKeyIDLen], fresh.Ticket[:ticketKeyIDLen]) {
		t.Fatal("the ticket key did not change after half a lifetime")
	}
	if c, _, err := resume(t, cli, newDialer(srv), r); err != nil || !c.Resumed() {
		t.Fatalf("a ticket three quarters into its life did not resume: %v", err)
	}
	clock.Advance(TicketLifetime / 4)
	if c, _, err := resume(t, cli, newDialer(srv), r); err != nil || c.Resumed() {
		t.Fatalf("a ticket at the end of its life resumed (%v)", err)
	}
	if c, _, err := resume(t, cli, newDialer(srv), fresh); err != nil || !c.Resumed() {
		t.Fatalf("the newer ticket did not resume: %v", err)
	}
}

// The ticket without its secret is worth nothing: the responder fails the handshake.
func TestResumeWrongSecret(t *testing.T) {
	cli, srv, _, r := resumable(t, nil)
	r.Secret = bytes.Repeat([]byte{7}, resumeSecretLen)
	_, s, err := resume(t, cli, newDialer(srv), r)
	if !errors.Is(s.err, ErrHandshake) {
		t.Fatalf("responder: %v, want ErrHandshake", s.err)
	}
	if err == nil {
		t.Fatal("initiator resumed with the wrong secret")
	}
}

// A responder from before tickets closes the connection on a resuming message.
func TestResumeOldResponder(t *testing.T) {
	cli, _, _, r := resumable(t, nil)
	old := &pipeDialer{got: make(chan acceptResult, 1), accept: func(nc net.Conn) (*OverlayConn, error) {
		var buf [2 + maxHandshakeMessage]byte
		msg, err := readHandshakeMessage(nc, buf[:])
		if err == nil && len(msg) != 32 {
			err = errors.New("payload in the first message") // what the XX responder said
		}
		return nil, err
	}}
	_, _, err := resume(t, cli, old, r)
	if !errors.Is(err, ErrTicketRefused) {
		t.Fatalf("initiator: %v, want ErrTicketRefused", err)
	}
}

// A recorded first message replayed gets an answer, but whoever replays it cannot send a
// message the responder accepts.
func TestResumeReplay(t *testing.T) {
	cli, srv, _, r := resumable(t, nil)
	d := newDialer(srv)
	d.first = new(bytes.Buffer)
	if _, _, err := resume(t, cli, d, r); err != nil {
		t.Fatal(err)
	}
	first := d.first.Bytes()[:2+resumeMsgLen]

	a, b := net.Pipe()
	defer a.Close()
	got := make(chan acceptResult, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := srv.AcceptOverlay(ctx, b)
		got <- acceptResult{c, err}
	}()
	a.Write(first)
	var buf [2 + maxHandshakeMessage]byte
	if _, err := readHandshakeMessage(a, buf[:]); err != nil {
		t.Fatal(err)
	}
	res := <-got
	if res.err != nil {
		t.Fatalf("replay: %v", res.err) // the responder cannot tell yet
	}
	defer res.c.Close()
	go a.Write(sealed([]byte("attach as the victim"))) // under a key the replayer guessed
	if _, err := res.c.Read(make([]byte, 64)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("the replayed session read %v, want ErrCorrupt", err)
	}
}

// fuzzTicketKeys seals with a fixed key at a fixed time, so that FuzzOverlayResume's
// seeds hold tickets it can open.
func fuzzTicketKeys() *TicketKeys {
	at := time.Unix(1_800_000_000, 0)
	k := NewTicketKeys(func() time.Time { return at })
	k.addLocked([32]byte{9}, [ticketKeyIDLen]byte{1}, at)
	return k
}

// fuzzResumeSeed is a first message with a ticket fuzzTicketKeys opens, made with
// another secret than the ticket's, and an XX first message after it.
func fuzzResumeSeed() []byte {
	k := fuzzTicketKeys()
	peer := ed25519.PublicKey(bytes.Repeat([]byte{2}, 32))
	ticket, _ := k.Issue(&OverlayConn{peer: peer, binding: []byte("binding")})
	hs, _ := noise.NewHandshakeState(resumeConfig(true, ticket, bytes.Repeat([]byte{3}, resumeSecretLen)))
	msg := append([]byte{0, 0, resumeV1}, ticket...)
	msg, _, _, _ = hs.WriteMessage(msg, nil)
	msg[0], msg[1] = byte((len(msg)-2)>>8), byte(len(msg)-2)
	return append(msg, append([]byte{0, 32}, make([]byte, 32)...)...)
}

func FuzzOverlayResume(f *testing.F) {
	srv := newIdentity(f)
	srv.ResumeTickets(fuzzTicketKeys())
	f.Add(fuzzResumeSeed())
	f.Add(append([]byte{0, byte(resumeMsgLen)}, make([]byte, resumeMsgLen)...))
	f.Fuzz(func(t *testing.T, in []byte) {
		if err := acceptFrom(srv, in); err == nil {
			t.Fatal("a handshake completed on bytes no identity wrote")
		}
	})
}
