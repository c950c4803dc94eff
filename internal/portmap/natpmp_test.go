package portmap

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
)

// appendNATPMPResponse is a router's side of the codec, for the tests: it appends r as
// parseNATPMP reads it, whole for a success and header only for an error.
func appendNATPMPResponse(b []byte, r natpmpResponse) []byte {
	b = append(b, natpmpVersion, natpmpOpResponse+r.op)
	b = binary.BigEndian.AppendUint16(b, r.result)
	b = binary.BigEndian.AppendUint32(b, r.epoch)
	if r.result != natpmpSuccess && !r.external.IsValid() && r.internalPort == 0 && r.externalPort == 0 && r.lifetime == 0 {
		return b
	}
	if r.op == natpmpOpExternal {
		a := r.external.As4()
		return append(b, a[:]...)
	}
	b = binary.BigEndian.AppendUint16(b, r.internalPort)
	b = binary.BigEndian.AppendUint16(b, r.externalPort)
	return binary.BigEndian.AppendUint32(b, r.lifetime)
}

func TestNATPMPRequests(t *testing.T) {
	if got := appendNATPMPExternal([]byte{0xaa}); !bytes.Equal(got, []byte{0xaa, 0, 0}) {
		t.Errorf("external address request % x", got)
	}
	got := appendNATPMPMap(nil, 0xa269, 0x1234, 7200)
	want := []byte{0, 1, 0, 0, 0xa2, 0x69, 0x12, 0x34, 0, 0, 0x1c, 0x20}
	if !bytes.Equal(got, want) {
		t.Errorf("mapping request\n got % x\nwant % x", got, want)
	}
}

func TestParseNATPMP(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    []byte
		want natpmpResponse
		err  error
	}{
		{"external", []byte{0, 128, 0, 0, 0, 0, 1, 0, 203, 0, 113, 7},
			natpmpResponse{op: 0, epoch: 256, external: netip.MustParseAddr("203.0.113.7")}, nil},
		{"map", []byte{0, 129, 0, 0, 0, 0, 0, 9, 0xa2, 0x69, 0xc3, 0x50, 0, 0, 0x0e, 0x10},
			natpmpResponse{op: 1, epoch: 9, internalPort: 0xa269, externalPort: 50000, lifetime: 3600}, nil},
		{"map tcp padded", []byte{0, 130, 0, 0, 0, 0, 0, 9, 0, 1, 0, 2, 0, 0, 0, 3, 0xff, 0xff},
			natpmpResponse{op: 2, epoch: 9, internalPort: 1, externalPort: 2, lifetime: 3}, nil},
		{"refused header only", []byte{0, 129, 0, 2, 0, 0, 0, 5},
			natpmpResponse{op: 1, result: 2, epoch: 5}, nil},
		{"unsupported version", []byte{0, 128, 0, 1, 0, 0, 0, 0},
			natpmpResponse{op: 0, result: 1}, nil},
		{"empty", nil, natpmpResponse{}, errShort},
		{"short header", []byte{0, 128, 0, 0, 0, 0, 0}, natpmpResponse{}, errShort},
		{"short success", []byte{0, 129, 0, 0, 0, 0, 0, 9, 0xa2, 0x69, 0xc3, 0x50, 0, 0, 0x0e}, natpmpResponse{}, errShort},
		{"short external", []byte{0, 128, 0, 0, 0, 0, 0, 9, 1, 2, 3}, natpmpResponse{}, errShort},
		{"version", []byte{1, 128, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, natpmpResponse{}, errVersion},
		{"pcp", append([]byte{2, 0x80}, make([]byte, 22)...), natpmpResponse{}, errVersion},
		{"request", []byte{0, 1, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1}, natpmpResponse{}, errNotResponse},
		{"opcode", []byte{0, 131, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, natpmpResponse{}, errOpcode},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseNATPMP(tc.b)
			if !errors.Is(err, tc.err) {
				t.Fatalf("error %v, want %v", err, tc.err)
			}
			if got != tc.want {
				t.Errorf("parsed %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestNATPMPResultErrors(t *testing.T) {
	for code, want := range map[uint16]error{1: ErrUnsupportedVersion, 2: ErrNotAuthorized, 3: ErrNetworkFailure,
		4: ErrNoResources, 5: ErrUnsupportedOpcode, 99: ErrRefused} {
		if err := natpmpResult(code); !errors.Is(err, want) {
			t.Errorf("result %d: %v, want %v", code, err, want)
		}
	}
	if err := natpmpResult(0); err != nil {
		t.Errorf("success is %v", err)
	}
}
