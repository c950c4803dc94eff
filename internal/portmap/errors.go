package portmap

import (
	"errors"
	"fmt"
)

// Errors of the Config, returned by New.
var (
	// ErrNoLocalPort means Config.LocalPort is 0: say which UDP port to map.
	ErrNoLocalPort = errors.New("portmap: Config.LocalPort is 0: set the UDP port to map")
	// ErrGatewayNotIPv4 means Config.Gateway or Config.LocalAddr is not an IPv4 address;
	// only IPv4 mappings are made.
	ErrGatewayNotIPv4 = errors.New("portmap: gateway and local address must be IPv4")
	// ErrBadProtocols means Config.Protocols names an unknown protocol or one twice.
	ErrBadProtocols = errors.New("portmap: Config.Protocols must list PCP, NATPMP or UPnP, each at most once")
)

// Errors of the client: what went wrong between this host and its router.
var (
	// ErrNoGateway means Config.Gateway is unset and no IPv4 default route was found.
	ErrNoGateway = errors.New("portmap: no IPv4 default gateway found: set Config.Gateway to the router's address")
	// ErrNoResponse means the router did not answer within Config.Timeout.
	ErrNoResponse = errors.New("portmap: the router did not answer: it may not support PCP, NAT-PMP or UPnP, or has them turned off in its settings")
	// ErrNoService means the router's UPnP device offers no service to map ports with.
	ErrNoService = errors.New("portmap: the router's UPnP device has no WANIPConnection or WANPPPConnection service")
	// ErrBadResponse means an answer that parses but makes no sense, such as a mapping
	// with a zero lifetime or port, or no usable external address.
	ErrBadResponse = errors.New("portmap: the router's answer makes no sense (zero lifetime or port, or no external IPv4 address)")
)

// Errors the router answers with: NAT-PMP and PCP result codes and UPnP error codes.
// The error returned wraps one of these and names the protocol and the code.
var (
	// ErrUnsupportedVersion means the router does not speak this protocol (NAT-PMP or PCP
	// result 1).
	ErrUnsupportedVersion = errors.New("portmap: the router does not speak this protocol version")
	// ErrNotAuthorized means the router refuses to map for this host (NAT-PMP and PCP
	// result 2, UPnP error 606).
	ErrNotAuthorized = errors.New("portmap: the router refused the mapping (not authorized): allow port mapping (NAT-PMP, PCP or UPnP) for this host in the router's settings")
	// ErrNetworkFailure means the router has no working external connection right now
	// (NAT-PMP result 3, PCP result 7).
	ErrNetworkFailure = errors.New("portmap: the router has no working external connection right now (network failure): try again later")
	// ErrNoResources means the router's mapping table or this host's quota is full
	// (NAT-PMP result 4, PCP results 8 and 10).
	ErrNoResources = errors.New("portmap: the router has no room for another mapping (out of resources or over quota): remove unused port forwards in its settings")
	// ErrUnsupportedOpcode means the router does not support the request (NAT-PMP result
	// 5, PCP result 4).
	ErrUnsupportedOpcode = errors.New("portmap: the router does not support this request")
	// ErrAddressMismatch means the router saw the request come from another address than
	// the one it carries (PCP result 12): there is another NAT between this host and the
	// router.
	ErrAddressMismatch = errors.New("portmap: the router sees this host at another address (another NAT in between?): set Config.LocalAddr, or map on the outer router")
	// ErrPortInUse means the external port is mapped to another host already (UPnP
	// error 718).
	ErrPortInUse = errors.New("portmap: the external port is already forwarded to another host: set another Config.ExternalPort")
	// ErrRefused is any other refusal.
	ErrRefused = errors.New("portmap: the router refused the request")
)

// Errors of the parsers. Each means a datagram is not a well-formed answer; the client
// ignores such a datagram and waits for a good one.
var (
	errShort       = errors.New("portmap: message truncated")
	errVersion     = errors.New("portmap: unknown protocol version")
	errNotResponse = errors.New("portmap: not a response")
	errOpcode      = errors.New("portmap: unknown opcode")
	errLength      = errors.New("portmap: PCP message length not a multiple of 4 or over 1100 bytes")
	errOption      = errors.New("portmap: PCP option runs past the end of the message")
	errSSDP        = errors.New("portmap: not an SSDP search response with a LOCATION URL")
)

// natpmpResult is the error of a NAT-PMP result code; nil for success.
func natpmpResult(code uint16) error {
	var err error
	switch code {
	case natpmpSuccess:
		return nil
	case natpmpUnsupportedVersion:
		err = ErrUnsupportedVersion
	case natpmpNotAuthorized:
		err = ErrNotAuthorized
	case natpmpNetworkFailure:
		err = ErrNetworkFailure
	case natpmpOutOfResources:
		err = ErrNoResources
	case natpmpUnsupportedOpcode:
		err = ErrUnsupportedOpcode
	default:
		err = ErrRefused
	}
	return fmt.Errorf("%w (NAT-PMP result %d)", err, code)
}

// pcpResult is the error of a PCP result code; nil for success.
func pcpResult(code uint8) error {
	var err error
	switch code {
	case pcpSuccess:
		return nil
	case pcpUnsuppVersion:
		err = ErrUnsupportedVersion
	case pcpNotAuthorized:
		err = ErrNotAuthorized
	case pcpUnsuppOpcode:
		err = ErrUnsupportedOpcode
	case pcpNetworkFailure:
		err = ErrNetworkFailure
	case pcpNoResources, pcpUserExQuota:
		err = ErrNoResources
	case pcpAddressMismatch:
		err = ErrAddressMismatch
	default:
		err = ErrRefused
	}
	return fmt.Errorf("%w (PCP result %d, %s)", err, code, pcpResultName(code))
}

// pcpResultName is RFC 6887's name of a result code.
func pcpResultName(code uint8) string {
	names := [...]string{"SUCCESS", "UNSUPP_VERSION", "NOT_AUTHORIZED", "MALFORMED_REQUEST",
		"UNSUPP_OPCODE", "UNSUPP_OPTION", "MALFORMED_OPTION", "NETWORK_FAILURE", "NO_RESOURCES",
		"UNSUPP_PROTOCOL", "USER_EX_QUOTA", "CANNOT_PROVIDE_EXTERNAL", "ADDRESS_MISMATCH",
		"EXCESSIVE_REMOTE_PEERS"}
	if int(code) < len(names) {
		return names[code]
	}
	return "unknown"
}
