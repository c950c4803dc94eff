package rpc_test

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"runtime"
	"runtime/pprof"
	"sync"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/memnet"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
	"github.com/peerline/peerline/internal/secure"
)

// BenchmarkIdleConn measures what an idle control connection costs, both ends together,
// in one process: the shape of the simulation, where every client's connection to its
// supernode and every supernode-to-supernode connection has both its ends in memory. Each
// connection runs the overlay's channel (noise: secure.OverlayIdentity, Noise XX) or, for
// comparison, TLS 1.3 with a certificate both ways and X25519 (tls: what the overlay ran
// before, and what the login server's connections still run), and has carried one call
// each way, answered with a list of 8 supernodes (an attachment's) or 200 (a full
// host-cache refresh). It reports heap and goroutine stack per connection after full
// collections:
//
//	go test ./internal/rpc -run '^$' -bench IdleConn -benchtime 4000x
//
// On the 2-core machine of the README's figures, per connection, both ends:
//
//	                     noise                      tls
//	answer=8             6.4 KB heap, 8.2 KB stack  15.8 KB heap, 8.2 KB stack
//	answer=200           5.5 KB, 8.2 KB             21.6 KB, 8.0 KB
//	answer=8/burst=16    6.0 KB, 8.2 KB             17.9 KB, 8.1 KB
//	set-up, both ends    1.45 ms (0.82)             0.95 ms (0.80)
//
// Noise XX costs four X25519 operations per end where TLS 1.3 with X25519 costs two;
// through crypto/ecdh (noise.DH25519) they were 45% of the Noise set-up's CPU, and
// internal/secure's own (dh.go) brought the set-up to the figures in parentheses,
// measured in one run beside another load.
//
// crypto/tls keeps record and handshake buffers per end that keep the size of the
// largest record seen (the 200-entry answer), AES-GCM state 1.7 KB per end and the
// peer's parsed certificate 1 KB per end; a Noise channel keeps two ChaCha20-Poly1305
// keys and no buffer between messages. The stacks were 12.3 KB before handshakes ran
// on goroutines of their own, and 16.4 KB while answers were decoded on the reader's
// goroutine; the TLS heap 20.2 KB with the hybrid X25519MLKEM768 key exchange.
func BenchmarkIdleConn(b *testing.B) {
	for _, ch := range []string{"noise", "tls"} {
		for _, entries := range []int{8, 200} {
			b.Run(fmt.Sprintf("%s/answer=%d", ch, entries), func(b *testing.B) { benchIdleConn(b, ch, entries, 1) })
		}
		b.Run(ch+"/answer=8/burst=16", func(b *testing.B) { benchIdleConn(b, ch, 8, 16) })
	}
}

// channel opens and accepts control connections of one kind for benchIdleConn.
type channel struct {
	dial   func(ctx context.Context, h *memnet.Host) (net.Conn, error)
	accept func(ctx context.Context, nc net.Conn) (net.Conn, error)
}

func newChannel(b *testing.B, kind string) channel {
	srvKey, cliKey := newKey(b), newKey(b)
	srvPub := srvKey.Public().(ed25519.PublicKey)
	if kind == "noise" {
		srv, err := secure.NewOverlayIdentity(srvKey)
		if err != nil {
			b.Fatal(err)
		}
		cli, err := secure.NewOverlayIdentity(cliKey)
		if err != nil {
			b.Fatal(err)
		}
		return channel{
			dial: func(ctx context.Context, h *memnet.Host) (net.Conn, error) {
				return cli.DialOverlay(ctx, h, "[2001:db8::1]:443", secure.PinnedKey(srvPub))
			},
			accept: func(ctx context.Context, nc net.Conn) (net.Conn, error) { return srv.AcceptOverlay(ctx, nc) },
		}
	}
	srvCfg, err := secure.ServerConfig(srvKey, true)
	if err != nil {
		b.Fatal(err)
	}
	// X25519 alone, as the overlay's TLS connections had it: no ML-KEM share.
	srvCfg.CurvePreferences = []tls.CurveID{tls.X25519}
	cliCert, err := secure.Certificate(cliKey)
	if err != nil {
		b.Fatal(err)
	}
	cliCfg := secure.ClientConfigCert(&cliCert, secure.PinnedKey(srvPub))
	cliCfg.CurvePreferences = []tls.CurveID{tls.X25519}
	return channel{
		dial: func(ctx context.Context, h *memnet.Host) (net.Conn, error) {
			return secure.Dial(ctx, h, "[2001:db8::1]:443", cliCfg)
		},
		accept: func(ctx context.Context, nc net.Conn) (net.Conn, error) {
			tc, _, err := secure.Accept(ctx, nc, srvCfg)
			return tc, err
		},
	}
}

// benchIdleConn opens b.N connections; on each, each end makes burst calls at once (so
// that their frames and answers arrive back to back, as a supernode's pushes and
// publications do) and the connection is then left idle.
func benchIdleConn(b *testing.B, kind string, entries, burst int) {
	n := memnet.New(memnet.Options{})
	srvHost := n.Host("2001:db8::1")
	ln, err := srvHost.Listen("tcp", "[2001:db8::1]:443")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	ch := newChannel(b, kind)
	seed := &proto.SeedOK{}
	for i := range entries {
		seed.Supernodes = append(seed.Supernodes, proto.SupernodeInfo{ID: fmt.Sprintf("sn%d", i), Addr: fmt.Sprintf("[2001:db8::%x]:4000", i+1), Since: time.Now()})
	}
	echo := rpc.HandlerFunc(func(context.Context, *rpc.Conn, proto.Message) (proto.Message, error) {
		return seed, nil
	})

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	defer func() { cancel(); ln.Close(); wg.Wait() }()
	served := make(chan *rpc.Conn, 64)
	wg.Add(1)
	go func() { // the accepting side: one goroutine per connection, as a server has
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				tc, err := ch.accept(ctx, nc)
				if err != nil {
					nc.Close()
					return
				}
				c := rpc.New(tc, rpc.Options{Handler: echo})
				served <- c
				c.Run(ctx)
			}()
		}
	}()

	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	conns := make([]*rpc.Conn, 0, b.N)
	b.ResetTimer()
	for i := range b.N {
		h := n.Host(fmt.Sprintf("2001:db8:1::%x", i+1))
		tc, err := ch.dial(ctx, h)
		if err != nil {
			b.Fatal(err)
		}
		c := rpc.New(tc, rpc.Options{Handler: echo})
		wg.Add(1)
		go func() { defer wg.Done(); c.Run(ctx) }()
		s := <-served
		var calls sync.WaitGroup
		errs := make(chan error, 2*burst)
		for range burst {
			for _, end := range []*rpc.Conn{c, s} {
				calls.Add(1)
				go func() {
					defer calls.Done()
					if _, err := end.Call(ctx, &proto.OK{}); err != nil {
						errs <- err
					}
				}()
			}
		}
		calls.Wait()
		close(errs)
		for err := range errs {
			b.Fatal(err)
		}
		conns = append(conns, c)
	}
	b.StopTimer()
	runtime.GC()
	for range 4 { // each collection halves a stack at most once
		runtime.GC()
	}
	runtime.ReadMemStats(&after)
	per := func(a, b uint64) float64 { return float64(int64(a)-int64(b)) / float64(len(conns)) }
	b.ReportMetric(per(after.HeapAlloc, before.HeapAlloc), "heap-B/conn")
	b.ReportMetric(per(after.StackInuse, before.StackInuse), "stack-B/conn")
	if f := os.Getenv("PEERLINE_IDLE_HEAP"); f != "" {
		w, err := os.Create(f)
		if err == nil {
			err = pprof.WriteHeapProfile(w)
			w.Close()
		}
		if err != nil {
			b.Error(err)
		}
	}
	for _, c := range conns {
		c.Close()
	}
}

func newKey(tb testing.TB) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return k
}
