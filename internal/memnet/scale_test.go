package memnet

import (
	"context"
	"fmt"
	"net"
	"runtime"
	"testing"
)

// TestScale opens 20,000 conns at once (2,000 client hosts × 10 conns to one server, the
// shape of clients on a supernode), logs what they cost, closes them and checks that
// nothing is left. It asserts nothing about time or memory: the figures are for people.
func TestScale(t *testing.T) {
	if testing.Short() {
		t.Skip("opens 20,000 conns")
	}
	checkGoroutines(t)
	const clients, perClient = 2000, 10
	n := New(Options{})
	srv := n.Host("198.18.0.1")
	ln := mustListen(t, srv, ":443")
	hosts := make([]*Host, clients)
	for i := range hosts {
		hosts[i] = n.Host(fmt.Sprintf("198.18.%d.%d", 1+i/250, 1+i%250))
	}

	accepted := make(chan []net.Conn, 1)
	go func() {
		var conns []net.Conn
		for range clients * perClient {
			c, err := ln.Accept()
			if err != nil {
				t.Error(err)
				break
			}
			conns = append(conns, c)
		}
		accepted <- conns
	}()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	gBefore := runtime.NumGoroutine()

	dialled := make([]net.Conn, 0, clients*perClient)
	for _, h := range hosts {
		for range perClient {
			c, err := h.DialContext(context.Background(), "tcp", "198.18.0.1:443")
			if err != nil {
				t.Fatal(err)
			}
			dialled = append(dialled, c)
		}
	}
	served := <-accepted
	// One byte each way, so every conn has been used and is idle again.
	buf := make([]byte, 1)
	for i, c := range dialled {
		c.Write(buf)
		served[i].Read(buf)
		served[i].Write(buf)
		c.Read(buf)
	}

	runtime.GC()
	runtime.ReadMemStats(&after)
	total := clients * perClient
	heap := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("%d conns open: server Conns=%d, heap +%d KiB (%d B per conn, both ends, incl. the test's slices), goroutines %d -> %d",
		total, srv.Conns(), heap>>10, heap/int64(total), gBefore, runtime.NumGoroutine())
	if srv.Conns() != total {
		t.Errorf("server Conns = %d, want %d", srv.Conns(), total)
	}

	for i := range dialled {
		dialled[i].Close()
		served[i].Close()
	}
	ln.Close()
	if srv.Conns() != 0 {
		t.Errorf("server Conns after closing = %d", srv.Conns())
	}
	for _, h := range hosts {
		if h.Conns() != 0 {
			t.Fatalf("host %v Conns after closing = %d", h.IP(), h.Conns())
		}
	}
}
