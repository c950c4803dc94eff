// Package birthday finds a direct UDP path between a NAT whose mapping depends on the
// remote endpoint and picks ports at random (symmetric) and a NAT whose mapping does not
// (a cone: endpoint-independent mapping, address- or address-and-port-dependent
// filtering), where ICE's connectivity checks cannot: the cone side cannot know which
// port the symmetric NAT will map toward it.
//
// The side behind the symmetric NAT (Spray) opens many sockets and sends from each a
// probe to the cone side's mapped address: each gets a mapping of its own, at a random
// port of its NAT's public address, that lets packets from that address in. The cone
// side (Guess) sends probes from its one socket, whose mapping the other side knows, to
// random ports of the symmetric NAT's public address: each opens its own NAT's filter
// for that port, and one that hits a port mapped for one of the many sockets reaches
// it. That socket answers, through the hole the guess opened, and the path is found.
// With s sockets and g guesses over a range of r ports, a guess meets a mapping with
// probability 1 - (1 - s/r)^g, about 1 - exp(-s*g/r): 256 sockets and 256 guesses over
// Linux's 64,512 ports give 64%; measured on these machines against real Linux NATs,
// 28 of 40 (70%).
//
// Probing is bounded in every way: the sockets opened (Config.Sockets), the packets sent
// per second (Config.Rate) and in all (Config.Guesses; the sprays repeat at the same
// rate), and the time (Config.Timeout); it stops as soon as one probe gets through.
// Probes are tagged with a key of the call (probe.go), so that nothing but the peer
// opens a path. The network and the clock come from the Config (memnet in tests, the
// host's sockets in a client).
package birthday

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/peerline/peerline/internal/metrics"
)

// PacketNet opens UDP sockets: a memnet.Host, or the host's network.
type PacketNet interface {
	ListenPacket(network, address string) (net.PacketConn, error)
}

// Limits and defaults.
const (
	DefaultSockets = 256
	MaxSockets     = 1024
	DefaultGuesses = 1024
	MaxGuesses     = 8192
	DefaultRate    = 1000 // packets per second
	MaxRate        = 5000
	DefaultTimeout = 10 * time.Second
	minKey         = 16
)

// Config configures one side's probing.
type Config struct {
	Net PacketNet // the spraying side's sockets come from it
	// Key authenticates the probes of one call (at least 16 bytes, the same at both
	// ends: drawn from the call's key agreement).
	Key []byte
	// Sockets is how many sockets the spraying side opens (0 = DefaultSockets, at most
	// MaxSockets).
	Sockets int
	// Guesses is how many distinct ports the guessing side tries (0 = DefaultGuesses, at
	// most MaxGuesses).
	Guesses int
	// Rate bounds the packets a side sends per second (0 = DefaultRate, at most MaxRate).
	Rate int
	// Timeout bounds the whole probing (0 = DefaultTimeout).
	Timeout time.Duration
	// PortLo and PortHi bound the ports guessed (0 = 1024 and 65535).
	PortLo, PortHi uint16
	Clock          clockwork.Clock // nil = the real clock
	Metrics        *metrics.Set    // nil = none
	Logger         *slog.Logger    // nil = discarded
}

// Path is the path probing found: the socket to send on and the peer's address.
type Path struct {
	Conn net.PacketConn
	Peer netip.AddrPort
}

// Stats says what one side's probing did.
type Stats struct {
	Sockets int           // sockets opened
	Sent    int           // probes sent
	Bad     int           // datagrams refused (not a probe of this call)
	Took    time.Duration // until the path was found or probing gave up
}

// ErrNoPath is what probing that did not get through within its bounds returns.
var ErrNoPath = errors.New("birthday: no probe got through")

func (cfg *Config) fill() error {
	if len(cfg.Key) < minKey {
		return fmt.Errorf("birthday: a key of %d bytes, want at least %d", len(cfg.Key), minKey)
	}
	set := func(v *int, def, max int) { *v = min(max, cmpOr(*v, def)) }
	set(&cfg.Sockets, DefaultSockets, MaxSockets)
	set(&cfg.Guesses, DefaultGuesses, MaxGuesses)
	set(&cfg.Rate, DefaultRate, MaxRate)
	if cfg.Timeout <= 0 {
		cfg.Timeout = DefaultTimeout
	}
	if cfg.PortLo == 0 {
		cfg.PortLo = 1024
	}
	if cfg.PortHi == 0 {
		cfg.PortHi = 65535
	}
	if cfg.PortHi < cfg.PortLo || int(cfg.PortHi-cfg.PortLo)+1 < cfg.Guesses {
		return fmt.Errorf("birthday: %d guesses in ports %d-%d", cfg.Guesses, cfg.PortLo, cfg.PortHi)
	}
	if cfg.Clock == nil {
		cfg.Clock = clockwork.NewRealClock()
	}
	if cfg.Metrics == nil {
		cfg.Metrics = &metrics.Set{}
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return nil
}

func cmpOr(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

func nonce() uint64 {
	var b [8]byte
	rand.Read(b[:])
	return binary.BigEndian.Uint64(b[:])
}

// found carries the first working path to the side's loop.
type found struct {
	conn net.PacketConn
	peer netip.AddrPort
}

// Spray is the side behind the symmetric NAT: it opens cfg.Sockets sockets, sends from
// each a probe to target (the cone side's mapped address), again and again at cfg.Rate
// in all, and answers the first guess that reaches one of them. It returns that socket,
// the others closed, and target; or ErrNoPath after cfg.Timeout, every socket closed.
func Spray(ctx context.Context, cfg Config, target netip.AddrPort) (Path, Stats, error) {
	if err := cfg.fill(); err != nil {
		return Path{}, Stats{}, err
	}
	start := cfg.Clock.Now()
	var st Stats
	conns := make([]net.PacketConn, 0, cfg.Sockets)
	closeAll := func(keep net.PacketConn) {
		for _, c := range conns {
			if c != keep {
				c.Close()
			}
		}
	}
	for range cfg.Sockets {
		c, err := cfg.Net.ListenPacket("udp4", ":0")
		if err != nil {
			closeAll(nil)
			return Path{}, st, fmt.Errorf("birthday: socket %d of %d: %w", len(conns)+1, cfg.Sockets, err)
		}
		conns = append(conns, c)
	}
	st.Sockets = len(conns)
	cfg.Metrics.Add("birthday_sockets", uint64(len(conns)))

	win := make(chan found, 1)
	var wg sync.WaitGroup
	var bad atomic.Int64
	// end closes every socket but keep and waits for the readers.
	end := func(keep net.PacketConn) {
		closeAll(keep)
		if keep != nil {
			keep.SetReadDeadline(time.Unix(1, 0)) // its reader has returned, or does now
		}
		wg.Wait()
		if keep != nil {
			keep.SetReadDeadline(time.Time{})
		}
		st.Bad = int(bad.Load())
		st.Took = cfg.Clock.Since(start)
	}
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64)
			for {
				n, from, err := c.ReadFrom(buf)
				if err != nil {
					return // closed: probing ended
				}
				src, ok := addrPort(from)
				role, _, perr := parseProbe(buf[:n], cfg.Key)
				if !ok || src != target || perr != nil || role == roleSpray {
					bad.Add(1)
					cfg.Metrics.Inc("birthday_bad_probes")
					continue
				}
				if role == roleGuess {
					// The guess came in through this socket's mapping: answer through
					// the hole it opened in the peer's NAT.
					c.WriteTo(appendProbe(nil, cfg.Key, roleAck, nonce()), net.UDPAddrFromAddrPort(target))
				}
				select {
				case win <- found{c, src}:
				default:
				}
				return
			}
		}()
	}
	tick := cfg.Clock.NewTicker(time.Second / time.Duration(cfg.Rate))
	defer tick.Stop()
	deadline := cfg.Clock.NewTimer(cfg.Timeout)
	defer deadline.Stop()
	dst := net.UDPAddrFromAddrPort(target)
	for i := 0; ; i++ {
		select {
		case f := <-win:
			end(f.conn)
			cfg.Metrics.Inc("birthday_found")
			return Path{Conn: f.conn, Peer: f.peer}, st, nil
		case <-deadline.Chan():
			end(nil)
			cfg.Metrics.Inc("birthday_gave_up")
			return Path{}, st, ErrNoPath
		case <-ctx.Done():
			end(nil)
			return Path{}, st, ctx.Err()
		case <-tick.Chan():
			if _, err := conns[i%len(conns)].WriteTo(appendProbe(nil, cfg.Key, roleSpray, nonce()), dst); err == nil {
				st.Sent++
				cfg.Metrics.Inc("birthday_probes_sent")
			}
		}
	}
}

// Guess is the cone side: from conn, whose mapping the other side sprays toward, it
// sends probes to cfg.Guesses distinct random ports of ip at cfg.Rate, and stops at the
// first answer from ip (or the first spray that gets through a hole a guess opened).
// conn stays open and the caller's; its read deadline is cleared on return.
func Guess(ctx context.Context, cfg Config, conn net.PacketConn, ip netip.Addr) (Path, Stats, error) {
	if err := cfg.fill(); err != nil {
		return Path{}, Stats{}, err
	}
	start := cfg.Clock.Now()
	var st Stats
	win := make(chan found, 1)
	done := make(chan struct{})
	var badN int
	var mu sync.Mutex
	go func() {
		defer close(done)
		buf := make([]byte, 64)
		for {
			n, from, err := conn.ReadFrom(buf)
			if err != nil {
				return // the deadline set below on return, or conn closed
			}
			src, ok := addrPort(from)
			role, _, perr := parseProbe(buf[:n], cfg.Key)
			if !ok || src.Addr() != ip || perr != nil || role == roleGuess {
				mu.Lock()
				badN++
				mu.Unlock()
				cfg.Metrics.Inc("birthday_bad_probes")
				continue
			}
			if role == roleSpray {
				// A spray through a hole a guess opened: the path works both ways.
				conn.WriteTo(appendProbe(nil, cfg.Key, roleAck, nonce()), net.UDPAddrFromAddrPort(src))
			}
			win <- found{conn, src}
			return
		}
	}()
	finish := func() {
		conn.SetReadDeadline(time.Unix(1, 0)) // ends the reader
		<-done
		conn.SetReadDeadline(time.Time{})
		mu.Lock()
		st.Bad = badN
		mu.Unlock()
		st.Took = cfg.Clock.Since(start)
	}

	tried := make(map[uint16]bool, cfg.Guesses)
	span := int(cfg.PortHi-cfg.PortLo) + 1
	tick := cfg.Clock.NewTicker(time.Second / time.Duration(cfg.Rate))
	defer tick.Stop()
	deadline := cfg.Clock.NewTimer(cfg.Timeout)
	defer deadline.Stop()
	for {
		select {
		case f := <-win:
			finish()
			cfg.Metrics.Inc("birthday_found")
			return Path{Conn: f.conn, Peer: f.peer}, st, nil
		case <-deadline.Chan():
			finish()
			cfg.Metrics.Inc("birthday_gave_up")
			return Path{}, st, ErrNoPath
		case <-ctx.Done():
			finish()
			return Path{}, st, ctx.Err()
		case <-tick.Chan():
			if len(tried) == cfg.Guesses {
				continue // every guess sent: wait for an answer until the deadline
			}
			port := cfg.PortLo + uint16(mrand.IntN(span))
			for tried[port] {
				port = cfg.PortLo + uint16((int(port-cfg.PortLo)+1)%span)
			}
			tried[port] = true
			dst := net.UDPAddrFromAddrPort(netip.AddrPortFrom(ip, port))
			if _, err := conn.WriteTo(appendProbe(nil, cfg.Key, roleGuess, nonce()), dst); err == nil {
				st.Sent++
				cfg.Metrics.Inc("birthday_probes_sent")
			}
		}
	}
}

func addrPort(a net.Addr) (netip.AddrPort, bool) {
	u, ok := a.(*net.UDPAddr)
	if !ok {
		return netip.AddrPort{}, false
	}
	ap := u.AddrPort()
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
