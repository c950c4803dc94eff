package birthday

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"math"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/fuzzseed"
	"github.com/peerline/peerline/internal/memnet"
)

var testKey = bytes.Repeat([]byte{7}, 32)

// memnet's NATs pick a dependent mapping's port at random in the hosts' ephemeral range.
const memLo, memHi = 32768, 60999

// lab is a symmetric NAT and a port-restricted cone NAT on one simulated internet.
type lab struct {
	net       *memnet.Network
	sym, cone *memnet.Host
	symPublic netip.Addr
	conePub   netip.Addr
}

func newLab(t *testing.T) *lab {
	t.Helper()
	n := memnet.New(memnet.Options{})
	sym := n.NAT("203.0.113.10", memnet.NATConfig{Mapping: memnet.AddressAndPortDependent, Filtering: memnet.AddressAndPortDependent})
	cone := n.NAT("198.51.100.20", memnet.NATConfig{Mapping: memnet.EndpointIndependent, Filtering: memnet.AddressAndPortDependent})
	return &lab{net: n, sym: sym.Host("192.168.1.2"), cone: cone.Host("192.168.2.2"),
		symPublic: netip.MustParseAddr("203.0.113.10"), conePub: netip.MustParseAddr("198.51.100.20")}
}

// TestSprayMeetsGuess: the two sides find a path through a symmetric NAT and a
// port-restricted cone, and it carries datagrams both ways.
func TestSprayMeetsGuess(t *testing.T) {
	l := newLab(t)
	bc, err := l.cone.ListenPacket("udp4", ":40000")
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	target := netip.AddrPortFrom(l.conePub, 40000) // an endpoint-independent NAT keeps a free port
	cfg := Config{Net: l.sym, Key: testKey, Sockets: 256, Guesses: 2048, Rate: MaxRate, Timeout: 5 * time.Second, PortLo: memLo, PortHi: memHi}
	ctx := context.Background()

	var sp Path
	var sst Stats
	var serr error
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); sp, sst, serr = Spray(ctx, cfg, target) }()
	time.Sleep(100 * time.Millisecond) // the sprays go first: the signalling's punch timing, in a call
	gp, gst, gerr := Guess(ctx, cfg, bc, l.symPublic)
	wg.Wait()
	if serr != nil || gerr != nil {
		t.Fatalf("spray: %v (%+v); guess: %v (%+v)", serr, sst, gerr, gst)
	}
	defer sp.Conn.Close()
	t.Logf("spray %+v, guess %+v; path %v <-> %v", sst, gst, sp.Peer, gp.Peer)
	if sp.Peer != target || gp.Peer.Addr() != l.symPublic || sst.Sockets != 256 {
		t.Fatalf("paths: spray to %v, guess to %v", sp.Peer, gp.Peer)
	}
	// The path works both ways, as a call's media would use it.
	if _, err := sp.Conn.WriteTo([]byte("to the cone"), net.UDPAddrFromAddrPort(sp.Peer)); err != nil {
		t.Fatal(err)
	}
	expectRead(t, bc, "to the cone", gp.Peer)
	if _, err := bc.WriteTo([]byte("to the symmetric side"), net.UDPAddrFromAddrPort(gp.Peer)); err != nil {
		t.Fatal(err)
	}
	expectRead(t, sp.Conn, "to the symmetric side", sp.Peer)
}

// expectRead reads datagrams from c until want arrives from from, skipping late probes.
func expectRead(t *testing.T, c net.PacketConn, want string, from netip.AddrPort) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	buf := make([]byte, 100)
	for range 1000 {
		n, src, err := c.ReadFrom(buf)
		if err != nil {
			t.Fatalf("waiting for %q: %v", want, err)
		}
		if a, _ := addrPort(src); a == from && string(buf[:n]) == want {
			return
		}
	}
	t.Fatalf("%q never arrived from %v", want, from)
}

// countingNet counts the sockets it opens, those still open, and where they send.
type countingNet struct {
	PacketNet
	mu     sync.Mutex
	opened int
	open   int
	sent   map[netip.AddrPort]int
}

type countingConn struct {
	net.PacketConn
	n    *countingNet
	once sync.Once
}

func (n *countingNet) ListenPacket(network, address string) (net.PacketConn, error) {
	c, err := n.PacketNet.ListenPacket(network, address)
	if err != nil {
		return nil, err
	}
	n.mu.Lock()
	n.opened++
	n.open++
	n.mu.Unlock()
	return &countingConn{PacketConn: c, n: n}, nil
}

func (c *countingConn) WriteTo(b []byte, to net.Addr) (int, error) {
	a, _ := addrPort(to)
	c.n.mu.Lock()
	if c.n.sent == nil {
		c.n.sent = make(map[netip.AddrPort]int)
	}
	c.n.sent[a]++
	c.n.mu.Unlock()
	return c.PacketConn.WriteTo(b, to)
}

func (c *countingConn) Close() error {
	c.once.Do(func() { c.n.mu.Lock(); c.n.open--; c.n.mu.Unlock() })
	return c.PacketConn.Close()
}

// TestProbingIsBounded: against a peer that never answers, the guessing side tries each
// of its ports once and no more, the spraying side sends no faster than its rate, and
// both give up at their timeout with every socket they opened closed.
func TestProbingIsBounded(t *testing.T) {
	l := newLab(t)
	cn := &countingNet{PacketNet: l.cone}
	c, err := cn.ListenPacket("udp4", ":40000")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := Config{Key: testKey, Guesses: 300, Rate: 2000, Timeout: 400 * time.Millisecond}
	_, st, err := Guess(context.Background(), cfg, c, netip.MustParseAddr("192.0.2.99"))
	if !errors.Is(err, ErrNoPath) {
		t.Fatalf("guess: %v", err)
	}
	if st.Sent != 300 || len(cn.sent) != 300 {
		t.Fatalf("guessed %d times at %d ports, want 300 and 300", st.Sent, len(cn.sent))
	}
	for a, k := range cn.sent {
		if k != 1 || a.Port() < 1024 {
			t.Fatalf("port %v guessed %d times", a, k)
		}
	}

	sn := &countingNet{PacketNet: l.sym}
	cfg = Config{Net: sn, Key: testKey, Sockets: 50, Rate: 1000, Timeout: 300 * time.Millisecond}
	_, st, err = Spray(context.Background(), cfg, netip.MustParseAddrPort("192.0.2.99:40000"))
	if !errors.Is(err, ErrNoPath) {
		t.Fatalf("spray: %v", err)
	}
	sn.mu.Lock()
	defer sn.mu.Unlock()
	if sn.opened != 50 || sn.open != 0 {
		t.Fatalf("spray opened %d sockets, %d left open; want 50 and 0", sn.opened, sn.open)
	}
	// 1000 a second for 300 ms: at most 300 (and one tick of slack).
	if st.Sent > 301 || st.Sent < 50 {
		t.Fatalf("spray sent %d probes in 300 ms at 1000/s", st.Sent)
	}
}

// TestForeignDatagramsRefused: a datagram that is not a probe of this call, even from
// the right address, opens no path and is counted.
func TestForeignDatagramsRefused(t *testing.T) {
	l := newLab(t)
	bc, err := l.cone.ListenPacket("udp4", ":40000")
	if err != nil {
		t.Fatal(err)
	}
	defer bc.Close()
	target := netip.AddrPortFrom(l.conePub, 40000)
	// One socket; the cone side answers it from a guess of the right port, with the
	// wrong key, then garbage.
	cfg := Config{Net: l.sym, Key: testKey, Sockets: 1, Rate: 100, Timeout: 2 * time.Second}
	done := make(chan Stats, 1)
	go func() {
		_, st, err := Spray(context.Background(), cfg, target)
		if !errors.Is(err, ErrNoPath) {
			t.Errorf("spray with only foreign answers: %v", err)
		}
		done <- st
	}()
	// The sprays do not pass the cone's filter before the cone sent anything.
	bc.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, _, err := bc.ReadFrom(make([]byte, 64)); err == nil {
		t.Fatal("a probe passed the cone's filter before the cone sent anything")
	}
	bc.SetReadDeadline(time.Time{})
	// Open the cone's filter toward every port the sprays could come from, with bad
	// probes: wrong key, wrong role, garbage.
	wrong := bytes.Repeat([]byte{8}, 32)
	for p := memLo; p <= memHi; p++ {
		dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(l.symPublic, uint16(p)))
		switch p % 3 {
		case 0:
			bc.WriteTo(appendProbe(nil, wrong, roleGuess, 1), dst)
		case 1:
			bc.WriteTo(appendProbe(nil, testKey, roleSpray, 1), dst)
		default:
			bc.WriteTo([]byte("not a probe at all"), dst)
		}
	}
	st := <-done
	if st.Bad == 0 {
		t.Fatal("the foreign datagrams that reached the socket were not counted")
	}
}

// TestTheory: over trials with few sockets and guesses, the share that finds a path is
// what 1 - (1 - s/r)^g predicts, within what chance allows.
func TestTheory(t *testing.T) {
	if testing.Short() {
		t.Skip("40 trials")
	}
	const trials, s, g = 40, 64, 220
	p := 1 - math.Pow(1-float64(s)/float64(memHi-memLo+1), g) // 0.39
	wins := 0
	for i := range trials {
		l := newLab(t)
		bc, err := l.cone.ListenPacket("udp4", ":40000")
		if err != nil {
			t.Fatal(err)
		}
		cfg := Config{Net: l.sym, Key: testKey, Sockets: s, Guesses: g, Rate: MaxRate, Timeout: 300 * time.Millisecond, PortLo: memLo, PortHi: memHi}
		var serr error
		var sp Path
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			sp, _, serr = Spray(context.Background(), cfg, netip.AddrPortFrom(l.conePub, 40000))
		}()
		time.Sleep(30 * time.Millisecond)
		_, _, gerr := Guess(context.Background(), cfg, bc, l.symPublic)
		wg.Wait()
		bc.Close()
		if (serr == nil) != (gerr == nil) {
			t.Fatalf("trial %d: one side found a path, the other not: %v, %v", i, serr, gerr)
		}
		if serr == nil {
			wins++
			sp.Conn.Close()
		}
	}
	// Four standard deviations either side: a failure is a bug, not bad luck.
	sd := math.Sqrt(trials * p * (1 - p))
	t.Logf("%d of %d found a path; theory %.1f ± %.1f", wins, trials, trials*p, sd)
	if lo, hi := trials*p-4*sd, trials*p+4*sd; float64(wins) < lo || float64(wins) > hi {
		t.Fatalf("%d of %d, outside %.1f-%.1f", wins, trials, lo, hi)
	}
}

// fuzzSeeds are FuzzParseProbe's checked-in seeds.
func fuzzSeeds() map[string][]byte {
	ok := appendProbe(nil, testKey, roleGuess, 42)
	return map[string][]byte{
		"guess":     ok,
		"ack":       appendProbe(nil, testKey, roleAck, 1),
		"truncated": ok[:ProbeLen-1],
		"long":      append(bytes.Clone(ok), 0),
		"wrong-key": appendProbe(nil, bytes.Repeat([]byte{8}, 32), roleSpray, 3),
		"role-9":    func() []byte { b := bytes.Clone(ok); b[5] = 9; return b }(),
	}
}

var updateCorpus = flag.Bool("update-corpus", false, "rewrite testdata/fuzz from the seeds in the test")

// TestFuzzSeeds: the checked-in corpus is the seeds above (-update-corpus rewrites it).
func TestFuzzSeeds(t *testing.T) {
	fuzzseed.Sync(t, filepath.Join("testdata", "fuzz", "FuzzParseProbe"), fuzzSeeds(), *updateCorpus, nil)
}

// FuzzParseProbe: no input panics, and what parses is exactly the probe of its role and
// nonce under the key (a tag cannot be forged by chance).
func FuzzParseProbe(f *testing.F) {
	f.Fuzz(func(t *testing.T, b []byte) {
		role, nonce, err := parseProbe(b, testKey)
		if err != nil {
			return
		}
		if !bytes.Equal(appendProbe(nil, testKey, role, nonce), b) {
			t.Fatalf("parsed %x as role %d nonce %d, which encodes otherwise", b, role, nonce)
		}
	})
}
