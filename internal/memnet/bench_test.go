package memnet

import (
	"context"
	"io"
	"testing"
)

// BenchmarkStreamThroughput measures one stream carrying 1 KiB writes to a reader that
// drains it with 32 KiB reads.
func BenchmarkStreamThroughput(b *testing.B) {
	n := New(Options{})
	ln, err := n.Host("198.18.0.1").Listen("tcp", ":9")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	done := make(chan int64)
	go func() {
		s, err := ln.Accept()
		if err != nil {
			b.Error(err)
			done <- 0
			return
		}
		k, _ := io.CopyBuffer(io.Discard, struct{ io.Reader }{s}, make([]byte, 32<<10))
		s.Close()
		done <- k
	}()
	c, err := n.Host("198.18.0.2").DialContext(context.Background(), "tcp", "198.18.0.1:9")
	if err != nil {
		b.Fatal(err)
	}
	msg := make([]byte, 1024)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(msg); err != nil {
			b.Fatal(err)
		}
	}
	c.Close()
	if got := <-done; got != int64(b.N)*int64(len(msg)) {
		b.Fatalf("reader got %d bytes, want %d", got, b.N*len(msg))
	}
}

// BenchmarkDialAccept measures a full connection lifetime: dial, accept, close both ends.
func BenchmarkDialAccept(b *testing.B) {
	n := New(Options{})
	srv, cli := n.Host("198.18.0.1"), n.Host("198.18.0.2")
	ln, err := srv.Listen("tcp", ":443")
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	ctx := context.Background()
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		c, err := cli.DialContext(ctx, "tcp", "198.18.0.1:443")
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
	b.StopTimer()
	ln.Close()
}

// BenchmarkPacket measures one UDP-style datagram of 1 KiB sent and received.
func BenchmarkPacket(b *testing.B) {
	n := New(Options{})
	pa, err := n.Host("198.18.0.1").ListenPacket("udp", ":0")
	if err != nil {
		b.Fatal(err)
	}
	defer pa.Close()
	pb, err := n.Host("198.18.0.2").ListenPacket("udp", ":0")
	if err != nil {
		b.Fatal(err)
	}
	defer pb.Close()
	msg, buf := make([]byte, 1024), make([]byte, 2048)
	to := pb.LocalAddr()
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		pa.WriteTo(msg, to)
		if _, _, err := pb.ReadFrom(buf); err != nil {
			b.Fatal(err)
		}
	}
}
