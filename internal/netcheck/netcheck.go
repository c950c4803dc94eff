// Package netcheck tells a user what their network allows, as `tailscale netcheck`
// does: the NAT's mapping and filtering (RFC 5780 tests against a supernode's STUN
// service, package natdetect), hairpinning, IPv4 and IPv6 reachability, which
// port-mapping protocols the router answers (package portmap), the round trip to each
// supernode and relay asked, and the path a call would take against each kind of NAT
// (the one table, client.PredictPath, passed in as Config.Predict).
//
// Everything runs at once and within about one Config.Timeout (two when the NAT tests
// need their second round), over the network of Config.ListenPacket.
package netcheck

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/pion/stun/v2"

	"github.com/peerline/peerline/internal/natdetect"
	"github.com/peerline/peerline/internal/portmap"
)

// Kinds are the NAT kinds a report predicts the path against, by their classic names.
var Kinds = []string{"open", "full cone", "restricted cone", "port-restricted cone", "symmetric", "udp-blocked"}

// Config says what to check.
type Config struct {
	// Supernodes are STUN servers as HOST:PORT (a supernode serves STUN over UDP on its
	// own address): the NAT tests run against the first that supports RFC 5780, and each
	// is timed. Required, unless Relays are given.
	Supernodes []string
	// Relays are TURN servers as HOST:PORT, timed with a STUN Binding request (which
	// TURN servers answer); none = none timed.
	Relays []string
	// Timeout bounds each wait for an answer; 0 = 2 s.
	Timeout time.Duration
	// ListenPacket opens the UDP sockets; nil = net.ListenPacket.
	ListenPacket func(network, addr string) (net.PacketConn, error)
	// DialContext opens the TCP connections that tell blocked UDP from servers that are
	// gone; nil = a net.Dialer's.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
	// PortMap configures the port-mapping probe (LocalPort is set by Run); nil = no probe.
	PortMap *portmap.Config
	// Predict says which path a call between NATs of two classic names takes; nil = no
	// predictions.
	Predict func(mine, theirs string) string
	// HasGlobalIPv6 reports whether this host has a global IPv6 address; nil = read the
	// host's interfaces.
	HasGlobalIPv6 func() bool
	// Logger receives debug logs; nil = discarded.
	Logger *slog.Logger
}

// Report is what Run found.
type Report struct {
	NAT natdetect.Result `json:"nat"`
	// IPv4 and IPv6: whether a server answered over each; IPv6Address whether the host
	// has a global IPv6 address at all (without one, IPv6 was not tried).
	IPv4        bool `json:"ipv4"`
	IPv6        bool `json:"ipv6"`
	IPv6Address bool `json:"ipv6_address"`
	// TCP says a supernode accepted a TCP connection, tried only when nothing answered
	// over UDP: UDP is then blocked (not the servers gone), and calls go over TCP.
	TCP bool `json:"tcp"`
	// PortMapping is what the router answered; nil when not probed.
	PortMapping *PortMapping `json:"port_mapping,omitempty"`
	// Latency is the round trip to each supernode and relay, best first, then those
	// that did not answer.
	Latency []Latency `json:"latency"`
	// Predicted maps each of Kinds to the path a call from here to a NAT of that kind
	// takes; empty when the NAT is unknown or Config.Predict is nil.
	Predicted map[string]string `json:"predicted,omitempty"`
}

// PortMapping says which port-mapping protocols the router answered.
type PortMapping struct {
	Gateway      string `json:"gateway,omitempty"`
	PCP          bool   `json:"pcp"`
	NATPMP       bool   `json:"nat_pmp"`
	UPnP         bool   `json:"upnp"`
	ExternalAddr string `json:"external_addr,omitempty"` // as NAT-PMP said
	Error        string `json:"error,omitempty"`         // why nothing could be asked (no route, say)
}

// Latency is the round trip to one server.
type Latency struct {
	Server string  `json:"server"`
	Kind   string  `json:"kind"` // "supernode" or "relay"
	RTTMs  float64 `json:"rtt_ms,omitempty"`
	Error  string  `json:"error,omitempty"`
}

// ErrNothingAnswered is Run's error when no server answered at all: the report then says
// nothing about the network (or UDP is blocked, which Report.NAT says when a supernode
// accepted a TCP connection).
var ErrNothingAnswered = errors.New("netcheck: no server answered")

// ErrNoServers is Run's error for a Config with no supernode and no relay.
var ErrNoServers = errors.New("netcheck: no supernode or relay to ask")

// Answered reports whether any server answered.
func (r *Report) Answered() bool {
	for _, l := range r.Latency {
		if l.Error == "" {
			return true
		}
	}
	return r.TCP || (!r.NAT.UDPBlocked && r.NAT.MappedAddr != "")
}

// Run checks the network. It returns the report, and ErrNothingAnswered with it when no
// server answered.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if len(cfg.Supernodes) == 0 && len(cfg.Relays) == 0 {
		return Report{}, ErrNoServers
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 2 * time.Second
	}
	if cfg.ListenPacket == nil {
		cfg.ListenPacket = net.ListenPacket
	}
	if cfg.DialContext == nil {
		cfg.DialContext = (&net.Dialer{}).DialContext
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.HasGlobalIPv6 == nil {
		cfg.HasGlobalIPv6 = hasGlobalIPv6
	}
	var (
		rep Report
		mu  sync.Mutex
		wg  sync.WaitGroup
	)
	rep.IPv6Address = cfg.HasGlobalIPv6()
	v4 := slices.DeleteFunc(slices.Clone(cfg.Supernodes), isIPv6)
	if len(v4) > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, err := detect(ctx, cfg, v4)
			mu.Lock()
			defer mu.Unlock()
			rep.NAT = res
			if err != nil {
				cfg.Logger.Debug("netcheck: NAT tests", "err", err)
			}
		}()
	}
	servers := make([]Latency, 0, len(cfg.Supernodes)+len(cfg.Relays))
	for _, s := range cfg.Supernodes {
		servers = append(servers, Latency{Server: s, Kind: "supernode"})
	}
	for _, s := range cfg.Relays {
		servers = append(servers, Latency{Server: s, Kind: "relay"})
	}
	for i := range servers {
		l := &servers[i]
		if isIPv6(l.Server) && !rep.IPv6Address {
			l.Error = "this host has no global IPv6 address"
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			rtt, err := ping(ctx, cfg, l.Server)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				l.Error = err.Error()
				return
			}
			l.RTTMs = float64(rtt.Microseconds()) / 1000
			if isIPv6(l.Server) {
				rep.IPv6 = true
			} else {
				rep.IPv4 = true
			}
		}()
	}
	if cfg.PortMap != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pm := probePortMap(ctx, cfg)
			mu.Lock()
			rep.PortMapping = &pm
			mu.Unlock()
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return rep, err
	}
	slices.SortStableFunc(servers, func(a, b Latency) int {
		switch {
		case (a.Error == "") != (b.Error == ""):
			if a.Error == "" {
				return -1
			}
			return 1
		case a.RTTMs < b.RTTMs:
			return -1
		case a.RTTMs > b.RTTMs:
			return 1
		}
		return 0
	})
	rep.Latency = servers
	if !rep.NAT.UDPBlocked && rep.NAT.MappedAddr != "" {
		rep.IPv4 = true
	}
	if !rep.IPv4 && !rep.IPv6 {
		rep.TCP = ServerAlive(ctx, cfg.DialContext, cfg.Supernodes, cfg.Timeout) == nil
	}
	known := rep.NAT.MappedAddr != "" || (rep.NAT.UDPBlocked && rep.TCP)
	if cfg.Predict != nil && rep.NAT.Classic != "" && known {
		rep.Predicted = map[string]string{}
		for _, k := range Kinds {
			rep.Predicted[k] = cfg.Predict(rep.NAT.Classic, k)
		}
	}
	if !rep.Answered() {
		return rep, ErrNothingAnswered
	}
	return rep, nil
}

// detect runs the RFC 5780 tests from a fresh socket, with a second one for
// hairpinning.
func detect(ctx context.Context, cfg Config, servers []string) (natdetect.Result, error) {
	conn, err := cfg.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		return natdetect.Result{}, err
	}
	defer conn.Close()
	opts := natdetect.Options{Servers: servers, Timeout: cfg.Timeout}
	if hp, err := cfg.ListenPacket("udp4", "0.0.0.0:0"); err == nil {
		defer hp.Close()
		opts.HairpinConn = hp
	}
	res, err := natdetect.Detect(ctx, conn, opts)
	if errors.Is(err, natdetect.ErrNoRFC5780) {
		err = nil // the mapped address is known; the behaviour is not
	}
	return res, err
}

// ping times a STUN Binding request to server: the best of three, sent Timeout/4 apart,
// within Timeout.
func ping(ctx context.Context, cfg Config, server string) (time.Duration, error) {
	network := "udp4"
	if isIPv6(server) {
		network = "udp6"
	}
	raddr, err := net.ResolveUDPAddr(network, server)
	if err != nil {
		return 0, err
	}
	conn, err := cfg.ListenPacket(network, ":0")
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	sent := map[[stun.TransactionIDSize]byte]time.Time{}
	var smu sync.Mutex
	go func() {
		for i := 0; i < 3 && ctx.Err() == nil; i++ {
			m := stun.MustBuild(stun.TransactionID, stun.BindingRequest, stun.Fingerprint)
			smu.Lock()
			sent[m.TransactionID] = time.Now()
			smu.Unlock()
			conn.WriteTo(m.Raw, raddr)
			select {
			case <-ctx.Done():
			case <-time.After(cfg.Timeout / 4):
			}
		}
	}()
	best := time.Duration(-1)
	buf := make([]byte, 1500)
	for answers := 0; answers < 3; {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			break
		}
		var m stun.Message
		m.Raw = append(m.Raw[:0], buf[:n]...)
		if m.Decode() != nil || m.Type != stun.BindingSuccess {
			continue
		}
		smu.Lock()
		at, ok := sent[m.TransactionID]
		smu.Unlock()
		if !ok {
			continue
		}
		answers++
		if rtt := time.Since(at); best < 0 || rtt < best {
			best = rtt
		}
	}
	cancel()
	if best < 0 {
		return 0, fmt.Errorf("no STUN answer within %v", cfg.Timeout)
	}
	return best, nil
}

// ServerAlive reports whether any of servers (supernodes, STUN servers) accepts a TCP
// connection on its port within timeout: nil if one does, else the last error. A server
// that answers no UDP but accepts TCP means UDP is blocked, not that the server is gone.
// dial nil = a net.Dialer's.
func ServerAlive(ctx context.Context, dial func(ctx context.Context, network, addr string) (net.Conn, error), servers []string, timeout time.Duration) error {
	if dial == nil {
		dial = (&net.Dialer{}).DialContext
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	errs := make(chan error, len(servers))
	for _, s := range servers {
		go func() {
			c, err := dial(ctx, "tcp", s)
			if err == nil {
				c.Close()
			}
			errs <- err
		}()
	}
	var last error = ErrNoServers
	for range servers {
		err := <-errs
		if err == nil {
			return nil
		}
		last = err
	}
	return last
}

// probePortMap asks the router which port-mapping protocols it speaks.
func probePortMap(ctx context.Context, cfg Config) PortMapping {
	pc := *cfg.PortMap
	if pc.LocalPort == 0 {
		pc.LocalPort = 1 // nothing is mapped: a probe only asks what the router speaks
	}
	if pc.Timeout == 0 {
		pc.Timeout = cfg.Timeout
	}
	if pc.ListenPacket == nil {
		pc.ListenPacket = cfg.ListenPacket
	}
	if pc.Logger == nil {
		pc.Logger = cfg.Logger
	}
	c, err := portmap.New(pc)
	if err != nil {
		return PortMapping{Error: err.Error()}
	}
	res, err := c.Probe(ctx)
	if err != nil {
		return PortMapping{Error: err.Error()}
	}
	pm := PortMapping{PCP: res.PCP, NATPMP: res.NATPMP, UPnP: res.UPnP}
	if res.Gateway.IsValid() {
		pm.Gateway = res.Gateway.String()
	}
	if res.ExternalAddr.IsValid() {
		pm.ExternalAddr = res.ExternalAddr.String()
	}
	return pm
}

func isIPv6(hostport string) bool {
	ap, err := netip.ParseAddrPort(hostport)
	return err == nil && ap.Addr().Is6() && !ap.Addr().Is4In6()
}

// hasGlobalIPv6 reports whether an interface has a global unicast IPv6 address outside
// the unique-local range.
func hasGlobalIPv6() bool {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return false
	}
	for _, a := range addrs {
		p, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		ip := p.Addr()
		if ip.Is6() && !ip.Is4In6() && ip.IsGlobalUnicast() && !ip.IsPrivate() {
			return true
		}
	}
	return false
}
