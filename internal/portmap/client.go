package portmap

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/netip"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/peerline/peerline/internal/metrics"
)

// Mapping is a port mapping the router made.
type Mapping struct {
	// Protocol is the protocol that made it.
	Protocol Protocol
	// External is the address and port that peers send to.
	External netip.AddrPort
	// Internal is this host's address and Config.LocalPort, where the router forwards.
	Internal netip.AddrPort
	// Lifetime is how long the router keeps the mapping from Obtained; 0 = until it is
	// deleted (a UPnP router that grants only permanent leases).
	Lifetime time.Duration
	// Obtained is when the router granted it, on Config.Clock.
	Obtained time.Time
}

// Expiry is when the router forgets the mapping unless it is renewed; the zero Time for
// a permanent one.
func (m Mapping) Expiry() time.Time {
	if m.Lifetime <= 0 {
		return time.Time{}
	}
	return m.Obtained.Add(m.Lifetime)
}

// Client maps Config.LocalPort on the router. Its methods are safe for concurrent use.
type Client struct {
	cfg Config
	clk clockwork.Clock
	log *slog.Logger
	m   metrics.Counter

	// opMu serialises Map and Delete, which change the router's table and Current.
	opMu sync.Mutex

	// mu protects all following fields.
	mu       sync.Mutex
	cur      Mapping // the mapping held; none when cur.Protocol is 0
	igd      igdService
	nonce    pcpNonce // names this client's PCP mapping, from the first MAP on
	nonceSet bool
	epochs   [UPnP + 1]epochSeen // by Protocol; NAT-PMP's and PCP's
}

// New returns a Client for cfg.
func New(cfg Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	return &Client{cfg: cfg, clk: cfg.Clock, log: cfg.Logger, m: cfg.Metrics}, nil
}

// Current returns the mapping held, if any: the last one that Map made or renewed,
// until Delete, or until Run finds it expired.
func (c *Client) Current() (Mapping, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cur, c.cur.Protocol != 0
}

// setCurrent makes m (none if m.Protocol is 0) the mapping held and calls
// Config.OnChange if that changes what peers should be told. The caller holds opMu.
func (c *Client) setCurrent(m Mapping, igd igdService) {
	c.mu.Lock()
	old := c.cur
	c.cur, c.igd = m, igd
	c.mu.Unlock()
	if old.Protocol == m.Protocol && old.External == m.External {
		return
	}
	if m.Protocol != 0 {
		c.log.Info("portmap: port mapped", "protocol", m.Protocol, "external", m.External, "internal", m.Internal, "lifetime", m.Lifetime)
	}
	if c.cfg.OnChange != nil {
		c.cfg.OnChange(m, m.Protocol != 0)
	}
}

// path is where this host meets its router. It is found afresh for every operation,
// since the default route changes when the host moves to another network.
type path struct {
	gateway netip.Addr
	pmp     netip.AddrPort // the NAT-PMP and PCP server
	ssdp    netip.AddrPort
	local   netip.Addr // this host's address on the router's network
}

// findPath finds the gateway (Config.Gateway, or the default route's) and this host's
// address toward it.
func (c *Client) findPath() (path, error) {
	gw := c.cfg.Gateway.Unmap()
	if !gw.IsValid() {
		var err error
		if gw, err = defaultGateway(); err != nil {
			return path{}, err
		}
	}
	p := path{
		gateway: gw,
		pmp:     netip.AddrPortFrom(gw, c.cfg.GatewayPort),
		ssdp:    netip.AddrPortFrom(gw, c.cfg.SSDPPort),
		local:   c.cfg.LocalAddr.Unmap(),
	}
	if !p.local.IsValid() {
		var err error
		if p.local, err = routeSource(p.pmp); err != nil {
			return path{}, err
		}
	}
	return p, nil
}

// Map makes the mapping, or renews the one held, and returns it. A mapping held is
// renewed with its protocol first, asking for the same external port; if that fails, or
// there is none, Map probes the router with every protocol of Config.Protocols at once
// and maps with the most preferred one that answers. Each step is bounded by
// Config.Timeout.
//
// When nothing answers, the error wraps ErrNoResponse; when the router answers but
// refuses, it wraps the refusals (ErrNotAuthorized, ErrNoResources...).
func (c *Client) Map(ctx context.Context) (Mapping, error) {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	p, err := c.findPath()
	if err != nil {
		return Mapping{}, err
	}
	cur, held := c.Current()
	suggest := netip.AddrPortFrom(netip.Addr{}, c.cfg.ExternalPort)
	if held {
		suggest = cur.External
		m, igd, err := c.mapWith(ctx, p, cur.Protocol, answer{igd: c.heldIGD()}, suggest)
		if err == nil {
			c.m.Inc("portmap_renewals")
			c.setCurrent(m, igd)
			return m, nil
		}
		if ctx.Err() != nil {
			return Mapping{}, ctx.Err()
		}
		c.log.Info("portmap: renewal failed; probing the router again", "protocol", cur.Protocol, "err", err)
	}
	answers := c.probe(ctx, p, true)
	if ctx.Err() != nil {
		return Mapping{}, ctx.Err()
	}
	// errs are the refusals; unspoken, the protocols the router said it does not speak,
	// which come last in the error.
	var errs, unspoken []error
	for _, proto := range c.cfg.Protocols {
		a, probed := answers[proto]
		if probed && !a.ok {
			switch {
			case errors.Is(a.err, ErrUnsupportedVersion):
				unspoken = append(unspoken, a.err)
			case a.err != nil && !errors.Is(a.err, ErrNoResponse):
				errs = append(errs, a.err)
			}
			continue
		}
		// A protocol whose probe was cut short, because a preferred one answered, is
		// tried too if that one fails to map.
		m, igd, err := c.mapWith(ctx, p, proto, a, suggest)
		if err == nil {
			c.m.Inc("portmap_maps")
			c.setCurrent(m, igd)
			return m, nil
		}
		if ctx.Err() != nil {
			return Mapping{}, ctx.Err()
		}
		errs = append(errs, err)
	}
	c.m.Inc("portmap_map_failures")
	if len(errs)+len(unspoken) == 0 {
		return Mapping{}, fmt.Errorf("%w (gateway %s; tried %v)", ErrNoResponse, p.gateway, c.cfg.Protocols)
	}
	return Mapping{}, errors.Join(append(errs, unspoken...)...)
}

// heldIGD returns the UPnP service of the mapping held, if it is UPnP's.
func (c *Client) heldIGD() []igdService {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.igd.igdClient == nil {
		return nil
	}
	return []igdService{c.igd}
}

// mapWith maps with proto, within Config.Timeout, asking for suggest (whose address may
// be zero). a is what the probe learnt: the external address for NAT-PMP, the services
// for UPnP (without them, UPnP probes again).
func (c *Client) mapWith(ctx context.Context, p path, proto Protocol, a answer, suggest netip.AddrPort) (Mapping, igdService, error) {
	ctx, cancel := withTimeout(ctx, c.clk, c.cfg.Timeout)
	defer cancel()
	switch proto {
	case PCP:
		m, err := c.mapPCP(ctx, p, suggest, seconds(c.cfg.Lifetime))
		return m, igdService{}, err
	case NATPMP:
		m, err := c.mapNATPMP(ctx, p, a.ext, suggest.Port())
		return m, igdService{}, err
	}
	svcs := a.igd
	if len(svcs) == 0 {
		if a = c.probeUPnP(ctx, p); !a.ok {
			return Mapping{}, igdService{}, a.err
		}
		svcs = a.igd
	}
	return c.mapUPnP(ctx, p, svcs, suggest.Port())
}

// Delete deletes the mapping held, if any, and forgets it even if the router did not
// answer (the mapping then expires on the router by itself).
func (c *Client) Delete(ctx context.Context) error {
	c.opMu.Lock()
	defer c.opMu.Unlock()
	cur, held := c.Current()
	if !held {
		return nil
	}
	igd := c.heldIGD()
	defer c.setCurrent(Mapping{}, igdService{})
	p, err := c.findPath()
	if err != nil {
		return err
	}
	switch cur.Protocol {
	case PCP:
		_, err = c.mapPCP(ctx, p, cur.External, 0)
	case NATPMP:
		err = c.deleteNATPMP(ctx, p)
	case UPnP:
		if len(igd) == 0 {
			return fmt.Errorf("portmap: deleting the UPnP mapping: %w", ErrNoService)
		}
		if err = igd[0].DeletePortMappingCtx(ctx, "", cur.External.Port(), "UDP"); err != nil {
			err = upnpError("DeletePortMapping", igd[0].urn, err)
		}
	}
	if err != nil {
		c.m.Inc("portmap_delete_failures")
		return fmt.Errorf("portmap: deleting the %v mapping %v: %w", cur.Protocol, cur.External, err)
	}
	c.m.Inc("portmap_deletes")
	c.log.Info("portmap: mapping deleted", "protocol", cur.Protocol, "external", cur.External)
	return nil
}

// seconds is d in whole seconds for a lifetime field, at least 1 and at most 2^32-1.
func seconds(d time.Duration) uint32 {
	s := d / time.Second
	switch {
	case s < 1:
		return 1
	case s > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(s)
}
