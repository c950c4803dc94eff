package secure

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"net"
	"testing"
	"time"
)

func TestPinnedAndMutual(t *testing.T) {
	srvPub, srvKey, _ := ed25519.GenerateKey(rand.Reader)
	cliPub, cliKey, _ := ed25519.GenerateKey(rand.Reader)
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)

	scfg, err := ServerConfig(srvKey, true)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", scfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan ed25519.PublicKey, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*tls.Conn)
			if tc.Handshake() == nil {
				k, _ := PeerKey(tc.ConnectionState())
				got <- k
			}
			tc.Close()
		}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	ccfg, _ := ClientConfig(cliKey, PinnedKey(srvPub))
	tc, err := Dial(ctx, &net.Dialer{}, ln.Addr().String(), ccfg)
	if err != nil {
		t.Fatal(err)
	}
	if k, _ := PeerKey(tc.ConnectionState()); !k.Equal(srvPub) {
		t.Fatal("client sees wrong server key")
	}
	if tc.ConnectionState().Version != tls.VersionTLS13 {
		t.Fatal("not TLS 1.3")
	}
	tc.Close()
	if k := <-got; !k.Equal(cliPub) {
		t.Fatal("server sees wrong client key")
	}

	bad, _ := ClientConfig(cliKey, PinnedKey(otherPub))
	if _, err := Dial(ctx, &net.Dialer{}, ln.Addr().String(), bad); !errors.Is(err, ErrPinMismatch) {
		t.Fatalf("wrong pin: %v", err)
	}
	anon, _ := ClientConfig(nil, PinnedKey(srvPub))
	if c, err := Dial(ctx, &net.Dialer{}, ln.Addr().String(), anon); err == nil {
		// TLS 1.3 client may finish before the server rejects; the first read must fail.
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil {
			t.Fatal("server accepted a client without a key")
		}
		c.Close()
	}
}
