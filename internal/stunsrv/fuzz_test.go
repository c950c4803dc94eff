package stunsrv

import (
	"net"
	"net/netip"
	"testing"

	"github.com/pion/stun/v3"

	"github.com/peerline/peerline/internal/rfc5780"
)

// FuzzHandle feeds arbitrary datagrams to the request path. It must never panic, must only
// answer from a configured slot, to the request's IP, and every answer must decode as a
// STUN message with a right FINGERPRINT and the request's transaction ID.
func FuzzHandle(f *testing.F) {
	for _, s := range []stun.Setter{nil, rfc5780.ChangeRequest{ChangeIP: true}, rfc5780.ResponsePort(9), stun.NewUsername("u")} {
		setters := []stun.Setter{stun.TransactionID, stun.BindingRequest}
		if s != nil {
			setters = append(setters, s)
		}
		m := stun.MustBuild(append(setters, stun.Fingerprint)...)
		f.Add(m.Raw, uint8(0))
	}
	s, err := New(Config{Conns: [4]net.PacketConn{
		fake("192.0.2.1:3478"), fake("192.0.2.1:3479"), fake("192.0.2.2:3478"), fake("192.0.2.2:3479"),
	}, Software: "fuzz"})
	if err != nil {
		f.Fatal(err)
	}
	src := netip.MustParseAddrPort("203.0.113.9:1234")
	f.Fuzz(func(t *testing.T, b []byte, slot uint8) {
		in := Slot(slot % 4)
		resp, out, dst, ok := s.Handle(b, src, in)
		if !ok {
			return
		}
		if out < 0 || out >= 4 || dst.Addr() != src.Addr() || len(resp) == 0 {
			t.Fatalf("answer out=%d dst=%s len=%d", out, dst, len(resp))
		}
		m := &stun.Message{Raw: resp}
		if err := m.Decode(); err != nil {
			t.Fatalf("own response does not decode: %v", err)
		}
		if err := stun.Fingerprint.Check(m); err != nil {
			t.Fatal(err)
		}
		var req stun.Message
		req.Raw = b
		if req.Decode() == nil && req.TransactionID != m.TransactionID {
			t.Fatal("transaction ID not echoed")
		}
	})
}
