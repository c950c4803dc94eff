package portmap

import (
	"encoding/binary"
	"fmt"
	"net/netip"
)

// PCP constants (RFC 6887); the byte layout is drawn in the package comment.
const (
	pcpVersion    = 2
	pcpOpAnnounce = 0
	pcpOpMap      = 1
	pcpRBit       = 0x80 // set in the opcode byte of a response

	pcpHeaderLen = 24
	pcpMapLen    = 36 // MAP opcode data
	pcpMaxLen    = 1100
	pcpNonceLen  = 12

	pcpProtoUDP = 17
)

// PCP result codes (RFC 6887 §7.4).
const (
	pcpSuccess           = 0
	pcpUnsuppVersion     = 1
	pcpNotAuthorized     = 2
	pcpMalformedRequest  = 3
	pcpUnsuppOpcode      = 4
	pcpUnsuppOption      = 5
	pcpMalformedOption   = 6
	pcpNetworkFailure    = 7
	pcpNoResources       = 8
	pcpUnsuppProtocol    = 9
	pcpUserExQuota       = 10
	pcpCannotProvideExt  = 11
	pcpAddressMismatch   = 12
	pcpExcessRemotePeers = 13
)

// pcpNonce names a mapping: renewals and the deletion carry the nonce of the MAP that
// made it, and answers carry the nonce of their request.
type pcpNonce [pcpNonceLen]byte

// appendPCPHeader appends a request header to b.
func appendPCPHeader(b []byte, op uint8, lifetime uint32, client netip.Addr) []byte {
	b = append(b, pcpVersion, op, 0, 0)
	b = binary.BigEndian.AppendUint32(b, lifetime)
	return appendPCPAddr(b, client)
}

// appendPCPAddr appends a as the 16 bytes of a PCP address: an IPv4 address mapped into
// IPv6, and the zero Addr as ::ffff:0.0.0.0, PCP's "no preference" for IPv4 (§11.1).
func appendPCPAddr(b []byte, a netip.Addr) []byte {
	if !a.IsValid() {
		a = netip.IPv4Unspecified()
	}
	s := a.As16() // of an IPv4 address, its mapped form
	return append(b, s[:]...)
}

// appendPCPAnnounce appends an ANNOUNCE request to b.
func appendPCPAnnounce(b []byte, client netip.Addr) []byte {
	return appendPCPHeader(b, pcpOpAnnounce, 0, client)
}

// pcpMapRequest is the content of a MAP request for UDP.
type pcpMapRequest struct {
	client       netip.Addr // this host's address, as the router sees it
	lifetime     uint32     // seconds; 0 deletes the mapping
	nonce        pcpNonce
	internalPort uint16
	externalPort uint16     // suggested; 0 = no preference
	externalIP   netip.Addr // suggested; the zero Addr = no preference
}

// appendPCPMap appends a MAP request for UDP to b.
func appendPCPMap(b []byte, r pcpMapRequest) []byte {
	b = appendPCPHeader(b, pcpOpMap, r.lifetime, r.client)
	b = append(b, r.nonce[:]...)
	b = append(b, pcpProtoUDP, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, r.internalPort)
	b = binary.BigEndian.AppendUint16(b, r.externalPort)
	return appendPCPAddr(b, r.externalIP)
}

// pcpResponse is a parsed PCP response.
type pcpResponse struct {
	op       uint8 // opcode, without the R bit
	result   uint8
	lifetime uint32 // seconds granted
	epoch    uint32 // seconds since the router started or lost its mappings

	// hasMap says whether the MAP data below are present: they are in every successful
	// MAP response, and in error responses that copied them from the request.
	hasMap       bool
	nonce        pcpNonce
	protocol     uint8
	internalPort uint16
	externalPort uint16     // assigned
	externalIP   netip.Addr // assigned; an IPv4 address is unmapped
}

// parsePCP parses a PCP response and checks the options that follow its opcode data for
// framing, without interpreting them.
func parsePCP(b []byte) (pcpResponse, error) {
	if len(b) < pcpHeaderLen {
		return pcpResponse{}, fmt.Errorf("%w: PCP response of %d bytes", errShort, len(b))
	}
	if b[0] != pcpVersion {
		return pcpResponse{}, fmt.Errorf("%w: PCP version %d", errVersion, b[0])
	}
	if len(b)%4 != 0 || len(b) > pcpMaxLen {
		return pcpResponse{}, fmt.Errorf("%w: %d bytes", errLength, len(b))
	}
	if b[1]&pcpRBit == 0 {
		return pcpResponse{}, fmt.Errorf("%w: PCP request opcode %d", errNotResponse, b[1])
	}
	r := pcpResponse{
		op:       b[1] &^ pcpRBit,
		result:   b[3],
		lifetime: binary.BigEndian.Uint32(b[4:8]),
		epoch:    binary.BigEndian.Uint32(b[8:12]),
	}
	rest := b[pcpHeaderLen:]
	switch r.op {
	case pcpOpAnnounce:
	case pcpOpMap:
		if len(rest) < pcpMapLen {
			if r.result == pcpSuccess {
				return pcpResponse{}, fmt.Errorf("%w: PCP MAP response of %d bytes", errShort, len(b))
			}
			return r, nil // an error response without the request's data: nothing to check
		}
		r.hasMap = true
		r.nonce = pcpNonce(rest[:pcpNonceLen])
		r.protocol = rest[12]
		r.internalPort = binary.BigEndian.Uint16(rest[16:18])
		r.externalPort = binary.BigEndian.Uint16(rest[18:20])
		r.externalIP = netip.AddrFrom16([16]byte(rest[20:36])).Unmap()
		rest = rest[pcpMapLen:]
	default:
		// PEER and future opcodes: the header is all this client reads of them.
		return r, nil
	}
	if err := checkPCPOptions(rest); err != nil {
		return pcpResponse{}, err
	}
	return r, nil
}

// checkPCPOptions checks that b is a sequence of whole options.
func checkPCPOptions(b []byte) error {
	for len(b) > 0 {
		if len(b) < 4 {
			return fmt.Errorf("%w: %d bytes left", errOption, len(b))
		}
		code, n := b[0], int(binary.BigEndian.Uint16(b[2:4]))
		padded := (n + 3) &^ 3
		if 4+padded > len(b) {
			return fmt.Errorf("%w: option %d of %d bytes, %d left", errOption, code, n, len(b)-4)
		}
		b = b[4+padded:]
	}
	return nil
}
