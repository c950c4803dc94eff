package natdetect

import (
	"net"
	"net/netip"
	"time"
)

// Mapping is a NAT's mapping behaviour (RFC 4787 section 4.1).
type Mapping string

// Filtering is a NAT's filtering behaviour (RFC 4787 section 5).
type Filtering string

// Mapping behaviours.
const (
	MappingEndpointIndependent     Mapping = "endpoint-independent"
	MappingAddressDependent        Mapping = "address-dependent"
	MappingAddressAndPortDependent Mapping = "address-and-port-dependent"
)

// Filtering behaviours.
const (
	FilteringEndpointIndependent     Filtering = "endpoint-independent"
	FilteringAddressDependent        Filtering = "address-dependent"
	FilteringAddressAndPortDependent Filtering = "address-and-port-dependent"
)

// Classic (RFC 3489) names, as Result.Classic.
const (
	ClassicOpen               = "open"
	ClassicFullCone           = "full cone"
	ClassicRestrictedCone     = "restricted cone"
	ClassicPortRestrictedCone = "port-restricted cone"
	ClassicSymmetric          = "symmetric"
	ClassicUDPBlocked         = "udp-blocked"
)

// Result is what Detect learned. Fields that could not be tested are zero.
type Result struct {
	// UDPBlocked is true when no server answered at all; every other field is then zero
	// except LocalAddr and Classic.
	UDPBlocked bool `json:"udp_blocked"`
	// Public is true when the mapped address equals the socket's own address (no NAT).
	Public    bool      `json:"public"`
	Mapping   Mapping   `json:"mapping,omitempty"`
	Filtering Filtering `json:"filtering,omitempty"`
	// Hairpinning says whether a datagram sent from this host to its own mapped address
	// came back through the NAT (RFC 4787 REQ-9); for a public address it trivially does.
	// nil when not tested (no Options.HairpinConn, or UDP blocked).
	Hairpinning *bool `json:"hairpinning,omitempty"`
	// MappingLifetime is the longest idle time the mapping was seen to survive; 0 means
	// not measured (Options.LifetimeMax is 0) or the mapping died within the first step.
	MappingLifetime time.Duration `json:"-"`
	// MappedAddr is the server-reflexive address (IP:port) seen by the primary server.
	MappedAddr string `json:"mapped_addr,omitempty"`
	// LocalAddr is the socket's own address.
	LocalAddr string `json:"local_addr,omitempty"`
	// Server and OtherAddr are the primary server used and its OTHER-ADDRESS.
	Server    string `json:"server,omitempty"`
	OtherAddr string `json:"other_addr,omitempty"`
	// Classic is the RFC 3489 name: open, full cone, restricted cone, port-restricted cone,
	// symmetric or udp-blocked.
	Classic string `json:"classic"`
}

// ClassicName returns the RFC 3489 name for a mapping and filtering behaviour.
// public says the mapped address is the host's own. It returns "" when mapping or
// filtering is unknown ("") and the name depends on it.
func ClassicName(public bool, m Mapping, f Filtering) string {
	if m != "" && m != MappingEndpointIndependent {
		return ClassicSymmetric
	}
	if m == "" && !public {
		return ""
	}
	switch f {
	case FilteringEndpointIndependent:
		if public {
			return ClassicOpen
		}
		return ClassicFullCone
	case FilteringAddressDependent:
		return ClassicRestrictedCone
	case FilteringAddressAndPortDependent:
		return ClassicPortRestrictedCone
	}
	return ""
}

// Options tunes Detect. Only Servers is required.
type Options struct {
	// Servers are STUN servers as "HOST:PORT". All get a first Binding request at once; the
	// first in list order that answers with OTHER-ADDRESS runs the behaviour tests.
	Servers []string
	// Timeout is how long a test waits for its answer before calling it lost.
	// 0 means 2 s. A detection usually takes one Timeout (the tests that may go unanswered
	// wait it out together) and at most four (T1, phase 2, T2, T3).
	Timeout time.Duration
	// Retransmit is the first retransmission interval; it doubles after each resend, as
	// in RFC 5389 section 7.2.1. 0 means 200 ms.
	Retransmit time.Duration
	// HairpinConn is a second socket on the same host (same local IP as conn, any port)
	// used to send the hairpinning probe to conn's mapped address. nil means hairpinning
	// is not tested and Result.Hairpinning stays nil. Detect does not read from it.
	HairpinConn net.PacketConn
	// LifetimeConn is a second socket on the same host used to measure the mapping
	// lifetime with RESPONSE-PORT (RFC 5780 section 4.6). nil, or LifetimeMax 0, means
	// the lifetime is not measured. Detect does not read from it.
	LifetimeConn net.PacketConn
	// LifetimeMax is the longest idle interval to try; intervals start at LifetimeStep
	// and double. 0 means no lifetime measurement. Measuring costs about 2*LifetimeMax.
	LifetimeMax time.Duration
	// LifetimeStep is the first idle interval. 0 means 1 s.
	LifetimeStep time.Duration
	// IsLocal reports whether an address is the socket's own (no NAT in between). nil
	// compares with conn.LocalAddr(), and, when that is bound to 0.0.0.0 or ::, accepts the
	// same port on any of the host's interface addresses.
	IsLocal func(netip.AddrPort) bool
}

func (o Options) withDefaults() Options {
	if o.Timeout <= 0 {
		o.Timeout = 2 * time.Second
	}
	if o.Retransmit <= 0 {
		o.Retransmit = 200 * time.Millisecond
	}
	if o.LifetimeStep <= 0 {
		o.LifetimeStep = time.Second
	}
	return o
}
