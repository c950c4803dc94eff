package natdetect

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/peerline/peerline/internal/rfc5780"
)

// probeKind says which socket sends a probe and what answer counts.
type probeKind int

const (
	// probeBinding: conn sends a Binding request; a success response on conn answers it.
	probeBinding probeKind = iota
	// probeHairpin: Options.HairpinConn sends a Binding request to conn's mapped address;
	// the request itself arriving on conn answers it.
	probeHairpin
	// probeLifetime: Options.LifetimeConn sends a Binding request with RESPONSE-PORT set to
	// conn's mapped port; the response arriving on conn answers it.
	probeLifetime
)

// probe is one test packet.
type probe struct {
	kind         probeKind
	dst          netip.AddrPort
	change       rfc5780.ChangeRequest
	responsePort uint16 // probeLifetime only
}

// reply is what came back for a probe; ok=false means nothing came back in time.
type reply struct {
	ok      bool
	errCode int            // STUN error response code, 0 for success
	from    netip.AddrPort // UDP source of the answer
	mapped  netip.AddrPort // XOR-MAPPED-ADDRESS
	other   netip.AddrPort // OTHER-ADDRESS, invalid when absent
}

// network is the slice of the transport that the decision logic needs.
type network interface {
	// exchange sends all probes at once and waits, retransmitting, until each is answered
	// or the timeout passes. The replies are in probe order.
	exchange(ctx context.Context, probes []probe) ([]reply, error)
	// sleep waits d or until ctx ends.
	sleep(ctx context.Context, d time.Duration) error
}

// Detect runs the RFC 5780 tests (see the package comment) over conn and returns what the
// NAT in front of conn does. conn must not be read by anyone else while Detect runs; its
// read deadline is reset afterwards. Detect usually takes about one Options.Timeout and
// at most four, plus about 2*Options.LifetimeMax when the lifetime is measured.
//
// When no server supports RFC 5780, Detect returns what it could learn (mapped address,
// public or not, and the mapping behaviour if two servers answered) with ErrNoRFC5780.
func Detect(ctx context.Context, conn net.PacketConn, opts Options) (Result, error) {
	opts = opts.withDefaults()
	if len(opts.Servers) == 0 {
		return Result{}, ErrNoServers
	}
	local, _ := addrPortOf(conn.LocalAddr())
	servers, err := resolveServers(ctx, opts.Servers, local.Addr())
	if err != nil {
		return Result{}, err
	}
	isLocal := opts.IsLocal
	if isLocal == nil {
		isLocal = defaultIsLocal(local)
	}
	nw := &connNetwork{conn: conn, hairpin: opts.HairpinConn, lifetime: opts.LifetimeConn,
		timeout: opts.Timeout, retransmit: opts.Retransmit}
	if opts.LifetimeConn == nil {
		opts.LifetimeMax = 0
	}
	res, err := run(ctx, nw, servers, isLocal, opts.HairpinConn != nil, opts.LifetimeStep, opts.LifetimeMax)
	if local.IsValid() {
		res.LocalAddr = local.String()
	}
	return res, err
}

// run is the decision logic, free of sockets and clocks.
func run(ctx context.Context, nw network, servers []netip.AddrPort, isLocal func(netip.AddrPort) bool,
	hairpin bool, lifeStep, lifeMax time.Duration) (Result, error) {
	var res Result

	// Phase 1: T1 to every server at once.
	ps := make([]probe, len(servers))
	for i, s := range servers {
		ps[i] = probe{kind: probeBinding, dst: s}
	}
	rs, err := nw.exchange(ctx, ps)
	if err != nil {
		return res, err
	}
	primary, answered := -1, []int(nil)
	for i, r := range rs {
		if r.ok && r.errCode == 0 && r.mapped.IsValid() {
			answered = append(answered, i)
			if primary < 0 && r.other.IsValid() && r.other.Addr() != servers[i].Addr() && r.other.Port() != servers[i].Port() {
				primary = i
			}
		}
	}
	if len(answered) == 0 {
		res.UDPBlocked = true
		res.Classic = ClassicUDPBlocked
		return res, nil
	}
	if primary < 0 {
		return fallback(res, servers, rs, answered, isLocal)
	}
	srv, t1 := servers[primary], rs[primary]
	res.Server, res.OtherAddr, res.MappedAddr = srv.String(), t1.other.String(), t1.mapped.String()
	res.Public = isLocal(t1.mapped)
	altBoth := t1.other
	altPort := netip.AddrPortFrom(srv.Addr(), altBoth.Port())
	altIP := netip.AddrPortFrom(altBoth.Addr(), srv.Port())

	// Phase 2: filtering tests (and hairpinning) before anything is sent to A2.
	ps = []probe{
		{kind: probeBinding, dst: srv, change: rfc5780.ChangeRequest{ChangeIP: true, ChangePort: true}},
		{kind: probeBinding, dst: srv, change: rfc5780.ChangeRequest{ChangePort: true}},
	}
	if hairpin {
		ps = append(ps, probe{kind: probeHairpin, dst: t1.mapped})
	}
	rs, err = nw.exchange(ctx, ps)
	if err != nil {
		return res, err
	}
	for i, want := range []netip.AddrPort{altBoth, altPort} {
		if rs[i].ok && rs[i].errCode != 0 {
			return res, fmt.Errorf("%w: CHANGE-REQUEST answered with error %d", ErrNoRFC5780, rs[i].errCode)
		}
		if rs[i].ok && rs[i].from != want {
			return res, fmt.Errorf("%w: wanted %s, got %s", ErrBadServer, want, rs[i].from)
		}
	}
	switch {
	case rs[0].ok:
		res.Filtering = FilteringEndpointIndependent
	case rs[1].ok:
		res.Filtering = FilteringAddressDependent
	default:
		res.Filtering = FilteringAddressAndPortDependent
	}
	if hairpin {
		h := rs[2].ok
		res.Hairpinning = &h
	}

	// Phase 3: mapping tests.
	rs, err = nw.exchange(ctx, []probe{{kind: probeBinding, dst: altIP}})
	if err != nil {
		return res, err
	}
	if !rs[0].ok || rs[0].errCode != 0 {
		return res, fmt.Errorf("natdetect: no answer from the server's alternate address %s (T2): %w", altIP, ErrLost)
	}
	m2 := rs[0].mapped
	if m2 == t1.mapped {
		res.Mapping = MappingEndpointIndependent
	} else {
		rs, err = nw.exchange(ctx, []probe{{kind: probeBinding, dst: altBoth}})
		if err != nil {
			return res, err
		}
		if !rs[0].ok || rs[0].errCode != 0 {
			return res, fmt.Errorf("natdetect: no answer from the server's alternate address %s (T3): %w", altBoth, ErrLost)
		}
		if rs[0].mapped == m2 {
			res.Mapping = MappingAddressDependent
		} else {
			res.Mapping = MappingAddressAndPortDependent
		}
	}
	res.Classic = ClassicName(res.Public, res.Mapping, res.Filtering)

	// Optional: mapping lifetime. Each answered probe refreshes the mapping, so every
	// interval is an idle time measured from the previous answer.
	for d := lifeStep; lifeMax > 0 && d <= lifeMax; d *= 2 {
		if err := nw.sleep(ctx, d); err != nil {
			return res, err
		}
		rs, err = nw.exchange(ctx, []probe{{kind: probeLifetime, dst: srv, responsePort: t1.mapped.Port()}})
		if err != nil {
			return res, err
		}
		if !rs[0].ok {
			break
		}
		res.MappingLifetime = d
	}
	return res, nil
}

// fallback handles servers without RFC 5780: it reports what plain Binding answers show.
func fallback(res Result, servers []netip.AddrPort, rs []reply, answered []int, isLocal func(netip.AddrPort) bool) (Result, error) {
	first := rs[answered[0]]
	res.Server, res.MappedAddr = servers[answered[0]].String(), first.mapped.String()
	res.Public = isLocal(first.mapped)
	for _, i := range answered[1:] {
		if servers[i].Addr() == servers[answered[0]].Addr() {
			continue
		}
		if rs[i].mapped == first.mapped {
			res.Mapping = MappingEndpointIndependent
		} else {
			// Two servers cannot tell address-dependent from address-and-port-dependent;
			// both are "symmetric" for choosing a call path.
			res.Mapping = MappingAddressAndPortDependent
		}
		break
	}
	res.Classic = ClassicName(res.Public, res.Mapping, "")
	return res, ErrNoRFC5780
}

func resolveServers(ctx context.Context, names []string, local netip.Addr) ([]netip.AddrPort, error) {
	out := make([]netip.AddrPort, 0, len(names))
	for _, n := range names {
		if ap, err := netip.ParseAddrPort(n); err == nil {
			out = append(out, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
			continue
		}
		host, port, err := net.SplitHostPort(n)
		if err != nil {
			return nil, fmt.Errorf("natdetect: server %q: want HOST:PORT: %w", n, err)
		}
		p, err := strconv.ParseUint(port, 10, 16)
		if err != nil {
			return nil, fmt.Errorf("natdetect: server %q: bad port: %w", n, err)
		}
		ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
		if err != nil || len(ips) == 0 {
			return nil, fmt.Errorf("natdetect: resolve server %q: %w", n, err)
		}
		pick := ips[0].Unmap()
		for _, ip := range ips {
			if ip.Unmap().Is4() == (!local.IsValid() || local.Unmap().Is4() || local.IsUnspecified()) {
				pick = ip.Unmap()
				break
			}
		}
		out = append(out, netip.AddrPortFrom(pick, uint16(p)))
	}
	return out, nil
}

func defaultIsLocal(local netip.AddrPort) func(netip.AddrPort) bool {
	return func(m netip.AddrPort) bool {
		if m == local {
			return true
		}
		if !local.IsValid() || !local.Addr().IsUnspecified() || m.Port() != local.Port() {
			return false
		}
		addrs, err := net.InterfaceAddrs()
		if err != nil {
			return false
		}
		for _, a := range addrs {
			if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Unmap() == m.Addr() {
				return true
			}
		}
		return false
	}
}

func addrPortOf(a net.Addr) (netip.AddrPort, bool) {
	if a == nil {
		return netip.AddrPort{}, false
	}
	if u, ok := a.(*net.UDPAddr); ok {
		ap := u.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
	}
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return ap, false
	}
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()), true
}
