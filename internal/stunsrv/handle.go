package stunsrv

import (
	"net"
	"net/netip"

	"github.com/pion/stun/v3"

	"github.com/peerline/peerline/internal/rfc5780"
)

// Attributes a request may carry that we understand or may safely ignore. Any other
// comprehension-required attribute (type < 0x8000) gets a 420 (RFC 5389 section 7.3.1).
var knownRequestAttrs = map[stun.AttrType]bool{
	stun.AttrUsername:               true, // ignored: the server does not authenticate
	stun.AttrMessageIntegrity:       true,
	stun.AttrMessageIntegritySHA256: true,
	stun.AttrResponsePort:           true,
	stun.AttrPadding:                true, // ignored: responses are not padded
}

// Handle decides the answer to one datagram b that arrived on slot in from src. It does no
// I/O: it returns the response bytes, the slot to send them from and the destination, or
// ok=false to drop the datagram silently (not a STUN request, malformed, bad FINGERPRINT).
func (s *Server) Handle(b []byte, src netip.AddrPort, in Slot) (resp []byte, out Slot, dst netip.AddrPort, ok bool) {
	if in < 0 || in >= numSlots || s.conns[in] == nil || !stun.IsMessage(b) {
		s.drop()
		return nil, 0, dst, false
	}
	req := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := req.Decode(); err != nil || req.Type.Class != stun.ClassRequest {
		s.drop()
		return nil, 0, dst, false
	}
	if req.Contains(stun.AttrFingerprint) {
		if err := stun.Fingerprint.Check(req); err != nil {
			s.drop()
			return nil, 0, dst, false
		}
	}
	dst, out = src, in
	if req.Type.Method != stun.MethodBinding {
		return s.errorResponse(req, stun.CodeBadRequest, nil), in, dst, true
	}
	var unknown stun.UnknownAttributes
	for _, a := range req.Attributes {
		if a.Type >= 0x8000 || knownRequestAttrs[a.Type] {
			continue
		}
		if a.Type == stun.AttrChangeRequest && s.rfc5780 {
			continue
		}
		unknown = append(unknown, a.Type)
	}
	if len(unknown) > 0 {
		return s.errorResponse(req, stun.CodeUnknownAttribute, unknown), in, dst, true
	}
	if req.Contains(stun.AttrChangeRequest) {
		var cr rfc5780.ChangeRequest
		if err := cr.GetFrom(req); err != nil {
			return s.errorResponse(req, stun.CodeBadRequest, nil), in, dst, true
		}
		if cr.ChangeIP {
			out ^= SlotAltIP
		}
		if cr.ChangePort {
			out ^= SlotAltPort
		}
	}
	if req.Contains(stun.AttrResponsePort) {
		var rp rfc5780.ResponsePort
		if err := rp.GetFrom(req); err != nil {
			return s.errorResponse(req, stun.CodeBadRequest, nil), in, src, true
		}
		dst = netip.AddrPortFrom(src.Addr(), uint16(rp))
	}
	setters := []stun.Setter{
		stun.NewTransactionIDSetter(req.TransactionID),
		stun.BindingSuccess,
		&stun.XORMappedAddress{IP: net.IP(src.Addr().AsSlice()), Port: int(src.Port())},
		&stun.ResponseOrigin{IP: net.IP(s.addrs[out].Addr().AsSlice()), Port: int(s.addrs[out].Port())},
	}
	if s.rfc5780 {
		other := s.addrs[in^SlotAltBoth]
		setters = append(setters, &stun.OtherAddress{IP: net.IP(other.Addr().AsSlice()), Port: int(other.Port())})
	}
	if s.software != "" {
		setters = append(setters, stun.NewSoftware(s.software))
	}
	setters = append(setters, stun.Fingerprint)
	m, err := stun.Build(setters...)
	if err != nil {
		s.drop()
		return nil, 0, dst, false
	}
	s.requests.Add(1)
	s.m.Inc(MetricRequests)
	return m.Raw, out, dst, true
}

func (s *Server) errorResponse(req *stun.Message, code stun.ErrorCode, unknown stun.UnknownAttributes) []byte {
	setters := []stun.Setter{
		stun.NewTransactionIDSetter(req.TransactionID),
		stun.NewType(req.Type.Method, stun.ClassErrorResponse),
		code,
	}
	if len(unknown) > 0 {
		setters = append(setters, unknown)
	}
	if s.software != "" {
		setters = append(setters, stun.NewSoftware(s.software))
	}
	setters = append(setters, stun.Fingerprint)
	m, err := stun.Build(setters...)
	if err != nil {
		return nil
	}
	s.errs.Add(1)
	s.m.Inc(MetricErrors)
	return m.Raw
}
