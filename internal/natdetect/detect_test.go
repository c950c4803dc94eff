package natdetect

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/peerline/peerline/internal/stunsrv"
)

var (
	a1p1 = netip.MustParseAddrPort("192.0.2.1:3478")
	a1p2 = netip.MustParseAddrPort("192.0.2.1:3479")
	a2p1 = netip.MustParseAddrPort("192.0.2.2:3478")
	a2p2 = netip.MustParseAddrPort("192.0.2.2:3479")
	// slots of the fake server, indexed like stunsrv.Slot.
	slots = [4]netip.AddrPort{a1p1, a1p2, a2p1, a2p2}
	local = netip.MustParseAddrPort("10.0.0.2:5000")
)

// fakeNAT is a network that behaves like a NAT of the given kind in front of an RFC 5780
// server at slots. It keeps the state a real NAT keeps: which remote addresses the host
// has sent to, and one mapping per remote (as the mapping behaviour asks).
type fakeNAT struct {
	public    bool
	blocked   bool
	mapping   Mapping
	filtering Filtering
	hairpin   bool
	noOther   bool             // server does not send OTHER-ADDRESS
	ignoreCR  bool             // server ignores CHANGE-REQUEST
	lose      func(probe) bool // drops a probe's answer when it returns true
	lifetime  time.Duration    // mapping lifetime when idle
	idle      time.Duration    // idle time since the last packet

	sentIP   map[netip.Addr]bool
	sentAddr map[netip.AddrPort]bool
	maps     map[string]netip.AddrPort
	slept    []time.Duration
}

func (f *fakeNAT) sleep(_ context.Context, d time.Duration) error {
	f.slept = append(f.slept, d)
	f.idle += d
	return nil
}

func (f *fakeNAT) mapFor(dst netip.AddrPort) netip.AddrPort {
	if f.public {
		return local
	}
	key := ""
	switch f.mapping {
	case MappingAddressDependent:
		key = dst.Addr().String()
	case MappingAddressAndPortDependent:
		key = dst.String()
	}
	if m, ok := f.maps[key]; ok {
		return m
	}
	m := netip.AddrPortFrom(netip.MustParseAddr("203.0.113.50"), uint16(40000+len(f.maps)))
	f.maps[key] = m
	return m
}

func (f *fakeNAT) passes(from netip.AddrPort) bool {
	switch f.filtering {
	case FilteringEndpointIndependent:
		return true
	case FilteringAddressDependent:
		return f.sentIP[from.Addr()]
	}
	return f.sentAddr[from]
}

func slotOf(a netip.AddrPort) int {
	for i, s := range slots {
		if s == a {
			return i
		}
	}
	return -1
}

func (f *fakeNAT) exchange(_ context.Context, ps []probe) ([]reply, error) {
	if f.maps == nil {
		f.sentIP, f.sentAddr, f.maps = map[netip.Addr]bool{}, map[netip.AddrPort]bool{}, map[string]netip.AddrPort{}
	}
	rs := make([]reply, len(ps))
	for i, p := range ps {
		if f.blocked || (f.lose != nil && f.lose(p)) {
			continue
		}
		switch p.kind {
		case probeHairpin:
			rs[i].ok = f.hairpin
			continue
		case probeLifetime:
			rs[i].ok = f.idle <= f.lifetime
			if rs[i].ok {
				f.idle = 0
			}
			continue
		}
		f.idle = 0
		f.sentIP[p.dst.Addr()], f.sentAddr[p.dst] = true, true
		in := slotOf(p.dst)
		if in < 0 {
			continue // not this server
		}
		out := in
		if !f.ignoreCR {
			if p.change.ChangeIP {
				out ^= 2
			}
			if p.change.ChangePort {
				out ^= 1
			}
		}
		if !f.passes(slots[out]) {
			continue
		}
		rs[i] = reply{ok: true, from: slots[out], mapped: f.mapFor(p.dst)}
		if !f.noOther {
			rs[i].other = slots[in^3]
		}
	}
	return rs, nil
}

func isLocalFake(a netip.AddrPort) bool { return a == local }

func TestRunClassifiesEveryKind(t *testing.T) {
	T, F := true, false
	cases := []struct {
		name    string
		nat     fakeNAT
		want    Result
		hairpin *bool
	}{
		{"open", fakeNAT{public: true, filtering: FilteringEndpointIndependent, hairpin: true},
			Result{Public: true, Mapping: MappingEndpointIndependent, Filtering: FilteringEndpointIndependent, Classic: ClassicOpen}, &T},
		{"public behind firewall", fakeNAT{public: true, filtering: FilteringAddressAndPortDependent, hairpin: true},
			Result{Public: true, Mapping: MappingEndpointIndependent, Filtering: FilteringAddressAndPortDependent, Classic: ClassicPortRestrictedCone}, &T},
		{"full cone", fakeNAT{mapping: MappingEndpointIndependent, filtering: FilteringEndpointIndependent},
			Result{Mapping: MappingEndpointIndependent, Filtering: FilteringEndpointIndependent, Classic: ClassicFullCone}, &F},
		{"restricted cone", fakeNAT{mapping: MappingEndpointIndependent, filtering: FilteringAddressDependent, hairpin: true},
			Result{Mapping: MappingEndpointIndependent, Filtering: FilteringAddressDependent, Classic: ClassicRestrictedCone}, &T},
		{"port-restricted cone", fakeNAT{mapping: MappingEndpointIndependent, filtering: FilteringAddressAndPortDependent},
			Result{Mapping: MappingEndpointIndependent, Filtering: FilteringAddressAndPortDependent, Classic: ClassicPortRestrictedCone}, &F},
		{"symmetric", fakeNAT{mapping: MappingAddressAndPortDependent, filtering: FilteringAddressAndPortDependent},
			Result{Mapping: MappingAddressAndPortDependent, Filtering: FilteringAddressAndPortDependent, Classic: ClassicSymmetric}, &F},
		{"address-dependent mapping", fakeNAT{mapping: MappingAddressDependent, filtering: FilteringAddressDependent},
			Result{Mapping: MappingAddressDependent, Filtering: FilteringAddressDependent, Classic: ClassicSymmetric}, &F},
		{"udp blocked", fakeNAT{blocked: true},
			Result{UDPBlocked: true, Classic: ClassicUDPBlocked}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nat := c.nat
			got, err := run(context.Background(), &nat, []netip.AddrPort{a1p1}, isLocalFake, true, time.Second, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got.UDPBlocked != c.want.UDPBlocked || got.Public != c.want.Public || got.Mapping != c.want.Mapping ||
				got.Filtering != c.want.Filtering || got.Classic != c.want.Classic {
				t.Fatalf("got %+v\nwant %+v", got, c.want)
			}
			if (got.Hairpinning == nil) != (c.hairpin == nil) || (got.Hairpinning != nil && *got.Hairpinning != *c.hairpin) {
				t.Fatalf("hairpinning %v, want %v", got.Hairpinning, c.hairpin)
			}
			if !got.UDPBlocked && (got.Server != a1p1.String() || got.OtherAddr != a2p2.String() || got.MappedAddr == "") {
				t.Fatalf("addresses: %+v", got)
			}
		})
	}
}

func TestRunServerProblems(t *testing.T) {
	ctx := context.Background()
	srv := []netip.AddrPort{a1p1}

	nat := fakeNAT{mapping: MappingEndpointIndependent, filtering: FilteringEndpointIndependent, ignoreCR: true}
	if _, err := run(ctx, &nat, srv, isLocalFake, false, 0, 0); !errors.Is(err, ErrBadServer) {
		t.Errorf("server ignoring CHANGE-REQUEST: %v", err)
	}

	nat = fakeNAT{mapping: MappingAddressAndPortDependent, filtering: FilteringEndpointIndependent, noOther: true}
	got, err := run(ctx, &nat, []netip.AddrPort{a1p1, a2p1}, isLocalFake, false, 0, 0)
	if !errors.Is(err, ErrNoRFC5780) || got.Mapping != MappingAddressAndPortDependent || got.Classic != ClassicSymmetric {
		t.Errorf("two plain servers, symmetric: %+v %v", got, err)
	}
	nat = fakeNAT{mapping: MappingEndpointIndependent, filtering: FilteringEndpointIndependent, noOther: true}
	got, err = run(ctx, &nat, []netip.AddrPort{a1p1, a2p1}, isLocalFake, false, 0, 0)
	if !errors.Is(err, ErrNoRFC5780) || got.Mapping != MappingEndpointIndependent || got.Classic != "" || got.Filtering != "" {
		t.Errorf("two plain servers, cone: %+v %v", got, err)
	}

	nat = fakeNAT{mapping: MappingEndpointIndependent, filtering: FilteringEndpointIndependent,
		lose: func(p probe) bool { return p.dst == a2p1 }}
	if _, err := run(ctx, &nat, srv, isLocalFake, false, 0, 0); !errors.Is(err, ErrLost) {
		t.Errorf("lost T2: %v", err)
	}
}

// TestRunPrimaryChoice: the first server that speaks RFC 5780 runs the tests, even if a
// plain one comes first in the list.
func TestRunPrimaryChoice(t *testing.T) {
	nat := fakeNAT{mapping: MappingEndpointIndependent, filtering: FilteringAddressDependent}
	plain := netip.MustParseAddrPort("198.51.100.1:3478") // not a slot: answers without OTHER-ADDRESS
	got, err := run(context.Background(), &plainFirst{&nat, plain}, []netip.AddrPort{plain, a1p1}, isLocalFake, false, 0, 0)
	if err != nil || got.Server != a1p1.String() || got.Classic != ClassicRestrictedCone {
		t.Fatalf("%+v %v", got, err)
	}
}

type plainFirst struct {
	*fakeNAT
	plain netip.AddrPort
}

func (p *plainFirst) exchange(ctx context.Context, ps []probe) ([]reply, error) {
	rs, err := p.fakeNAT.exchange(ctx, ps)
	for i, q := range ps {
		if q.dst == p.plain {
			rs[i] = reply{ok: true, from: p.plain, mapped: netip.MustParseAddrPort("203.0.113.50:40000")}
		}
	}
	return rs, err
}

func TestRunLifetime(t *testing.T) {
	nat := fakeNAT{mapping: MappingEndpointIndependent, filtering: FilteringAddressAndPortDependent, lifetime: 5 * time.Second}
	got, err := run(context.Background(), &nat, []netip.AddrPort{a1p1}, isLocalFake, false, time.Second, 16*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got.MappingLifetime != 4*time.Second {
		t.Fatalf("lifetime %v, slept %v", got.MappingLifetime, nat.slept)
	}
	if len(nat.slept) != 4 { // 1, 2, 4 survive; 8 does not
		t.Fatalf("slept %v", nat.slept)
	}
}

func TestClassicName(t *testing.T) {
	cases := []struct {
		public bool
		m      Mapping
		f      Filtering
		want   string
	}{
		{true, MappingEndpointIndependent, FilteringEndpointIndependent, ClassicOpen},
		{true, "", FilteringEndpointIndependent, ClassicOpen},
		{false, MappingEndpointIndependent, FilteringEndpointIndependent, ClassicFullCone},
		{false, MappingEndpointIndependent, FilteringAddressDependent, ClassicRestrictedCone},
		{false, MappingEndpointIndependent, FilteringAddressAndPortDependent, ClassicPortRestrictedCone},
		{false, MappingAddressDependent, FilteringEndpointIndependent, ClassicSymmetric},
		{false, MappingAddressAndPortDependent, "", ClassicSymmetric},
		{false, MappingEndpointIndependent, "", ""},
		{false, "", "", ""},
	}
	for _, c := range cases {
		if got := ClassicName(c.public, c.m, c.f); got != c.want {
			t.Errorf("ClassicName(%v, %q, %q) = %q, want %q", c.public, c.m, c.f, got, c.want)
		}
	}
}

// startLoopbackServer runs stunsrv on 127.0.0.1 and 127.0.0.2 (Linux answers all of
// 127/8 on lo) and returns its primary address.
func startLoopbackServer(t *testing.T) netip.AddrPort {
	t.Helper()
	var conns [4]net.PacketConn
	var err error
	for try := 0; try < 20; try++ {
		p := uint16(20000 + (time.Now().UnixNano()/1000+int64(try)*7919)%30000)
		conns, err = stunsrv.ListenUDP(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), p), netip.MustParseAddr("127.0.0.2"), p+1)
		if err == nil {
			break
		}
	}
	if err != nil {
		if runtime.GOOS != "linux" {
			t.Skipf("cannot open loopback STUN server (needs 127.0.0.2 on lo): %v", err)
		}
		t.Fatalf("open loopback STUN server (Linux routes all of 127/8 to lo): %v", err)
	}
	s, err := stunsrv.New(stunsrv.Config{Conns: conns})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return s.Addrs()[0]
}

func listenLo(t *testing.T) net.PacketConn {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestDetectLoopback runs the real server and the real detector on loopback: no NAT, no
// firewall, so the answer is "open" with hairpinning and a measured lifetime.
func TestDetectLoopback(t *testing.T) {
	srv := startLoopbackServer(t)
	conn, hp, lt := listenLo(t), listenLo(t), listenLo(t)
	start := time.Now()
	got, err := Detect(context.Background(), conn, Options{Servers: []string{srv.String()}, Timeout: 500 * time.Millisecond,
		HairpinConn: hp, LifetimeConn: lt, LifetimeStep: 50 * time.Millisecond, LifetimeMax: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("result %+v in %v", got, time.Since(start))
	if !got.Public || got.Classic != ClassicOpen || got.Mapping != MappingEndpointIndependent ||
		got.Filtering != FilteringEndpointIndependent || got.Hairpinning == nil || !*got.Hairpinning ||
		got.MappingLifetime != 100*time.Millisecond || got.LocalAddr != conn.LocalAddr().String() {
		t.Fatalf("got %+v", got)
	}
}

func TestDetectLoopbackBlocked(t *testing.T) {
	conn := listenLo(t)
	// Nothing listens on the discard port of 127.0.0.3.
	got, err := Detect(context.Background(), conn, Options{Servers: []string{"127.0.0.3:9"}, Timeout: 300 * time.Millisecond})
	if err != nil || !got.UDPBlocked || got.Classic != ClassicUDPBlocked {
		t.Fatalf("%+v %v", got, err)
	}
}

func TestDetectCancel(t *testing.T) {
	conn := listenLo(t)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := Detect(ctx, conn, Options{Servers: []string{"127.0.0.3:9"}, Timeout: 10 * time.Second})
	if time.Since(start) > 2*time.Second {
		t.Fatalf("Detect ignored ctx: took %v (err %v)", time.Since(start), err)
	}
	if _, err := Detect(context.Background(), conn, Options{}); !errors.Is(err, ErrNoServers) {
		t.Fatalf("no servers: %v", err)
	}
}
