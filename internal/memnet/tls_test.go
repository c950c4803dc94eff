package memnet

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"testing"
	"time"
)

// selfSigned makes an ed25519 certificate for name, valid for an hour.
func selfSigned(t *testing.T, name string) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: name},
		DNSNames:              []string{name},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, priv)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: priv, Leaf: leaf}, pool
}

// TestTLS13 runs a TLS 1.3 handshake and an echo over memnet, with latency so that the
// handshake's round trips and deadlines are exercised too.
func TestTLS13(t *testing.T) {
	checkGoroutines(t)
	n := New(Options{Latency: 2 * time.Millisecond})
	srvHost, cliHost := n.Host("198.51.100.1"), n.Host("198.51.100.2")
	checkConns(t, srvHost, cliHost)
	cert, pool := selfSigned(t, "login.peerline.test")

	raw, err := srvHost.Listen("tcp", ":443")
	if err != nil {
		t.Fatal(err)
	}
	ln := tls.NewListener(raw, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS13})
	srvDone := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			srvDone <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		_, err = io.Copy(c, c) // echo until the client half-closes
		srvDone <- err
	}()

	raw2, err := cliHost.DialContext(context.Background(), "tcp", "198.51.100.1:443")
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw2, &tls.Config{RootCAs: pool, ServerName: "login.peerline.test", MinVersion: tls.VersionTLS13})
	defer c.Close()
	if err := c.HandshakeContext(context.Background()); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	if v := c.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Errorf("negotiated version %x, want TLS 1.3", v)
	}
	msg := make([]byte, 100<<10) // several records, more than one window chunk
	rand.Read(msg)
	go c.Write(msg)
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if string(got) != string(msg) {
		t.Error("echo differs")
	}
	if err := c.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if err := <-srvDone; err != nil {
		t.Errorf("server: %v", err)
	}
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("client Read after server Close = %v, want io.EOF", err)
	}
	c.Close()
	ln.Close()
}
