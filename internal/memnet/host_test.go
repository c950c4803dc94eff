package memnet

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

func TestHostRegistry(t *testing.T) {
	n := New(Options{})
	a := n.Host("198.51.100.7")
	if n.Host("198.51.100.7") != a || n.Host("::ffff:198.51.100.7") != a {
		t.Error("Host does not return the existing host for the same IP")
	}
	n.Host("198.51.100.8")
	if got := n.Hosts(); got != 2 {
		t.Errorf("Hosts = %d, want 2", got)
	}
	if a.IP().String() != "198.51.100.7" {
		t.Errorf("IP = %v", a.IP())
	}
	for _, bad := range []string{"", "nope", "0.0.0.0", "::", "fe80::1%eth0", "1.2.3.4:80"} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Host(%q) did not panic", bad)
				}
			}()
			n.Host(bad)
		}()
	}
}

func TestListenerAcceptClose(t *testing.T) {
	checkGoroutines(t)
	synctest.Test(t, func(t *testing.T) {
		n := New(Options{})
		a, b := n.Host("192.0.2.1"), n.Host("192.0.2.2")
		checkConns(t, a, b)
		ln, err := b.Listen("tcp", ":7000")
		if err != nil {
			t.Fatal(err)
		}

		// A dial completes before Accept (the backlog holds it); when the listener closes
		// with the conn still unaccepted, the dialler sees a reset.
		c, err := a.DialContext(context.Background(), "tcp", "192.0.2.2:7000")
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if b.Conns() != 1 {
			t.Errorf("server Conns with one unaccepted conn = %d, want 1", b.Conns())
		}

		accepted := make(chan error, 1)
		go func() {
			// First Accept gets the pending conn, the second blocks until Close.
			s, err := ln.Accept()
			if err != nil {
				accepted <- err
				return
			}
			s.Close()
			_, err = ln.Accept()
			accepted <- err
		}()
		synctest.Wait() // the second Accept blocks
		if err := ln.Close(); err != nil {
			t.Fatal(err)
		}
		if err := <-accepted; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close = %v, want net.ErrClosed", err)
		}
		if err := ln.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second Close = %v, want net.ErrClosed", err)
		}
		if _, err := a.DialContext(context.Background(), "tcp", "192.0.2.2:7000"); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial after listener Close = %v, want ECONNREFUSED", err)
		}

		// Unaccepted conns are reset when the listener closes.
		ln2 := mustListen(t, b, ":7000") // the port is free again
		c2, err := a.DialContext(context.Background(), "tcp", "192.0.2.2:7000")
		if err != nil {
			t.Fatal(err)
		}
		defer c2.Close()
		ln2.Close()
		if _, err := c2.Read(make([]byte, 1)); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("Read on a conn dropped from the backlog = %v, want ECONNRESET", err)
		}
		if b.Conns() != 0 {
			t.Errorf("server Conns after listener Close = %d, want 0", b.Conns())
		}
	})
}

func TestDialErrors(t *testing.T) {
	checkGoroutines(t)
	n := New(Options{})
	a, b := n.Host("192.0.2.1"), n.Host("192.0.2.2")
	checkConns(t, a, b)
	ctx := context.Background()

	_, err := a.DialContext(ctx, "tcp", "192.0.2.2:9")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("dial with no listener = %v, want ECONNREFUSED", err)
	}
	var oe *net.OpError
	if !errors.As(err, &oe) || oe.Op != "dial" {
		t.Errorf("dial error %#v is not a dial *net.OpError", err)
	}
	if _, err := a.DialContext(ctx, "tcp", "203.0.113.99:80"); !errors.Is(err, syscall.EHOSTUNREACH) {
		t.Errorf("dial to an unknown IP = %v, want EHOSTUNREACH", err)
	}
	if _, err := a.DialContext(ctx, "udp", "192.0.2.2:9"); err == nil {
		t.Error("DialContext(udp) succeeded")
	}
	if _, err := a.DialContext(ctx, "tcp", "example.com:80"); err == nil {
		t.Error("dial by name succeeded")
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := a.DialContext(cctx, "tcp", "192.0.2.2:9"); !errors.Is(err, context.Canceled) {
		t.Errorf("dial with a cancelled ctx = %v, want context.Canceled", err)
	}
	if a.Conns() != 0 {
		t.Errorf("failed dials left %d conns", a.Conns())
	}
}

// TestDialContextCancel checks that a dial stuck in a handshake (high latency) or on a
// full backlog gives up when its context ends, and leaves nothing behind.
func TestDialContextCancel(t *testing.T) {
	checkGoroutines(t)
	t.Run("Latency", func(t *testing.T) {
		n := New(Options{Latency: time.Second})
		a, b := n.Host("192.0.2.1"), n.Host("192.0.2.2")
		checkConns(t, a, b)
		mustListen(t, b, ":7000")
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := a.DialContext(ctx, "tcp", "192.0.2.2:7000")
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("dial = %v, want context.DeadlineExceeded", err)
		}
		if d := time.Since(start); d > 900*time.Millisecond {
			t.Errorf("dial took %v despite a 50ms context", d)
		}
	})
	t.Run("FullBacklog", func(t *testing.T) {
		n := New(Options{})
		a, b := n.Host("192.0.2.1"), n.Host("192.0.2.2")
		checkConns(t, a, b)
		ln := mustListen(t, b, ":7000")
		var conns []net.Conn
		for range backlogMax {
			c, err := a.DialContext(context.Background(), "tcp", "192.0.2.2:7000")
			if err != nil {
				t.Fatal(err)
			}
			conns = append(conns, c)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Millisecond)
		defer cancel()
		if _, err := a.DialContext(ctx, "tcp", "192.0.2.2:7000"); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("dial to a full backlog = %v, want context.DeadlineExceeded", err)
		}
		// Accept makes room: a waiting dial then goes through.
		done := make(chan error, 1)
		go func() {
			c, err := a.DialContext(context.Background(), "tcp", "192.0.2.2:7000")
			if err == nil {
				conns = append(conns, c)
			}
			done <- err
		}()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("dial after Accept made room: %v", err)
		}
		ln.Close()
		for _, c := range conns {
			c.Close()
		}
	})
}

func TestPorts(t *testing.T) {
	checkGoroutines(t)
	n := New(Options{})
	a, b := n.Host("192.0.2.1"), n.Host("192.0.2.2")
	checkConns(t, a, b)

	l1 := mustListen(t, a, ":0")
	l2 := mustListen(t, a, "0.0.0.0:0")
	p1, p2 := l1.Addr().(*net.TCPAddr).Port, l2.Addr().(*net.TCPAddr).Port
	if p1 == p2 || p1 < ephemeralLo || p2 > ephemeralHi {
		t.Errorf("ephemeral ports %d, %d: want two distinct ports in [%d, %d]", p1, p2, ephemeralLo, ephemeralHi)
	}
	l3 := mustListen(t, a, "192.0.2.1:7000")
	if _, err := a.Listen("tcp", ":7000"); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second Listen on :7000 = %v, want EADDRINUSE", err)
	}
	mustListen(t, b, ":7000") // another host has its own ports
	if _, err := a.Listen("tcp", "192.0.2.2:7001"); !errors.Is(err, syscall.EADDRNOTAVAIL) {
		t.Errorf("Listen on another host's IP = %v, want EADDRNOTAVAIL", err)
	}
	for _, bad := range []string{"7000", ":http", ":70000", "localhost:7000"} {
		if _, err := a.Listen("tcp", bad); err == nil {
			t.Errorf("Listen(%q) succeeded", bad)
		}
	}
	if _, err := a.Listen("unix", ":1"); err == nil {
		t.Error("Listen(unix) succeeded")
	}
	l3.Close()
	mustListen(t, a, ":7000") // freed by Close

	// UDP has its own port space.
	pc, err := a.ListenPacket("udp", ":7000")
	if err != nil {
		t.Fatalf("ListenPacket on a port used by TCP: %v", err)
	}
	defer pc.Close()
	if _, err := a.ListenPacket("udp", ":7000"); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("second ListenPacket on :7000 = %v, want EADDRINUSE", err)
	}

	// Dialled conns hold an ephemeral port each, unique on the host and released on
	// Close: far more dials than the range holds must work one after another, and a
	// listener cannot take a port a conn holds.
	srv := mustListen(t, b, ":80")
	go func() {
		for {
			c, err := srv.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	seen := map[int]bool{}
	var held []net.Conn
	for range 100 {
		c, err := a.DialContext(context.Background(), "tcp", "192.0.2.2:80")
		if err != nil {
			t.Fatal(err)
		}
		p := c.LocalAddr().(*net.TCPAddr).Port
		if seen[p] || p == p1 || p == p2 {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
		held = append(held, c)
	}
	if _, err := a.Listen("tcp", held[0].LocalAddr().String()); !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("Listen on a port held by a conn = %v, want EADDRINUSE", err)
	}
	for _, c := range held {
		c.Close()
	}
	for i := range 2 * (ephemeralHi - ephemeralLo + 1) {
		c, err := a.DialContext(context.Background(), "tcp", "192.0.2.2:80")
		if err != nil {
			t.Fatalf("dial %d: %v (ports not released?)", i, err)
		}
		c.Close()
	}
	srv.Close()
}

func TestSelfDial(t *testing.T) {
	checkGoroutines(t)
	n := New(Options{})
	a := n.Host("192.0.2.1")
	checkConns(t, a)
	ln := mustListen(t, a, ":7000")
	for _, addr := range []string{"192.0.2.1:7000", "0.0.0.0:7000"} {
		acc := make(chan net.Conn, 1)
		go func() { s, _ := ln.Accept(); acc <- s }()
		c, err := a.DialContext(context.Background(), "tcp", addr)
		if err != nil {
			t.Fatalf("dial %s: %v", addr, err)
		}
		s := <-acc
		if a.Conns() != 2 {
			t.Errorf("Conns with both ends on the host = %d, want 2", a.Conns())
		}
		c.Write([]byte("hi"))
		buf := make([]byte, 2)
		if _, err := io.ReadFull(s, buf); err != nil || string(buf) != "hi" {
			t.Errorf("self conn read %q, %v", buf, err)
		}
		c.Close()
		s.Close()
	}
}

func TestKillRevive(t *testing.T) {
	checkGoroutines(t)
	synctest.Test(t, func(t *testing.T) {
		n := New(Options{})
		srv, cli := n.Host("192.0.2.10"), n.Host("192.0.2.20")
		checkConns(t, srv, cli)
		ctx := context.Background()

		ln, err := srv.Listen("tcp", ":443")
		if err != nil {
			t.Fatal(err)
		}
		pc, err := srv.ListenPacket("udp", ":3478")
		if err != nil {
			t.Fatal(err)
		}
		c, s := connect(t, cli, ln)
		if _, err := s.Write([]byte("bye")); err != nil { // sent before the crash
			t.Fatal(err)
		}

		blockedAccept := make(chan error, 1)
		go func() { _, err := ln.Accept(); blockedAccept <- err }()
		blockedRead := make(chan error, 1)
		go func() { _, _, err := pc.ReadFrom(make([]byte, 10)); blockedRead <- err }()
		synctest.Wait() // both block

		srv.Kill()
		srv.Kill() // idempotent

		if err := <-blockedAccept; !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept on a killed host = %v, want net.ErrClosed", err)
		}
		if err := <-blockedRead; !errors.Is(err, net.ErrClosed) {
			t.Errorf("ReadFrom on a killed host = %v, want net.ErrClosed", err)
		}
		if _, err := s.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read on the killed host's end = %v, want net.ErrClosed", err)
		}
		if srv.Conns() != 0 {
			t.Errorf("killed host Conns = %d, want 0", srv.Conns())
		}
		// The peer drains what was sent before the crash, then sees a reset.
		buf := make([]byte, 10)
		if k, err := c.Read(buf); err != nil || string(buf[:k]) != "bye" {
			t.Errorf("peer Read after Kill = %q, %v; want the queued data first", buf[:k], err)
		}
		if _, err := c.Read(buf); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("peer Read after draining = %v, want ECONNRESET", err)
		}
		if _, err := c.Write(buf); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("peer Write after Kill = %v, want ECONNRESET", err)
		}
		if cli.Conns() != 1 {
			t.Errorf("peer Conns = %d, want 1 until the peer closes its end", cli.Conns())
		}
		c.Close()

		if _, err := cli.DialContext(ctx, "tcp", "192.0.2.10:443"); !errors.Is(err, syscall.EHOSTUNREACH) {
			t.Errorf("dial to a killed host = %v, want EHOSTUNREACH", err)
		}
		if _, err := srv.Listen("tcp", ":443"); !errors.Is(err, ErrHostDown) {
			t.Errorf("Listen on a killed host = %v, want ErrHostDown", err)
		}
		if _, err := srv.ListenPacket("udp", ":0"); !errors.Is(err, ErrHostDown) {
			t.Errorf("ListenPacket on a killed host = %v, want ErrHostDown", err)
		}
		if _, err := srv.DialContext(ctx, "tcp", "192.0.2.20:1"); !errors.Is(err, ErrHostDown) {
			t.Errorf("dial from a killed host = %v, want ErrHostDown", err)
		}
		// Closing what the crash already closed is harmless.
		if err := ln.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("listener Close after Kill = %v, want net.ErrClosed", err)
		}

		srv.Revive()
		ln2 := mustListen(t, srv, ":443") // the port is free after the reboot
		if err := ln.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("old listener Close after Revive = %v", err)
		}
		c2, s2 := connect(t, cli, ln2) // the old listener's Close did not take the new one down
		c2.Write([]byte("back"))
		if k, err := s2.Read(buf); err != nil || string(buf[:k]) != "back" {
			t.Errorf("after Revive read %q, %v", buf[:k], err)
		}
		pc.Close()

		// Killing the dialling side resets the server's end.
		cli.Kill()
		if _, err := s2.Read(buf); !errors.Is(err, syscall.ECONNRESET) {
			t.Errorf("server Read after the client host died = %v, want ECONNRESET", err)
		}
		s2.Close()
		cli.Revive()
	})
}
