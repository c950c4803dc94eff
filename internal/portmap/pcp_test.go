package portmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// appendPCPResponse is a router's side of the codec, for the tests: it appends r as
// parsePCP reads it, with the MAP data if r has them and no options.
func appendPCPResponse(b []byte, r pcpResponse) []byte {
	b = append(b, pcpVersion, pcpRBit|r.op, 0, r.result)
	b = binary.BigEndian.AppendUint32(b, r.lifetime)
	b = binary.BigEndian.AppendUint32(b, r.epoch)
	b = append(b, make([]byte, 12)...)
	if !r.hasMap {
		return b
	}
	b = append(b, r.nonce[:]...)
	b = append(b, r.protocol, 0, 0, 0)
	b = binary.BigEndian.AppendUint16(b, r.internalPort)
	b = binary.BigEndian.AppendUint16(b, r.externalPort)
	return appendPCPAddr(b, r.externalIP)
}

var testNonce = pcpNonce{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}

func TestPCPRequests(t *testing.T) {
	client := netip.MustParseAddr("192.168.1.23")
	mapped := []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 168, 1, 23}
	announce := append([]byte{2, 0, 0, 0, 0, 0, 0, 0}, mapped...)
	if got := appendPCPAnnounce(nil, client); !bytes.Equal(got, announce) {
		t.Errorf("ANNOUNCE\n got % x\nwant % x", got, announce)
	}
	want := append([]byte{2, 1, 0, 0, 0, 0, 0x1c, 0x20}, mapped...)
	want = append(want, testNonce[:]...)
	want = append(want, 17, 0, 0, 0, 0xa2, 0x69, 0xc3, 0x50)
	want = append(want, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 7)
	got := appendPCPMap(nil, pcpMapRequest{client: client, lifetime: 7200, nonce: testNonce,
		internalPort: 0xa269, externalPort: 50000, externalIP: netip.MustParseAddr("203.0.113.7")})
	if !bytes.Equal(got, want) || len(got) != pcpHeaderLen+pcpMapLen {
		t.Errorf("MAP\n got % x\nwant % x", got, want)
	}
	// No suggested address is ::ffff:0.0.0.0, PCP's "any IPv4 address".
	got = appendPCPMap(nil, pcpMapRequest{client: client, nonce: testNonce, internalPort: 1})
	if tail := got[44:]; !bytes.Equal(tail, []byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0, 0, 0, 0}) {
		t.Errorf("no suggested address written % x", tail)
	}
}

func TestParsePCP(t *testing.T) {
	ext := netip.MustParseAddr("203.0.113.7")
	mapOK := pcpResponse{op: pcpOpMap, lifetime: 3600, epoch: 77, hasMap: true, nonce: testNonce,
		protocol: 17, internalPort: 41641, externalPort: 50000, externalIP: ext}
	good := appendPCPResponse(nil, mapOK)
	// An option of 5 bytes padded to 8 (THIRD_PARTY-like), then one of none.
	withOptions := append(append([]byte(nil), good...), 0x80, 0, 0, 5, 1, 2, 3, 4, 5, 0, 0, 0, 0x81, 0, 0, 0)
	badOption := append(append([]byte(nil), good...), 0x80, 0, 0, 9, 1, 2, 3, 4)
	v6 := append([]byte(nil), good...)
	copy(v6[44:], netip.MustParseAddr("2001:db8::1").AsSlice())
	for _, tc := range []struct {
		name string
		b    []byte
		want pcpResponse
		err  error
	}{
		{"map", good, mapOK, nil},
		{"options", withOptions, mapOK, nil},
		{"ipv6 external", v6, func() pcpResponse { r := mapOK; r.externalIP = netip.MustParseAddr("2001:db8::1"); return r }(), nil},
		{"announce", appendPCPResponse(nil, pcpResponse{op: pcpOpAnnounce, epoch: 5}), pcpResponse{op: pcpOpAnnounce, epoch: 5}, nil},
		{"error without data", appendPCPResponse(nil, pcpResponse{op: pcpOpMap, result: pcpMalformedRequest}),
			pcpResponse{op: pcpOpMap, result: pcpMalformedRequest}, nil},
		{"peer opcode", appendPCPResponse(nil, pcpResponse{op: 2, epoch: 1}), pcpResponse{op: 2, epoch: 1}, nil},
		{"empty", nil, pcpResponse{}, errShort},
		{"short", good[:20], pcpResponse{}, errShort},
		{"success without data", good[:pcpHeaderLen], pcpResponse{}, errShort},
		{"not multiple of 4", good[:58], pcpResponse{}, errLength},
		{"too long", append(append([]byte(nil), good...), make([]byte, 1100)...), pcpResponse{}, errLength},
		{"natpmp", append([]byte{0, 128}, make([]byte, 22)...), pcpResponse{}, errVersion},
		{"request", appendPCPMap(nil, pcpMapRequest{client: ext, nonce: testNonce}), pcpResponse{}, errNotResponse},
		{"option overrun", badOption, pcpResponse{}, errOption},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parsePCP(tc.b)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if got != tc.want {
				t.Errorf("parsed %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestPCPResultErrors(t *testing.T) {
	for code, want := range map[uint8]error{1: ErrUnsupportedVersion, 2: ErrNotAuthorized, 3: ErrRefused,
		4: ErrUnsupportedOpcode, 7: ErrNetworkFailure, 8: ErrNoResources, 10: ErrNoResources,
		11: ErrRefused, 12: ErrAddressMismatch, 200: ErrRefused} {
		if err := pcpResult(code); !errors.Is(err, want) {
			t.Errorf("result %d: %v, want %v", code, err, want)
		}
	}
	if err := pcpResult(0); err != nil {
		t.Errorf("success is %v", err)
	}
}
