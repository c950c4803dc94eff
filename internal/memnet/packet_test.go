package memnet

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"testing/synctest"
	"time"
)

func mustListenPacket(t *testing.T, h *Host, addr string) net.PacketConn {
	t.Helper()
	pc, err := h.ListenPacket("udp", addr)
	if err != nil {
		t.Fatalf("ListenPacket(%q) on %v: %v", addr, h.IP(), err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func TestPacketDelivery(t *testing.T) {
	checkGoroutines(t)
	n := New(Options{})
	a, b := n.Host("192.0.2.1"), n.Host("192.0.2.2")
	pa := mustListenPacket(t, a, ":0")
	pb := mustListenPacket(t, b, ":3478")
	if la, ok := pa.LocalAddr().(*net.UDPAddr); !ok || la.Port < ephemeralLo || la.IP.String() != "192.0.2.1" {
		t.Errorf("LocalAddr = %#v", pa.LocalAddr())
	}

	to := &net.UDPAddr{IP: net.ParseIP("192.0.2.2"), Port: 3478} // 16-byte IPv4 form
	if k, err := pa.WriteTo([]byte("binding request"), to); err != nil || k != 15 {
		t.Fatalf("WriteTo = %d, %v", k, err)
	}
	buf := make([]byte, 100)
	k, from, err := pb.ReadFrom(buf)
	if err != nil || string(buf[:k]) != "binding request" {
		t.Fatalf("ReadFrom = %q, %v", buf[:k], err)
	}
	if ua, ok := from.(*net.UDPAddr); !ok || ua.String() != pa.LocalAddr().String() {
		t.Errorf("sender = %#v, want %v", from, pa.LocalAddr())
	}
	// Reply to the address we got; a short buffer truncates like UDP.
	pb.WriteTo([]byte("binding response"), from)
	k, _, err = pa.ReadFrom(buf[:7])
	if err != nil || string(buf[:k]) != "binding" {
		t.Errorf("truncated ReadFrom = %q, %v", buf[:k], err)
	}
	// The rest of a truncated datagram is gone, not delivered later.
	pa.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if _, _, err := pa.ReadFrom(buf); !isTimeout(err) {
		t.Errorf("ReadFrom after truncation = %v, want a timeout", err)
	}
}

func TestPacketDrops(t *testing.T) {
	checkGoroutines(t)
	n := New(Options{})
	a, b := n.Host("192.0.2.1"), n.Host("192.0.2.2")
	pa := mustListenPacket(t, a, ":0")
	pb := mustListenPacket(t, b, ":53")

	// Nobody listening, unknown host, dead host: silently dropped.
	for _, to := range []*net.UDPAddr{
		{IP: net.ParseIP("192.0.2.2"), Port: 54},
		{IP: net.ParseIP("203.0.113.1"), Port: 53},
	} {
		if k, err := pa.WriteTo([]byte("x"), to); err != nil || k != 1 {
			t.Errorf("WriteTo %v = %d, %v; want silent success", to, k, err)
		}
	}
	if _, err := pa.WriteTo([]byte("x"), fakeAddr{}); err == nil {
		t.Error("WriteTo a non-UDP address succeeded")
	}
	if _, err := pa.WriteTo(make([]byte, maxDatagram+1), pb.LocalAddr()); err == nil {
		t.Error("WriteTo of an oversized datagram succeeded")
	}

	// The receive queue is bounded: beyond it, datagrams are dropped, oldest kept.
	for i := range packetQueueMax + 50 {
		pa.WriteTo([]byte(fmt.Sprint(i)), pb.LocalAddr())
	}
	buf := make([]byte, 16)
	for i := range packetQueueMax {
		k, _, err := pb.ReadFrom(buf)
		if err != nil || string(buf[:k]) != fmt.Sprint(i) {
			t.Fatalf("datagram %d = %q, %v", i, buf[:k], err)
		}
	}
	pb.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, _, err := pb.ReadFrom(buf); !isTimeout(err) {
		t.Errorf("ReadFrom beyond the queue bound = %v, want a timeout (overflow should have been dropped)", err)
	}
	// A closed receiver drops too.
	pb.Close()
	if _, err := pa.WriteTo([]byte("x"), pb.LocalAddr()); err != nil {
		t.Errorf("WriteTo a closed socket = %v, want silent success", err)
	}
}

func TestPacketDeadlinesAndClose(t *testing.T) {
	checkGoroutines(t)
	synctest.Test(t, func(t *testing.T) {
		n := New(Options{})
		a := n.Host("192.0.2.1")
		pc := mustListenPacket(t, a, ":0")

		pc.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
		start := time.Now()
		if _, _, err := pc.ReadFrom(make([]byte, 1)); !isTimeout(err) {
			t.Errorf("ReadFrom past deadline = %v, want timeout", err)
		}
		if d := time.Since(start); d < 25*time.Millisecond {
			t.Errorf("timed out after %v, before the 30ms deadline", d)
		}
		pc.SetWriteDeadline(time.Now().Add(-time.Second))
		if _, err := pc.WriteTo([]byte("x"), pc.LocalAddr()); !isTimeout(err) {
			t.Errorf("WriteTo past deadline = %v, want timeout", err)
		}
		pc.SetDeadline(time.Time{})
		if _, err := pc.WriteTo([]byte("self"), pc.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		if k, _, err := pc.ReadFrom(make([]byte, 8)); err != nil || k != 4 {
			t.Errorf("ReadFrom own datagram = %d, %v", k, err)
		}

		blocked := make(chan error, 1)
		go func() { _, _, err := pc.ReadFrom(make([]byte, 1)); blocked <- err }()
		synctest.Wait() // the ReadFrom blocks
		pc.Close()
		if err := <-blocked; !errors.Is(err, net.ErrClosed) {
			t.Errorf("blocked ReadFrom after Close = %v, want net.ErrClosed", err)
		}
		if _, err := pc.WriteTo([]byte("x"), pc.LocalAddr()); !errors.Is(err, net.ErrClosed) {
			t.Errorf("WriteTo after Close = %v, want net.ErrClosed", err)
		}
		if err := pc.Close(); !errors.Is(err, net.ErrClosed) {
			t.Errorf("second Close = %v, want net.ErrClosed", err)
		}
		mustListenPacket(t, a, pc.LocalAddr().String()) // port freed
	})
}

type fakeAddr struct{}

func (fakeAddr) Network() string { return "fake" }
func (fakeAddr) String() string  { return "fake" }
