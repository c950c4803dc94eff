package memnet

import (
	"context"
	"io"
	"testing"
	"time"
)

// TestLatency checks that Options.Latency delays dials, stream data, FIN and datagrams
// by at least the configured one-way delay. Upper bounds are generous: this is a
// shared machine.
func TestLatency(t *testing.T) {
	checkGoroutines(t)
	const lat = 20 * time.Millisecond
	n := New(Options{Latency: lat})
	a, b := n.Host("192.0.2.1"), n.Host("192.0.2.2")
	checkConns(t, a, b)
	ln := mustListen(t, b, ":7")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()

	start := time.Now()
	c, err := a.DialContext(context.Background(), "tcp", "192.0.2.2:7")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	dial := time.Since(start)
	t.Logf("dial: %v", dial)
	if dial < 2*lat || dial > 2*time.Second {
		t.Errorf("dial took %v, want >= %v (one round trip)", dial, 2*lat)
	}

	buf := make([]byte, 4)
	for i := range 3 {
		start = time.Now()
		c.Write([]byte("ping"))
		if _, err := io.ReadFull(c, buf); err != nil {
			t.Fatal(err)
		}
		rtt := time.Since(start)
		t.Logf("echo %d: RTT %v", i, rtt)
		if rtt < 2*lat || rtt > 2*time.Second {
			t.Errorf("RTT %v, want >= %v", rtt, 2*lat)
		}
	}

	// Refusal costs a round trip too.
	start = time.Now()
	if _, err := a.DialContext(context.Background(), "tcp", "192.0.2.2:8"); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	if d := time.Since(start); d < 2*lat {
		t.Errorf("refused dial took %v, want >= %v", d, 2*lat)
	}

	// FIN is delayed like data: the echo server sees EOF one latency after CloseWrite,
	// and its own close reaches us one latency later.
	start = time.Now()
	c.(interface{ CloseWrite() error }).CloseWrite()
	if _, err := c.Read(buf); err != io.EOF {
		t.Fatalf("Read after the echo server closed = %v, want io.EOF", err)
	}
	if d := time.Since(start); d < 2*lat {
		t.Errorf("FIN round trip %v, want >= %v", d, 2*lat)
	}

	// Datagrams: one way.
	pa := mustListenPacket(t, a, ":0")
	pb := mustListenPacket(t, b, ":0")
	start = time.Now()
	pa.WriteTo([]byte("x"), pb.LocalAddr())
	if _, _, err := pb.ReadFrom(buf); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < lat || d > 2*time.Second {
		t.Errorf("datagram took %v, want >= %v", d, lat)
	}
	// A read deadline shorter than the latency fires even with a datagram in flight.
	// This uses a slower network so that a loaded machine cannot blur the two.
	slow := New(Options{Latency: 500 * time.Millisecond})
	sa := mustListenPacket(t, slow.Host("192.0.2.1"), ":0")
	sb := mustListenPacket(t, slow.Host("192.0.2.2"), ":0")
	sa.WriteTo([]byte("x"), sb.LocalAddr())
	sb.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	if _, _, err := sb.ReadFrom(buf); !isTimeout(err) {
		t.Fatalf("ReadFrom with deadline < latency = %v, want timeout", err)
	}
	sb.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, _, err := sb.ReadFrom(buf); err != nil {
		t.Errorf("the in-flight datagram was lost: %v", err)
	}
}
