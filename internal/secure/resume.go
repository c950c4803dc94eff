package secure

import (
	"context"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	"github.com/flynn/noise"
	"golang.org/x/crypto/chacha20poly1305"
)

// # Resumption
//
// A client that restarts (a mass reboot) attaches again to the supernode it left, and an
// XX handshake costs each end three X25519 operations and an Ed25519 verification:
// together a third of the CPU that a reboot storm of 100,000 clients takes. A session
// resumes as TLS 1.3's does with a PSK and (EC)DHE (RFC 8446, psk_dhe_ke):
//
//   - Once a connection is up, the responder may give the initiator a ticket
//     (TicketKeys.Issue, sent inside the channel: a supernode puts it in its AttachOK).
//     The ticket is sealed with a key only the responder's process holds
//     (XChaCha20-Poly1305) and carries the initiator's identity key, the connection's
//     resumption secret (drawn from the handshake hash, which both ends know:
//     OverlayConn.ResumptionSecret) and an expiry.
//   - To resume, the initiator sends the ticket in the clear with the first message of
//     Noise_NNpsk0_25519_ChaChaPoly_SHA256, the secret as the PSK and the ticket mixed
//     into the prologue:
//
//     -> ticket, psk, e
//     <- e, ee
//
//     One X25519 operation a side, no static keys, no signature; the DH of fresh
//     ephemeral keys keeps the session's keys secret even if the ticket key and the PSK
//     leak later. Only the ticket's issuer can open it and so know the PSK: a reply that
//     decrypts proves the responder, a first message that decrypts the initiator
//     (whoever holds the secret is the identity the ticket names). A replayed first
//     message gets an answer its sender cannot use: nothing is accepted before the
//     initiator's first transport message, which needs the ephemeral key's private half.
//   - A responder that cannot open the ticket (another process since, or the ticket
//     expired) answers with a one-byte refusal and the XX handshake follows on the same
//     connection, one round trip later. One that does not know tickets (a version from
//     before them) closes the connection: the initiator forgets the ticket and dials
//     again with XX.
//
// A first message of XX is 32 bytes; a resuming one is resumeMsgLen, with the version
// byte first.

const (
	resumePrologue = "peerline/1 overlay resume"
	resumeV1       = 1
	ticketV1       = 1
	refusal        = 0 // the one byte of the refusal

	ticketKeyIDLen = 8
	ticketPlainLen = 1 + ed25519.PublicKeySize + resumeSecretLen + 8 // version, identity, secret, expiry
	// TicketLen is the size of a ticket: key ID, nonce, sealed plaintext.
	TicketLen       = ticketKeyIDLen + chacha20poly1305.NonceSizeX + ticketPlainLen + chacha20poly1305.Overhead
	resumeSecretLen = 32
	resumeMsgLen    = 1 + TicketLen + 32 + tagLen // version, ticket, e, the empty payload's tag

	// TicketLifetime is how long a ticket resumes a session; the keys that seal them
	// change every half of it and are kept for one and a half.
	TicketLifetime = 24 * time.Hour
)

var resumeSuite = overlaySuite

// ErrTicketRefused is what ResumeOverlay returns when the responder closed the
// connection on a resuming handshake, with the EOF or reset it saw: a version that
// does not know tickets does so, and so does a server that sheds connections at accept.
var ErrTicketRefused = errors.New("secure: the connection closed on a session ticket")

// Resumption is what an initiator keeps of a session to resume it: the ticket, the
// secret it seals, and the identity key of the responder that issued it.
type Resumption struct {
	Ticket []byte
	Secret []byte
	Peer   ed25519.PublicKey
}

// ResumptionSecret returns the secret a ticket for this connection seals: an HMAC of
// the handshake hash, which both ends hold and nobody else.
func (c *OverlayConn) ResumptionSecret() []byte {
	m := hmac.New(sha256.New, c.binding)
	m.Write([]byte("peerline overlay resumption secret"))
	return m.Sum(nil)
}

// Resumed reports whether the connection resumed a ticket's session.
func (c *OverlayConn) Resumed() bool { return c.resumed }

// TicketKeys seals and opens the tickets of one process. It is safe for concurrent use.
type TicketKeys struct {
	now func() time.Time

	mu   sync.Mutex  // mu protects keys
	keys []ticketKey // newest first
}

type ticketKey struct {
	id      [ticketKeyIDLen]byte
	seal    func(dst, nonce, plain, ad []byte) []byte
	open    func(dst, nonce, sealed, ad []byte) ([]byte, error)
	created time.Time
}

// NewTicketKeys returns the ticket keys of a process whose clock is now (nil:
// time.Now).
func NewTicketKeys(now func() time.Time) *TicketKeys {
	if now == nil {
		now = time.Now
	}
	return &TicketKeys{now: now}
}

// current returns the newest key, made anew when the newest is half a lifetime old,
// and drops keys older than one and a half lifetimes.
func (k *TicketKeys) current(now time.Time) (ticketKey, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if len(k.keys) == 0 || now.Sub(k.keys[0].created) >= TicketLifetime/2 || now.Before(k.keys[0].created) {
		var raw [chacha20poly1305.KeySize]byte
		var id [ticketKeyIDLen]byte
		if _, err := rand.Read(raw[:]); err != nil {
			return ticketKey{}, err
		}
		if _, err := rand.Read(id[:]); err != nil {
			return ticketKey{}, err
		}
		k.addLocked(raw, id, now)
	}
	keep := k.keys[:1]
	for _, t := range k.keys[1:] {
		if now.Sub(t.created) < TicketLifetime*3/2 {
			keep = append(keep, t)
		}
	}
	k.keys = keep
	return k.keys[0], nil
}

// addLocked makes raw, named id, the newest key.
func (k *TicketKeys) addLocked(raw [chacha20poly1305.KeySize]byte, id [ticketKeyIDLen]byte, now time.Time) {
	a, _ := chacha20poly1305.NewX(raw[:]) // fails only on a key of another size
	k.keys = append([]ticketKey{{id: id, seal: a.Seal, open: a.Open, created: now}}, k.keys...)
}

// byID returns the key whose ID a ticket names.
func (k *TicketKeys) byID(id []byte) (ticketKey, bool) {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, t := range k.keys {
		if string(t.id[:]) == string(id) {
			return t, true
		}
	}
	return ticketKey{}, false
}

// Issue returns a ticket with which c's initiator resumes its session with this
// process: it names c's peer and seals c's resumption secret.
func (k *TicketKeys) Issue(c *OverlayConn) ([]byte, error) {
	now := k.now()
	t, err := k.current(now)
	if err != nil {
		return nil, err
	}
	plain := make([]byte, 0, ticketPlainLen)
	plain = append(plain, ticketV1)
	plain = append(plain, c.peer...)
	plain = append(plain, c.ResumptionSecret()...)
	plain = binary.BigEndian.AppendUint64(plain, uint64(now.Add(TicketLifetime).Unix()))
	out := make([]byte, ticketKeyIDLen+chacha20poly1305.NonceSizeX, TicketLen)
	copy(out, t.id[:])
	if _, err := rand.Read(out[ticketKeyIDLen:]); err != nil {
		return nil, err
	}
	return t.seal(out, out[ticketKeyIDLen:], plain, out[:ticketKeyIDLen]), nil
}

// open returns the identity and the secret a ticket sealed, if this process sealed it
// and it has not expired.
func (k *TicketKeys) open(ticket []byte) (ed25519.PublicKey, []byte, error) {
	if len(ticket) != TicketLen {
		return nil, nil, fmt.Errorf("ticket of %d bytes, want %d", len(ticket), TicketLen)
	}
	t, ok := k.byID(ticket[:ticketKeyIDLen])
	if !ok {
		return nil, nil, errors.New("ticket sealed by a key this process does not hold")
	}
	nonce := ticket[ticketKeyIDLen : ticketKeyIDLen+chacha20poly1305.NonceSizeX]
	plain, err := t.open(nil, nonce, ticket[ticketKeyIDLen+chacha20poly1305.NonceSizeX:], ticket[:ticketKeyIDLen])
	if err != nil {
		return nil, nil, errors.New("ticket failed authentication")
	}
	if len(plain) != ticketPlainLen || plain[0] != ticketV1 {
		return nil, nil, errors.New("ticket of another version")
	}
	exp := time.Unix(int64(binary.BigEndian.Uint64(plain[ticketPlainLen-8:])), 0)
	if !k.now().Before(exp) {
		return nil, nil, errors.New("ticket expired")
	}
	peer := ed25519.PublicKey(plain[1 : 1+ed25519.PublicKeySize])
	return peer, plain[1+ed25519.PublicKeySize : 1+ed25519.PublicKeySize+resumeSecretLen], nil
}

// ResumeTickets makes the responder's side of id resume the sessions whose tickets k
// sealed. Without it every resuming initiator is refused (and goes on with XX).
func (id *OverlayIdentity) ResumeTickets(k *TicketKeys) { id.tickets.Store(k) }

// resumeConfig is the Noise configuration of a resuming handshake with ticket.
func resumeConfig(initiator bool, ticket, secret []byte) noise.Config {
	return noise.Config{
		CipherSuite:           resumeSuite,
		Pattern:               noise.HandshakeNN,
		Initiator:             initiator,
		Prologue:              append([]byte(resumePrologue), ticket...),
		PresharedKey:          secret,
		PresharedKeyPlacement: 0,
	}
}

// respond runs the responder's side: the XX handshake, or a resumption when the first
// message carries a ticket.
func (id *OverlayIdentity) respond(nc net.Conn) (*OverlayConn, error) {
	var buf [2 + maxHandshakeMessage]byte
	first, err := readHandshakeMessage(nc, buf[:])
	if err != nil {
		return nil, err
	}
	if len(first) == resumeMsgLen && first[0] == resumeV1 {
		c, err := id.resumeRespond(nc, first)
		if c != nil || err != nil {
			return c, err
		}
		// Refused: XX follows on this connection.
		if _, err := nc.Write([]byte{0, 1, refusal}); err != nil {
			return nil, err
		}
		if first, err = readHandshakeMessage(nc, buf[:]); err != nil {
			return nil, err
		}
	}
	return id.handshake(nc, false, nil, first)
}

// resumeRespond answers a resuming first message: a connection, an error if the
// handshake failed, or neither if the ticket is refused.
func (id *OverlayIdentity) resumeRespond(nc net.Conn, first []byte) (*OverlayConn, error) {
	k := id.tickets.Load()
	if k == nil {
		return nil, nil
	}
	ticket := first[1 : 1+TicketLen]
	peer, secret, err := k.open(ticket)
	if err != nil {
		return nil, nil
	}
	hs, err := noise.NewHandshakeState(resumeConfig(false, ticket, secret))
	if err != nil {
		return nil, err
	}
	if payload, _, _, err := hs.ReadMessage(nil, first[1+TicketLen:]); err != nil || len(payload) != 0 {
		return nil, fmt.Errorf("%w: resuming message did not authenticate", ErrHandshake)
	}
	var out [2 + maxHandshakeMessage]byte
	msg, c1, c2, err := hs.WriteMessage(out[:2], nil)
	if err != nil {
		return nil, err
	}
	if c1 == nil || c2 == nil {
		return nil, fmt.Errorf("%w: resumption did not complete", ErrHandshake)
	}
	binary.BigEndian.PutUint16(msg, uint16(len(msg)-2))
	if _, err := nc.Write(msg); err != nil {
		return nil, err
	}
	return &OverlayConn{nc: nc, peer: append(ed25519.PublicKey(nil), peer...), tx: c2, rx: c1,
		binding: hs.ChannelBinding(), resumed: true}, nil
}

// ResumeOverlay opens an overlay connection to addr over d that resumes r's session,
// within ctx. A refused ticket gives a connection after a full XX handshake (Resumed
// is false, and the peer's key is checked with verify as DialOverlay does); a resumed
// one has r.Peer as its PeerKey. ErrTicketRefused means the peer closed the
// connection on the ticket: dial again with DialOverlay.
func (id *OverlayIdentity) ResumeOverlay(ctx context.Context, d Dialer, addr string, r Resumption, verify func(ed25519.PublicKey) error) (*OverlayConn, error) {
	if len(r.Ticket) != TicketLen || len(r.Secret) != resumeSecretLen || len(r.Peer) != ed25519.PublicKeySize {
		return nil, errors.New("secure: malformed resumption")
	}
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	c, err := handshakeOn(ctx, func() (*OverlayConn, error) { return id.resumeInitiate(raw, r, verify) }, raw)
	if err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

func (id *OverlayIdentity) resumeInitiate(nc net.Conn, r Resumption, verify func(ed25519.PublicKey) error) (*OverlayConn, error) {
	hs, err := noise.NewHandshakeState(resumeConfig(true, r.Ticket, r.Secret))
	if err != nil {
		return nil, err
	}
	var buf [2 + maxHandshakeMessage]byte
	msg := append(buf[:2], resumeV1)
	msg = append(msg, r.Ticket...)
	if msg, _, _, err = hs.WriteMessage(msg, nil); err != nil {
		return nil, err
	}
	binary.BigEndian.PutUint16(msg, uint16(len(msg)-2))
	if _, err := nc.Write(msg); err != nil {
		return nil, err
	}
	reply, err := readHandshakeMessage(nc, buf[:])
	if err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) {
			return nil, fmt.Errorf("%w: %w", ErrTicketRefused, err)
		}
		return nil, err
	}
	if len(reply) == 1 && reply[0] == refusal {
		return id.handshake(nc, true, verify, nil)
	}
	payload, c1, c2, err := hs.ReadMessage(nil, reply)
	if err != nil || c1 == nil || c2 == nil || len(payload) != 0 {
		return nil, fmt.Errorf("%w: resumed reply did not authenticate", ErrHandshake)
	}
	if verify != nil {
		if err := verify(r.Peer); err != nil {
			return nil, err
		}
	}
	return &OverlayConn{nc: nc, peer: append(ed25519.PublicKey(nil), r.Peer...), tx: c1, rx: c2,
		binding: hs.ChannelBinding(), resumed: true}, nil
}
