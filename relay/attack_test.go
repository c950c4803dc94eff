package relay

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/pion/stun/v3"
	"github.com/pion/turn/v4"

	"github.com/peerline/peerline/internal/eventually"
	"github.com/peerline/peerline/internal/syncbuf"
)

// fakeListener returns the errors in errs from Accept, one per call, then the
// connections in conns, then blocks until closed.
type fakeListener struct {
	errs   chan error
	conns  chan net.Conn
	closed chan struct{}
}

func newFakeListener(errs []error, conns ...net.Conn) *fakeListener {
	l := &fakeListener{errs: make(chan error, len(errs)), conns: make(chan net.Conn, len(conns)), closed: make(chan struct{})}
	for _, e := range errs {
		l.errs <- e
	}
	for _, c := range conns {
		l.conns <- c
	}
	return l
}

func (l *fakeListener) Accept() (net.Conn, error) {
	select {
	case err := <-l.errs:
		return nil, err
	default:
	}
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}
	}
}

func (l *fakeListener) Close() error   { close(l.closed); return nil }
func (l *fakeListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 3478} }

func acceptErr(errno syscall.Errno) error {
	return &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", errno)}
}

// Pion's accept loop ends on the first error Accept returns: the relay's Accept must wait
// out transient errors and hand pion the next connection.
func TestTCPAcceptWaitsOutErrors(t *testing.T) {
	s, err := New(Config{Secret: testSecret, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	release(t, s)
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	errs := []error{acceptErr(syscall.EMFILE), acceptErr(syscall.ENFILE), acceptErr(syscall.ECONNABORTED), acceptErr(syscall.EMFILE)}
	fl := newFakeListener(errs, a)
	l := newTCPListener(s, fl)
	c, err := l.Accept()
	if err != nil {
		t.Fatalf("Accept returned %v to pion, want the connection after the errors", err)
	}
	if got := s.m.Get(MetricTCPAcceptErrors); got != uint64(len(errs)) {
		t.Errorf("%s = %d, want %d", MetricTCPAcceptErrors, got, len(errs))
	}
	c.Close()
	fl.Close()
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept on a closed listener = %v, want net.ErrClosed", err)
	}
}

// The same for the UDP read loops: pion ends its loop (and all allocations on the
// socket) on the first read error.
func TestUDPReadErrorWaitedOut(t *testing.T) {
	s := newServer(t, Config{AllowPeer: allowLoopback, Listeners: 1})
	l := s.listeners[0]
	// A read deadline in the past makes the socket return an error that is not closure.
	l.conn.SetReadDeadline(time.Now().Add(-time.Second))
	eventually.That(t, 5*time.Second, "a read error counted", func() bool { return s.m.Get(MetricReadErrors) > 0 })
	l.conn.SetReadDeadline(time.Time{})
	// The loop goes on: an allocation over UDP succeeds.
	allocate(t, newClient(t, s, "alice", false))
}

// dialFrom opens a TCP connection to addr from local address from (127.0.1.x: the
// attacker's addresses, not the real user's 127.0.0.1).
func dialFrom(from, addr string) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Timeout: 2 * time.Second}
	return d.Dial("tcp", addr)
}

func TestTCPPerSourceLimits(t *testing.T) {
	s := newServer(t, Config{AllowPeer: allowLoopback, TCPConnsPerAddr: 5, TCPConnsPerPrefix: 8, TCPIdleTimeout: -1})
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	for _, from := range []string{"127.0.1.1", "127.0.1.2"} {
		for i := 0; i < 20; i++ {
			c, err := dialFrom(from, s.TCPAddr().String())
			if err != nil {
				t.Fatal(err)
			}
			held = append(held, c)
		}
	}
	eventually.That(t, 5*time.Second, "40 connections seen", func() bool {
		return s.m.Get(MetricTCPConns)+s.m.Get(MetricTCPShedAddr)+s.m.Get(MetricTCPShedPrefix) == 40
	})
	// 127.0.1.1 gets 5 (its address limit), 127.0.1.2 the 3 left of the /24's 8.
	if got := s.m.Get(MetricTCPConns); got != 8 {
		t.Errorf("%s = %d, want 8", MetricTCPConns, got)
	}
	if got := s.tcp.open(); got != 8 {
		t.Errorf("%d TCP connections open, want 8", got)
	}
	if a, p := s.m.Get(MetricTCPShedAddr), s.m.Get(MetricTCPShedPrefix); a != 15 || p != 17 {
		t.Errorf("shed by address %d, by prefix %d: want 15 and 17", a, p)
	}
	// The real user, on another /24, is served while they hold their share.
	allocate(t, newClient(t, s, "alice", true))
}

// The idle deadline runs on the relay's clock, a fake one here: the test moves it past
// the deadline, and the connection without an allocation is closed while the one with an
// allocation stays, until its allocation ends.
func TestTCPIdleConnectionsClosed(t *testing.T) {
	const idleAfter = 300 * time.Millisecond
	clk := clockwork.NewFakeClock()
	s := newServer(t, Config{AllowPeer: allowLoopback, TCPIdleTimeout: idleAfter, Clock: clk})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	idle, err := dialFrom("127.0.1.1", s.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	// A connection with an allocation is kept.
	c, err := net.Dial("tcp", s.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	username, pw, _ := Credentials(testSecret, "alice", time.Hour, clk.Now())
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: s.TCPAddr().String(), TURNServerAddr: s.TCPAddr().String(), Conn: turn.NewSTUNConn(c),
		Username: username, Password: pw, RTO: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	pc, err := client.Allocate()
	if err != nil {
		t.Fatal(err)
	}
	// The connections were accepted in the order dialled, so once the allocated one's
	// deadline is disarmed the idle one's is armed: the clock waits on it and on the
	// counters' flush.
	src := unmap(c.LocalAddr().(*net.TCPAddr).AddrPort())
	eventually.That(t, 5*time.Second, "the allocation recorded on its connection", func() bool {
		s.tcp.mu.Lock()
		tc := s.tcp.bySrc[src]
		s.tcp.mu.Unlock()
		if tc == nil {
			return false
		}
		tc.mu.Lock()
		defer tc.mu.Unlock()
		return tc.allocated
	})
	if err := clk.BlockUntilContext(ctx, 2); err != nil {
		t.Fatalf("the idle connection's deadline is not armed: %v", err)
	}
	clk.Advance(idleAfter)
	idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil {
		t.Fatal("idle connection got data")
	} else if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("idle connection not closed")
	}
	eventually.That(t, 5*time.Second, "idle close counted", func() bool { return s.m.Get(MetricTCPIdleClosed) == 1 && s.tcp.open() == 1 })
	// The allocated connection outlives many idle deadlines, and still carries requests.
	clk.Advance(10 * idleAfter)
	if _, err := client.SendBindingRequest(); err != nil {
		t.Fatalf("the allocated connection after 10 idle deadlines: %v", err)
	}
	if got, closed := s.tcp.open(), s.m.Get(MetricTCPIdleClosed); got != 1 || closed != 1 {
		t.Fatalf("%d TCP connections open, %d closed idle: want the allocated one kept", got, closed)
	}
	// Once its allocation is gone, its deadline is armed again (beside the flush), and it
	// is closed when that passes.
	pc.Close()
	if err := clk.BlockUntilContext(ctx, 2); err != nil {
		t.Fatalf("no idle deadline armed after the allocation ended: %v", err)
	}
	clk.Advance(idleAfter)
	eventually.That(t, 5*time.Second, "connection closed after its allocation ended", func() bool {
		return s.m.Get(MetricTCPIdleClosed) == 2 && s.tcp.open() == 0
	})
}

// stunRequest sends an Allocate over conn (UDP or a TCP stream), optionally with
// credentials, and returns the response.
func stunRoundTrip(t *testing.T, conn net.Conn, setters ...stun.Setter) *stun.Message {
	t.Helper()
	base := []stun.Setter{stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		stun.RawAttribute{Type: stun.AttrRequestedTransport, Value: []byte{17, 0, 0, 0}}}
	req := stun.MustBuild(append(base, setters...)...)
	if _, err := conn.Write(req.Raw); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 2048)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no response: %v", err)
	}
	m := &stun.Message{Raw: buf[:n]}
	if err := m.Decode(); err != nil {
		t.Fatal(err)
	}
	if m.TransactionID != req.TransactionID {
		t.Fatal("response to another transaction")
	}
	return m
}

// Bad credentials get 401 Unauthorized (RFC 8489 section 9.2.4), counted by reason.
func TestBadCredentialsGet401(t *testing.T) {
	s := newServer(t, Config{AllowPeer: allowLoopback})
	now := time.Now()
	good, goodPW, _ := Credentials(testSecret, "carol", time.Hour, now)
	expired, expiredPW, _ := Credentials(testSecret, "carol", -time.Minute, now)
	for _, transport := range []string{"udp", "tcp"} {
		for _, tc := range []struct {
			name, user, pw, metric string
		}{
			{"wrong password", good, "hunter2", MetricAuthBadHMAC},
			{"expired", expired, expiredPW, MetricAuthExpired},
			{"malformed", "carol", "whatever", MetricAuthMalformed},
		} {
			t.Run(transport+"/"+tc.name, func(t *testing.T) {
				addr := s.Addr().String()
				if transport == "tcp" {
					addr = s.TCPAddr().String()
				}
				conn, err := net.Dial(transport, addr)
				if err != nil {
					t.Fatal(err)
				}
				defer conn.Close()
				challenge := stunRoundTrip(t, conn)
				var nonce stun.Nonce
				var realm stun.Realm
				if err := nonce.GetFrom(challenge); err != nil {
					t.Fatal(err)
				}
				if err := realm.GetFrom(challenge); err != nil {
					t.Fatal(err)
				}
				before, before401 := s.m.Get(tc.metric), s.m.Get(MetricAuth401)
				resp := stunRoundTrip(t, conn, stun.NewUsername(tc.user), realm, nonce,
					stun.MessageIntegrity(turn.GenerateAuthKey(tc.user, realm.String(), tc.pw)))
				var code stun.ErrorCodeAttribute
				if err := code.GetFrom(resp); err != nil {
					t.Fatalf("no error code in %v: %v", resp, err)
				}
				if code.Code != stun.CodeUnauthorized {
					t.Errorf("error %d %s, want 401", code.Code, code.Reason)
				}
				if !resp.Contains(stun.AttrNonce) || !resp.Contains(stun.AttrRealm) {
					t.Error("401 without NONCE and REALM")
				}
				if got := s.m.Get(tc.metric); got != before+1 {
					t.Errorf("%s = %d, want %d", tc.metric, got, before+1)
				}
				if got := s.m.Get(MetricAuth401); got != before401+1 {
					t.Errorf("%s = %d, want %d", MetricAuth401, got, before401+1)
				}
				// Good credentials on the same transport still allocate.
				ok := stunRoundTrip(t, conn, stun.NewUsername(good), realm, nonce,
					stun.MessageIntegrity(turn.GenerateAuthKey(good, realm.String(), goodPW)))
				if ok.Type.Class != stun.ClassSuccessResponse {
					t.Errorf("good credentials: %v", ok)
				}
			})
		}
	}
}

// Garbage to the TURN port over UDP and TCP is counted, and the relay serves on.
func TestGarbageCounted(t *testing.T) {
	s := newServer(t, Config{AllowPeer: allowLoopback})
	u, err := net.Dial("udp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	bad := [][]byte{
		bytes.Repeat([]byte{0xFF}, 64),       // neither STUN nor ChannelData
		{0x40, 0x01, 0x00, 0x04, 1, 2, 3, 4}, // ChannelData without an allocation
		append(stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw[:20:20], 0, 0x20, 0, 1), // STUN that does not decode
	}
	bad[2][3] = 4 // header length 4 for the 4 attribute bytes: a truncated attribute
	const rounds = 50
	for i := 0; i < rounds; i++ {
		for _, b := range bad {
			u.Write(b)
		}
	}
	eventually.That(t, 5*time.Second, "UDP garbage counted", func() bool { return s.m.Get(MetricBadPackets) == rounds*uint64(len(bad)) })
	tc, err := dialFrom("127.0.1.1", s.TCPAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	tc.Write(bytes.Repeat([]byte{0xFF}, 64))
	tc.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadAll(tc); errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatal("TCP connection sending garbage not closed")
	}
	eventually.That(t, 5*time.Second, "TCP garbage counted", func() bool { return s.m.Get(MetricTCPBadFrames) == 1 })
	allocate(t, newClient(t, s, "alice", false))
	allocate(t, newClient(t, s, "bob", true))
}

// After idle and garbage TCP connections and UDP garbage, Run returns at once when its
// context ends and leaves no goroutine behind. (Pion ends its read loop on a TCP connection that sends
// garbage without a read error; the relay used to wait for that loop for 10 s.)
func TestStopAfterAttack(t *testing.T) {
	before := runtime.NumGoroutine()
	s, err := New(Config{Secret: testSecret, Listen: "127.0.0.1:0", Listeners: 2, AllowPeer: allowLoopback, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	stop := run(t, s)
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < 100; i++ {
		c, err := dialFrom("127.0.1.1", s.TCPAddr().String())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		if i%5 == 0 {
			c.Write(bytes.Repeat([]byte{0xFF}, 32))
		}
	}
	u, err := net.Dial("udp", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conns = append(conns, u)
	for i := 0; i < 1000; i++ {
		u.Write([]byte(fmt.Sprint("garbage ", i, " ........................")))
	}
	eventually.That(t, 5*time.Second, "attack seen", func() bool {
		return s.m.Get(MetricTCPBadFrames) == 20 && s.m.Get(MetricTCPConns) == 100 && s.m.Get(MetricBadPackets) > 0
	})
	done := make(chan error, 1)
	go func() { done <- stop() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return within 5 s of its context ending")
	}
	s.live.mu.Lock()
	left := s.live.n
	s.live.mu.Unlock()
	if left != 0 {
		t.Errorf("%d sockets or read loops still counted live after Run returned", left)
	}
	noGoroutinesLeft(t, before)
}

// exhaustEnv marks the child process of TestTCPSurvivesDescriptorExhaustion.
const exhaustEnv = "PEERLINE_RELAY_EXHAUST_CHILD"

// exhaustLimit is the descriptor limit of the child: a few for the runtime and the
// relay's sockets, the rest taken by the connections the parent opens.
const exhaustLimit = 48

// A relay that ran out of descriptors (EMFILE on accept) serves TURN over TCP again as
// soon as descriptors are free: the relay runs in a child process with a lowered
// RLIMIT_NOFILE, the attack (from 127.0.1.1) and the real user (127.0.0.1) in this one.
func TestTCPSurvivesDescriptorExhaustion(t *testing.T) {
	if os.Getenv(exhaustEnv) != "" {
		exhaustChild()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestTCPSurvivesDescriptorExhaustion$")
	cmd.Env = append(os.Environ(), exhaustEnv+"=1")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	dec := json.NewDecoder(stdout)
	var ready struct{ UDP, TCP string }
	if err := dec.Decode(&ready); err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	// Far more connections than the child has descriptors: the kernel completes them
	// (the listen backlog) while the child's accept fails with EMFILE.
	var attack []net.Conn
	for i := 0; i < 4*exhaustLimit; i++ {
		c, err := dialFrom("127.0.1.1", ready.TCP)
		if err != nil {
			break
		}
		attack = append(attack, c)
	}
	t.Logf("attacker holds %d connections", len(attack))
	var exhausted struct{ Exhausted bool }
	if err := dec.Decode(&exhausted); err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	if !exhausted.Exhausted {
		t.Fatalf("the child never ran out of descriptors (%s stayed below %d): the test would prove nothing\n%s",
			MetricTCPAcceptErrors, exhaustedAfter, stderr.String())
	}
	for _, c := range attack {
		c.Close()
	}
	// TURN over TCP works again, at once: the first Allocate must succeed.
	username, pw, _ := Credentials(testSecret, "alice", time.Hour, time.Now())
	c, err := net.Dial("tcp", ready.TCP)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	client, err := turn.NewClient(&turn.ClientConfig{
		STUNServerAddr: ready.TCP, TURNServerAddr: ready.TCP, Conn: turn.NewSTUNConn(c),
		Username: username, Password: pw, RTO: 500 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if err := client.Listen(); err != nil {
		t.Fatal(err)
	}
	pc, err := client.Allocate()
	if err != nil {
		t.Fatalf("TURN-over-TCP Allocate after descriptor exhaustion: %v\nchild:\n%s", err, stderr.String())
	}
	pc.Close()
	client.Close()
	c.Close()
	cmd.Process.Signal(syscall.SIGTERM)
	var final map[string]uint64
	if err := dec.Decode(&final); err != nil {
		t.Fatalf("child's counters: %v\n%s", err, stderr.String())
	}
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v\n%s", err, stderr.String())
	}
	t.Logf("child counters: %v", final)
	if final[MetricTCPAcceptErrors] == 0 {
		t.Errorf("the child never ran out of descriptors (%s = 0): the test proved nothing", MetricTCPAcceptErrors)
	}
	if final[MetricAllocations] == 0 {
		t.Error("no allocation counted")
	}
}

// exhaustedAfter is how many accept errors the child waits for before it tells the parent
// that it ran out of descriptors: a few, so that the relay has backed off more than once.
const exhaustedAfter = 3

// exhaustChild runs the relay under a low descriptor limit, prints its addresses, then
// whether accept failed exhaustedAfter times within 30 s, and on SIGTERM closes it and
// prints its counters.
func exhaustChild() {
	fail := func(err error) {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(1)
	}
	// Soft and hard: Go raises the soft limit to the hard one at start.
	lim := syscall.Rlimit{Cur: exhaustLimit, Max: exhaustLimit}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		fail(err)
	}
	s, err := New(Config{Secret: testSecret, Listen: "127.0.0.1:0", Listeners: 1, AllowPeer: allowLoopback,
		TCPConnsPerAddr: 1000, TCPConnsPerPrefix: 1000, MinPort: 40000, MaxPort: 40100,
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil))})
	if err != nil {
		fail(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	json.NewEncoder(os.Stdout).Encode(map[string]string{"udp": s.Addr().String(), "tcp": s.TCPAddr().String()})
	go func() {
		err := eventually.Await(30*time.Second, "accept errors", func() bool { return s.m.Get(MetricTCPAcceptErrors) >= exhaustedAfter })
		json.NewEncoder(os.Stdout).Encode(map[string]bool{"exhausted": err == nil})
	}()
	if err := s.Run(ctx); err != nil {
		fail(err)
	}
	json.NewEncoder(os.Stdout).Encode(s.Metrics().Snapshot())
	os.Exit(0)
}

// A wrong-password flood from a few addresses logs one line per address (per interval of
// the rate limit), and counts every attempt and every line held back.
func TestAuthFloodLogBounded(t *testing.T) {
	var logs syncbuf.Buffer
	s := newServer(t, Config{AllowPeer: allowLoopback,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	good, _, _ := Credentials(testSecret, "mallory", time.Hour, time.Now())
	const sources, perSource = 3, 100
	for i := 0; i < sources; i++ {
		c, err := net.DialUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 1, byte(1+i))}, net.UDPAddrFromAddrPort(s.Addr()))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		challenge := stunRoundTrip(t, c)
		var nonce stun.Nonce
		var realm stun.Realm
		nonce.GetFrom(challenge)
		realm.GetFrom(challenge)
		for j := 0; j < perSource; j++ {
			resp := stunRoundTrip(t, c, stun.NewUsername(good), realm, nonce,
				stun.MessageIntegrity(turn.GenerateAuthKey(good, realm.String(), "guess")))
			var code stun.ErrorCodeAttribute
			if code.GetFrom(resp); code.Code != stun.CodeUnauthorized {
				t.Fatalf("attempt %d: error %d, want 401", j, code.Code)
			}
		}
	}
	if got := s.m.Get(MetricAuthBadHMAC); got != sources*perSource {
		t.Errorf("%s = %d, want %d", MetricAuthBadHMAC, got, sources*perSource)
	}
	lines := strings.Count(logs.String(), "relay: auth refused")
	if lines != sources {
		t.Errorf("%d log lines for %d refusals from %d addresses, want %d:\n%s", lines, sources*perSource, sources, sources, logs.String())
	}
	if got := s.m.Get(MetricLogSuppressed); got != sources*perSource-uint64(lines) {
		t.Errorf("%s = %d, want %d", MetricLogSuppressed, got, sources*perSource-lines)
	}
}

// Frames that arrive together in one TCP read (a client sending fast) all reach pion, in
// order: the relay's framing hands them over one by one.
func TestTCPBackToBackFrames(t *testing.T) {
	s := newServer(t, Config{AllowPeer: allowLoopback})
	peer, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer peer.Close()
	peerIn := reader(peer)
	alice := allocate(t, newClient(t, s, "alice", true))
	exchange(t, alice, peer.LocalAddr(), peerIn, "first") // permission in place
	const n = 200
	for i := 0; i < n; i++ {
		if _, err := alice.WriteTo([]byte(fmt.Sprintf("datagram %03d", i)), peer.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	next := 0
	timeout := time.After(10 * time.Second)
	for next < n {
		select {
		case d := <-peerIn:
			if d.data == "first" {
				continue
			}
			if want := fmt.Sprintf("datagram %03d", next); d.data != want {
				t.Fatalf("peer got %q, want %q", d.data, want)
			}
			next++
		case <-timeout:
			t.Fatalf("peer got %d of %d datagrams sent over TCP", next, n)
		}
	}
	if got := s.m.Get(MetricTCPBadFrames) + s.m.Get(MetricBadPackets); got != 0 {
		t.Errorf("%d frames refused", got)
	}
}
