package rpc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/wire"
)

func pair(t *testing.T, srv Options) (*Conn, *Conn, *metrics.Set) {
	t.Helper()
	a, b := net.Pipe()
	m := &metrics.Set{}
	srv.Counter = m
	server := New(a, srv)
	client := New(b, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); server.Run(ctx) }()
	go func() { defer wg.Done(); client.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return server, client, m
}

func echo(ctx context.Context, c *Conn, m proto.Message) (proto.Message, error) {
	switch m := m.(type) {
	case *proto.Ping:
		return &proto.Pong{Seq: m.Seq}, nil
	case *proto.Login:
		return nil, proto.ErrWrongPassword
	case *proto.Seed:
		return nil, errors.New("disk on fire")
	}
	return nil, nil
}

func TestCallAndErrors(t *testing.T) {
	_, client, _ := pair(t, Options{Handler: HandlerFunc(echo)})
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := uint64(1); i <= 50; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pong, err := Call[*proto.Pong](ctx, client, &proto.Ping{Seq: i})
			if err != nil || pong.Seq != i {
				t.Errorf("ping %d: %v %v", i, pong, err)
			}
		}()
	}
	wg.Wait()
	if _, err := client.Call(ctx, &proto.Login{Name: "a", Password: "b"}); !errors.Is(err, proto.ErrWrongPassword) {
		t.Fatalf("remote error: %v", err)
	}
	if _, err := client.Call(ctx, &proto.Seed{}); !errors.Is(err, proto.ErrInternal) {
		t.Fatalf("internal error: %v", err)
	}
	if _, err := Call[*proto.Pong](ctx, client, &proto.BuddyList{}); err == nil {
		t.Fatal("OK accepted as Pong")
	}
}

func TestBadMessageKeepsConnection(t *testing.T) {
	server, client, m := pair(t, Options{Handler: HandlerFunc(echo)})
	_ = server
	// A well-framed but invalid body gets bad_request, and the connection keeps working.
	b, _ := wire.AppendFrame(nil, wire.Header{Type: uint8(proto.TLogin), ID: 77}, []byte(`{"name":""}`))
	client.wmu.Lock()
	client.nc.Write(b)
	client.wmu.Unlock()
	if _, err := Call[*proto.Pong](context.Background(), client, &proto.Ping{Seq: 1}); err != nil {
		t.Fatal(err)
	}
	// The bad request is decoded on a goroutine of its own, concurrently with the ping.
	eventually.That(t, 5*time.Second, "the bad request counted", func() bool { return m.Get("decode_errors") > 0 })
	if m.Get("decode_errors") != 1 {
		t.Fatalf("decode_errors = %d", m.Get("decode_errors"))
	}
}

func TestGarbageClosesWithError(t *testing.T) {
	a, b := net.Pipe()
	m := &metrics.Set{}
	server := New(a, Options{Handler: HandlerFunc(echo), Counter: m})
	errc := make(chan error, 1)
	go func() { errc <- server.Run(context.Background()) }()
	go b.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	h, body, err := wire.ReadFrame(b)
	if err != nil {
		t.Fatal(err)
	}
	e, err := proto.Decode(proto.Type(h.Type), body)
	if err != nil || !h.IsError() || !errors.Is(e.(*proto.Error), proto.ErrBadFrame) {
		t.Fatalf("got %+v %v %v", h, e, err)
	}
	if err := <-errc; !errors.Is(err, wire.ErrVersion) {
		t.Fatalf("Run = %v", err)
	}
	if m.Get("frame_errors") != 1 {
		t.Fatal("frame error not counted")
	}
}

func TestCloseFailsPendingAndIdle(t *testing.T) {
	block, served := make(chan struct{}), make(chan struct{}, 1)
	server, client, _ := pair(t, Options{Handler: HandlerFunc(func(ctx context.Context, c *Conn, m proto.Message) (proto.Message, error) {
		served <- struct{}{}
		<-block
		return nil, nil
	})})
	defer close(block)
	errc := make(chan error, 1)
	go func() { _, err := client.Call(context.Background(), &proto.Ping{}); errc <- err }()
	select {
	case <-served: // the call is pending: its request is being served
	case <-time.After(5 * time.Second):
		t.Fatal("the call never reached the handler")
	}
	server.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("pending call: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("pending call not failed by close")
	}

	a, _ := net.Pipe()
	idle := New(a, Options{IdleTimeout: 50 * time.Millisecond})
	err := idle.Run(context.Background())
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("idle conn closed with %v, want a timeout", err)
	}
}

func BenchmarkCall(b *testing.B) {
	x, y := net.Pipe()
	server := New(x, Options{Handler: HandlerFunc(echo)})
	client := New(y, Options{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go server.Run(ctx)
	go client.Run(ctx)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := client.Call(ctx, &proto.Ping{Seq: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

func TestOversizedAnswerBecomesError(t *testing.T) {
	_, client, _ := pair(t, Options{Handler: HandlerFunc(func(ctx context.Context, c *Conn, m proto.Message) (proto.Message, error) {
		return &proto.Error{Code: "x", Message: strings.Repeat("y", wire.MaxBody)}, nil
	})})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := client.Call(ctx, &proto.Ping{}); !errors.Is(err, proto.ErrInternal) {
		t.Fatalf("oversized answer: %v, want an internal error at once", err)
	}
}

// writeSizes records the size of every Write on a connection.
type writeSizes struct {
	net.Conn
	mu    sync.Mutex // mu protects sizes
	sizes []int
}

func (w *writeSizes) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.sizes = append(w.sizes, len(p))
	w.mu.Unlock()
	return w.Conn.Write(p)
}

// TestLargeFramesWrittenInSmallPieces: a large answer reaches the caller whole, written
// in pieces of at most maxWrite bytes (over TLS, records the receiver's buffer need not
// grow for).
func TestLargeFramesWrittenInSmallPieces(t *testing.T) {
	a, b := net.Pipe()
	ws := &writeSizes{Conn: a}
	big := &proto.PeersOK{}
	for i := range proto.MaxList {
		big.Supernodes = append(big.Supernodes, proto.SupernodeInfo{ID: strings.Repeat("k", 43),
			Addr: fmt.Sprintf("[2001:db8:0:%x::1]:7100", i), Since: time.Unix(1e9, 0).UTC()})
	}
	server := New(ws, Options{Handler: HandlerFunc(func(ctx context.Context, c *Conn, m proto.Message) (proto.Message, error) {
		return big, nil
	})})
	client := New(b, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); server.Run(ctx) }()
	go func() { defer wg.Done(); client.Run(ctx) }()
	defer func() { cancel(); wg.Wait() }()
	resp, err := client.Call(ctx, &proto.Ping{})
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := resp.(*proto.PeersOK); !ok || !reflect.DeepEqual(got, big) {
		t.Fatalf("answer %T arrived damaged", resp)
	}
	size, _ := proto.Encode(big)
	ws.mu.Lock()
	defer ws.mu.Unlock()
	total := 0
	for _, n := range ws.sizes {
		if n > maxWrite {
			t.Fatalf("a write of %d bytes (at most %d wanted): %v", n, maxWrite, ws.sizes)
		}
		total += n
	}
	if total < len(size) || len(ws.sizes) < len(size)/maxWrite {
		t.Fatalf("writes %v carry %d bytes", ws.sizes, total)
	}
}

// flagConn records the flags of the frames written through it (each small frame is one
// Write).
type flagConn struct {
	net.Conn
	mu    sync.Mutex
	flags []uint16
}

func (f *flagConn) Write(b []byte) (int, error) {
	if h, err := wire.ParseHeader(b); err == nil {
		f.mu.Lock()
		f.flags = append(f.flags, h.Flags)
		f.mu.Unlock()
	}
	return f.Conn.Write(b)
}

func (f *flagConn) binary() (n, of int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fl := range f.flags {
		if fl&wire.FlagBinary != 0 {
			n++
		}
	}
	return n, len(f.flags)
}

func flagPair(t *testing.T, srv, cli Options) (server, client *Conn, sw, cw *flagConn) {
	t.Helper()
	a, b := net.Pipe()
	sw, cw = &flagConn{Conn: a}, &flagConn{Conn: b}
	server, client = New(sw, srv), New(cw, cli)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); server.Run(ctx) }()
	go func() { defer wg.Done(); client.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return server, client, sw, cw
}

// TestBinaryOnceThePeerReadsIt: both ends speak JSON until one learns the other reads
// binary bodies; the other learns it from the first binary frame.
func TestBinaryOnceThePeerReadsIt(t *testing.T) {
	_, client, sw, cw := flagPair(t, Options{Handler: HandlerFunc(echo)}, Options{})
	ctx := context.Background()
	if p, err := Call[*proto.Pong](ctx, client, &proto.Ping{Seq: 1}); err != nil || p.Seq != 1 {
		t.Fatalf("ping: %v %v", p, err)
	}
	if n, _ := cw.binary(); n != 0 {
		t.Fatal("binary sent before the peer said it reads it")
	}
	if n, _ := sw.binary(); n != 0 {
		t.Fatal("binary answer to a JSON peer")
	}
	client.PeerReadsBinary()
	if p, err := Call[*proto.Pong](ctx, client, &proto.Ping{Seq: 2}); err != nil || p.Seq != 2 {
		t.Fatalf("binary ping: %v %v", p, err)
	}
	if n, of := cw.binary(); n != 1 || of != 2 {
		t.Fatalf("client sent %d binary frames of %d, want 1 of 2", n, of)
	}
	if n, of := sw.binary(); n != 1 || of != 2 {
		t.Fatalf("server answered %d binary frames of %d, want the second", n, of)
	}
	// A message without a binary form stays JSON, and an error answer too.
	if _, err := client.Call(ctx, &proto.Login{Name: "a", Password: "b"}); !errors.Is(err, proto.ErrWrongPassword) {
		t.Fatalf("login: %v", err)
	}
	if n, of := cw.binary(); n != 1 || of != 3 {
		t.Fatalf("Login went binary: %d of %d", n, of)
	}
}

// TestJSONOnlyPeer: an end from before binary bodies is never sent one, and ends the
// connection on one as it would on any unknown flag.
func TestJSONOnlyPeer(t *testing.T) {
	server, client, sw, cw := flagPair(t, Options{Handler: HandlerFunc(echo), JSONOnly: true}, Options{})
	ctx := context.Background()
	server.PeerReadsBinary() // what an old peer never does: it must change nothing
	for i := uint64(1); i <= 3; i++ {
		if _, err := Call[*proto.Pong](ctx, client, &proto.Ping{Seq: i}); err != nil {
			t.Fatal(err)
		}
	}
	if n, _ := sw.binary(); n != 0 || server.ReadsBinary() {
		t.Fatalf("a JSON-only end sent %d binary frames", n)
	}
	if n, _ := cw.binary(); n != 0 {
		t.Fatalf("%d binary frames to a JSON-only end", n)
	}
	client.PeerReadsBinary() // a wrong belief: the old end refuses the frame
	if _, err := client.Call(ctx, &proto.Ping{Seq: 9}); err == nil {
		t.Fatal("a JSON-only end answered a binary frame")
	}
	select {
	case <-server.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the JSON-only end kept the connection after a binary frame")
	}
}

// CallTimeout gives up after its duration as a context's deadline would, leaves no
// pending call behind (the late answer is dropped), and the connection goes on.
func TestCallTimeout(t *testing.T) {
	release := make(chan struct{})
	_, client, _ := pair(t, Options{Handler: HandlerFunc(func(ctx context.Context, c *Conn, m proto.Message) (proto.Message, error) {
		if _, ok := m.(*proto.Seed); ok {
			<-release
		}
		return echo(ctx, c, m)
	})})
	defer close(release)
	if _, err := client.CallTimeout(context.Background(), &proto.Seed{}, 20*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("a call past its timeout: %v, want context.DeadlineExceeded", err)
	}
	client.mu.Lock()
	pending := len(client.pending)
	client.mu.Unlock()
	if pending != 0 {
		t.Fatalf("%d calls still pending after the timeout", pending)
	}
	pong, err := client.CallTimeout(context.Background(), &proto.Ping{Seq: 7}, 5*time.Second)
	if err != nil || pong.(*proto.Pong).Seq != 7 {
		t.Fatalf("a call within its timeout: %v, %v", pong, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := client.CallTimeout(ctx, &proto.Seed{}, 5*time.Second); !errors.Is(err, context.Canceled) {
		t.Fatalf("a call whose context ended: %v, want context.Canceled", err)
	}
}
