// Package rpc runs request/response exchanges and one-way notifications over one control
// connection, in both directions at once: a client calls its supernode, and the supernode
// can push to the client over the same connection.
//
// Frames (package wire) carry messages (package proto). A request has a non-zero id and
// gets exactly one response frame with the same id; a frame with id 0 is a notification.
// Requests are served concurrently, up to a per-connection bound. A frame that does not
// parse ends the connection after a bad_frame error notification, and is counted.
package rpc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/serve"
	"github.com/peerline/peerline/internal/wire"
)

// Handler serves the requests and notifications that arrive on a Conn. For a notification
// the answer is discarded. A returned *proto.Error reaches the caller as is; any other
// error reaches it as proto.ErrInternal (the detail stays in the server's log).
type Handler interface {
	Handle(ctx context.Context, c *Conn, m proto.Message) (proto.Message, error)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, c *Conn, m proto.Message) (proto.Message, error)

// Handle implements Handler.
func (f HandlerFunc) Handle(ctx context.Context, c *Conn, m proto.Message) (proto.Message, error) {
	return f(ctx, c, m)
}

// Options configure a Conn.
type Options struct {
	Handler      Handler         // nil: every request is answered with bad_request
	IdleTimeout  time.Duration   // close when nothing arrives for this long; 0 = never
	WriteTimeout time.Duration   // per frame; 0 = 10s
	MaxInFlight  int             // requests served at once; 0 = 16 (the reader waits beyond it)
	Counter      metrics.Counter // counts frame_errors, decode_errors; nil = not counted
	Logger       *slog.Logger    // nil = slog.Default()
	// JSONOnly makes this end a peer from before binary bodies: it sends JSON only and
	// takes a binary frame for a frame error. false: binary bodies go to a peer once it
	// has shown it reads them (PeerReadsBinary, or a binary frame from it).
	JSONOnly bool
}

// ErrClosed is returned by calls on a closed connection.
var ErrClosed = errors.New("rpc: connection closed")

// Conn is one control connection.
type Conn struct {
	nc   net.Conn
	opts Options
	log  *slog.Logger

	wmu sync.Mutex // serializes frame writes

	mu      sync.Mutex // mu protects the following fields
	pending map[uint32]chan result
	err     error

	nextID     atomic.Uint32
	lastRead   atomic.Int64 // UnixNano of the last frame read; 0 = none yet
	peerBinary atomic.Bool  // the peer reads binary bodies
	done       chan struct{}
	closeOnce  sync.Once
	// sem holds a token for each request being served; Run waits for the handlers by
	// taking every token. (A WaitGroup costs more: in a testing/synctest bubble, where
	// the simulation runs, each Add looks the group up among its memory span's specials,
	// which was 4% of a 100,000-user storm's CPU.)
	sem chan struct{}
}

type result struct {
	m   proto.Message
	err error
}

// New wraps nc. Call Run to start reading.
func New(nc net.Conn, opts Options) *Conn {
	if opts.WriteTimeout <= 0 {
		opts.WriteTimeout = 10 * time.Second
	}
	if opts.MaxInFlight <= 0 {
		opts.MaxInFlight = 16
	}
	log := opts.Logger
	if log == nil {
		log = slog.Default()
	}
	return &Conn{
		nc:      nc,
		opts:    opts,
		log:     log,
		pending: make(map[uint32]chan result),
		done:    make(chan struct{}),
		sem:     make(chan struct{}, opts.MaxInFlight),
	}
}

// LastRead returns when the last frame arrived (the zero time if none has): a
// connection that both ends use is busy while either is.
func (c *Conn) LastRead() time.Time {
	if n := c.lastRead.Load(); n != 0 {
		return time.Unix(0, n)
	}
	return time.Time{}
}

// PeerReadsBinary records that the peer reads binary bodies (it said so in its first
// message): from now on, messages with a binary form go to it in that form. A peer that
// sends a binary frame is taken to read them too. Without JSONOnly only.
func (c *Conn) PeerReadsBinary() {
	if !c.opts.JSONOnly {
		c.peerBinary.Store(true)
	}
}

// ReadsBinary reports whether this end sends binary bodies and reads them.
func (c *Conn) ReadsBinary() bool { return !c.opts.JSONOnly }

// NetConn returns the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.nc }

// Done is closed when the connection has closed.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Err returns why the connection closed (nil while open).
func (c *Conn) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

func (c *Conn) count(name string) {
	if c.opts.Counter != nil {
		c.opts.Counter.Inc(name)
	}
}

// Close closes the connection; it is safe to call more than once.
func (c *Conn) Close() error {
	c.closeWith(ErrClosed)
	return nil
}

func (c *Conn) closeWith(err error) {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.err = err
		pending := c.pending
		c.pending = nil
		c.mu.Unlock()
		c.nc.Close()
		close(c.done)
		for _, ch := range pending {
			ch <- result{err: fmt.Errorf("%w: %v", ErrClosed, err)}
		}
	})
}

// Run reads frames until the connection fails or ctx ends, then closes the connection and
// waits for in-flight handlers. It returns the reason (io.EOF for a clean close by the peer).
func (c *Conn) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { c.closeWith(ctx.Err()) })
	defer stop()
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := c.readLoop(hctx)
	c.closeWith(err)
	cancel()
	for range cap(c.sem) {
		c.sem <- struct{}{} // every handler has returned its token
	}
	return c.Err()
}

func (c *Conn) readLoop(ctx context.Context) error {
	for {
		if c.opts.IdleTimeout > 0 {
			c.nc.SetReadDeadline(time.Now().Add(c.opts.IdleTimeout))
		}
		h, body, err := wire.ReadFrame(c.nc)
		if err == nil {
			c.lastRead.Store(time.Now().UnixNano())
		}
		if err == nil && h.Flags&wire.FlagBinary != 0 {
			if c.opts.JSONOnly {
				err = fmt.Errorf("%w: %#x", wire.ErrFlags, h.Flags) // as a peer from before it
			} else if !c.peerBinary.Load() {
				c.peerBinary.Store(true) // once, not a write per frame
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) {
				return io.EOF
			}
			if errors.Is(err, wire.ErrVersion) || errors.Is(err, wire.ErrTooLarge) ||
				errors.Is(err, wire.ErrFlags) || errors.Is(err, wire.ErrType) {
				c.count("frame_errors")
				c.log.Debug("bad frame", "remote", c.nc.RemoteAddr(), "err", err)
				c.send(wire.Header{Type: uint8(proto.TError), Flags: wire.FlagError}, proto.ErrBadFrame.With("%v", err))
				return err
			}
			return err
		}
		// Messages are decoded on goroutines of their own, never on this one: a decode
		// (encoding/json, reflection, recursion) grows a stack to 8 KiB, and a stack is
		// halved at a collection only while it uses under a quarter of it, which a
		// goroutine blocked in a TLS read does not. The reader of an idle connection
		// then keeps 4 KiB instead of 8 KiB for the connection's life; a supernode
		// holds thousands of them (go test ./internal/rpc -bench IdleConn).
		if h.IsResponse() {
			if ch := c.claim(h.ID); ch != nil {
				go c.deliver(ch, h, body)
			}
			continue
		}
		select {
		case c.sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		go func() {
			defer func() { <-c.sem }()
			m, err := proto.DecodeAs(proto.Type(h.Type), body, h.Flags&wire.FlagBinary != 0)
			if err != nil {
				c.count("decode_errors")
				c.log.Debug("bad message", "remote", c.nc.RemoteAddr(), "err", err)
				if h.ID != 0 {
					c.send(wire.Header{Type: uint8(proto.TError), Flags: wire.FlagResponse | wire.FlagError, ID: h.ID},
						proto.ErrBadRequest.With("%v", err))
				}
				return
			}
			c.serve(ctx, h.ID, m)
		}()
	}
}

func (c *Conn) serve(ctx context.Context, id uint32, m proto.Message) {
	var resp proto.Message
	var err error = proto.ErrBadRequest.With("no handler on this connection")
	// The server's deadline for connections that have not authenticated waits for the
	// answer to go out: a login that queued past it still hears why it failed.
	defer serve.Working(ctx)()
	if c.opts.Handler != nil {
		resp, err = c.opts.Handler.Handle(ctx, c, m)
	}
	if id == 0 {
		return
	}
	if err != nil {
		pe, ok := proto.AsError(err)
		if !ok {
			c.log.Warn("handler failed", "type", m.Type(), "remote", c.nc.RemoteAddr(), "err", err)
			pe = proto.ErrInternal
		}
		c.send(wire.Header{Type: uint8(proto.TError), Flags: wire.FlagResponse | wire.FlagError, ID: id}, pe)
		return
	}
	if resp == nil {
		resp = &proto.OK{}
	}
	if err := c.send(wire.Header{Type: uint8(resp.Type()), Flags: wire.FlagResponse, ID: id}, resp); errors.Is(err, wire.ErrTooLarge) {
		// The caller must hear something rather than wait for its deadline.
		c.log.Error("answer too large for a frame", "type", resp.Type(), "err", err)
		c.send(wire.Header{Type: uint8(proto.TError), Flags: wire.FlagResponse | wire.FlagError, ID: id}, proto.ErrInternal.With("answer too large"))
	}
}

// claim takes the waiting call with id off the pending list and returns its channel, or
// nil if the caller gave up (late answers are dropped).
func (c *Conn) claim(id uint32) chan result {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.pending[id]
	if !ok {
		return nil
	}
	delete(c.pending, id)
	return ch
}

// deliver decodes an answer and hands it to the call waiting on ch (buffered: never
// blocks).
func (c *Conn) deliver(ch chan result, h wire.Header, body []byte) {
	m, err := proto.DecodeAs(proto.Type(h.Type), body, h.Flags&wire.FlagBinary != 0)
	if err != nil {
		c.count("decode_errors")
		ch <- result{err: err}
		return
	}
	if h.IsError() {
		pe, ok := m.(*proto.Error)
		if !ok {
			ch <- result{err: proto.ErrBadRequest.With("error flag on a %d message", h.Type)}
			return
		}
		ch <- result{err: pe}
		return
	}
	ch <- result{m: m}
}

func (c *Conn) send(h wire.Header, m proto.Message) error {
	body, binary, err := proto.EncodeFor(m, c.peerBinary.Load())
	if err != nil {
		return err
	}
	if binary {
		h.Flags |= wire.FlagBinary
	}
	bp := framePool.Get().(*[]byte)
	defer putFrame(bp)
	*bp, err = wire.AppendFrame((*bp)[:0], h, body)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
	for b := *bp; len(b) > 0; {
		n := min(len(b), maxWrite)
		if _, err := c.nc.Write(b[:n]); err != nil {
			c.closeWith(err)
			return fmt.Errorf("%w: %v", ErrClosed, err)
		}
		b = b[n:]
	}
	return nil
}

// maxWrite is the most bytes handed to the connection in one Write. Over TLS each Write
// of up to 16 KiB becomes one record, and the receiving tls.Conn keeps an input buffer
// the size of the largest record it ever read (twice that, as it grows) for the rest of
// its life: one list of 200 supernodes would cost each idle client's connection 32 KiB
// for good. In writes of at most 1 KiB, frames of a few hundred bytes (nearly all) cost
// nothing more, and a large one more records (22 bytes of record overhead each, 2%).
// Per idle connection, both ends, after an answer of 200 supernodes (go test
// ./internal/rpc -bench IdleConn/answer=200): 26.9 KB of heap with 2 KiB writes, 21.5 KB
// with 1 KiB, 19.3 KB with 512 bytes, which would double the records and the segments of
// every large frame for 2 KB more.
const maxWrite = 1 << 10

// framePool holds the buffers frames are encoded into. They are shared by all
// connections instead of one kept per connection at its largest frame: a supernode holds
// thousands of mostly idle connections, and each kept buffer cost it memory for nothing.
var framePool = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// maxPooledFrame is the largest buffer returned to framePool; a larger one (a batch of
// records, say) is left to the garbage collector.
const maxPooledFrame = 64 << 10

func putFrame(bp *[]byte) {
	if cap(*bp) <= maxPooledFrame {
		framePool.Put(bp)
	}
}

// Notify sends m without waiting for an answer.
func (c *Conn) Notify(m proto.Message) error {
	select {
	case <-c.done:
		return ErrClosed
	default:
	}
	return c.send(wire.Header{Type: uint8(m.Type())}, m)
}

// Call sends req and waits for its answer until ctx ends. A remote error comes back as a
// *proto.Error.
func (c *Conn) Call(ctx context.Context, req proto.Message) (proto.Message, error) {
	return c.call(ctx, req, nil)
}

// CallTimeout is Call bounded by d as well as by ctx, without a context of its own: on
// d's end it returns context.DeadlineExceeded, as a context's deadline would. A
// supernode sends every message to another under a timeout, and a context for each
// (its timer, and its place among the children of a context that thousands of calls
// share) was 2.4% of the CPU of a reboot storm of 100,000 clients.
func (c *Conn) CallTimeout(ctx context.Context, req proto.Message, d time.Duration) (proto.Message, error) {
	t := time.NewTimer(d)
	defer t.Stop()
	return c.call(ctx, req, t.C)
}

func (c *Conn) call(ctx context.Context, req proto.Message, timeout <-chan time.Time) (proto.Message, error) {
	id := c.nextID.Add(1)
	if id == 0 {
		id = c.nextID.Add(1)
	}
	ch := make(chan result, 1)
	c.mu.Lock()
	if c.pending == nil {
		err := c.err
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %v", ErrClosed, err)
	}
	c.pending[id] = ch
	c.mu.Unlock()
	if err := c.send(wire.Header{Type: uint8(req.Type()), ID: id}, req); err != nil {
		c.forget(id)
		return nil, err
	}
	select {
	case r := <-ch:
		return r.m, r.err
	case <-ctx.Done():
		c.forget(id)
		return nil, ctx.Err()
	case <-timeout:
		c.forget(id)
		return nil, context.DeadlineExceeded
	}
}

func (c *Conn) forget(id uint32) {
	c.mu.Lock()
	if c.pending != nil {
		delete(c.pending, id)
	}
	c.mu.Unlock()
}

// Call is Conn.Call with the answer's type checked.
func Call[T proto.Message](ctx context.Context, c *Conn, req proto.Message) (T, error) {
	var zero T
	m, err := c.Call(ctx, req)
	if err != nil {
		return zero, err
	}
	t, ok := m.(T)
	if !ok {
		return zero, fmt.Errorf("rpc: %T answered with unexpected %T", req, m)
	}
	return t, nil
}
