// Package secure sets up the channels that carry Peerline's control connections: TLS 1.3
// to the login server (this file) and the Noise XX channel of the overlay, client to
// supernode and supernode to supernode (overlay.go, which says why the overlay left TLS).
//
// Peerline does not use a PKI. Each node's TLS certificate is self-signed with its Ed25519
// identity key, and TLS 1.3's CertificateVerify proves possession of that key; on the
// overlay the same key signs the node's static Noise key. What the key is worth is
// decided one layer up: a client pins the login server's key; a supernode and a client
// each check that the other's key is the one named in a credential the login server
// signed (package identity). This package only extracts and checks the keys.
//
// # Key exchange
//
// Connections to the login server use Go's default key exchange, which offers the hybrid
// post-quantum X25519MLKEM768 beside X25519: they carry password logins and
// registrations. The overlay's connections use X25519 alone, as WireGuard, Nebula,
// Tailscale's control protocol and libp2p's Noise channel do. What they carry is signed
// (credentials, user records) or end-to-end encrypted between the two users (messages,
// call signalling and the media key agreement, itself X25519), so the hybrid would
// protect only lookup metadata against a future quantum adversary, and it would be paid
// for on every connection of a layer that holds hundreds of thousands. When the overlay
// still ran TLS, per idle connection, both ends (go test ./internal/rpc -bench
// IdleConn): 20.2 KB of heap and 1.53 ms of set-up with the hybrid, 16.0 KB and 1.13 ms
// without.
package secure

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"time"
)

// ALPN is the application protocol negotiated on every control connection.
const ALPN = "peerline/1"

// Errors.
var (
	ErrNoPeerKey   = errors.New("secure: peer presented no Ed25519 certificate")
	ErrPinMismatch = errors.New("secure: server key does not match the pinned login server key (wrong --login-key, or someone in the middle)")
)

// Certificate makes a self-signed certificate for key.
func Certificate(key ed25519.PrivateKey) (tls.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "peerline"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// keyOf returns the Ed25519 key of the first raw certificate.
func keyOf(rawCerts [][]byte) (ed25519.PublicKey, error) {
	if len(rawCerts) == 0 {
		return nil, ErrNoPeerKey
	}
	cert, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return nil, fmt.Errorf("secure: peer certificate: %w", err)
	}
	k, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, ErrNoPeerKey
	}
	return k, nil
}

// PeerKey returns the Ed25519 key the peer of a completed TLS connection proved it holds.
func PeerKey(cs tls.ConnectionState) (ed25519.PublicKey, error) {
	if len(cs.PeerCertificates) == 0 {
		return nil, ErrNoPeerKey
	}
	k, ok := cs.PeerCertificates[0].PublicKey.(ed25519.PublicKey)
	if !ok {
		return nil, ErrNoPeerKey
	}
	return k, nil
}

// ServerConfig returns the TLS configuration of a node that accepts control connections.
// With requireClientKey, the peer must present its own Ed25519 certificate (supernodes
// require it of clients; the login server asks for it but lets registration go without).
func ServerConfig(key ed25519.PrivateKey, requireClientKey bool) (*tls.Config, error) {
	cert, err := Certificate(key)
	if err != nil {
		return nil, err
	}
	auth := tls.RequestClientCert
	if requireClientKey {
		auth = tls.RequireAnyClientCert
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   auth,
		NextProtos:   []string{ALPN},
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				return nil // allowed only with RequestClientCert
			}
			_, err := keyOf(raw)
			return err
		},
	}, nil
}

// ClientConfig returns the TLS configuration for dialling a node. key may be nil for an
// anonymous client (registration). verify, if non-nil, is given the server's key during the
// handshake and may reject it; PinnedKey makes the usual one.
func ClientConfig(key ed25519.PrivateKey, verify func(ed25519.PublicKey) error) (*tls.Config, error) {
	if key == nil {
		return ClientConfigCert(nil, verify), nil
	}
	cert, err := Certificate(key)
	if err != nil {
		return nil, err
	}
	return ClientConfigCert(&cert, verify), nil
}

// ClientConfigCert is ClientConfig with the node's certificate made beforehand (by
// Certificate), for a node that dials often: making a certificate costs a signature.
// cert may be nil for an anonymous client.
func ClientConfigCert(cert *tls.Certificate, verify func(ed25519.PublicKey) error) *tls.Config {
	cfg := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{ALPN},
		// The chain is not checked against a CA: VerifyPeerCertificate below does the
		// only check that matters, on the key itself.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			k, err := keyOf(raw)
			if err != nil {
				return err
			}
			if verify != nil {
				return verify(k)
			}
			return nil
		},
	}
	if cert != nil {
		cfg.Certificates = []tls.Certificate{*cert}
	}
	return cfg
}

// PinnedKey returns a verify function that accepts only want.
func PinnedKey(want ed25519.PublicKey) func(ed25519.PublicKey) error {
	return func(got ed25519.PublicKey) error {
		if !got.Equal(want) {
			return ErrPinMismatch
		}
		return nil
	}
}

// Dialer opens the transport under a control connection. *net.Dialer satisfies it, and so
// does the in-memory network used in tests.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

// Dial opens a TLS connection to addr over d and completes the handshake within ctx.
func Dial(ctx context.Context, d Dialer, addr string, cfg *tls.Config) (*tls.Conn, error) {
	raw, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(raw, cfg)
	if err := handshake(ctx, tc); err != nil {
		raw.Close()
		return nil, err
	}
	return tc, nil
}

// handshake runs tc's handshake on a goroutine of its own and waits for it. A handshake
// needs about 8 KiB of stack (key exchange, signatures, certificate parsing), and a
// collection halves a goroutine's stack only while it uses less than a quarter of it:
// run on the goroutine that then reads the connection for its whole life, the handshake
// would leave that reader at 8 KiB instead of the 4 KiB a blocked read needs. A server
// with 10,000 idle connections saves 40 MB (go test ./internal/rpc -bench IdleConn).
func handshake(ctx context.Context, tc *tls.Conn) error {
	done := make(chan error, 1)
	go func() { done <- tc.HandshakeContext(ctx) }()
	return <-done
}

// HandshakeTimeout bounds the server side of a handshake, so that a peer that connects and
// stays silent cannot hold a connection slot.
const HandshakeTimeout = 10 * time.Second

// Accept runs the server side of the TLS handshake on an accepted connection and returns
// the TLS connection and the key the peer proved it holds (nil if it presented none, which
// cfg allows only with RequestClientCert).
func Accept(ctx context.Context, nc net.Conn, cfg *tls.Config) (*tls.Conn, ed25519.PublicKey, error) {
	tc := tls.Server(nc, cfg)
	hctx, cancel := context.WithTimeout(ctx, HandshakeTimeout)
	defer cancel()
	if err := handshake(hctx, tc); err != nil {
		return nil, nil, err
	}
	key, err := PeerKey(tc.ConnectionState())
	if err != nil && cfg.ClientAuth == tls.RequireAnyClientCert {
		return nil, nil, err
	}
	return tc, key, nil
}
