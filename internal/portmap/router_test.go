package portmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/metrics"
)

// The router of these tests is a home router's NAT-PMP and PCP server on loopback, as
// routers run one: one UDP socket for both protocols, told apart by the version byte.
// It checks every request byte by byte (reporting a malformed one as a test error),
// records it, and answers as a router would, with an epoch that runs on the test's fake
// clock. Its answers are built here byte by byte too, not with the package's codecs,
// so that the two sides check each other.

var (
	loopback   = netip.MustParseAddr("127.0.0.1")
	routerExt  = netip.MustParseAddr("203.0.113.7") // the router's external address
	testPort   = uint16(41641)                      // Config.LocalPort of the tests
	testLife   = uint32(7200)                       // the lifetime asked for by default
	mappedLoop = [16]byte{10: 0xff, 11: 0xff, 12: 127, 15: 1}
)

type request struct {
	b  []byte
	at time.Time // on the fake clock
}

type router struct {
	t    testing.TB
	conn net.PacketConn
	clk  *clockwork.FakeClock
	wg   sync.WaitGroup

	mu sync.Mutex // mu protects all following fields
	// natpmp and pcp say which protocols the router speaks; a request in the other is
	// answered "unsupported version" in the protocol spoken (RFC 6887 §9).
	natpmp, pcp bool
	silent      bool      // answer nothing
	start       time.Time // when the epoch was 0
	ext         netip.Addr
	// assign is the external port given to a new mapping; 0 = the one suggested, or
	// 50000 without a suggestion.
	assign  uint16
	maxLife uint32 // lifetime granted at most; 0 = what is asked
	// refuse, if set, is the result code that mapping requests are answered with.
	refuseNATPMP uint16
	refusePCP    uint8
	// strangerFirst makes the router answer every PCP MAP first with another nonce and
	// port 1111, as for another client's mapping.
	strangerFirst bool
	mappings      map[uint16]uint16 // internal port to external port
	reqs          []request
}

func newRouter(t testing.TB, clk *clockwork.FakeClock) *router {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &router{t: t, conn: conn, clk: clk, natpmp: true, pcp: true, start: clk.Now(), ext: routerExt,
		mappings: map[uint16]uint16{}}
	r.wg.Go(r.serve)
	t.Cleanup(func() {
		conn.Close()
		r.wg.Wait()
	})
	return r
}

func (r *router) port() uint16 { return uint16(r.conn.LocalAddr().(*net.UDPAddr).Port) }

func (r *router) set(f func(r *router)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

// requests returns the requests received so far.
func (r *router) requests() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][]byte, len(r.reqs))
	for i, q := range r.reqs {
		out[i] = q.b
	}
	return out
}

func (r *router) count() int { return len(r.requests()) }

// restart loses every mapping and starts the epoch again, as a router does on a reboot.
func (r *router) restart() {
	r.set(func(r *router) {
		r.start = r.clk.Now()
		r.mappings = map[uint16]uint16{}
	})
}

func (r *router) serve() {
	buf := make([]byte, 2048)
	for {
		n, from, err := r.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		b := append([]byte(nil), buf[:n]...)
		r.mu.Lock()
		r.reqs = append(r.reqs, request{b, r.clk.Now()})
		var answers [][]byte
		if !r.silent {
			answers = r.answerLocked(b, from.(*net.UDPAddr).AddrPort())
		}
		r.mu.Unlock()
		for _, a := range answers {
			r.conn.WriteTo(a, from)
		}
	}
}

func (r *router) epochLocked() []byte {
	return binary.BigEndian.AppendUint32(nil, uint32(r.clk.Since(r.start)/time.Second))
}

func (r *router) answerLocked(b []byte, from netip.AddrPort) [][]byte {
	if from.Addr().Unmap() != loopback {
		r.t.Errorf("request from %v", from)
	}
	switch {
	case len(b) > 0 && b[0] == 0 && !r.natpmp && len(b) >= 2:
		// PCP's UNSUPP_VERSION: version 2, R and the opcode, result 1, lifetime 0, epoch.
		a := []byte{2, 0x80 | b[1], 0, 1, 0, 0, 0, 0}
		a = append(a, r.epochLocked()...)
		return [][]byte{append(a, make([]byte, 12)...)}
	case len(b) > 0 && b[0] == 2 && !r.pcp && len(b) >= 2:
		// NAT-PMP's "unsupported version": version 0, 128 + opcode, result 1, epoch.
		return [][]byte{append([]byte{0, 128 + b[1], 0, 1}, r.epochLocked()...)}
	case len(b) == 2 && b[0] == 0 && b[1] == 0:
		a := append([]byte{0, 128, 0, 0}, r.epochLocked()...)
		ext := r.ext.As4()
		return [][]byte{append(a, ext[:]...)}
	case len(b) == 12 && b[0] == 0 && b[1] == 1:
		return [][]byte{r.natpmpMapLocked(b)}
	case len(b) == 24 && b[0] == 2 && b[1] == 0:
		r.checkPCPHeader(b, from)
		a := []byte{2, 0x80, 0, 0, 0, 0, 0, 0}
		a = append(a, r.epochLocked()...)
		return [][]byte{append(a, make([]byte, 12)...)}
	case len(b) == 60 && b[0] == 2 && b[1] == 1:
		r.checkPCPHeader(b, from)
		return r.pcpMapLocked(b)
	}
	r.t.Errorf("router: malformed request % x", b)
	return nil
}

func (r *router) natpmpMapLocked(b []byte) []byte {
	if b[2] != 0 || b[3] != 0 {
		r.t.Errorf("NAT-PMP mapping request with reserved bytes % x", b[2:4])
	}
	internal := binary.BigEndian.Uint16(b[4:6])
	suggested := binary.BigEndian.Uint16(b[6:8])
	life := binary.BigEndian.Uint32(b[8:12])
	a := []byte{0, 129}
	if r.refuseNATPMP != 0 {
		a = binary.BigEndian.AppendUint16(a, r.refuseNATPMP)
		return append(a, r.epochLocked()...) // an error response needs no more
	}
	a = append(a, 0, 0)
	a = append(a, r.epochLocked()...)
	ext := uint16(0)
	if life == 0 {
		if suggested != 0 {
			r.t.Errorf("NAT-PMP deletion suggests port %d, want 0 (RFC 6886 §3.4)", suggested)
		}
		delete(r.mappings, internal)
	} else {
		ext = r.assignLocked(internal, suggested)
		life = r.grantLocked(life)
	}
	a = binary.BigEndian.AppendUint16(a, internal)
	a = binary.BigEndian.AppendUint16(a, ext)
	return binary.BigEndian.AppendUint32(a, life)
}

func (r *router) assignLocked(internal, suggested uint16) uint16 {
	ext := r.assign
	if ext == 0 {
		ext = suggested
	}
	if ext == 0 {
		ext = 50000
	}
	r.mappings[internal] = ext
	return ext
}

func (r *router) grantLocked(life uint32) uint32 {
	if r.maxLife != 0 && life > r.maxLife {
		return r.maxLife
	}
	return life
}

// checkPCPHeader checks what every PCP request of this client must carry: R clear,
// reserved bytes zero, and the client's address as the router sees it, IPv4-mapped.
func (r *router) checkPCPHeader(b []byte, from netip.AddrPort) {
	if b[2] != 0 || b[3] != 0 {
		r.t.Errorf("PCP request with reserved bytes % x", b[2:4])
	}
	if got := [16]byte(b[8:24]); got != mappedLoop || netip.AddrFrom16(got).Unmap() != from.Addr().Unmap() {
		r.t.Errorf("PCP client address % x, the request came from %v", got, from)
	}
	if b[1] == 0 && !bytes.Equal(b[4:8], []byte{0, 0, 0, 0}) {
		r.t.Errorf("PCP ANNOUNCE with lifetime % x", b[4:8])
	}
}

func (r *router) pcpMapLocked(b []byte) [][]byte {
	life := binary.BigEndian.Uint32(b[4:8])
	data := b[24:60]
	if data[12] != 17 || !bytes.Equal(data[13:16], []byte{0, 0, 0}) {
		r.t.Errorf("PCP MAP protocol and reserved bytes % x, want 11 00 00 00", data[12:16])
	}
	internal := binary.BigEndian.Uint16(data[16:18])
	suggested := binary.BigEndian.Uint16(data[18:20])
	header := func(result uint8, life uint32) []byte {
		h := []byte{2, 0x81, 0, result}
		h = binary.BigEndian.AppendUint32(h, life)
		h = append(h, r.epochLocked()...)
		return append(h, make([]byte, 12)...)
	}
	if r.refusePCP != 0 {
		// An error response carries the request's data (RFC 6887 §7.2).
		return [][]byte{append(header(r.refusePCP, 0), data...)}
	}
	var answers [][]byte
	if r.strangerFirst {
		other := append([]byte(nil), data...)
		other[0] ^= 0xff
		binary.BigEndian.PutUint16(other[18:20], 1111)
		copy(other[20:36], mappedExt(r.ext))
		answers = append(answers, append(header(0, life), other...))
	}
	out := append([]byte(nil), data...)
	if life == 0 {
		delete(r.mappings, internal)
	} else {
		life = r.grantLocked(life)
		binary.BigEndian.PutUint16(out[18:20], r.assignLocked(internal, suggested))
		copy(out[20:36], mappedExt(r.ext))
	}
	return append(answers, append(header(0, life), out...))
}

func mappedExt(a netip.Addr) []byte {
	s := a.As16()
	return s[:]
}

// testClient returns a Client of r on loopback, with a fake clock, a logger writing to
// the test's log, and the protocols given (all three if none: then UPnP's search goes
// to silentSSDP, which answers nothing).
func testClient(t *testing.T, r *router, mod func(*Config), protos ...Protocol) (*Client, *metrics.Set) {
	t.Helper()
	ms := &metrics.Set{}
	cfg := Config{
		LocalPort:   testPort,
		Gateway:     loopback,
		GatewayPort: r.port(),
		SSDPPort:    silentSSDP(t),
		Protocols:   protos,
		Clock:       r.clk,
		Logger:      testLogger(t),
		Metrics:     ms,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c, ms
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// silentSSDP returns the port of a loopback socket that reads and never answers.
func silentSSDP(t *testing.T) uint16 {
	t.Helper()
	conn, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return uint16(conn.LocalAddr().(*net.UDPAddr).Port)
}

// mapUntilDone runs Map on another goroutine and moves the fake clock on, a step at a
// time, until it returns: for a router that does not answer everything.
func mapUntilDone(t *testing.T, c *Client, clk *clockwork.FakeClock) (Mapping, error) {
	t.Helper()
	type result struct {
		m   Mapping
		err error
	}
	done := make(chan result, 1)
	go func() {
		m, err := c.Map(t.Context())
		done <- result{m, err}
	}()
	res := advanceUntil(t, clk, "Map to return", done)
	return res.m, res.err
}

// advanceUntil waits for a value on done, moving the fake clock 50 ms at each poll: the
// client's bounds (its timeouts and resends) are on that clock.
func advanceUntil[T any](t *testing.T, clk *clockwork.FakeClock, what string, done <-chan T) T {
	t.Helper()
	var v T
	eventually.That(t, 10*time.Second, what, func() bool {
		select {
		case v = <-done:
			return true
		default:
			clk.Advance(50 * time.Millisecond)
			return false
		}
	})
	return v
}

// natpmpMapReq and pcpMapReq are the requests the tests expect, written out.
func natpmpMapReq(internal, suggested uint16, life uint32) []byte {
	b := []byte{0, 1, 0, 0}
	b = binary.BigEndian.AppendUint16(b, internal)
	b = binary.BigEndian.AppendUint16(b, suggested)
	return binary.BigEndian.AppendUint32(b, life)
}

func pcpAnnounceReq() []byte {
	return append([]byte{2, 0, 0, 0, 0, 0, 0, 0}, mappedLoop[:]...)
}

func pcpMapReq(life uint32, nonce pcpNonce, internal, suggested uint16, suggestedIP netip.Addr) []byte {
	b := []byte{2, 1, 0, 0}
	b = binary.BigEndian.AppendUint32(b, life)
	b = append(b, mappedLoop[:]...)
	b = append(b, nonce[:]...)
	b = append(b, 17, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, internal)
	b = binary.BigEndian.AppendUint16(b, suggested)
	if !suggestedIP.IsValid() {
		suggestedIP = netip.IPv4Unspecified()
	}
	return append(b, mappedExt(suggestedIP)...)
}

// checkRequests fails the test unless the router got exactly want.
func checkRequests(t *testing.T, r *router, want ...[]byte) {
	t.Helper()
	got := r.requests()
	if len(got) != len(want) {
		t.Fatalf("router got %d requests, want %d:\n got % x\nwant % x", len(got), len(want), got, want)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Errorf("request %d:\n got % x\nwant % x", i, got[i], want[i])
		}
	}
}

func isNoResponse(err error) bool { return errors.Is(err, ErrNoResponse) }
