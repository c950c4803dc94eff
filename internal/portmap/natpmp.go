package portmap

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// NAT-PMP constants (RFC 6886); the byte layout is drawn in the package comment.
const (
	natpmpVersion    = 0
	natpmpOpExternal = 0 // external address request
	natpmpOpMapUDP   = 1
	natpmpOpMapTCP   = 2
	natpmpOpResponse = 128 // added to the request's opcode in its response

	natpmpHeaderLen   = 8  // version, opcode, result, epoch: all an error response needs
	natpmpExternalLen = 12 // response to opcode 0
	natpmpMapLen      = 16 // response to opcodes 1 and 2
	natpmpRequestLen  = 12 // mapping request
)

// NAT-PMP result codes (RFC 6886 §3.5).
const (
	natpmpSuccess            = 0
	natpmpUnsupportedVersion = 1
	natpmpNotAuthorized      = 2
	natpmpNetworkFailure     = 3
	natpmpOutOfResources     = 4
	natpmpUnsupportedOpcode  = 5
)

// appendNATPMPExternal appends an external address request to b.
func appendNATPMPExternal(b []byte) []byte {
	return append(b, natpmpVersion, natpmpOpExternal)
}

// appendNATPMPMap appends a UDP mapping request to b. A lifetime of 0 asks to delete the
// mapping of internal; RFC 6886 §3.4 then wants the suggested external port 0 as well.
func appendNATPMPMap(b []byte, internal, external uint16, lifetime uint32) []byte {
	b = append(b, natpmpVersion, natpmpOpMapUDP, 0, 0)
	b = binary.BigEndian.AppendUint16(b, internal)
	b = binary.BigEndian.AppendUint16(b, external)
	return binary.BigEndian.AppendUint32(b, lifetime)
}

// natpmpResponse is a parsed NAT-PMP response.
type natpmpResponse struct {
	op     uint8  // the opcode answered: the response's opcode less 128
	result uint16 // natpmpSuccess or an error code
	epoch  uint32 // seconds since the router started or lost its mappings

	// Set by a response to opcode 0 that carries it (every successful one).
	external netip.Addr
	// Set by a response to opcode 1 or 2 that carries them (every successful one).
	internalPort, externalPort uint16
	lifetime                   uint32
}

// parseNATPMP parses a NAT-PMP response. A successful response must be whole; an error
// response need carry only its header, and its other fields are read when present.
// Bytes past a response's size are ignored.
func parseNATPMP(b []byte) (natpmpResponse, error) {
	if len(b) < natpmpHeaderLen {
		return natpmpResponse{}, fmt.Errorf("%w: NAT-PMP response of %d bytes", errShort, len(b))
	}
	if b[0] != natpmpVersion {
		return natpmpResponse{}, fmt.Errorf("%w: NAT-PMP version %d", errVersion, b[0])
	}
	if b[1] < natpmpOpResponse {
		return natpmpResponse{}, fmt.Errorf("%w: NAT-PMP opcode %d", errNotResponse, b[1])
	}
	r := natpmpResponse{
		op:     b[1] - natpmpOpResponse,
		result: binary.BigEndian.Uint16(b[2:4]),
		epoch:  binary.BigEndian.Uint32(b[4:8]),
	}
	var size int
	switch r.op {
	case natpmpOpExternal:
		size = natpmpExternalLen
	case natpmpOpMapUDP, natpmpOpMapTCP:
		size = natpmpMapLen
	default:
		return natpmpResponse{}, fmt.Errorf("%w: NAT-PMP response opcode %d", errOpcode, b[1])
	}
	if len(b) < size {
		if r.result == natpmpSuccess {
			return natpmpResponse{}, fmt.Errorf("%w: NAT-PMP response to opcode %d of %d bytes, want %d", errShort, r.op, len(b), size)
		}
		return r, nil
	}
	if r.op == natpmpOpExternal {
		r.external = netip.AddrFrom4([4]byte(b[8:12]))
	} else {
		r.internalPort = binary.BigEndian.Uint16(b[8:10])
		r.externalPort = binary.BigEndian.Uint16(b[10:12])
		r.lifetime = binary.BigEndian.Uint32(b[12:16])
	}
	return r, nil
}
