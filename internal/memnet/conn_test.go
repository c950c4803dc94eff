package memnet

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/net/nettest"
)

// TestConnConformance runs x/net's net.Conn conformance suite over a conn between two
// hosts, with and without latency.
func TestConnConformance(t *testing.T) {
	for _, tc := range []struct {
		name    string
		latency time.Duration
	}{{"NoLatency", 0}, {"Latency1ms", time.Millisecond}} {
		t.Run(tc.name, func(t *testing.T) {
			checkGoroutines(t)
			n := New(Options{Latency: tc.latency})
			a, b := n.Host("192.0.2.1"), n.Host("192.0.2.2")
			checkConns(t, a, b)
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				ln, err := b.Listen("tcp", ":0")
				if err != nil {
					return nil, nil, nil, err
				}
				acc := make(chan net.Conn, 1)
				go func() {
					c, _ := ln.Accept()
					acc <- c
				}()
				c1, err = a.DialContext(context.Background(), "tcp", ln.Addr().String())
				if err != nil {
					ln.Close()
					return nil, nil, nil, err
				}
				c2 = <-acc
				stop = func() {
					c1.Close()
					c2.Close()
					ln.Close()
				}
				return c1, c2, stop, nil
			})
		})
	}
}

func TestConnCloseSemantics(t *testing.T) {
	checkGoroutines(t)
	n := New(Options{})
	a, b := n.Host("192.0.2.1"), n.Host("192.0.2.2")
	checkConns(t, a, b)
	c, s := connect(t, a, mustListen(t, b, ":7000"))

	if _, err := c.Write([]byte("last words")); err != nil {
		t.Fatal(err)
	}
	if err := c.Close(); err != nil {
		t.Fatalf("first Close: %v", err)
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %v, want net.ErrClosed", err)
	}
	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close = %v, want net.ErrClosed", err)
	}
	got, err := io.ReadAll(s)
	if err != nil || string(got) != "last words" {
		t.Errorf("peer ReadAll = %q, %v; want the queued data then io.EOF", got, err)
	}
	if _, err := s.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Errorf("peer Write after Close = %v, want EPIPE", err)
	}
	if a.Conns() != 0 || b.Conns() != 1 {
		t.Errorf("Conns = %d, %d; want 0, 1", a.Conns(), b.Conns())
	}
}

func TestConnCloseWrite(t *testing.T) {
	checkGoroutines(t)
	n := New(Options{})
	a, b := n.Host("192.0.2.1"), n.Host("192.0.2.2")
	checkConns(t, a, b)
	c, s := connect(t, a, mustListen(t, b, ":7000"))

	c.Write([]byte("request"))
	if err := c.(interface{ CloseWrite() error }).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	req, err := io.ReadAll(s)
	if err != nil || string(req) != "request" {
		t.Fatalf("server ReadAll = %q, %v", req, err)
	}
	s.Write([]byte("response"))
	s.Close()
	resp, err := io.ReadAll(c)
	if err != nil || string(resp) != "response" {
		t.Fatalf("client ReadAll after CloseWrite = %q, %v", resp, err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, syscall.EPIPE) {
		t.Errorf("Write after CloseWrite = %v, want EPIPE", err)
	}
}

// TestConnDeadlineErrors: deadlines that pass, are cleared, moved to now, moved later. It
// runs in a synctest bubble: the deadlines pass in virtual time, exactly.
func TestConnDeadlineErrors(t *testing.T) {
	checkGoroutines(t)
	synctest.Test(t, func(t *testing.T) {
		n := New(Options{})
		a, b := n.Host("192.0.2.1"), n.Host("192.0.2.2")
		checkConns(t, a, b)
		c, s := connect(t, a, mustListen(t, b, ":7000"))

		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		start := time.Now()
		_, err := c.Read(make([]byte, 8))
		if !isTimeout(err) {
			t.Errorf("Read past deadline = %v, want a net.Error with Timeout() and os.ErrDeadlineExceeded", err)
		}
		if d := time.Since(start); d < 15*time.Millisecond {
			t.Errorf("Read timed out after %v, before its 20ms deadline", d)
		}
		// Clearing the deadline makes Read block again: it gets the data written later.
		c.SetReadDeadline(time.Time{})
		go func() {
			synctest.Wait() // the Read below blocks
			c.SetReadDeadline(time.Now())
		}()
		if _, err := c.Read(make([]byte, 8)); !isTimeout(err) {
			t.Errorf("Read with deadline moved to now = %v, want timeout", err)
		}

		// A Read waiting under a deadline that is moved later keeps waiting under the new
		// one, and a write deadline that passed after its Write completed fails only the
		// Writes made before it is set again, as on a socket.
		c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
		got := make(chan error, 1)
		go func() {
			_, err := c.Read(make([]byte, 8))
			got <- err
		}()
		synctest.Wait() // the Read blocks
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		time.Sleep(60 * time.Millisecond) // virtual time: past the first deadline
		if _, err := s.Write([]byte("late")); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Errorf("Read under an extended deadline = %v, want the data", err)
		}

		s.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
		if _, err := s.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond) // virtual time: past the write deadline
		if _, err := s.Write([]byte("y")); !isTimeout(err) {
			t.Errorf("Write after its deadline passed = %v, want timeout", err)
		}
		s.SetWriteDeadline(time.Now().Add(10 * time.Second))
		if _, err := s.Write([]byte("z")); err != nil {
			t.Errorf("Write after the deadline was set again = %v", err)
		}
	})
}

// TestConnBackpressure checks that a writer can queue a window's worth and then blocks,
// and that the bytes arrive intact and in order.
func TestConnBackpressure(t *testing.T) {
	checkGoroutines(t)
	n := New(Options{})
	a, b := n.Host("192.0.2.1"), n.Host("192.0.2.2")
	checkConns(t, a, b)
	c, s := connect(t, a, mustListen(t, b, ":7000"))

	msg := make([]byte, 2*window)
	for i := range msg {
		msg[i] = byte(i * 7)
	}
	c.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	nw, err := c.Write(msg)
	if !isTimeout(err) || nw != window {
		t.Fatalf("Write of 2 windows with no reader = %d, %v; want %d and a timeout", nw, err, window)
	}
	c.SetWriteDeadline(time.Time{})
	done := make(chan error, 1)
	go func() {
		_, err := c.Write(msg[nw:])
		done <- err
	}()
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(s, got); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("blocked Write: %v", err)
	}
	if !bytes.Equal(got, msg) {
		t.Error("data corrupted across a blocked write")
	}
}

func TestConnAddrs(t *testing.T) {
	checkGoroutines(t)
	n := New(Options{})
	a, b := n.Host("192.0.2.1"), n.Host("2001:db8::2")
	checkConns(t, a, b)
	ln := mustListen(t, b, "[::]:443")
	if got := ln.Addr().String(); got != "[2001:db8::2]:443" {
		t.Errorf("listener Addr = %s", got)
	}
	c, s := connect(t, a, ln)
	cl, ok1 := c.LocalAddr().(*net.TCPAddr)
	cr, ok2 := c.RemoteAddr().(*net.TCPAddr)
	sl, ok3 := s.LocalAddr().(*net.TCPAddr)
	sr, ok4 := s.RemoteAddr().(*net.TCPAddr)
	if !ok1 || !ok2 || !ok3 || !ok4 {
		t.Fatalf("addresses are %T %T %T %T, want *net.TCPAddr", c.LocalAddr(), c.RemoteAddr(), s.LocalAddr(), s.RemoteAddr())
	}
	if cl.String() != sr.String() || cr.String() != sl.String() {
		t.Errorf("client %v->%v, server %v<-%v: ends disagree", cl, cr, sl, sr)
	}
	if !cl.IP.Equal(net.ParseIP("192.0.2.1")) || cl.Port < ephemeralLo || cl.Port > ephemeralHi {
		t.Errorf("client local addr %v, want 192.0.2.1 and an ephemeral port", cl)
	}
	if sl.String() != "[2001:db8::2]:443" {
		t.Errorf("server local addr %v", sl)
	}
}
