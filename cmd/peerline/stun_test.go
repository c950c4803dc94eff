package main

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/peerline/peerline/internal/fuzzseed"
	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/stunsrv"
)

// TestSTUNOverTCP: 'peerline stun' answers a Binding request over TCP on its primary
// address with the client's TCP address, and drops what is not one.
func TestSTUNOverTCP(t *testing.T) {
	conns, err := stunsrv.ListenFree(netip.MustParseAddr("127.0.0.1"), netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := stunsrv.New(stunsrv.Config{Conns: conns, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	m := new(metrics.Set)
	go serveSTUNTCP(ctx, ln, srv, m)

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	if _, err := c.Write(req.Raw); err != nil {
		t.Fatal(err)
	}
	raw, err := readSTUNTCP(c)
	if err != nil {
		t.Fatal(err)
	}
	resp := &stun.Message{Raw: raw}
	if err := resp.Decode(); err != nil || resp.Type != stun.BindingSuccess || resp.TransactionID != req.TransactionID {
		t.Fatalf("response %v: %v", resp, err)
	}
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(resp); err != nil || xa.String() != c.LocalAddr().String() {
		t.Fatalf("mapped address %v (%v), want %s", xa, err, c.LocalAddr())
	}

	// Garbage gets no answer: the connection is closed.
	g, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	g.SetDeadline(time.Now().Add(5 * time.Second))
	g.Write(bytes.Repeat([]byte{0xff}, 40))
	// Closed (EOF, or a reset for the unread bytes), not left open until the deadline.
	n, err := g.Read(make([]byte, 100))
	var ne net.Error
	if n != 0 || err == nil || errors.As(err, &ne) && ne.Timeout() {
		t.Fatalf("garbage answered: %d bytes, %v", n, err)
	}

	// One address holds at most an eighth of the slots: idle connections from 127.0.1.1
	// beyond that are shed, and the user on 127.0.0.1 is still answered.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.1.1")}}
	for range 2 * stunTCPMaxConns {
		ic, err := d.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer ic.Close()
	}
	u, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	u.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := u.Write(req.Raw); err != nil {
		t.Fatal(err)
	}
	if _, err := readSTUNTCP(u); err != nil {
		t.Fatalf("the user was not answered while one address held idle connections: %v", err)
	}
	if shed := m.Get("conns_shed_addr"); shed < stunTCPMaxConns {
		t.Fatalf("conns_shed_addr = %d, want at least %d", shed, stunTCPMaxConns)
	}
}

func TestReadSTUNTCP(t *testing.T) {
	req := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
	for _, c := range []struct {
		in   []byte
		want []byte
	}{
		{req.Raw, req.Raw},
		{append(append([]byte{}, req.Raw...), 1, 2, 3), req.Raw}, // the next message stays unread
		{req.Raw[:19], nil},
		{[]byte{0, 1, 0xff, 0xfc, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}, nil},    // too long
		{[]byte{0, 1, 0, 3, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 0, 0, 0}, nil}, // not aligned
	} {
		got, err := readSTUNTCP(bytes.NewReader(c.in))
		if !bytes.Equal(got, c.want) || (c.want == nil) != (err != nil) {
			t.Errorf("readSTUNTCP(%x) = %x, %v; want %x", c.in, got, err, c.want)
		}
	}
}

// FuzzReadSTUNTCP: any byte stream gives either one message of the length its header
// says, no longer than the limit, or an error.
func FuzzReadSTUNTCP(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/fuzz/FuzzReadSTUNTCP/*")
	for _, p := range seeds {
		b, err := fuzzseed.Read(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, err := readSTUNTCP(bytes.NewReader(b))
		if err != nil {
			return
		}
		if len(msg) < 20 || len(msg) > stunTCPMaxMsg || len(msg) != 20+int(msg[2])<<8+int(msg[3]) || !bytes.Equal(msg, b[:len(msg)]) {
			t.Fatalf("readSTUNTCP(%x) = %x", b, msg)
		}
	})
}
