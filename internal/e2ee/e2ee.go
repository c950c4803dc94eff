// Package e2ee seals instant messages end to end, so that the supernodes relaying them
// learn only the routing information they are handed beside the envelope (the recipient's
// name), and the recipient learns for certain who wrote.
//
// It is an ECIES-style construction: a fresh X25519 key per message agrees a secret with
// the recipient's published box key; HKDF-SHA256 turns it into a one-time
// XChaCha20-Poly1305 key. Inside the ciphertext travels the sender's credential and an
// Ed25519 signature by the sender's identity key, so that the sender is hidden from the
// relays and proven to the recipient. The package does no I/O apart from the box key file.
//
// Envelope (what the supernodes see):
//
//	version    1   0x01
//	ephPub     32  ephemeral X25519 public key, fresh per message
//	nonce      24  XChaCha20-Poly1305 nonce, random
//	sealed     n   XChaCha20-Poly1305(key, nonce, content, ad = version||ephPub||nonce),
//	               n = len(content) + 16; the whole envelope is at most 8 KiB
//
//	key = HKDF-SHA256(secret = X25519(eph, recipientBox), salt = none,
//	                  info = "peerline e2ee v1 key\x00" || ephPub || recipientBox)[:32]
//
// Content (what only the recipient sees; integers big endian):
//
//	credLen    2   119..182
//	cred       credLen  the sender's credential (package identity's layout)
//	fromLen    1   1..64
//	from       fromLen  sender's user name; must equal the credential's name
//	toLen      1   1..64
//	to         toLen    recipient's user name
//	sent       8   unix milliseconds, two's complement
//	kind       1   0 text message, 1 call signalling (package callsig's encoding)
//	textLen    2   0..4096
//	text       textLen  UTF-8 by convention; not checked
//	sig        64  Ed25519 by the credential's key over
//	               "peerline e2ee v1 message\x00" || recipientBox || credLen..text
//	pad        zero bytes up to the next multiple of 256 of the content's length
//
// Why it is built this way:
//
//   - The ephemeral key makes every message's AEAD key single-use, so any nonce would
//     do. The nonce is nevertheless random and 24 bytes (XChaCha20) rather than derived
//     from the key: a derived nonce repeats whenever the key does, a random one only by
//     chance (2^-192 per pair). If a future change ever reused an ephemeral key, say
//     across a batch of messages to one recipient, confidentiality and integrity would
//     survive. It costs 24 bytes per message. (A broken RNG would repeat both, and
//     nothing here can help with that.)
//   - Binding ephPub and recipientBox into the HKDF info, and the header into the AEAD's
//     additional data, makes every header byte authenticated: changing any byte of the
//     envelope makes Open fail.
//   - The signature covers the recipient's box key and name. A recipient who decrypts a
//     message cannot re-encrypt it to a third party as if it had been written to them;
//     the signature no longer verifies. Senders are authenticated by signature, not by a
//     static Diffie-Hellman key, so a message is not deniable: the recipient can prove
//     to others that the sender signed it.
//   - Low-order recipient or ephemeral keys would give an all-zero, public shared secret;
//     both Seal and Open refuse them.
//   - Padding to 256 bytes hides the text's exact length from the relays; they still see
//     its length to within 256 bytes, and when and how often messages flow.
//   - Every length is bounded, and Open rejects an envelope of impossible length before
//     doing any public-key work, so junk costs a relay or a recipient little.
//
// Open does not detect replays: a relay can deliver the same envelope twice, and the
// recipient can re-encrypt a message to itself. Callers that care drop duplicates, for
// example by (From, Sent) within the credential's lifetime.
package e2ee

import (
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"io"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
	"golang.org/x/crypto/hkdf"

	"github.com/peerline/peerline/internal/identity"
	"github.com/peerline/peerline/internal/sig"
	"github.com/peerline/peerline/internal/x25519"
)

// Version is the envelope version this package writes and reads.
const Version = 1

// Limits.
const (
	// MaxTextLen bounds Message.Text, in bytes.
	MaxTextLen = 4096
	// MaxEnvelopeLen bounds an envelope; Open rejects anything longer unread.
	MaxEnvelopeLen = 8 << 10
)

const (
	kdfContext = "peerline e2ee v1 key\x00"
	sigContext = "peerline e2ee v1 message\x00"

	nonceLen  = chacha20poly1305.NonceSizeX
	headerLen = 1 + x25519.PointSize + nonceLen
	tagLen    = chacha20poly1305.Overhead
	padBlock  = 256

	// Credential bounds, from package identity's layout: magic, kind, nameLen, name,
	// pubkey, issued, expires, sig.
	minCredLen = 4 + 1 + 1 + 1 + ed25519.PublicKeySize + 8 + 8 + ed25519.SignatureSize
	maxCredLen = minCredLen - 1 + identity.MaxNameLen

	maxNameLen = identity.MaxNameLen

	// minContentLen and maxContentLen bound the content before padding.
	minContentLen = 2 + minCredLen + 1 + 1 + 1 + 1 + 8 + 1 + 2 + ed25519.SignatureSize
	maxContentLen = 2 + maxCredLen + 1 + maxNameLen + 1 + maxNameLen + 8 + 1 + 2 + MaxTextLen + ed25519.SignatureSize

	minEnvelopeLen = headerLen + (minContentLen+padBlock-1)/padBlock*padBlock + tagLen
	maxEnvelopeLen = headerLen + (maxContentLen+padBlock-1)/padBlock*padBlock + tagLen

	// sigPrefixLen is the length of what the signature covers before the content.
	sigPrefixLen = len(sigContext) + x25519.PointSize
)

// The longest envelope Seal can produce must fit the limit Open enforces.
var _ [MaxEnvelopeLen - maxEnvelopeLen]struct{}

// Kind says what a message's text is.
type Kind uint8

// Kinds of message.
const (
	KindText Kind = 0 // an instant message for the user
	KindCall Kind = 1 // call signalling, for the client itself
)

// Message is the plaintext content.
type Message struct {
	From string    // sender's user name, 1..64 bytes, as in their credential
	To   string    // recipient's user name, 1..64 bytes
	Sent time.Time // carried at millisecond precision; Open returns it in UTC
	Kind Kind      // KindText or KindCall
	Text string    // at most MaxTextLen bytes
}

func (m *Message) validate() error {
	if len(m.From) == 0 || len(m.From) > maxNameLen {
		return fmt.Errorf("%w: sender name is %d bytes, want 1..%d", ErrInvalidMessage, len(m.From), maxNameLen)
	}
	if len(m.To) == 0 || len(m.To) > maxNameLen {
		return fmt.Errorf("%w: recipient name is %d bytes, want 1..%d", ErrInvalidMessage, len(m.To), maxNameLen)
	}
	if m.Kind > KindCall {
		return fmt.Errorf("%w: unknown kind %d", ErrInvalidMessage, m.Kind)
	}
	if len(m.Text) > MaxTextLen {
		return fmt.Errorf("%w: text is %d bytes, limit %d; split it", ErrInvalidMessage, len(m.Text), MaxTextLen)
	}
	return nil
}

// Seal encrypts m for the recipient's box key and signs it with the sender's identity
// key; senderCred is the sender's credential bytes (carried inside the ciphertext so that
// only the recipient learns who wrote). The credential must be a user credential for
// senderKey's public key and name m.From; its expiry is the recipient's to judge.
func Seal(m Message, senderKey ed25519.PrivateKey, senderCred []byte, recipientBox [32]byte) ([]byte, error) {
	if err := m.validate(); err != nil {
		return nil, err
	}
	if len(senderKey) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: sender key is %d bytes, want %d", ErrInvalidMessage, len(senderKey), ed25519.PrivateKeySize)
	}
	// Catch the sender's own mistakes here: the recipient would reject them anyway, and
	// say less about why.
	c, err := identity.Parse(senderCred)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadSender, err)
	}
	switch {
	case c.Kind != identity.KindUser:
		return nil, fmt.Errorf("%w: credential is a %s credential, want user", ErrBadSender, c.Kind)
	case c.Name != m.From:
		return nil, fmt.Errorf("%w: credential names %q, message is from %q", ErrBadSender, c.Name, m.From)
	case !c.PubKey.Equal(senderKey.Public()):
		return nil, fmt.Errorf("%w: %w", ErrBadSender, identity.ErrKeyMismatch)
	}
	return seal(signContent(&m, senderCred, senderKey, &recipientBox), &recipientBox)
}

// signContent encodes and signs the content, padded. It checks nothing, so that tests can
// build forgeries with it.
func signContent(m *Message, cred []byte, key ed25519.PrivateKey, recipientBox *[32]byte) []byte {
	n := 2 + len(cred) + 1 + len(m.From) + 1 + len(m.To) + 8 + 1 + 2 + len(m.Text) + ed25519.SignatureSize
	// Zeroed by make: the padding past the signature needs no writing.
	b := make([]byte, 0, sigPrefixLen+padded(n))
	b = append(b, sigContext...)
	b = append(b, recipientBox[:]...)
	b = appendFields(b, m, cred)
	b = append(b, sig.Sign(key, b)...)
	return b[sigPrefixLen:cap(b)]
}

// appendFields appends credLen..text.
func appendFields(b []byte, m *Message, cred []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(cred)))
	b = append(b, cred...)
	b = append(b, byte(len(m.From)))
	b = append(b, m.From...)
	b = append(b, byte(len(m.To)))
	b = append(b, m.To...)
	b = binary.BigEndian.AppendUint64(b, uint64(m.Sent.UnixMilli()))
	b = append(b, byte(m.Kind))
	b = binary.BigEndian.AppendUint16(b, uint16(len(m.Text)))
	return append(b, m.Text...)
}

func padded(n int) int { return (n + padBlock - 1) / padBlock * padBlock }

// seal encrypts content for recipientBox under a fresh ephemeral key and nonce.
func seal(content []byte, recipientBox *[32]byte) ([]byte, error) {
	var eph [x25519.ScalarSize]byte
	if _, err := rand.Read(eph[:]); err != nil {
		return nil, err
	}
	ephPub, err := x25519.X25519(eph[:], x25519.Basepoint)
	if err != nil {
		return nil, err
	}
	secret, err := sharedSecret(eph[:], recipientBox[:])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadBoxKey, err)
	}
	env := make([]byte, headerLen, headerLen+len(content)+tagLen)
	env[0] = Version
	copy(env[1:], ephPub)
	nonce := env[1+x25519.PointSize : headerLen]
	if _, err := rand.Read(nonce); err != nil {
		return nil, err
	}
	aead, err := newAEAD(secret, ephPub, recipientBox)
	if err != nil {
		return nil, err
	}
	return aead.Seal(env, nonce, content, env[:headerLen]), nil
}

var zeroPoint [x25519.PointSize]byte

// sharedSecret is X25519 that refuses low-order points. x25519.X25519 already fails
// when the result is all zero; the check is repeated because the whole construction's
// secrecy rests on it.
func sharedSecret(scalar, point []byte) ([]byte, error) {
	s, err := x25519.X25519(scalar, point)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare(s, zeroPoint[:]) == 1 {
		return nil, fmt.Errorf("low-order point")
	}
	return s, nil
}

// newAEAD derives the message key.
func newAEAD(secret, ephPub []byte, recipientBox *[32]byte) (cipher.AEAD, error) {
	info := make([]byte, 0, len(kdfContext)+2*x25519.PointSize)
	info = append(info, kdfContext...)
	info = append(info, ephPub...)
	info = append(info, recipientBox[:]...)
	var key [chacha20poly1305.KeySize]byte
	if _, err := io.ReadFull(hkdf.New(sha256.New, secret, nil, info), key[:]); err != nil {
		return nil, err
	}
	return chacha20poly1305.NewX(key[:])
}

// Open decrypts an envelope with the recipient's box key, verifies the sender's
// credential against the login server key (kind user, unexpired at now), verifies the
// sender's signature, and checks that m.From equals the credential's name and m.To equals
// wantTo (a message sealed for someone else, or replayed to another recipient, is
// rejected). Errors wrap one of ErrMalformed, ErrDecrypt, ErrBadSender, ErrBadSignature
// and ErrWrongRecipient; credential failures also wrap package identity's error.
func Open(env []byte, box BoxKey, loginPub ed25519.PublicKey, wantTo string, now time.Time) (Message, identity.Credential, error) {
	signed, err := decrypt(env, &box)
	if err != nil {
		return Message{}, identity.Credential{}, err
	}
	return verify(signed, loginPub, wantTo, now)
}

// decrypt opens the envelope and returns the signature prefix followed by the content,
// so that the signed bytes are one contiguous slice.
func decrypt(env []byte, box *BoxKey) ([]byte, error) {
	switch {
	case len(env) > MaxEnvelopeLen:
		return nil, fmt.Errorf("%w: %d bytes, limit %d", ErrMalformed, len(env), MaxEnvelopeLen)
	case len(env) < minEnvelopeLen || len(env) > maxEnvelopeLen || (len(env)-headerLen-tagLen)%padBlock != 0:
		return nil, fmt.Errorf("%w: impossible length %d", ErrMalformed, len(env))
	case env[0] != Version:
		return nil, fmt.Errorf("%w: version %d, want %d; update Peerline", ErrMalformed, env[0], Version)
	}
	ephPub := env[1 : 1+x25519.PointSize]
	nonce := env[1+x25519.PointSize : headerLen]
	secret, err := sharedSecret(box.Private[:], ephPub)
	if err != nil {
		return nil, fmt.Errorf("%w: ephemeral key: %w", ErrMalformed, err)
	}
	aead, err := newAEAD(secret, ephPub, &box.Public)
	if err != nil {
		return nil, err
	}
	out := make([]byte, sigPrefixLen, sigPrefixLen+len(env)-headerLen-tagLen)
	copy(out, sigContext)
	copy(out[len(sigContext):], box.Public[:])
	out, err = aead.Open(out, nonce, env[headerLen:], env[:headerLen])
	if err != nil {
		return nil, ErrDecrypt
	}
	return out, nil
}

// content is the parsed content, with slices into the decrypted buffer.
type content struct {
	msg       Message
	cred      []byte
	signedLen int // length of sigPrefix||fields, which the signature covers
	sig       []byte
}

// parseContent parses sigPrefix||content as produced by decrypt. It accepts exactly the
// encodings that signContent produces.
func parseContent(b []byte) (content, error) {
	p := b[sigPrefixLen:]
	if len(p) < minContentLen || len(p) > padded(maxContentLen) || len(p)%padBlock != 0 {
		return content{}, fmt.Errorf("%w: content length %d", ErrMalformed, len(p))
	}
	var c content
	credLen := int(binary.BigEndian.Uint16(p))
	if credLen < minCredLen || credLen > maxCredLen {
		return content{}, fmt.Errorf("%w: credential length %d", ErrMalformed, credLen)
	}
	p = p[2:]
	// From here on the minimum length check above no longer covers what remains; each
	// step checks for itself.
	take := func(n int) []byte {
		if n > len(p) {
			return nil
		}
		v := p[:n]
		p = p[n:]
		return v
	}
	c.cred = take(credLen)
	from, to := takeName(&p), []byte(nil)
	if from != nil {
		to = takeName(&p)
	}
	sent, kind, textLenB := take(8), take(1), take(2)
	if c.cred == nil || from == nil || to == nil || sent == nil || kind == nil || textLenB == nil {
		return content{}, fmt.Errorf("%w: truncated content", ErrMalformed)
	}
	if Kind(kind[0]) > KindCall {
		return content{}, fmt.Errorf("%w: unknown kind %d", ErrMalformed, kind[0])
	}
	textLen := int(binary.BigEndian.Uint16(textLenB))
	if textLen > MaxTextLen {
		return content{}, fmt.Errorf("%w: text length %d, limit %d", ErrMalformed, textLen, MaxTextLen)
	}
	text := take(textLen)
	if text == nil {
		return content{}, fmt.Errorf("%w: truncated text", ErrMalformed)
	}
	c.signedLen = len(b) - len(p)
	if c.sig = take(ed25519.SignatureSize); c.sig == nil {
		return content{}, fmt.Errorf("%w: truncated signature", ErrMalformed)
	}
	// Canonical padding: as short as possible, and zero.
	if fieldsLen := c.signedLen - sigPrefixLen + ed25519.SignatureSize; padded(fieldsLen) != len(b)-sigPrefixLen {
		return content{}, fmt.Errorf("%w: %d bytes of padding after %d of content", ErrMalformed, len(p), fieldsLen)
	}
	if !allZero(p) {
		return content{}, fmt.Errorf("%w: non-zero padding", ErrMalformed)
	}
	c.msg = Message{
		From: string(from),
		To:   string(to),
		Sent: time.UnixMilli(int64(binary.BigEndian.Uint64(sent))).UTC(),
		Kind: Kind(kind[0]),
		Text: string(text),
	}
	return c, nil
}

func takeName(p *[]byte) []byte {
	if len(*p) < 1 {
		return nil
	}
	n := int((*p)[0])
	if n == 0 || n > maxNameLen || 1+n > len(*p) {
		return nil
	}
	v := (*p)[1 : 1+n]
	*p = (*p)[1+n:]
	return v
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// verify checks decrypted content: credential, then signature, then names.
func verify(signed []byte, loginPub ed25519.PublicKey, wantTo string, now time.Time) (Message, identity.Credential, error) {
	c, err := parseContent(signed)
	if err != nil {
		return Message{}, identity.Credential{}, err
	}
	cred, err := identity.Verify(c.cred, loginPub, now)
	if err != nil {
		return Message{}, identity.Credential{}, fmt.Errorf("%w: %w", ErrBadSender, err)
	}
	if cred.Kind != identity.KindUser {
		return Message{}, identity.Credential{}, fmt.Errorf("%w: %s credential, want user", ErrBadSender, cred.Kind)
	}
	if !sig.Verify(cred.PubKey, signed[:c.signedLen], c.sig) {
		return Message{}, identity.Credential{}, ErrBadSignature
	}
	// Only now are the names the sender's words.
	if c.msg.From != cred.Name {
		return Message{}, identity.Credential{}, fmt.Errorf("%w: message claims to be from %q, credential names %q", ErrBadSender, c.msg.From, cred.Name)
	}
	if c.msg.To != wantTo {
		return Message{}, identity.Credential{}, fmt.Errorf("%w: addressed to %q, not %q", ErrWrongRecipient, c.msg.To, wantTo)
	}
	return c.msg, cred, nil
}
