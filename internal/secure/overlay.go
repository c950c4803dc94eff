package secure

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/flynn/noise"
	"github.com/peerline/peerline/internal/sig"
)

// The overlay's control connections (client to supernode, supernode to supernode, a
// supernode's dial-back to a client) run the Noise protocol framework's XX handshake,
// Noise_XX_25519_ChaChaPoly_SHA256 (github.com/flynn/noise, as Nebula does), not TLS. A
// layer of a thousand supernodes and a hundred thousand clients holds hundreds of
// thousands of these connections, and what crypto/tls keeps per end is what the
// overlay pays most for: record and handshake buffers that keep the size of the
// largest record seen for the connection's life (golang/go#42035), AES-GCM key
// schedules and tables, the peer's parsed certificate. A Noise channel keeps two
// ChaCha20-Poly1305 keys and nothing between messages:
//
//	go test ./internal/rpc -run '^$' -bench IdleConn -benchtime 4000x
//
// measures both (per connection, both ends, after one call each way; the 2-core
// machine of the README's figures): TLS 1.3 15.8 KB of heap, 21.6 KB once an answer of
// 200 supernodes has passed; Noise XX 6.4 and 5.5 KB; 8.2 KB of goroutine stack either
// way. The set-up costs about the same CPU (0.82 against 0.80 ms for both ends, in one
// run beside another load) although the XX pattern takes four X25519 operations per
// end where TLS takes two: dh.go makes them cheaper than crypto/ecdh's (with
// noise.DH25519 the Noise set-up took 1.45 ms, TLS 0.95, in a run alone).
//
// # Identity
//
// Each side has a static X25519 key for the process (NewOverlayIdentity) and proves its
// Ed25519 identity key, the one credentials name, as libp2p's Noise channel does: the
// handshake payload carries the identity key and its signature over the static key
// ("peerline overlay static key:" || static). Noise's DH with the static key proves that
// the peer holds the static key, the signature that the identity key vouches for it; a
// copied payload is useless without the static private key. The signature is made once
// per identity, not once per connection, so a handshake costs each side an X25519 key
// pair, three X25519 operations and one Ed25519 verification.
//
// # Wire format
//
// Every Noise message, the three of the handshake and each one after, is a 2-byte
// big-endian length and that many bytes (at most 65,535, Noise's limit). The prologue
// names the protocol ("peerline/1 overlay"), so that a peer speaking another version
// fails at the first authenticated message. Writes longer than a message carries are
// split; the reader sees one byte stream, as over TLS.

// overlayPrologue is mixed into the handshake: both ends must speak the same protocol.
const overlayPrologue = "peerline/1 overlay"

// staticContext prefixes what an identity key signs: its static Noise key.
const staticContext = "peerline overlay static key:"

// Noise limits.
const (
	maxMessage = 65535 // Noise's maximum message, tag included
	tagLen     = 16    // ChaCha20-Poly1305
	maxPlain   = maxMessage - tagLen
	payloadLen = 1 + ed25519.PublicKeySize + ed25519.SignatureSize // version, key, signature
	payloadV1  = 1
	// maxHandshakeMessage bounds each handshake message: the largest, the responder's,
	// is 32 + 48 + payloadLen + 16 = 193 bytes.
	maxHandshakeMessage = 512
)

var overlaySuite = noise.NewCipherSuite(dh25519{}, noise.CipherChaChaPoly, noise.HashSHA256)

// Errors of the overlay channel.
var (
	// ErrHandshake: the peer's handshake did not parse or did not authenticate.
	ErrHandshake = errors.New("secure: overlay handshake failed")
	// ErrCorrupt: a message after the handshake did not authenticate (tampered with,
	// reordered, or not from the peer); the connection is unusable after it.
	ErrCorrupt = errors.New("secure: overlay message failed authentication")
)

// OverlayIdentity is a node's key material for overlay connections: its Ed25519 identity
// key and a static X25519 key signed by it. It is safe for concurrent use.
type OverlayIdentity struct {
	pub     ed25519.PublicKey
	static  noise.DHKey
	payload []byte                     // payloadV1 || pub || signature over the static key
	tickets atomic.Pointer[TicketKeys] // the responder resumes these tickets' sessions; nil = none
}

// NewOverlayIdentity makes the overlay identity of key, with a fresh static key.
func NewOverlayIdentity(key ed25519.PrivateKey) (*OverlayIdentity, error) {
	static, err := dh25519{}.GenerateKeypair(rand.Reader)
	if err != nil {
		return nil, err
	}
	pub := key.Public().(ed25519.PublicKey)
	p := make([]byte, 0, payloadLen)
	p = append(p, payloadV1)
	p = append(p, pub...)
	p = append(p, sig.Sign(key, staticSigned(static.Public))...)
	return &OverlayIdentity{pub: pub, static: static, payload: p}, nil
}

// PublicKey returns the identity key.
func (id *OverlayIdentity) PublicKey() ed25519.PublicKey { return id.pub }

func staticSigned(static []byte) []byte {
	return append([]byte(staticContext), static...)
}

// peerIdentity checks a handshake payload against the static key the handshake proved
// and returns the identity key it names.
func peerIdentity(payload, static []byte) (ed25519.PublicKey, error) {
	if len(payload) != payloadLen || payload[0] != payloadV1 {
		return nil, fmt.Errorf("%w: identity payload of %d bytes (version %d), want %d (version %d)",
			ErrHandshake, len(payload), firstByte(payload), payloadLen, payloadV1)
	}
	pub := ed25519.PublicKey(append([]byte(nil), payload[1:1+ed25519.PublicKeySize]...))
	if !sig.Verify(pub, staticSigned(static), payload[1+ed25519.PublicKeySize:]) {
		return nil, fmt.Errorf("%w: identity key did not sign the static key", ErrHandshake)
	}
	return pub, nil
}

func firstByte(b []byte) int {
	if len(b) == 0 {
		return -1
	}
	return int(b[0])
}

// DialOverlay opens an overlay connection to addr over d and completes the handshake
// within ctx. verify, if non-nil, is given the peer's identity key and may reject it.
func (id *OverlayIdentity) DialOverlay(ctx context.Context, d Dialer, addr string, verify func(ed25519.PublicKey) error) (*OverlayConn, error) {
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c, err := id.Client(ctx, raw, verify)
	if err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

// Client runs the initiator's side of the handshake on nc within ctx. On failure the
// caller closes nc.
func (id *OverlayIdentity) Client(ctx context.Context, nc net.Conn, verify func(ed25519.PublicKey) error) (*OverlayConn, error) {
	return handshakeOn(ctx, func() (*OverlayConn, error) { return id.handshake(nc, true, verify, nil) }, nc)
}

// AcceptOverlay runs the responder's side of the handshake on an accepted connection
// within ctx and HandshakeTimeout, and returns the connection; its PeerKey is the key the
// peer proved it holds. On failure the caller closes nc.
func (id *OverlayIdentity) AcceptOverlay(ctx context.Context, nc net.Conn) (*OverlayConn, error) {
	hctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
	defer cancel()
	return handshakeOn(hctx, func() (*OverlayConn, error) { return id.respond(nc) }, nc)
}

// handshakeOn runs hs on a goroutine of its own, for the reason handshake gives, with
// nc's deadline following ctx.
func handshakeOn(ctx context.Context, hs func() (*OverlayConn, error), nc net.Conn) (*OverlayConn, error) {
	if dl, ok := ctx.Deadline(); ok {
		nc.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	type result struct {
		c   *OverlayConn
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := hs()
		done <- result{c, err}
	}()
	r := <-done
	if !stop() && r.err == nil {
		r.err = ctx.Err() // ctx ended just as the handshake finished: nc's deadline is past
	}
	if r.err != nil {
		if ctx.Err() != nil && errors.Is(r.err, os.ErrDeadlineExceeded) {
			r.err = fmt.Errorf("%w: %w", ErrHandshake, ctx.Err())
		}
		return nil, r.err
	}
	nc.SetDeadline(time.Time{})
	return r.c, nil
}

// handshake runs the XX handshake on nc. The responder is given the initiator's first
// message, which respond has read.
func (id *OverlayIdentity) handshake(nc net.Conn, initiator bool, verify func(ed25519.PublicKey) error, first []byte) (*OverlayConn, error) {
	hs, err := noise.NewHandshakeState(noise.Config{
		CipherSuite:   overlaySuite,
		Pattern:       noise.HandshakeXX,
		Initiator:     initiator,
		Prologue:      []byte(overlayPrologue),
		StaticKeypair: id.static,
	})
	if err != nil {
		return nil, err
	}
	var buf [2 + maxHandshakeMessage]byte
	send := func(payload []byte) (*noise.CipherState, *noise.CipherState, error) {
		msg, c1, c2, err := hs.WriteMessage(buf[:2], payload)
		if err != nil {
			return nil, nil, err
		}
		binary.BigEndian.PutUint16(msg, uint16(len(msg)-2))
		_, err = nc.Write(msg)
		return c1, c2, err
	}
	recv := func() ([]byte, *noise.CipherState, *noise.CipherState, error) {
		msg, err := readHandshakeMessage(nc, buf[:])
		if err != nil {
			return nil, nil, nil, err
		}
		payload, c1, c2, err := hs.ReadMessage(nil, msg)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("%w: %v", ErrHandshake, err)
		}
		return payload, c1, c2, nil
	}
	var peer ed25519.PublicKey
	var tx, rx *noise.CipherState
	if initiator {
		// -> e; <- e, ee, s, es, payload; -> s, se, payload
		if _, _, err := send(nil); err != nil {
			return nil, err
		}
		payload, _, _, err := recv()
		if err != nil {
			return nil, err
		}
		if peer, err = peerIdentity(payload, hs.PeerStatic()); err != nil {
			return nil, err
		}
		if verify != nil {
			if err := verify(peer); err != nil {
				return nil, err
			}
		}
		c1, c2, err := send(id.payload)
		if err != nil {
			return nil, err
		}
		tx, rx = c1, c2
	} else {
		payload, _, _, err := hs.ReadMessage(nil, first)
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrHandshake, err)
		}
		if len(payload) != 0 {
			return nil, fmt.Errorf("%w: payload in the first message", ErrHandshake)
		}
		if _, _, err := send(id.payload); err != nil {
			return nil, err
		}
		payload, c1, c2, err := recv()
		if err != nil {
			return nil, err
		}
		if c1 == nil || c2 == nil {
			return nil, fmt.Errorf("%w: handshake did not complete", ErrHandshake)
		}
		if peer, err = peerIdentity(payload, hs.PeerStatic()); err != nil {
			return nil, err
		}
		tx, rx = c2, c1
	}
	return &OverlayConn{nc: nc, peer: peer, tx: tx, rx: rx, binding: hs.ChannelBinding()}, nil
}

// readHandshakeMessage reads one length-prefixed handshake message into buf.
func readHandshakeMessage(r io.Reader, buf []byte) ([]byte, error) {
	if _, err := io.ReadFull(r, buf[:2]); err != nil {
		return nil, err
	}
	n := int(binary.BigEndian.Uint16(buf[:2]))
	if n > maxHandshakeMessage {
		return nil, fmt.Errorf("%w: handshake message of %d bytes (at most %d)", ErrHandshake, n, maxHandshakeMessage)
	}
	if _, err := io.ReadFull(r, buf[:n]); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return buf[:n], nil
}

// OverlayConn is an overlay connection after its handshake: a net.Conn whose bytes are
// encrypted and authenticated both ways. Between messages it holds no buffer.
type OverlayConn struct {
	nc      net.Conn
	peer    ed25519.PublicKey
	binding []byte // the handshake's hash, from which ResumptionSecret is drawn
	resumed bool   // the handshake resumed a ticket's session

	rmu  sync.Mutex // rmu protects the reading side: rx, hdr, rbuf, rpool, rerr
	rx   *noise.CipherState
	hdr  [2]byte
	rbuf []byte  // plaintext not yet read, in *rpool
	rpl  *[]byte // the pooled buffer rbuf is in; nil when none is held
	rerr error   // once a message was cut or failed, every later read fails

	wmu  sync.Mutex // wmu protects the writing side: tx, werr
	tx   *noise.CipherState
	werr error
}

// PeerKey returns the identity key the peer proved it holds.
func (c *OverlayConn) PeerKey() ed25519.PublicKey { return c.peer }

// Buffers for one message. A message is read into a buffer of the smallest class that
// holds it and released as soon as its plaintext has been read: control messages are
// small, and a blocked reader holds none.
var (
	smallBufs = sync.Pool{New: func() any { b := make([]byte, 2048); return &b }}
	largeBufs = sync.Pool{New: func() any { b := make([]byte, 2+maxMessage); return &b }}
)

func getBuf(n int) *[]byte {
	if n <= 2048 {
		return smallBufs.Get().(*[]byte)
	}
	return largeBufs.Get().(*[]byte)
}

func putBuf(b *[]byte) {
	if cap(*b) <= 2048 {
		smallBufs.Put(b)
	} else {
		largeBufs.Put(b)
	}
}

// Read implements net.Conn.
func (c *OverlayConn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	for len(c.rbuf) == 0 {
		if c.rerr != nil {
			return 0, c.rerr
		}
		if err := c.readMessage(); err != nil {
			return 0, err
		}
	}
	n := copy(p, c.rbuf)
	c.rbuf = c.rbuf[n:]
	if len(c.rbuf) == 0 {
		putBuf(c.rpl)
		c.rpl, c.rbuf = nil, nil
	}
	return n, nil
}

// readMessage reads and decrypts the next message into c.rbuf. A deadline that passes
// before the message's first byte leaves the connection usable, as on a net.Conn; any
// other failure is kept for every later read.
func (c *OverlayConn) readMessage() error {
	n, err := io.ReadFull(c.nc, c.hdr[:])
	if err != nil {
		if n == 0 && (errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, io.EOF)) {
			return err
		}
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		c.rerr = err
		return err
	}
	size := int(binary.BigEndian.Uint16(c.hdr[:]))
	if size < tagLen {
		c.rerr = fmt.Errorf("%w: message of %d bytes, shorter than its tag", ErrCorrupt, size)
		return c.rerr
	}
	b := getBuf(size)
	msg := (*b)[:size]
	if _, err := io.ReadFull(c.nc, msg); err != nil {
		putBuf(b)
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		c.rerr = err
		return err
	}
	plain, err := c.rx.Decrypt(msg[:0], nil, msg)
	if err != nil {
		putBuf(b)
		c.rerr = fmt.Errorf("%w: %v", ErrCorrupt, err)
		return c.rerr
	}
	if len(plain) == 0 {
		putBuf(b)
		return nil
	}
	c.rbuf, c.rpl = plain, b
	return nil
}

// Write implements net.Conn: p goes out as one message, or as several if it is longer
// than one carries.
func (c *OverlayConn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.werr != nil {
		return 0, c.werr
	}
	written := 0
	for len(p) > 0 {
		chunk := p[:min(len(p), maxPlain)]
		b := getBuf(2 + len(chunk) + tagLen)
		out, err := c.tx.Encrypt((*b)[:2], nil, chunk)
		if err != nil {
			putBuf(b)
			c.werr = err
			return written, err
		}
		binary.BigEndian.PutUint16(out, uint16(len(out)-2))
		_, err = c.nc.Write(out)
		putBuf(b)
		if err != nil {
			// A message cut by a deadline would desynchronise the stream: no write
			// after it may go out.
			c.werr = err
			return written, err
		}
		written += len(chunk)
		p = p[len(chunk):]
	}
	return written, nil
}

// Close implements net.Conn.
func (c *OverlayConn) Close() error { return c.nc.Close() }

// LocalAddr implements net.Conn.
func (c *OverlayConn) LocalAddr() net.Addr { return c.nc.LocalAddr() }

// RemoteAddr implements net.Conn.
func (c *OverlayConn) RemoteAddr() net.Addr { return c.nc.RemoteAddr() }

// SetDeadline implements net.Conn.
func (c *OverlayConn) SetDeadline(t time.Time) error { return c.nc.SetDeadline(t) }

// SetReadDeadline implements net.Conn.
func (c *OverlayConn) SetReadDeadline(t time.Time) error { return c.nc.SetReadDeadline(t) }

// SetWriteDeadline implements net.Conn.
func (c *OverlayConn) SetWriteDeadline(t time.Time) error { return c.nc.SetWriteDeadline(t) }
