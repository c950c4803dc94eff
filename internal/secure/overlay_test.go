package secure

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/flynn/noise"
)

func newIdentity(t testing.TB) *OverlayIdentity {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	id, err := NewOverlayIdentity(key)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// pair runs a handshake between cli and srv over a pipe and returns both ends, or the
// errors of each side.
func pair(t *testing.T, cli, srv *OverlayIdentity, verify func(ed25519.PublicKey) error) (*OverlayConn, *OverlayConn, error, error) {
	t.Helper()
	a, b := net.Pipe()
	t.Cleanup(func() { a.Close(); b.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	type res struct {
		c   *OverlayConn
		err error
	}
	srvDone := make(chan res, 1)
	go func() {
		c, err := srv.AcceptOverlay(ctx, b)
		if err != nil {
			b.Close() // as a server does: the dialler then hears EOF
		}
		srvDone <- res{c, err}
	}()
	c, cerr := cli.Client(ctx, a, verify)
	if cerr != nil {
		a.Close()
	}
	r := <-srvDone
	return c, r.c, cerr, r.err
}

func TestOverlayHandshakeProvesBothKeys(t *testing.T) {
	cli, srv := newIdentity(t), newIdentity(t)
	c, s, cerr, serr := pair(t, cli, srv, PinnedKey(srv.PublicKey()))
	if cerr != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", cerr, serr)
	}
	if !c.PeerKey().Equal(srv.PublicKey()) || !s.PeerKey().Equal(cli.PublicKey()) {
		t.Fatal("peer keys are not the identities the other side holds")
	}
	// Both directions at once, a write longer than one message and many short ones.
	big := make([]byte, 3*maxPlain+17)
	rand.Read(big)
	for _, dir := range []struct{ w, r *OverlayConn }{{c, s}, {s, c}} {
		errc := make(chan error, 1)
		go func() {
			if _, err := dir.w.Write(big); err != nil {
				errc <- err
				return
			}
			for i := range 100 {
				if _, err := dir.w.Write([]byte{byte(i)}); err != nil {
					errc <- err
					return
				}
			}
			errc <- nil
		}()
		got := make([]byte, len(big)+100)
		if _, err := io.ReadFull(dir.r, got); err != nil {
			t.Fatal(err)
		}
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:len(big)], big) {
			t.Fatal("long write arrived changed")
		}
		for i := range 100 {
			if got[len(big)+i] != byte(i) {
				t.Fatalf("short write %d arrived as %d", i, got[len(big)+i])
			}
		}
	}
}

func TestOverlayRefusedKey(t *testing.T) {
	cli, srv, other := newIdentity(t), newIdentity(t), newIdentity(t)
	_, _, cerr, serr := pair(t, cli, srv, PinnedKey(other.PublicKey()))
	if !errors.Is(cerr, ErrPinMismatch) {
		t.Fatalf("dialler's error %v, want the pin mismatch", cerr)
	}
	if serr == nil {
		t.Fatal("the server completed a handshake the dialler refused")
	}
}

// A payload copied from another identity names a key that never signed this static key.
func TestOverlayCopiedPayloadRefused(t *testing.T) {
	victim, thief, srv := newIdentity(t), newIdentity(t), newIdentity(t)
	forged := &OverlayIdentity{pub: thief.pub, static: thief.static, payload: victim.payload} // victim's key and signature, thief's static key
	_, _, cerr, serr := pair(t, forged, srv, nil)
	if !errors.Is(serr, ErrHandshake) {
		t.Fatalf("server accepted a copied identity: %v", serr)
	}
	_ = cerr
	// And the other way: a server that replays another's payload.
	forgedSrv := &OverlayIdentity{pub: thief.pub, static: thief.static, payload: srv.payload}
	_, _, cerr, _ = pair(t, victim, forgedSrv, nil)
	if !errors.Is(cerr, ErrHandshake) {
		t.Fatalf("dialler accepted a copied identity: %v", cerr)
	}
}

func TestOverlayTamperedMessage(t *testing.T) {
	cli, srv := newIdentity(t), newIdentity(t)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srvc := make(chan *OverlayConn, 1)
	go func() {
		c, _ := srv.AcceptOverlay(ctx, b)
		srvc <- c
	}()
	c, err := cli.Client(ctx, a, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := <-srvc
	if s == nil {
		t.Fatal("no server side")
	}
	// Encrypt a message with the client's key, flip a bit, and feed it to the server
	// directly: the server must refuse it and every read after.
	msg, err := c.tx.Encrypt(make([]byte, 2, 64), nil, []byte("hello"))
	if err != nil {
		t.Fatal(err)
	}
	binary.BigEndian.PutUint16(msg, uint16(len(msg)-2))
	msg[5] ^= 1
	go a.Write(msg)
	buf := make([]byte, 16)
	if _, err := s.Read(buf); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("tampered message read as %v, want ErrCorrupt", err)
	}
	if _, err := s.Read(buf); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("read after a tampered message: %v, want ErrCorrupt again", err)
	}
}

// A read deadline that passes between messages leaves the connection usable, as the
// idle timeouts of package rpc expect of a net.Conn.
func TestOverlayDeadlineBetweenMessages(t *testing.T) {
	cli, srv := newIdentity(t), newIdentity(t)
	c, s, cerr, serr := pair(t, cli, srv, nil)
	if cerr != nil || serr != nil {
		t.Fatalf("handshake: %v, %v", cerr, serr)
	}
	s.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := s.Read(make([]byte, 4)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past its deadline: %v", err)
	}
	s.SetReadDeadline(time.Time{})
	go c.Write([]byte("ping"))
	got := make([]byte, 4)
	if _, err := io.ReadFull(s, got); err != nil || string(got) != "ping" {
		t.Fatalf("read after the deadline: %q, %v", got, err)
	}
}

func TestOverlayHandshakeGarbage(t *testing.T) {
	srv := newIdentity(t)
	for _, in := range [][]byte{
		{},
		{0xff, 0xff}, // a message longer than any handshake message
		{0, 32},      // cut short
		append([]byte{0, 33}, make([]byte, 33)...), // an ephemeral key and a payload byte
		[]byte("GET / HTTP/1.1\r\n\r\n"),
	} {
		if err := acceptFrom(srv, in); err == nil {
			t.Errorf("handshake on %q succeeded", in)
		}
	}
}

// acceptFrom runs the responder's handshake on a stream that holds in and then ends.
func acceptFrom(id *OverlayIdentity, in []byte) error {
	a, b := net.Pipe()
	defer a.Close()
	go func() {
		a.Write(in)
		a.Close()
	}()
	go io.Copy(io.Discard, a) // the responder's own message
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := id.AcceptOverlay(ctx, b)
	b.Close()
	if c != nil {
		c.Close()
	}
	return err
}

// FuzzOverlayAccept feeds the responder's handshake arbitrary bytes: it fails with an
// error, never a panic or a hang.
func FuzzOverlayAccept(f *testing.F) {
	srv := newIdentity(f)
	f.Add([]byte{})
	f.Add(append([]byte{0, 32}, make([]byte, 32)...))
	f.Fuzz(func(t *testing.T, in []byte) {
		if err := acceptFrom(srv, in); err == nil {
			t.Fatal("a handshake completed on bytes no identity wrote")
		}
	})
}

// readConn is a net.Conn that reads from a buffer and discards writes.
type readConn struct {
	net.Conn
	r *bytes.Reader
}

func (c readConn) Read(p []byte) (int, error) { return c.r.Read(p) }
func (c readConn) Close() error               { return nil }

// fuzzKey is the key of FuzzOverlayRead's stream, so that its seeds hold valid messages.
var fuzzKey = [32]byte{1, 2, 3}

// sealed returns the stream of messages that encrypt plains under fuzzKey.
func sealed(plains ...[]byte) []byte {
	cs := noise.UnsafeNewCipherState(overlaySuite, fuzzKey, 0)
	var out []byte
	for _, p := range plains {
		msg, _ := cs.Encrypt(make([]byte, 2), nil, p)
		binary.BigEndian.PutUint16(msg, uint16(len(msg)-2))
		out = append(out, msg...)
	}
	return out
}

// FuzzOverlayRead reads an arbitrary stream as the messages after a handshake: what does
// not authenticate ends in ErrCorrupt (or a cut stream), never a panic.
func FuzzOverlayRead(f *testing.F) {
	f.Add(sealed([]byte("hello"), nil, bytes.Repeat([]byte{7}, 3000)))
	f.Add([]byte{0, 15})
	f.Fuzz(func(t *testing.T, in []byte) {
		c := &OverlayConn{nc: readConn{r: bytes.NewReader(in)}, rx: noise.UnsafeNewCipherState(overlaySuite, fuzzKey, 0)}
		buf := make([]byte, 512)
		for range 1 + len(in) { // each read consumes at least 2 bytes or ends
			_, err := c.Read(buf)
			if err == nil {
				continue
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
				t.Fatalf("read error %v", err)
			}
			return
		}
		t.Fatal("reads did not end")
	})
}
