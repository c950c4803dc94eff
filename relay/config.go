package relay

import (
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime"
	"strconv"
	"time"

	"github.com/jonboulle/clockwork"
	transport "github.com/pion/transport/v4"

	"github.com/peerline/peerline/internal/clocks"
	"github.com/peerline/peerline/internal/metrics"
)

// Defaults of the Config fields whose zero value means "the default".
const (
	DefaultListen       = ":3478"
	DefaultRealm        = "peerline"
	DefaultMinPort      = 49152
	DefaultMaxPort      = 65535
	DefaultSocketBuffer = 4 << 20
	DefaultTCPMaxConns  = 10000
	DefaultTCPIdle      = 10 * time.Second
)

// Config configures a Server. Only Secret is required; every other field's zero value is
// a working default.
type Config struct {
	// Secret is the HMAC key the relay shares with the login server, which gives clients
	// credentials made by Credentials. Required.
	Secret []byte
	// Realm is the TURN realm; "" = "peerline". Credentials do not depend on it.
	Realm string
	// Listen is the host:port clients reach over UDP and TCP; "" = ":3478". Port 0 picks a
	// free port, the same number for UDP and TCP.
	Listen string
	// NoTCP turns TURN over TCP off; false also listens on TCP at Listen's port, for
	// clients whose UDP is blocked.
	NoTCP bool
	// PublicIP is the IPv4 address written in XOR-RELAYED-ADDRESS; the zero value = Listen's
	// IP, which must then be a concrete address, not a wildcard.
	PublicIP netip.Addr
	// RelayIP is the local address relayed sockets bind to; the zero value = Listen's IP
	// (a wildcard Listen binds them to 0.0.0.0, as behind a cloud 1:1 NAT).
	RelayIP netip.Addr
	// MinPort and MaxPort bound the relayed ports, inclusive; 0 = 49152 and 65535.
	MinPort, MaxPort uint16
	// Listeners is the number of UDP sockets sharing Listen's port through SO_REUSEPORT,
	// each read by one goroutine; 0 = runtime.NumCPU(), or 1 with Net.
	Listeners int
	// Net, if set, is the network the relay listens and relays on instead of the
	// machine's: an in-process one (internal/memnet's Host.TransportV4) in tests and
	// simulations. Its sockets are read one datagram at a time and share no port, so
	// Listeners must be 1.
	Net transport.Net
	// SocketBuffer is the kernel receive and send buffer size of every UDP socket, in
	// bytes; 0 = 4 MiB, negative = the kernel default. Linux caps it at
	// net.core.rmem_max and net.core.wmem_max.
	SocketBuffer int
	// MaxAllocsPerUser is how many allocations one user may hold at once; more are refused
	// with 486 (Allocation Quota Reached). 0 = no limit.
	MaxAllocsPerUser int
	// UserBandwidth is each user's relayed traffic, both directions together, in bytes per
	// second of datagrams as they arrive (TURN headers included); datagrams beyond it are
	// dropped. 0 = no limit.
	UserBandwidth int
	// UserBurst is the depth of each user's token bucket in bytes; 0 = one second of
	// UserBandwidth.
	UserBurst int
	// TCPMaxConns is how many TURN-over-TCP connections may be open at once; 0 = 10000.
	// The last tenth is kept for sources that made an allocation within the hour.
	TCPMaxConns int
	// TCPConnsPerAddr is how many of them one source address may hold; 0 =
	// max(TCPMaxConns/100, 16).
	TCPConnsPerAddr int
	// TCPConnsPerPrefix is how many one /24 (IPv4) or /64 (IPv6) may hold; 0 =
	// max(TCPMaxConns/25, 4*TCPConnsPerAddr).
	TCPConnsPerPrefix int
	// TCPIdleTimeout closes a TURN-over-TCP connection that holds no allocation this long
	// after it was accepted or its allocation ended (deleted or expired); 0 = 10 s,
	// negative = never.
	TCPIdleTimeout time.Duration
	// AllowPeer decides which peer IPs clients may relay to (CreatePermission and
	// ChannelBind); nil = the default filter: public unicast addresses only, plus private
	// ones when AllowPrivatePeers is set.
	AllowPeer func(net.IP) bool
	// AllowPrivatePeers lets the default filter admit loopback, RFC 1918, CGNAT (RFC 6598),
	// ULA and link-local peers; false refuses them. Unspecified, multicast and broadcast
	// peers are always refused by the default filter.
	AllowPrivatePeers bool
	// Logger receives the server's logs, and pion's at debug level, rate limited per
	// message and per source (internal/ratelog: log_suppressed counts what is held back);
	// nil discards.
	Logger *slog.Logger
	// Metrics receives the server's counters (see the metric names); nil = a fresh set.
	Metrics *metrics.Set
	// Now tells the time of credential expiry and bandwidth quotas; nil = Clock's.
	Now func() time.Time
	// Clock runs the server's own timers (the idle deadline of TURN-over-TCP connections,
	// the pacing of a TCP stream over its user's bandwidth, the back-off after socket
	// errors, the flush of the hot-path counters) and tells its time; nil = the real
	// clock, telling Now's time if Now is set. Pion's timers (allocation, permission and
	// channel lifetimes) are its own and run on the real clock.
	Clock clockwork.Clock
}

// validate checks c and returns a copy with every default filled in.
func (c Config) validate() (Config, error) {
	if len(c.Secret) == 0 {
		return c, ErrNoSecret
	}
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		return c, fmt.Errorf("%w: %q: %v", ErrBadListen, c.Listen, err)
	}
	if p, err := strconv.ParseUint(port, 10, 16); err != nil || (p == 0 && port != "0") {
		return c, fmt.Errorf("%w: %q: bad port", ErrBadListen, c.Listen)
	}
	var listenIP netip.Addr
	if host != "" {
		if listenIP, err = netip.ParseAddr(host); err != nil {
			return c, fmt.Errorf("%w: %q: the host must be an IP address", ErrBadListen, c.Listen)
		}
		listenIP = listenIP.Unmap()
	}
	if !c.PublicIP.IsValid() {
		if !listenIP.IsValid() || listenIP.IsUnspecified() {
			return c, ErrNoPublicIP
		}
		c.PublicIP = listenIP
	}
	c.PublicIP = c.PublicIP.Unmap()
	if !c.PublicIP.Is4() {
		return c, fmt.Errorf("%w: %s", ErrPublicIPNotV4, c.PublicIP)
	}
	if !c.RelayIP.IsValid() {
		c.RelayIP = netip.IPv4Unspecified()
		if listenIP.Is4() {
			c.RelayIP = listenIP
		}
	}
	c.RelayIP = c.RelayIP.Unmap()
	if !c.RelayIP.Is4() {
		return c, fmt.Errorf("%w: RelayIP %s", ErrPublicIPNotV4, c.RelayIP)
	}
	if c.MinPort == 0 {
		c.MinPort = DefaultMinPort
	}
	if c.MaxPort == 0 {
		c.MaxPort = DefaultMaxPort
	}
	if c.MinPort > c.MaxPort {
		return c, fmt.Errorf("%w: %d-%d", ErrBadPortRange, c.MinPort, c.MaxPort)
	}
	if c.Listeners < 0 || c.MaxAllocsPerUser < 0 || c.UserBandwidth < 0 || c.UserBurst < 0 ||
		c.TCPMaxConns < 0 || c.TCPConnsPerAddr < 0 || c.TCPConnsPerPrefix < 0 {
		return c, ErrNegative
	}
	if c.TCPMaxConns == 0 {
		c.TCPMaxConns = DefaultTCPMaxConns
	}
	if c.TCPIdleTimeout == 0 {
		c.TCPIdleTimeout = DefaultTCPIdle
	}
	switch {
	case c.Listeners == 0 && c.Net != nil:
		c.Listeners = 1
	case c.Listeners == 0:
		c.Listeners = runtime.NumCPU()
	case c.Listeners > 1 && c.Net != nil:
		return c, fmt.Errorf("relay: %d listeners on a Config.Net, which shares no port between sockets: use 1", c.Listeners)
	}
	if c.SocketBuffer == 0 {
		c.SocketBuffer = DefaultSocketBuffer
	}
	if c.UserBurst == 0 {
		c.UserBurst = c.UserBandwidth
	}
	if c.Realm == "" {
		c.Realm = DefaultRealm
	}
	c.Clock = clocks.Pick(c.Clock, c.Now)
	if c.Now == nil {
		c.Now = c.Clock.Now
	}
	if c.Metrics == nil {
		c.Metrics = &metrics.Set{}
	}
	return c, nil
}
