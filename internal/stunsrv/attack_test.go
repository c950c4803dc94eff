package stunsrv

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/metrics"
	"github.com/peerline/peerline/internal/syncbuf"
)

// flakyConn wraps a socket: its first reads fail with readErr, its writes fail when
// failWrites is set.
type flakyConn struct {
	*net.UDPConn
	failReads  atomic.Int32
	failWrites bool
}

var errFlaky = &net.OpError{Op: "read", Net: "udp", Err: os.NewSyscallError("recvfrom", syscall.ENOBUFS)}

func (c *flakyConn) ReadFrom(b []byte) (int, net.Addr, error) {
	if c.failReads.Add(-1) >= 0 {
		return 0, nil, errFlaky
	}
	return c.UDPConn.ReadFrom(b)
}

func (c *flakyConn) WriteTo(b []byte, a net.Addr) (int, error) {
	if c.failWrites {
		return 0, errors.New("write refused")
	}
	return c.UDPConn.WriteTo(b, a)
}

func listenFlaky(t *testing.T) *flakyConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return &flakyConn{UDPConn: c}
}

func serveIt(t *testing.T, cfg Config) *Server {
	t.Helper()
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	t.Cleanup(func() {
		s.Close()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Error("Serve did not return after Close")
		}
	})
	return s
}

// binding sends a Binding request from a fresh socket on 127.0.0.1 and reports whether
// an answer came.
func binding(t *testing.T, to net.Addr) bool {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteTo(request(t), to); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, _, err := c.ReadFrom(make([]byte, 1500))
	return err == nil && n > 0
}

// A read error that is not closure used to end the read loop and the server with it.
func TestReadErrorsWaitedOut(t *testing.T) {
	conn := listenFlaky(t)
	conn.failReads.Store(5)
	m := &metrics.Set{}
	s := serveIt(t, Config{Conns: [4]net.PacketConn{conn}, Metrics: m})
	if !binding(t, conn.LocalAddr()) {
		t.Fatal("no answer after read errors")
	}
	if got := m.Get(MetricReadErrors); got != 5 {
		t.Errorf("%s = %d, want 5", MetricReadErrors, got)
	}
	if st := s.Stats(); st.Requests != 1 {
		t.Errorf("stats %+v, want 1 request", st)
	}
}

// Garbage is counted, and the server answers on.
func TestGarbageCounted(t *testing.T) {
	conn := listenFlaky(t)
	m := &metrics.Set{}
	serveIt(t, Config{Conns: [4]net.PacketConn{conn}, Metrics: m})
	c, err := net.Dial("udp4", conn.LocalAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	req := request(t)
	truncated := append([]byte(nil), req[:20]...)
	truncated[3] = 8 // claims 8 bytes of attributes it does not have
	const n = 100
	for i := 0; i < n; i++ {
		c.Write(bytes.Repeat([]byte{byte(i)}, 1+i))
		c.Write(truncated)
	}
	// 200 datagrams fit in the socket buffer: none is lost.
	eventually.That(t, 5*time.Second, "the garbage counted", func() bool { return m.Get(MetricGarbage) >= 2*n })
	if got := m.Get(MetricGarbage); got != 2*n {
		t.Errorf("%s = %d, want %d", MetricGarbage, got, 2*n)
	}
	if !binding(t, conn.LocalAddr()) {
		t.Fatal("no answer after garbage")
	}
	if got := m.Get(MetricRequests); got != 1 {
		t.Errorf("%s = %d, want 1", MetricRequests, got)
	}
}

// A flood that makes the server log (here: every response fails to send) logs a bounded
// number of lines and counts the rest.
func TestLogFloodBounded(t *testing.T) {
	conn := listenFlaky(t)
	conn.failWrites = true
	m := &metrics.Set{}
	var logs syncbuf.Buffer
	serveIt(t, Config{Conns: [4]net.PacketConn{conn}, Metrics: m,
		Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	const n = 500
	var srcs []*net.UDPConn
	for i := 0; i < 5; i++ {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 1, byte(1+i))})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		srcs = append(srcs, c)
	}
	for i := 0; i < n; i++ {
		srcs[i%len(srcs)].WriteTo(request(t), conn.LocalAddr())
		// In batches that the socket buffer holds: a datagram lost is not a failure.
		if i%50 == 49 || i == n-1 {
			eventually.That(t, 10*time.Second, "the batch's write failures", func() bool { return m.Get(MetricWriteErrs) >= uint64(i+1) })
		}
	}
	if got := m.Get(MetricWriteErrs); got != n {
		t.Fatalf("%s = %d, want %d", MetricWriteErrs, got, n)
	}
	lines := strings.Count(logs.String(), "stunsrv: write failed")
	if lines == 0 || lines > len(srcs) {
		t.Errorf("%d log lines for %d failures from %d sources, want 1 to %d", lines, n, len(srcs), len(srcs))
	}
	if got := m.Get("log_suppressed"); got != uint64(n-lines) {
		t.Errorf("log_suppressed = %d, want %d", got, n-lines)
	}
}
