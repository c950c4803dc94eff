package netcheck

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/portmap"
	"github.com/peerline/peerline/internal/stunsrv"
)

// stunServer runs an RFC 5780 STUN server on 127.0.0.1 and 127.0.0.2 and returns its
// primary address.
func stunServer(t *testing.T) string {
	t.Helper()
	listen := func(addr string) net.PacketConn {
		c, err := net.ListenPacket("udp4", addr)
		if err != nil {
			t.Skipf("no second loopback address for RFC 5780 tests: %v", err)
		}
		return c
	}
	p := listen("127.0.0.1:0")
	port := p.LocalAddr().(*net.UDPAddr).Port
	alt := listen("127.0.0.1:0")
	altPort := alt.LocalAddr().(*net.UDPAddr).Port
	two := func(port int) net.PacketConn {
		return listen(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), uint16(port)).String())
	}
	conns := [4]net.PacketConn{p, alt, two(port), two(altPort)}
	s, err := stunsrv.New(stunsrv.Config{Conns: conns})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- s.Serve(context.Background()) }()
	t.Cleanup(func() {
		s.Close()
		<-done
	})
	return p.LocalAddr().String()
}

// natPMPRouter answers NAT-PMP external address requests with ext, and nothing else (a
// router that speaks NAT-PMP alone), on 127.0.0.1; it returns its port.
func natPMPRouter(t *testing.T, ext netip.Addr) uint16 {
	t.Helper()
	c, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	go func() {
		buf := make([]byte, 1100)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			if n != 2 || buf[0] != 0 || buf[1] != 0 {
				continue // PCP, or a mapping request
			}
			resp := []byte{0, 128, 0, 0}
			resp = binary.BigEndian.AppendUint32(resp, 3600) // epoch
			resp = append(resp, ext.AsSlice()...)
			c.WriteTo(resp, from)
		}
	}()
	return uint16(c.LocalAddr().(*net.UDPAddr).Port)
}

func predict(mine, theirs string) string { return mine + "/" + theirs }

func TestReport(t *testing.T) {
	srv := stunServer(t)
	dead, err := net.ListenPacket("udp4", "127.0.0.1:0") // a server that never answers
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	ext := netip.MustParseAddr("198.51.100.7")
	rep, err := Run(context.Background(), Config{
		Supernodes: []string{srv, dead.LocalAddr().String()},
		Relays:     []string{srv},
		Timeout:    time.Second,
		PortMap: &portmap.Config{Gateway: netip.MustParseAddr("127.0.0.1"), GatewayPort: natPMPRouter(t, ext),
			Protocols: []portmap.Protocol{portmap.PCP, portmap.NATPMP}},
		Predict:       predict,
		HasGlobalIPv6: func() bool { return false },
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.NAT.Classic != "open" || !rep.NAT.Public || rep.NAT.UDPBlocked {
		t.Errorf("NAT on loopback: %+v, want open", rep.NAT)
	}
	if !rep.IPv4 || rep.IPv6 || rep.IPv6Address {
		t.Errorf("ipv4 %v ipv6 %v ipv6 address %v", rep.IPv4, rep.IPv6, rep.IPv6Address)
	}
	if len(rep.Latency) != 3 {
		t.Fatalf("latency of %d servers, want 3: %+v", len(rep.Latency), rep.Latency)
	}
	for i, l := range rep.Latency[:2] {
		if l.Error != "" || l.RTTMs <= 0 || l.Server != srv {
			t.Errorf("latency %d: %+v, want an answer from %s", i, l, srv)
		}
	}
	if l := rep.Latency[2]; l.Error == "" || l.Server != dead.LocalAddr().String() {
		t.Errorf("the silent server, last: %+v", l)
	}
	if kinds := map[string]bool{rep.Latency[0].Kind: true, rep.Latency[1].Kind: true}; !kinds["supernode"] || !kinds["relay"] {
		t.Errorf("kinds %v", kinds)
	}
	pm := rep.PortMapping
	if pm == nil || !pm.NATPMP || pm.PCP || pm.UPnP || pm.ExternalAddr != ext.String() || pm.Gateway != "127.0.0.1" {
		t.Errorf("port mapping %+v, want NAT-PMP alone with %s", pm, ext)
	}
	if len(rep.Predicted) != len(Kinds) || rep.Predicted["symmetric"] != "open/symmetric" {
		t.Errorf("predicted %v", rep.Predicted)
	}
}

func TestNothingAnswered(t *testing.T) {
	dead, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	rep, err := Run(context.Background(), Config{Supernodes: []string{dead.LocalAddr().String()},
		Timeout: 300 * time.Millisecond, Predict: predict, HasGlobalIPv6: func() bool { return false }})
	if !errors.Is(err, ErrNothingAnswered) {
		t.Fatalf("err %v, want ErrNothingAnswered", err)
	}
	if rep.IPv4 || len(rep.Predicted) != 0 {
		t.Errorf("a report from nothing: %+v", rep)
	}
	if _, err := Run(context.Background(), Config{}); !errors.Is(err, ErrNoServers) {
		t.Errorf("no servers: %v", err)
	}
}

func TestIPv6WithoutAddressNotTried(t *testing.T) {
	srv := stunServer(t)
	rep, err := Run(context.Background(), Config{Supernodes: []string{srv, "[2001:db8::1]:7001"},
		Timeout: 300 * time.Millisecond, HasGlobalIPv6: func() bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	last := rep.Latency[len(rep.Latency)-1]
	if last.Server != "[2001:db8::1]:7001" || last.Error == "" || rep.IPv6 {
		t.Errorf("IPv6 server on a host without IPv6: %+v, ipv6 %v", last, rep.IPv6)
	}
}

// TestUDPBlocked: no answer over UDP from a supernode that accepts TCP is blocked UDP, a
// NAT kind with predictions, and not an error.
func TestUDPBlocked(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	rep, err := Run(context.Background(), Config{Supernodes: []string{ln.Addr().String()},
		Timeout: 300 * time.Millisecond, Predict: predict, HasGlobalIPv6: func() bool { return false }})
	if err != nil {
		t.Fatal(err)
	}
	if !rep.TCP || !rep.NAT.UDPBlocked || rep.Predicted["open"] != "udp-blocked/open" {
		t.Errorf("UDP blocked: tcp %v, nat %+v, predicted %v", rep.TCP, rep.NAT, rep.Predicted)
	}
}
