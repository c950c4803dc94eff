package relay

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/memnet"
)

// batchSockets are the sockets of a batchConn test: the one read and two that send to it.
type batchSockets struct {
	rd      net.PacketConn
	senders [2]net.PacketConn
}

// udpSockets opens the sockets on loopback.
func udpSockets(t *testing.T) batchSockets {
	var s batchSockets
	var err error
	if s.rd, err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.rd.Close() })
	for i := range s.senders {
		if s.senders[i], err = net.ListenPacket("udp4", "127.0.0.1:0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.senders[i].Close() })
	}
	return s
}

// memSockets opens them on an in-memory network, whose sockets are not *net.UDPConn.
func memSockets(t *testing.T) batchSockets {
	n := memnet.New(memnet.Options{})
	var s batchSockets
	var err error
	if s.rd, err = n.Host("10.0.0.1").ListenPacket("udp4", "10.0.0.1:3478"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.rd.Close() })
	for i := range s.senders {
		if s.senders[i], err = n.Host(fmt.Sprintf("10.0.0.%d", 2+i)).ListenPacket("udp4", ":0"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.senders[i].Close() })
	}
	return s
}

func eachTransport(t *testing.T, f func(t *testing.T, s batchSockets)) {
	t.Run("udp", func(t *testing.T) { f(t, udpSockets(t)) })
	t.Run("memnet", func(t *testing.T) { f(t, memSockets(t)) })
}

func addrPortOf(a net.Addr) netip.AddrPort { return unmap(a.(*net.UDPAddr).AddrPort()) }

// TestBatchConnOrder: datagrams from two senders come out one per ReadFrom, in the order
// sent, each with its sender's address and length, whole; on a UDP socket a read of a
// burst already queued takes it all in one batch.
func TestBatchConnOrder(t *testing.T) {
	eachTransport(t, func(t *testing.T, s batchSockets) {
		bc := newBatchConn(s.rd, 8, 1500)
		const n = 20 // more than one batch
		for i := 0; i < n; i++ {
			msg := bytes.Repeat([]byte{byte(i)}, 1+i*37)
			if _, err := s.senders[i%2].WriteTo(msg, s.rd.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
		bc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 2000)
		for i := 0; i < n; i++ {
			k, from, err := bc.ReadFrom(buf)
			if err != nil {
				t.Fatalf("read %d: %v", i, err)
			}
			want := bytes.Repeat([]byte{byte(i)}, 1+i*37)
			if !bytes.Equal(buf[:k], want) {
				t.Fatalf("read %d: %d bytes starting %x, want %d of %x", i, k, buf[:min(k, 4)], len(want), byte(i))
			}
			if got, want := addrPortOf(from), addrPortOf(s.senders[i%2].LocalAddr()); got.Port() != want.Port() ||
				(got.Addr() != want.Addr() && !want.Addr().IsUnspecified()) {
				t.Fatalf("read %d from %v, want %v", i, from, s.senders[i%2].LocalAddr())
			}
		}
		if !bc.r.sys.ok {
			return
		}
		// Loopback queues a datagram as it is sent, unless the machine defers that work
		// under load: a burst whose first read took less than all of it is sent again.
		eventually.That(t, 5*time.Second, "a read that takes a burst of 8 in one batch", func() bool {
			for i := 0; i < 8; i++ {
				if _, err := s.senders[0].WriteTo([]byte{byte(i)}, s.rd.LocalAddr()); err != nil {
					t.Fatal(err)
				}
			}
			batch := 0
			for i := 0; i < 8; i++ {
				if k, _, err := bc.ReadFrom(buf); err != nil || k != 1 || buf[0] != byte(i) {
					t.Fatalf("burst read %d: %x, %v", i, buf[:k], err)
				}
				if i == 0 {
					batch = bc.r.n
				}
			}
			return batch == 8
		})
	})
	if runtime.GOOS == "linux" {
		s := udpSockets(t)
		if !newBatchConn(s.rd, 8, 1500).r.sys.ok {
			t.Error("a UDP socket on Linux is not read with recvmmsg")
		}
	}
}

// TestBatchConnShortBuffers: a datagram longer than the reader's buffer is cut to it, as
// a UDP socket does, and the next one is whole; one longer than the batch slots is cut to
// them.
func TestBatchConnShortBuffers(t *testing.T) {
	eachTransport(t, func(t *testing.T, s batchSockets) {
		bc := newBatchConn(s.rd, 4, 100)
		to := s.rd.LocalAddr()
		for _, msg := range []string{"0123456789", "abc", string(bytes.Repeat([]byte("x"), 150)), "end"} {
			if _, err := s.senders[0].WriteTo([]byte(msg), to); err != nil {
				t.Fatal(err)
			}
		}
		bc.SetReadDeadline(time.Now().Add(5 * time.Second))
		for i, c := range []struct {
			buf  int
			want string
		}{{4, "0123"}, {100, "abc"}, {200, string(bytes.Repeat([]byte("x"), 100))}, {3, "end"}} {
			buf := make([]byte, c.buf)
			k, _, err := bc.ReadFrom(buf)
			if err != nil || string(buf[:k]) != c.want {
				t.Errorf("read %d (buffer %d): %q, %v; want %q", i, c.buf, buf[:k], err, c.want)
			}
		}
	})
}

// TestBatchConnDeadline: a read past its deadline fails with a timeout and the conn goes
// on working once the deadline is lifted.
func TestBatchConnDeadline(t *testing.T) {
	eachTransport(t, func(t *testing.T, s batchSockets) {
		bc := newBatchConn(s.rd, 4, 100)
		bc.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		start := time.Now()
		_, _, err := bc.ReadFrom(make([]byte, 100))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("read past the deadline: %v, want a timeout", err)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Errorf("the read returned %v after its deadline", d)
		}
		bc.SetReadDeadline(time.Time{})
		if _, err := s.senders[1].WriteTo([]byte("after"), s.rd.LocalAddr()); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		if k, _, err := bc.ReadFrom(buf); err != nil || string(buf[:k]) != "after" {
			t.Errorf("read after the deadline was lifted: %q, %v", buf[:k], err)
		}
	})
}

// TestBatchConnCloseWhileReading: Close ends a read that is waiting, with net.ErrClosed.
func TestBatchConnCloseWhileReading(t *testing.T) {
	eachTransport(t, func(t *testing.T, s batchSockets) {
		bc := newBatchConn(s.rd, 4, 100)
		done := make(chan error, 1)
		go func() {
			_, _, err := bc.ReadFrom(make([]byte, 100))
			done <- err
		}()
		eventually.That(t, 5*time.Second, "the read waiting", func() bool { return waiting("relay.(*batchConn).ReadFrom") })
		bc.Close()
		select {
		case err := <-done:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("read on a closed conn: %v, want net.ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("read still waiting 5 s after Close")
		}
	})
}

// TestBatchReaderTake: datagrams the take function deals with never come out of read; a
// datagram that arrives after a batch that take emptied is read (the reader, which skips
// the read that would say EAGAIN, does not miss the socket becoming readable again). The
// datagram for the caller comes in turn queued behind the burst, while take deals with
// the burst (before the reader waits), and once the reader waits.
func TestBatchReaderTake(t *testing.T) {
	eachTransport(t, func(t *testing.T, s batchSockets) {
		r := newBatchReader(s.rd, 4, 4, 100)
		taken := 0
		take := func(slot []byte, n int, src netip.AddrPort) bool {
			if slot[4] == 't' {
				taken++
				copy(slot, "head") // take may use the head room
				return true
			}
			return false
		}
		s.rd.SetReadDeadline(time.Now().Add(10 * time.Second))
		to := s.rd.LocalAddr()
		sent := 0
		for round := 0; round < 60; round++ {
			// A burst the fast path takes whole, then one for the caller.
			for i := 0; i < round%6; i++ {
				s.senders[0].WriteTo([]byte("take"), to)
				sent++
			}
			msg := fmt.Sprintf("keep %d", round)
			keep := func() { s.senders[1].WriteTo([]byte(msg), to) }
			fn := take
			var waited chan error // from the sender of case 2: whether it saw the reader wait
			switch round % 3 {
			case 0: // queued behind the burst (of 0 or 3)
				keep()
			case 1: // sent while take deals with the burst (of 1 or 4), before the reader waits
				kept := false
				fn = func(slot []byte, n int, src netip.AddrPort) bool {
					if !kept {
						kept = true
						keep()
					}
					return take(slot, n, src)
				}
			case 2: // sent once the reader waits, after the burst (of 2 or 5)
				waited = make(chan error, 1)
				go func() {
					err := eventually.Await(5*time.Second, "the reader waiting", func() bool { return waiting("relay.(*batchReader).read") })
					keep()
					waited <- err
				}()
			}
			slot, n, src, _, err := r.read(fn)
			if err != nil {
				t.Fatalf("round %d: %v (taken %d)", round, err, taken)
			}
			if waited != nil {
				if err := <-waited; err != nil {
					t.Fatalf("round %d: %v", round, err)
				}
			}
			if got := string(slot[4 : 4+n]); got != msg {
				t.Fatalf("round %d: read %q, want %q", round, got, msg)
			}
			if src.Port() != addrPortOf(s.senders[1].LocalAddr()).Port() {
				t.Fatalf("round %d: from %v, want %v", round, src, s.senders[1].LocalAddr())
			}
		}
		if taken != sent { // all sent before their round's datagram for the caller
			t.Errorf("take dealt with %d datagrams, want %d", taken, sent)
		}
	})
}

// waiting reports whether a goroutine whose stack names fn is blocked in the network
// poller or on a channel, as a read waiting for a datagram is.
func waiting(fn string) bool {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	for _, g := range strings.Split(string(buf), "\n\n") {
		head, _, _ := strings.Cut(g, "\n")
		if strings.Contains(g, fn) &&
			(strings.Contains(head, "[IO wait") || strings.Contains(head, "[select") || strings.Contains(head, "[chan receive")) {
			return true
		}
	}
	return false
}

// TestFastPathAllocs: relaying a datagram on the fast path, either way, allocates
// nothing: from a client's channel data to the peer (the listener's take) and from the
// peer back to the client as channel data (the relayed socket's take), and reading it in
// a batch.
func TestFastPathAllocs(t *testing.T) {
	s, err := New(Config{Secret: []byte("s"), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	release(t, s)
	open := func() *net.UDPConn {
		c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	lc, rcc, client, peer := open(), open(), open(), open()
	l := newUDPListener(s, lc)
	rc := newRelayConn(s, rcc, l, l.c)
	ca, pa := addrPortOf(client.LocalAddr()), addrPortOf(peer.LocalAddr())
	u := &user{name: "u"}
	rc.own(u, ca)
	rc.peers[pa] = 0x4001
	l.flows[ca] = &flow{addr: net.UDPAddrFromAddrPort(ca), user: u, relay: rc, chans: map[uint16]netip.AddrPort{0x4001: pa}}

	data := []byte{0x40, 0x01, 0, 5, 'h', 'e', 'l', 'l', 'o', 0, 0, 0}
	if a := testing.AllocsPerRun(200, func() {
		if !l.take(data, len(data), ca) {
			t.Fatal("the listener left bound channel data to pion")
		}
		l.out.flush() // the reader does it at the end of a batch
	}); a != 0 {
		t.Errorf("listener fast path: %.1f allocations per datagram", a)
	}
	slot := make([]byte, 4+maxRelayed+3)
	copy(slot[4:], "hello")
	if a := testing.AllocsPerRun(200, func() {
		if !rc.take(slot, 5, pa) {
			t.Fatal("the relayed socket left a bound peer's datagram to pion")
		}
		rc.out.flush()
	}); a != 0 {
		t.Errorf("relayed socket fast path: %.1f allocations per datagram", a)
	}
	if got := l.c.relayedPackets.Load(); got < 400 {
		t.Errorf("relayed %d datagrams, want at least 400", got)
	}
	// Reading and forwarding a batch, each way: the client's 8 datagrams read in one batch
	// and sent to the peer in one sendmmsg, and the peer's 2 (a relayed socket's batch) to
	// the client; each batch ends with a datagram the fast path leaves to pion, which
	// read returns.
	lc.SetReadDeadline(time.Now().Add(10 * time.Second))
	rcc.SetReadDeadline(time.Now().Add(10 * time.Second))
	calls := l.out.calls
	if a := testing.AllocsPerRun(50, func() {
		for i := 0; i < 8; i++ {
			client.WriteToUDPAddrPort(data, addrPortOf(lc.LocalAddr()))
		}
		peer.WriteToUDPAddrPort([]byte("not channel data"), addrPortOf(lc.LocalAddr()))
		if _, n, _, _, err := l.in.read(l.takeFn); err != nil || n != 16 {
			t.Fatalf("listener read: %d bytes, %v; want the 16 left to pion", n, err)
		}
	}); a != 0 && runtime.GOOS == "linux" {
		t.Errorf("listener batch read and forward: %.1f allocations per 8 datagrams", a)
	}
	if got := l.out.calls - calls; l.sock.sys.ok && got != 51 {
		t.Errorf("listener batches: %d sendmmsg calls for 51 batches, want 51", got)
	}
	calls = rc.out.calls
	if a := testing.AllocsPerRun(50, func() {
		for i := 0; i < relayBatch; i++ {
			peer.WriteToUDPAddrPort([]byte("hello"), addrPortOf(rcc.LocalAddr()))
		}
		client.WriteToUDPAddrPort([]byte("from no peer"), addrPortOf(rcc.LocalAddr()))
		if _, n, _, _, err := rc.in.read(rc.takeFn); err != nil || n != 12 {
			t.Fatalf("relayed socket read: %d bytes, %v; want the 12 left to pion", n, err)
		}
	}); a != 0 && runtime.GOOS == "linux" {
		t.Errorf("relayed socket batch read and forward: %.1f allocations per %d datagrams", a, relayBatch)
	}
	if got := rc.out.calls - calls; l.sock.sys.ok && got != 51 {
		t.Errorf("relayed socket batches: %d sendmmsg calls for 51 batches, want 51", got)
	}
	if e := l.c.writeErrs.Load(); e != 0 {
		t.Errorf("%d fast-path write errors", e)
	}
	// Reading: a batch of datagrams, all taken.
	r := newBatchReader(lc, listenerBatch, 0, inboundMTU)
	taken := 0
	take := takeFunc(func([]byte, int, netip.AddrPort) bool { taken++; return taken%8 != 0 })
	lc.SetReadDeadline(time.Now().Add(10 * time.Second))
	if a := testing.AllocsPerRun(50, func() {
		for i := 0; i < 8; i++ {
			client.WriteToUDPAddrPort(data, addrPortOf(lc.LocalAddr()))
		}
		if _, _, _, _, err := r.read(take); err != nil {
			t.Fatal(err)
		}
	}); a != 0 && runtime.GOOS == "linux" {
		t.Errorf("batch read: %.1f allocations per 8 datagrams", a)
	}
}

// receive reads n datagrams from pc, or fails the test.
func receive(t *testing.T, pc net.PacketConn, n int) []string {
	t.Helper()
	pc.SetReadDeadline(time.Now().Add(5 * time.Second))
	defer pc.SetReadDeadline(time.Time{})
	var got []string
	buf := make([]byte, 2000)
	for len(got) < n {
		k, _, err := pc.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after %d of %d datagrams %q: %v", len(got), n, got, err)
		}
		got = append(got, string(buf[:k]))
	}
	return got
}

// TestBatchWriterOneCall: a flush sends a batch of datagrams to one destination with one
// sendmmsg, and those of two sockets with one call each, every socket's datagrams in the
// order queued; a socket that is not a *net.UDPConn sends each at once, with the same
// results.
func TestBatchWriterOneCall(t *testing.T) {
	eachTransport(t, func(t *testing.T, s batchSockets) {
		c := new(counters)
		w := newBatchWriter(c, 16)
		a, b := newSendSock(s.senders[0]), newSendSock(s.senders[1])
		to := addrPortOf(s.rd.LocalAddr())
		batched := a.sys.ok && w.sys.ok
		if _, ok := s.rd.(*net.UDPConn); ok && runtime.GOOS == "linux" && !batched {
			t.Fatal("a UDP socket on Linux is not written with sendmmsg")
		}
		const n = 8
		for i := 0; i < n; i++ {
			w.send(a, []byte(fmt.Sprintf("a%d", i)), to, 2)
		}
		w.flush()
		if want := map[bool]int{true: 1, false: 0}[batched]; w.calls != want {
			t.Errorf("%d datagrams to one destination took %d sendmmsg calls, want %d", n, w.calls, want)
		}
		got := receive(t, s.rd, n)
		for i, d := range got {
			if want := fmt.Sprintf("a%d", i); d != want {
				t.Fatalf("datagram %d is %q, want %q (all %q)", i, d, want, got)
			}
		}
		// Two sockets, interleaved.
		for i := 0; i < n; i++ {
			w.send([]*sendSock{a, b}[i%2], []byte(fmt.Sprintf("%c%d", "ab"[i%2], i)), to, 2)
		}
		w.flush()
		if want := map[bool]int{true: 3, false: 0}[batched]; w.calls != want {
			t.Errorf("sendmmsg calls after the two sockets' batch: %d, want %d", w.calls, want)
		}
		got = receive(t, s.rd, n)
		last := map[byte]int{'a': -1, 'b': -1}
		for _, d := range got {
			var i int
			fmt.Sscanf(d[1:], "%d", &i)
			if i <= last[d[0]] || i%2 != int(d[0]-'a') {
				t.Fatalf("datagrams %q: not each socket's in the order queued", got)
			}
			last[d[0]] = i
		}
		if p, by, e := c.relayedPackets.Load(), c.relayedBytes.Load(), c.writeErrs.Load(); p != 2*n || by != 4*n || e != 0 {
			t.Errorf("counted %d datagrams, %d bytes, %d errors; want %d, %d, 0", p, by, e, 2*n, 4*n)
		}
	})
}

// TestBatchWriterFull: a writer that fills sends what it holds before it queues more.
func TestBatchWriterFull(t *testing.T) {
	s := udpSockets(t)
	w := newBatchWriter(new(counters), 4)
	a, to := newSendSock(s.senders[0]), addrPortOf(s.rd.LocalAddr())
	for i := 0; i < 10; i++ {
		w.send(a, []byte{byte('0' + i)}, to, 1)
	}
	w.flush()
	if got := receive(t, s.rd, 10); fmt.Sprint(got) != "[0 1 2 3 4 5 6 7 8 9]" {
		t.Errorf("received %q", got)
	}
	if a.sys.ok && w.calls != 3 {
		t.Errorf("10 datagrams through 4 slots took %d sendmmsg calls, want 3", w.calls)
	}
}

// TestBatchWriterRefused: datagrams the kernel refuses (too long for UDP) or the socket
// cannot address (IPv6 from an IPv4 socket), in the middle of a batch, are dropped and
// counted; the others go, in order. The kernel sends the ones before a refused datagram
// and says how many (a partial send), and the writer goes on after it.
func TestBatchWriterRefused(t *testing.T) {
	s := udpSockets(t)
	c := new(counters)
	w := newBatchWriter(c, 16)
	a, to := newSendSock(s.senders[0]), addrPortOf(s.rd.LocalAddr())
	huge := make([]byte, 70000) // over 65507, the most a UDP datagram over IPv4 carries
	v6 := netip.AddrPortFrom(netip.IPv6Loopback(), to.Port())
	for _, d := range []struct {
		b  string
		to netip.AddrPort
	}{{"0", to}, {"1", to}, {string(huge), to}, {"3", to}, {"4", v6}, {"5", to}, {"6", to}} {
		w.send(a, []byte(d.b), d.to, len(d.b))
	}
	w.flush()
	if got := receive(t, s.rd, 5); fmt.Sprint(got) != "[0 1 3 5 6]" {
		t.Errorf("received %q, want [0 1 3 5 6]", got)
	}
	if p, e := c.relayedPackets.Load(), c.writeErrs.Load(); p != 5 || e != 2 {
		t.Errorf("counted %d sent and %d errors, want 5 and 2", p, e)
	}
	// 0-1 sent (partial: 2 of 6 headers; the IPv6 one never got one), the long one
	// refused, 3, 5 and 6 sent.
	if a.sys.ok && w.calls != 3 {
		t.Errorf("%d sendmmsg calls, want 3", w.calls)
	}
	// A closed socket drops its datagrams and counts them.
	s.senders[0].Close()
	w.send(a, []byte("x"), to, 1)
	w.send(a, []byte("y"), to, 1)
	w.flush()
	if e := c.writeErrs.Load(); e != 4 {
		t.Errorf("%d errors after 2 datagrams on a closed socket, want 4", e)
	}
}

// TestBatchWriterIPv6Socket: from an IPv6 socket (dual-stack), a batch goes to IPv6 and to
// IPv4 destinations, the latter IPv4-mapped.
func TestBatchWriterIPv6Socket(t *testing.T) {
	pc, err := net.ListenPacket("udp", "[::]:0")
	if err != nil {
		t.Skipf("no IPv6: %v", err)
	}
	defer pc.Close()
	rd6, err := net.ListenPacket("udp6", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	}
	defer rd6.Close()
	rd4, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer rd4.Close()
	c := new(counters)
	w := newBatchWriter(c, 8)
	a := newSendSock(pc)
	for i := 0; i < 3; i++ {
		w.send(a, []byte(fmt.Sprint("six ", i)), addrPortOf(rd6.LocalAddr()), 5)
		w.send(a, []byte(fmt.Sprint("four ", i)), addrPortOf(rd4.LocalAddr()), 6)
	}
	w.flush()
	if got := receive(t, rd6, 3); fmt.Sprint(got) != "[six 0 six 1 six 2]" {
		t.Errorf("the IPv6 destination received %q", got)
	}
	if got := receive(t, rd4, 3); fmt.Sprint(got) != "[four 0 four 1 four 2]" {
		t.Errorf("the IPv4 destination received %q", got)
	}
	if a.sys.ok && w.calls != 1 {
		t.Errorf("%d sendmmsg calls, want 1", w.calls)
	}
	if e := c.writeErrs.Load(); e != 0 {
		t.Errorf("%d write errors", e)
	}
}

// TestBatchWriterAllocs: queuing and flushing a batch allocates nothing.
func TestBatchWriterAllocs(t *testing.T) {
	s := udpSockets(t)
	w := newBatchWriter(new(counters), 32)
	a, to := newSendSock(s.senders[0]), addrPortOf(s.rd.LocalAddr())
	s.rd.(*net.UDPConn).SetReadBuffer(4 << 20)
	msg := make([]byte, 160)
	if n := testing.AllocsPerRun(100, func() {
		for i := 0; i < 32; i++ {
			w.send(a, msg, to, len(msg))
		}
		w.flush()
	}); n != 0 && a.sys.ok {
		t.Errorf("%.1f allocations per batch of 32", n)
	}
	if a.sys.ok && w.calls != 101 {
		t.Errorf("%d sendmmsg calls for 101 batches", w.calls)
	}
}
