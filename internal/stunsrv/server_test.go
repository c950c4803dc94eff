package stunsrv

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/pion/stun/v3"

	"github.com/peerline/peerline/internal/rfc5780"
)

// fakeConn is a PacketConn that only has an address; Handle tests need no I/O.
type fakeConn struct {
	net.PacketConn
	addr *net.UDPAddr
}

func (f fakeConn) LocalAddr() net.Addr { return f.addr }
func (f fakeConn) Close() error        { return nil }

func fake(s string) net.PacketConn {
	return fakeConn{addr: net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s))}
}

func newRFC5780(t *testing.T) *Server {
	t.Helper()
	s, err := New(Config{Conns: [4]net.PacketConn{
		fake("192.0.2.1:3478"), fake("192.0.2.1:3479"), fake("192.0.2.2:3478"), fake("192.0.2.2:3479"),
	}, Software: "test"})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func request(t *testing.T, setters ...stun.Setter) []byte {
	t.Helper()
	m, err := stun.Build(append([]stun.Setter{stun.TransactionID, stun.BindingRequest}, setters...)...)
	if err != nil {
		t.Fatal(err)
	}
	return m.Raw
}

func decode(t *testing.T, b []byte) *stun.Message {
	t.Helper()
	m := &stun.Message{Raw: b}
	if err := m.Decode(); err != nil {
		t.Fatalf("decode response: %v", err)
	}
	if err := stun.Fingerprint.Check(m); err != nil {
		t.Fatalf("fingerprint: %v", err)
	}
	return m
}

func TestNewValidates(t *testing.T) {
	cases := []struct {
		name  string
		conns [4]net.PacketConn
		want  error
	}{
		{"no primary", [4]net.PacketConn{nil, fake("192.0.2.1:2")}, ErrNoPrimary},
		{"partial", [4]net.PacketConn{fake("192.0.2.1:1"), fake("192.0.2.1:2")}, ErrPartialAlternate},
		{"unspecified", [4]net.PacketConn{fake("0.0.0.0:1")}, ErrUnspecifiedAddr},
		{"same ip", [4]net.PacketConn{fake("192.0.2.1:1"), fake("192.0.2.1:2"), fake("192.0.2.1:1"), fake("192.0.2.1:2")}, ErrBadLayout},
		{"same port", [4]net.PacketConn{fake("192.0.2.1:1"), fake("192.0.2.1:1"), fake("192.0.2.2:1"), fake("192.0.2.2:1")}, ErrBadLayout},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := New(Config{Conns: c.conns}); !errors.Is(err, c.want) {
				t.Fatalf("New: got %v, want %v", err, c.want)
			}
		})
	}
}

func TestHandleChangeRequest(t *testing.T) {
	s := newRFC5780(t)
	src := netip.MustParseAddrPort("203.0.113.7:40000")
	cases := []struct {
		in     Slot
		change rfc5780.ChangeRequest
		out    Slot
		other  string
	}{
		{SlotPrimary, rfc5780.ChangeRequest{}, SlotPrimary, "192.0.2.2:3479"},
		{SlotPrimary, rfc5780.ChangeRequest{ChangePort: true}, SlotAltPort, "192.0.2.2:3479"},
		{SlotPrimary, rfc5780.ChangeRequest{ChangeIP: true}, SlotAltIP, "192.0.2.2:3479"},
		{SlotPrimary, rfc5780.ChangeRequest{ChangeIP: true, ChangePort: true}, SlotAltBoth, "192.0.2.2:3479"},
		{SlotAltBoth, rfc5780.ChangeRequest{ChangeIP: true}, SlotAltPort, "192.0.2.1:3478"},
		{SlotAltIP, rfc5780.ChangeRequest{}, SlotAltIP, "192.0.2.1:3479"},
	}
	for _, c := range cases {
		resp, out, dst, ok := s.Handle(request(t, c.change), src, c.in)
		if !ok || out != c.out || dst != src {
			t.Fatalf("in %d %+v: ok=%v out=%d dst=%s, want out %d", c.in, c.change, ok, out, dst, c.out)
		}
		m := decode(t, resp)
		if m.Type != stun.BindingSuccess {
			t.Fatalf("type %s", m.Type)
		}
		var xa stun.XORMappedAddress
		var ro stun.ResponseOrigin
		var oa stun.OtherAddress
		if err := m.Parse(&xa, &ro, &oa); err != nil {
			t.Fatal(err)
		}
		if xa.String() != src.String() || ro.String() != s.Addrs()[c.out].String() || oa.String() != c.other {
			t.Fatalf("in %d %+v: mapped %s origin %s other %s", c.in, c.change, xa, ro, oa)
		}
	}
}

func TestHandlePlainServerRejectsChangeRequest(t *testing.T) {
	s, err := New(Config{Conns: [4]net.PacketConn{fake("192.0.2.1:3478")}})
	if err != nil {
		t.Fatal(err)
	}
	src := netip.MustParseAddrPort("203.0.113.7:40000")
	resp, out, _, ok := s.Handle(request(t, rfc5780.ChangeRequest{ChangeIP: true}), src, SlotPrimary)
	if !ok || out != SlotPrimary {
		t.Fatalf("ok=%v out=%d", ok, out)
	}
	m := decode(t, resp)
	var ec stun.ErrorCodeAttribute
	var ua stun.UnknownAttributes
	if err := m.Parse(&ec, &ua); err != nil {
		t.Fatal(err)
	}
	if ec.Code != stun.CodeUnknownAttribute || len(ua) != 1 || ua[0] != stun.AttrChangeRequest {
		t.Fatalf("got %v %v", ec, ua)
	}
	// A plain request still works and has no OTHER-ADDRESS.
	resp, _, _, _ = s.Handle(request(t), src, SlotPrimary)
	if decode(t, resp).Contains(stun.AttrOtherAddress) {
		t.Fatal("plain server sent OTHER-ADDRESS")
	}
}

func TestHandleResponsePortAndErrors(t *testing.T) {
	s := newRFC5780(t)
	src := netip.MustParseAddrPort("203.0.113.7:40000")
	_, _, dst, ok := s.Handle(request(t, rfc5780.ResponsePort(5555)), src, SlotPrimary)
	if !ok || dst != netip.MustParseAddrPort("203.0.113.7:5555") {
		t.Fatalf("RESPONSE-PORT: ok=%v dst=%s", ok, dst)
	}
	// Unknown comprehension-required attribute: 420.
	resp, _, _, ok := s.Handle(request(t, stun.RawAttribute{Type: 0x7777, Value: []byte{1}}), src, SlotPrimary)
	var ec stun.ErrorCodeAttribute
	if !ok || ec.GetFrom(decode(t, resp)) != nil || ec.Code != stun.CodeUnknownAttribute {
		t.Fatalf("unknown attr: ok=%v %v", ok, ec)
	}
	// Bad CHANGE-REQUEST length: 400.
	resp, _, _, ok = s.Handle(request(t, stun.RawAttribute{Type: stun.AttrChangeRequest, Value: []byte{1}}), src, SlotPrimary)
	if !ok || ec.GetFrom(decode(t, resp)) != nil || ec.Code != stun.CodeBadRequest {
		t.Fatalf("bad change request: ok=%v %v", ok, ec)
	}
	// Dropped: not STUN, a response, a bad fingerprint, an unused slot.
	resp2, _ := stun.Build(stun.TransactionID, stun.BindingSuccess)
	bad := request(t, stun.Fingerprint)
	bad[len(bad)-1] ^= 0xff
	for name, b := range map[string][]byte{"junk": []byte("hello world, not stun"), "response": resp2.Raw, "fingerprint": bad} {
		if _, _, _, ok := s.Handle(b, src, SlotPrimary); ok {
			t.Errorf("%s: answered", name)
		}
	}
	if _, _, _, ok := s.Handle(request(t), src, Slot(7)); ok {
		t.Error("slot 7 answered")
	}
	if st := s.Stats(); st.Requests != 1 || st.Errors != 2 || st.Dropped != 4 {
		t.Errorf("stats %+v", st)
	}
}

// TestServeLoopback runs the server on real sockets (127.0.0.1 and 127.0.0.2 on lo) and
// checks a change-IP-and-port answer comes from the other address, then a clean Close.
func TestServeLoopback(t *testing.T) {
	var conns2 [4]net.PacketConn
	var err error
	for try := 0; try < 20; try++ {
		p := uint16(20000 + (time.Now().UnixNano()/1000+int64(try)*7919)%30000)
		conns2, err = ListenUDP(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p), netip.MustParseAddr("127.0.0.2"), p+1)
		if err == nil {
			break
		}
	}
	if err != nil {
		if runtime.GOOS != "linux" {
			t.Skipf("cannot listen on 127.0.0.1/127.0.0.2 (needs Linux lo 127/8): %v", err)
		}
		t.Fatalf("listen on 127.0.0.1/127.0.0.2 (Linux routes all of 127/8 to lo): %v", err)
	}
	s, err := New(Config{Conns: conns2})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()

	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.WriteTo(request(t, rfc5780.ChangeRequest{ChangeIP: true, ChangePort: true}), net.UDPAddrFromAddrPort(s.Addrs()[0])); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, from, err := c.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	if from.String() != s.Addrs()[SlotAltBoth].String() {
		t.Fatalf("answer from %s, want %s", from, s.Addrs()[SlotAltBoth])
	}
	decode(t, buf[:n])
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
	if err := s.Close(); err != nil { // idempotent
		t.Fatal(err)
	}
}
