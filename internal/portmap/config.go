package portmap

import (
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/peerline/peerline/internal/metrics"
)

// Protocol names a port-mapping protocol.
type Protocol uint8

// The protocols, in the order a Client prefers them by default.
const (
	// PCP is the Port Control Protocol (RFC 6887).
	PCP Protocol = iota + 1
	// NATPMP is the NAT Port Mapping Protocol (RFC 6886).
	NATPMP
	// UPnP is UPnP IGD's WANIPConnection or WANPPPConnection service.
	UPnP
)

// String returns the protocol's usual name.
func (p Protocol) String() string {
	switch p {
	case PCP:
		return "PCP"
	case NATPMP:
		return "NAT-PMP"
	case UPnP:
		return "UPnP"
	}
	return fmt.Sprintf("Protocol(%d)", uint8(p))
}

// Defaults of the Config fields whose zero value means "the default".
const (
	DefaultGatewayPort   = 5351 // NAT-PMP and PCP
	DefaultSSDPPort      = 1900
	DefaultLifetime      = 2 * time.Hour // RFC 6886 §3.3 recommends 7200 s
	DefaultTimeout       = 2 * time.Second
	DefaultSends         = 4 // at 0, 250 ms, 750 ms and 1.75 s
	DefaultDeleteTimeout = time.Second
	DefaultCheckInterval = 2 * time.Minute
	DefaultDescription   = "peerline"
)

// DefaultProtocols is the order of preference when Config.Protocols is empty.
var DefaultProtocols = []Protocol{PCP, NATPMP, UPnP}

// Config configures a Client. Only LocalPort is required.
type Config struct {
	// LocalPort is the UDP port on this host to map. Required.
	LocalPort uint16
	// ExternalPort is the external port to ask for; 0 = LocalPort. The router may give
	// another one; a renewal asks for the one it gave.
	ExternalPort uint16
	// Lifetime is the mapping lifetime to ask for; 0 = 2 h. Routers may grant less, and
	// Run renews at half of what they grant.
	Lifetime time.Duration
	// Protocols lists the protocols to try, most preferred first; nil = PCP, NAT-PMP,
	// UPnP.
	Protocols []Protocol

	// Gateway is the router; the zero value = the IPv4 default gateway of the kernel's
	// routing table, looked up afresh for every Probe and Map (Linux only: elsewhere set
	// it).
	Gateway netip.Addr
	// GatewayPort is the router's NAT-PMP and PCP port; 0 = 5351.
	GatewayPort uint16
	// SSDPPort is the port that the SSDP search is sent to on the router; 0 = 1900. The
	// search also goes to the SSDP multicast group 239.255.255.250:1900, unless Gateway
	// is a loopback address (a test's router).
	SSDPPort uint16
	// UPnPRootURL is the URL of the router's UPnP root device description, such as
	// "http://192.168.1.1:5000/rootDesc.xml"; "" = the LOCATION of the router's answer
	// to an SSDP search.
	UPnPRootURL string
	// LocalAddr is this host's address on the router's network, which PCP and UPnP
	// requests carry; the zero value = the source address the kernel picks for the
	// gateway (a lookup that sends nothing). Set it when ListenPacket is not the
	// machine's network.
	LocalAddr netip.Addr
	// Description names the mapping in the router's UPnP table; "" = "peerline".
	Description string

	// Timeout bounds a Probe, and each protocol's attempt in a Map, on Clock; 0 = 2 s.
	Timeout time.Duration
	// Sends is how many times a NAT-PMP, PCP or SSDP request is sent before giving up,
	// 250 ms apart and then twice as far each time (RFC 6886 §3.1), within Timeout;
	// 0 = 4.
	Sends int
	// DeleteTimeout bounds the deletion of the mapping when Run's context ends; 0 = 1 s.
	DeleteTimeout time.Duration
	// CheckInterval is how often Run asks the router, between renewals, whether it
	// restarted (NAT-PMP and PCP epochs) or changed its external address, and maps again
	// at once if so; 0 = 2 minutes, negative = never.
	CheckInterval time.Duration

	// ListenPacket opens the UDP sockets that NAT-PMP, PCP and SSDP requests are sent
	// from, with network "udp4" and an address with port 0; nil = net.ListenPacket.
	ListenPacket func(network, addr string) (net.PacketConn, error)
	// HTTPClient fetches the UPnP description and makes the SOAP calls; nil = a client
	// that uses no proxy, keeps no idle connections and gives up after 5 s.
	HTTPClient *http.Client
	// Clock runs the retransmissions, timeouts, renewals and checks and tells the time of
	// Mapping.Obtained; nil = the real clock. HTTP requests keep to real time as well.
	Clock clockwork.Clock
	// Logger receives key-value logs; nil = slog.Default().
	Logger *slog.Logger
	// Metrics counts maps, renewals, deletions, retransmissions, ignored datagrams and
	// router restarts (names beginning "portmap_"); nil = not counted.
	Metrics metrics.Counter
	// OnChange, if set, is called whenever Current changes: a new mapping, another
	// external address, port or protocol, or no mapping any more (ok false). It runs on
	// the goroutine of the Map, Delete or Run that made the change and must not call
	// Map or Delete.
	OnChange func(m Mapping, ok bool)
}

// httpTimeout bounds a request of the default HTTP client in real time, for when Clock is
// a fake that a test does not move.
const httpTimeout = 5 * time.Second

// withDefaults returns c with every zero field that has a default set to it.
func (c Config) withDefaults() Config {
	if c.ExternalPort == 0 {
		c.ExternalPort = c.LocalPort
	}
	if c.Lifetime <= 0 {
		c.Lifetime = DefaultLifetime
	}
	if len(c.Protocols) == 0 {
		c.Protocols = DefaultProtocols
	}
	if c.GatewayPort == 0 {
		c.GatewayPort = DefaultGatewayPort
	}
	if c.SSDPPort == 0 {
		c.SSDPPort = DefaultSSDPPort
	}
	if c.Description == "" {
		c.Description = DefaultDescription
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Sends <= 0 {
		c.Sends = DefaultSends
	}
	if c.DeleteTimeout <= 0 {
		c.DeleteTimeout = DefaultDeleteTimeout
	}
	if c.CheckInterval == 0 {
		c.CheckInterval = DefaultCheckInterval
	}
	if c.ListenPacket == nil {
		c.ListenPacket = net.ListenPacket
	}
	if c.HTTPClient == nil {
		// A router is on the local network: an HTTP proxy from the environment would not
		// reach it, and idle connections to it would outlive Run.
		c.HTTPClient = &http.Client{
			Transport: &http.Transport{DisableKeepAlives: true},
			Timeout:   httpTimeout,
		}
	}
	if c.Clock == nil {
		c.Clock = clockwork.NewRealClock()
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Metrics == nil {
		c.Metrics = metrics.Discard
	}
	return c
}

// validate checks the fields that have no default.
func (c Config) validate() error {
	if c.LocalPort == 0 {
		return ErrNoLocalPort
	}
	if c.Gateway.IsValid() && !c.Gateway.Unmap().Is4() {
		return fmt.Errorf("%w: gateway %s", ErrGatewayNotIPv4, c.Gateway)
	}
	if c.LocalAddr.IsValid() && !c.LocalAddr.Unmap().Is4() {
		return fmt.Errorf("%w: local address %s", ErrGatewayNotIPv4, c.LocalAddr)
	}
	seen := map[Protocol]bool{}
	for _, p := range c.Protocols {
		if p < PCP || p > UPnP || seen[p] {
			return fmt.Errorf("%w: %v", ErrBadProtocols, c.Protocols)
		}
		seen[p] = true
	}
	return nil
}
