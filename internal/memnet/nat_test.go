package memnet

import (
	"errors"
	"net"
	"net/netip"
	"strconv"
	"syscall"
	"testing"
	"testing/synctest"
	"time"
)

// Addresses of the NAT tests: the internet in documentation ranges, the insides private.
const (
	natPublic = "198.51.100.1"
	serverIP  = "203.0.113.10"
	otherIP   = "203.0.113.20"
)

// udp opens a packet conn on h at port, closed at cleanup.
func udp(t *testing.T, h *Host, port int) net.PacketConn {
	t.Helper()
	pc, err := h.ListenPacket("udp", net.JoinHostPort("", strconv.Itoa(port)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

func udpAddr(s string) *net.UDPAddr { return net.UDPAddrFromAddrPort(netip.MustParseAddrPort(s)) }

func send(t *testing.T, pc net.PacketConn, to, msg string) {
	t.Helper()
	if _, err := pc.WriteTo([]byte(msg), udpAddr(to)); err != nil {
		t.Fatal(err)
	}
}

// recv returns the next datagram on pc and its sender, or "" when none arrives within a
// second (of a synctest bubble's clock: no real waiting).
func recv(t *testing.T, pc net.PacketConn) (string, string) {
	t.Helper()
	pc.SetReadDeadline(time.Now().Add(time.Second))
	b := make([]byte, 100)
	n, from, err := pc.ReadFrom(b)
	if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
		return "", ""
	}
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:n]), from.String()
}

// TestNATBehaviours checks each RFC 4787 mapping and filtering behaviour as seen from
// outside: the mapped address a server sees, and who may answer through it.
func TestNATBehaviours(t *testing.T) {
	for _, tc := range []struct {
		name            string
		cfg             NATConfig
		samePortTwoDsts bool // one mapping toward two ports of one server
		fromOtherPort   bool // a port of that server never sent to may send in
		fromOtherHost   bool // an unrelated host may send in
		portPreserved   bool
	}{
		{"full-cone", NATConfig{}, true, true, true, true},
		{"restricted", NATConfig{Filtering: AddressDependent}, true, true, false, true},
		{"port-restricted", NATConfig{Filtering: AddressAndPortDependent}, true, false, false, true},
		{"symmetric", NATConfig{Mapping: AddressAndPortDependent, Filtering: AddressAndPortDependent}, false, false, false, false},
		{"address-dependent-mapping", NATConfig{Mapping: AddressDependent, Filtering: AddressDependent}, true, true, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				n := New(Options{Latency: 10 * time.Millisecond})
				nat := n.NAT(natPublic, tc.cfg)
				a := udp(t, nat.Host("10.0.0.2"), 5000)
				s1, s2 := udp(t, n.Host(serverIP), 3478), udp(t, n.Host(serverIP), 3479)
				other := udp(t, n.Host(otherIP), 4000)

				send(t, a, serverIP+":3478", "hello")
				msg, from1 := recv(t, s1)
				if msg != "hello" || netip.MustParseAddrPort(from1).Addr().String() != natPublic {
					t.Fatalf("server got %q from %s, want hello from %s", msg, from1, natPublic)
				}
				if preserved := from1 == natPublic+":5000"; preserved != tc.portPreserved {
					t.Errorf("mapped %s: port preserved %v, want %v", from1, preserved, tc.portPreserved)
				}
				send(t, a, serverIP+":3479", "again")
				_, from2 := recv(t, s2)
				if same := from1 == from2; same != tc.samePortTwoDsts {
					t.Errorf("mapped %s toward :3478 and %s toward :3479; same %v, want %v", from1, from2, same, tc.samePortTwoDsts)
				}

				send(t, s1, from1, "answer")
				if msg, from := recv(t, a); msg != "answer" || from != serverIP+":3478" {
					t.Errorf("the server's answer: got %q from %s", msg, from)
				}
				s3 := udp(t, n.Host(serverIP), 3480)
				send(t, s3, from1, "other-port")
				if got, _ := recv(t, a); (got != "") != tc.fromOtherPort {
					t.Errorf("from a port of the server never sent to: got %q, want delivered %v", got, tc.fromOtherPort)
				}
				send(t, other, from1, "unsolicited")
				if got, _ := recv(t, a); (got != "") != tc.fromOtherHost {
					t.Errorf("from an unrelated host: got %q, want delivered %v", got, tc.fromOtherHost)
				}
			})
		})
	}
}

// TestNATHairpinAndLAN: hosts behind one NAT reach each other on their private
// addresses always, and through the NAT's public address only with hairpinning.
func TestNATHairpinAndLAN(t *testing.T) {
	for _, hairpin := range []bool{false, true} {
		synctest.Test(t, func(t *testing.T) {
			n := New(Options{})
			nat := n.NAT(natPublic, NATConfig{Hairpin: hairpin})
			a, b := udp(t, nat.Host("10.0.0.2"), 5000), udp(t, nat.Host("10.0.0.3"), 6000)
			s := udp(t, n.Host(serverIP), 3478)

			send(t, b, "10.0.0.2:5000", "lan")
			if msg, from := recv(t, a); msg != "lan" || from != "10.0.0.3:6000" {
				t.Fatalf("over the LAN: got %q from %s", msg, from)
			}
			// Both learn their mapped addresses, as from a STUN server.
			send(t, a, serverIP+":3478", "a")
			_, am := recv(t, s)
			send(t, b, serverIP+":3478", "b")
			_, bm := recv(t, s)
			send(t, a, bm, "a-to-b") // opens a's filter toward b's mapping, and is hairpinned
			got, from := recv(t, b)
			if hairpin && (got != "a-to-b" || from != am) {
				t.Errorf("hairpin: b got %q from %s, want a-to-b from %s", got, from, am)
			}
			if !hairpin && got != "" {
				t.Errorf("no hairpin: b got %q", got)
			}
		})
	}
}

// TestNATBlockUDP: a UDP-blocking NAT lets nothing through either way, and TCP out.
func TestNATBlockUDP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Options{})
		nat := n.NAT(natPublic, NATConfig{BlockUDP: true})
		inside := nat.Host("10.0.0.2")
		a := udp(t, inside, 5000)
		s := udp(t, n.Host(serverIP), 3478)
		send(t, a, serverIP+":3478", "out")
		if got, _ := recv(t, s); got != "" {
			t.Fatalf("UDP crossed a UDP-blocking NAT: %q", got)
		}
		ln := mustListen(t, n.Host(serverIP), ":443")
		c, err := inside.DialContext(t.Context(), "tcp", serverIP+":443")
		if err != nil {
			t.Fatalf("TCP out of a UDP-blocking NAT: %v", err)
		}
		c.Close()
		if sc, err := ln.Accept(); err == nil {
			sc.Close()
		}
	})
}

// TestNATDouble: a host behind two NATs appears on the internet at the outer NAT's
// address, and the inner NAT's public address is private to the outer realm.
func TestNATDouble(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Options{})
		outer := n.NAT(natPublic, NATConfig{})
		inner := outer.NAT("10.0.0.1", NATConfig{Filtering: AddressAndPortDependent})
		a := udp(t, inner.Host("192.168.1.2"), 5000)
		s := udp(t, n.Host(serverIP), 3478)
		send(t, a, serverIP+":3478", "deep")
		msg, from := recv(t, s)
		if msg != "deep" || netip.MustParseAddrPort(from).Addr().String() != natPublic {
			t.Fatalf("got %q from %s, want deep from %s", msg, from, natPublic)
		}
		send(t, s, from, "back")
		if msg, from := recv(t, a); msg != "back" || from != serverIP+":3478" {
			t.Fatalf("answer through both NATs: got %q from %s", msg, from)
		}
		// The same private address in another realm is another host.
		if other := n.NAT("198.51.100.2", NATConfig{}).Host("192.168.1.2"); other == inner.Host("192.168.1.2") {
			t.Fatal("two realms share a host")
		}
	})
}

// TestNATTCP: a TCP dial from inside appears at the NAT's address and holds a NAT port
// only while open; nothing dials in.
func TestNATTCP(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Options{Latency: time.Millisecond})
		nat := n.NAT(natPublic, NATConfig{})
		inside := nat.Host("10.0.0.2")
		server := n.Host(serverIP)
		checkConns(t, inside, server)
		ln := mustListen(t, server, ":443")
		c, err := inside.DialContext(t.Context(), "tcp", serverIP+":443")
		if err != nil {
			t.Fatal(err)
		}
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		if got := sc.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().String(); got != natPublic {
			t.Errorf("server sees the dial from %s, want %s", got, natPublic)
		}
		if got := c.LocalAddr().(*net.TCPAddr).AddrPort().Addr().String(); got != "10.0.0.2" {
			t.Errorf("the dialler's local address is %s, want its private one", got)
		}
		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 1)
		if _, err := sc.Read(b); err != nil || b[0] != 'x' {
			t.Fatalf("read %q, %v", b, err)
		}
		nat.mu.Lock()
		held := len(nat.tcpUsed)
		nat.mu.Unlock()
		if held != 1 {
			t.Errorf("NAT holds %d TCP ports for one connection", held)
		}
		c.Close()
		sc.Close()
		nat.mu.Lock()
		held = len(nat.tcpUsed)
		nat.mu.Unlock()
		if held != 0 {
			t.Errorf("NAT holds %d TCP ports after the close", held)
		}
		mustListen(t, inside, ":80")
		if _, err := server.DialContext(t.Context(), "tcp", natPublic+":80"); !errors.Is(err, syscall.ECONNREFUSED) {
			t.Errorf("dial in through the NAT: %v, want connection refused", err)
		}
	})
}

// TestNATMappingTimeout: a mapping idle for longer than the timeout is gone, and the
// next datagram out gets a new one.
func TestNATMappingTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		n := New(Options{})
		nat := n.NAT(natPublic, NATConfig{Mapping: AddressAndPortDependent, Timeout: 30 * time.Second})
		a := udp(t, nat.Host("10.0.0.2"), 5000)
		s := udp(t, n.Host(serverIP), 3478)
		send(t, a, serverIP+":3478", "1")
		_, m1 := recv(t, s)
		time.Sleep(20 * time.Second) // virtual time: within the timeout, refreshed by the answer
		send(t, s, m1, "keep")
		if got, _ := recv(t, a); got != "keep" {
			t.Fatalf("answer within the timeout: %q", got)
		}
		time.Sleep(31 * time.Second) // virtual time: past the timeout
		send(t, s, m1, "late")
		if got, _ := recv(t, a); got != "" {
			t.Fatalf("answer to an expired mapping delivered: %q", got)
		}
		if nat.Mappings() != 0 {
			t.Errorf("%d mappings alive after the timeout", nat.Mappings())
		}
		send(t, a, serverIP+":3478", "2")
		if _, m2 := recv(t, s); m2 == m1 {
			t.Errorf("a new mapping after expiry reused %s (random ports collide 1 in 28,000)", m1)
		}
	})
}
