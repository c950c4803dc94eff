package memnet

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/eventually"
)

// Dialer is the overlay's dialling interface; *Host must satisfy it.
type Dialer interface {
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
}

var _ Dialer = (*Host)(nil)

// checkGoroutines fails the test if, once its cleanups have run, more goroutines are
// alive than when it started. Call it first so that its cleanup runs last, and outside a
// synctest bubble, so that it counts once the bubble's goroutines have ended.
func checkGoroutines(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		if eventually.Await(5*time.Second, "goroutines to end", func() bool { return runtime.NumGoroutine() <= before }) != nil {
			buf := make([]byte, 1<<20)
			buf = buf[:runtime.Stack(buf, true)]
			t.Errorf("goroutine leak: %d before, %d after\n%s", before, runtime.NumGoroutine(), buf)
		}
	})
}

// checkConns fails the test if any host still has stream conns open at the end.
func checkConns(t *testing.T, hosts ...*Host) {
	t.Helper()
	t.Cleanup(func() {
		for _, h := range hosts {
			if eventually.Await(5*time.Second, "conns to close", func() bool { return h.Conns() == 0 }) != nil {
				t.Errorf("host %v: %d conns still open", h.IP(), h.Conns())
			}
		}
	})
}

// mustListen listens on h or fails the test; the listener closes at cleanup.
func mustListen(t *testing.T, h *Host, addr string) net.Listener {
	t.Helper()
	ln, err := h.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("Listen(%q) on %v: %v", addr, h.IP(), err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// connect dials ln from h and accepts, returning client and server ends, closed at cleanup.
func connect(t *testing.T, h *Host, ln net.Listener) (client, server net.Conn) {
	t.Helper()
	type res struct {
		c   net.Conn
		err error
	}
	ch := make(chan res, 1)
	go func() {
		c, err := ln.Accept()
		ch <- res{c, err}
	}()
	client, err := h.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		t.Fatalf("dial %v: %v", ln.Addr(), err)
	}
	r := <-ch
	if r.err != nil {
		t.Fatalf("accept: %v", r.err)
	}
	t.Cleanup(func() { client.Close(); r.c.Close() })
	return client, r.c
}

// isTimeout reports whether err is a deadline error in both ways callers test for one.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
}
