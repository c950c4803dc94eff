package natdetect

import (
	"net"
	"net/netip"

	"github.com/pion/stun/v3"
)

// datagram is what one received packet says.
type datagram struct {
	tx      [stun.TransactionIDSize]byte
	request bool // a Binding request (our own hairpin probe coming back)
	errCode int  // error response code; 0 for a success response
	mapped  netip.AddrPort
	other   netip.AddrPort
}

// parseDatagram decodes one received packet. Only Binding requests, success responses
// carrying a mapped address, and error responses are accepted; anything else is
// errNotResponse. A present FINGERPRINT must be right.
func parseDatagram(b []byte) (datagram, error) {
	var d datagram
	if !stun.IsMessage(b) {
		return d, errNotResponse
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return d, err
	}
	if m.Type.Method != stun.MethodBinding {
		return d, errNotResponse
	}
	if m.Contains(stun.AttrFingerprint) {
		if err := stun.Fingerprint.Check(m); err != nil {
			return d, err
		}
	}
	d.tx = m.TransactionID
	switch m.Type.Class {
	case stun.ClassRequest:
		d.request = true
		return d, nil
	case stun.ClassErrorResponse:
		var ec stun.ErrorCodeAttribute
		if err := ec.GetFrom(m); err != nil {
			return d, err
		}
		d.errCode = int(ec.Code)
		if d.errCode == 0 {
			d.errCode = -1 // an error response always counts as an error
		}
		return d, nil
	case stun.ClassSuccessResponse:
	default:
		return d, errNotResponse
	}
	var xa stun.XORMappedAddress
	if err := xa.GetFrom(m); err == nil {
		d.mapped = toAddrPort(xa.IP, xa.Port)
	} else {
		var ma stun.MappedAddress
		if err := ma.GetFrom(m); err != nil {
			return d, errNotResponse
		}
		d.mapped = toAddrPort(ma.IP, ma.Port)
	}
	if !d.mapped.IsValid() {
		return d, errNotResponse
	}
	var oa stun.OtherAddress
	if err := oa.GetFrom(m); err == nil {
		d.other = toAddrPort(oa.IP, oa.Port)
	}
	return d, nil
}

func toAddrPort(ip net.IP, port int) netip.AddrPort {
	a, ok := netip.AddrFromSlice(ip)
	if !ok || port <= 0 || port > 65535 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(a.Unmap(), uint16(port))
}
