package portmap

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/netip"
	"time"
)

// This file holds the NAT-PMP and PCP requests of a Client, and the router's epoch.

// probeNATPMP asks the router for its external address.
func (c *Client) probeNATPMP(ctx context.Context, p path) answer {
	r, err := c.natpmpExternal(ctx, p)
	if err != nil {
		return answer{err: err}
	}
	return answer{ok: true, ext: r.external, restarted: c.noteEpoch(NATPMP, r.epoch)}
}

// natpmpExternal sends an external address request.
func (c *Client) natpmpExternal(ctx context.Context, p path) (natpmpResponse, error) {
	var r natpmpResponse
	err := c.roundTrip(ctx, p.local, exchange{
		what:   "NAT-PMP external address request",
		to:     []netip.AddrPort{p.pmp},
		from:   fromAddr(p.pmp),
		req:    appendNATPMPExternal(nil),
		sends:  c.cfg.Sends,
		accept: c.natpmpAccept(natpmpOpExternal, 0, &r),
	})
	return r, err
}

// mapNATPMP maps with NAT-PMP, asking for external port ext. NAT-PMP's mapping response
// has no address: extIP, the router's external address, comes from the probe, or (zero)
// is asked for first.
func (c *Client) mapNATPMP(ctx context.Context, p path, extIP netip.Addr, ext uint16) (Mapping, error) {
	if !extIP.IsValid() {
		r, err := c.natpmpExternal(ctx, p)
		if err != nil {
			return Mapping{}, err
		}
		c.noteEpoch(NATPMP, r.epoch)
		extIP = r.external
	}
	if extIP.IsUnspecified() {
		return Mapping{}, fmt.Errorf("%w: NAT-PMP external address %v", ErrBadResponse, extIP)
	}
	lifetime := seconds(c.cfg.Lifetime)
	var r natpmpResponse
	err := c.roundTrip(ctx, p.local, exchange{
		what:   "NAT-PMP mapping request",
		to:     []netip.AddrPort{p.pmp},
		from:   fromAddr(p.pmp),
		req:    appendNATPMPMap(nil, c.cfg.LocalPort, ext, lifetime),
		sends:  c.cfg.Sends,
		accept: c.natpmpAccept(natpmpOpMapUDP, c.cfg.LocalPort, &r),
	})
	if err != nil {
		return Mapping{}, err
	}
	c.noteEpoch(NATPMP, r.epoch)
	if r.lifetime == 0 || r.externalPort == 0 {
		return Mapping{}, fmt.Errorf("%w: NAT-PMP mapped port %d for %d s", ErrBadResponse, r.externalPort, r.lifetime)
	}
	return Mapping{
		Protocol: NATPMP,
		External: netip.AddrPortFrom(extIP, r.externalPort),
		Internal: netip.AddrPortFrom(p.local, c.cfg.LocalPort),
		Lifetime: time.Duration(r.lifetime) * time.Second,
		Obtained: c.clk.Now(),
	}, nil
}

// deleteNATPMP deletes the NAT-PMP mapping of Config.LocalPort.
func (c *Client) deleteNATPMP(ctx context.Context, p path) error {
	var r natpmpResponse
	err := c.roundTrip(ctx, p.local, exchange{
		what:   "NAT-PMP deletion",
		to:     []netip.AddrPort{p.pmp},
		from:   fromAddr(p.pmp),
		req:    appendNATPMPMap(nil, c.cfg.LocalPort, 0, 0),
		sends:  c.cfg.Sends,
		accept: c.natpmpAccept(natpmpOpMapUDP, c.cfg.LocalPort, &r),
	})
	if err == nil {
		c.noteEpoch(NATPMP, r.epoch)
	}
	return err
}

// natpmpAccept returns the accept func of a NAT-PMP request with opcode op (and, for a
// mapping, internal port port), which keeps the answer in *out.
func (c *Client) natpmpAccept(op uint8, port uint16, out *natpmpResponse) func([]byte) (bool, error) {
	return func(b []byte) (bool, error) {
		if len(b) > 0 && b[0] == pcpVersion {
			// A router that speaks only PCP answers NAT-PMP with PCP's UNSUPP_VERSION
			// (RFC 6887 §9).
			if r, err := parsePCP(b); err == nil && r.result == pcpUnsuppVersion {
				return true, fmt.Errorf("NAT-PMP: the router speaks PCP only: %w", pcpResult(r.result))
			}
			return false, nil
		}
		r, err := parseNATPMP(b)
		if err != nil {
			c.log.Debug("portmap: bad NAT-PMP answer ignored", "err", err)
			return false, nil
		}
		if r.op != op {
			return false, nil
		}
		if r.result != natpmpSuccess {
			return true, natpmpResult(r.result)
		}
		if op != natpmpOpExternal && r.internalPort != port {
			return false, nil
		}
		*out = r
		return true, nil
	}
}

// probePCP sends an ANNOUNCE, which a router that speaks PCP answers with its epoch.
func (c *Client) probePCP(ctx context.Context, p path) answer {
	var r pcpResponse
	err := c.roundTrip(ctx, p.local, exchange{
		what:   "PCP ANNOUNCE",
		to:     []netip.AddrPort{p.pmp},
		from:   fromAddr(p.pmp),
		req:    appendPCPAnnounce(nil, p.local),
		sends:  c.cfg.Sends,
		accept: c.pcpAccept(pcpOpAnnounce, pcpNonce{}, 0, &r),
	})
	if err != nil {
		return answer{err: err}
	}
	return answer{ok: true, restarted: c.noteEpoch(PCP, r.epoch)}
}

// mapPCP sends a MAP for UDP with this client's nonce, suggesting suggest (whose address
// may be zero), for lifetime seconds. A lifetime of 0 deletes the mapping, and then the
// Mapping returned is none.
func (c *Client) mapPCP(ctx context.Context, p path, suggest netip.AddrPort, lifetime uint32) (Mapping, error) {
	nonce := c.pcpNonce()
	what := "PCP MAP"
	if lifetime == 0 {
		what = "PCP MAP deletion"
	}
	var r pcpResponse
	err := c.roundTrip(ctx, p.local, exchange{
		what: what,
		to:   []netip.AddrPort{p.pmp},
		from: fromAddr(p.pmp),
		req: appendPCPMap(nil, pcpMapRequest{
			client:       p.local,
			lifetime:     lifetime,
			nonce:        nonce,
			internalPort: c.cfg.LocalPort,
			externalPort: suggest.Port(),
			externalIP:   suggest.Addr(),
		}),
		sends:  c.cfg.Sends,
		accept: c.pcpAccept(pcpOpMap, nonce, c.cfg.LocalPort, &r),
	})
	if err != nil {
		return Mapping{}, err
	}
	c.noteEpoch(PCP, r.epoch)
	if lifetime == 0 {
		return Mapping{}, nil
	}
	if r.lifetime == 0 || r.externalPort == 0 || !r.externalIP.Is4() || r.externalIP.IsUnspecified() {
		return Mapping{}, fmt.Errorf("%w: PCP mapped %v port %d for %d s", ErrBadResponse, r.externalIP, r.externalPort, r.lifetime)
	}
	return Mapping{
		Protocol: PCP,
		External: netip.AddrPortFrom(r.externalIP, r.externalPort),
		Internal: netip.AddrPortFrom(p.local, c.cfg.LocalPort),
		Lifetime: time.Duration(r.lifetime) * time.Second,
		Obtained: c.clk.Now(),
	}, nil
}

// pcpNonce returns this client's mapping nonce, made at its first use: the renewals and
// the deletion of a mapping must carry the nonce that made it (RFC 6887 §11.2).
func (c *Client) pcpNonce() pcpNonce {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.nonceSet {
		rand.Read(c.nonce[:])
		c.nonceSet = true
	}
	return c.nonce
}

// pcpAccept returns the accept func of a PCP request with opcode op (and, for a MAP,
// nonce and internal port port), which keeps the answer in *out.
func (c *Client) pcpAccept(op uint8, nonce pcpNonce, port uint16, out *pcpResponse) func([]byte) (bool, error) {
	return func(b []byte) (bool, error) {
		if len(b) > 0 && b[0] == natpmpVersion {
			// A router that speaks only NAT-PMP answers PCP with NAT-PMP's "unsupported
			// version" (RFC 6887 §9).
			if r, err := parseNATPMP(b); err == nil && r.result == natpmpUnsupportedVersion {
				return true, fmt.Errorf("PCP: the router speaks NAT-PMP only: %w", natpmpResult(r.result))
			}
			return false, nil
		}
		r, err := parsePCP(b)
		if err != nil {
			c.log.Debug("portmap: bad PCP answer ignored", "err", err)
			return false, nil
		}
		if r.op != op {
			return false, nil
		}
		if r.hasMap {
			if r.nonce != nonce {
				// Another client's mapping, or an old answer: not ours (RFC 6887 §11.3).
				c.m.Inc("portmap_pcp_nonce_mismatch")
				c.log.Debug("portmap: PCP answer with another nonce ignored")
				return false, nil
			}
			if r.protocol != pcpProtoUDP || r.internalPort != port {
				return false, nil
			}
		}
		if r.result != pcpSuccess {
			return true, pcpResult(r.result)
		}
		*out = r
		return true, nil
	}
}

// epochSeen is the last epoch a router answered with.
type epochSeen struct {
	server uint32    // the router's epoch, in seconds
	at     time.Time // when it came, on the Config's clock
	ok     bool
}

// noteEpoch records the epoch of an answer by proto and reports whether the router lost
// its mappings since the answer before.
func (c *Client) noteEpoch(proto Protocol, epoch uint32) (restarted bool) {
	now := c.clk.Now()
	c.mu.Lock()
	prev := c.epochs[proto]
	c.epochs[proto] = epochSeen{server: epoch, at: now, ok: true}
	c.mu.Unlock()
	if !prev.ok || epochConsistent(prev.server, epoch, now.Sub(prev.at)) {
		return false
	}
	c.m.Inc("portmap_router_restarts")
	c.log.Info("portmap: the router restarted or lost its mappings", "protocol", proto, "epoch", epoch, "previous", prev.server)
	return true
}

// epochConsistent is the check of RFC 6887 §8.5, which RFC 6886 §3.6 also describes: the
// router kept its state from an answer with epoch prev to one with epoch cur, elapsed
// later, if its epoch went back by a second at most (answers may be reordered) and
// advanced about as much as the client's clock, within a sixteenth and 2 seconds.
func epochConsistent(prev, cur uint32, elapsed time.Duration) bool {
	if int64(cur) < int64(prev)-1 {
		return false
	}
	client := elapsed.Seconds()
	server := float64(int64(cur) - int64(prev))
	return client+2 >= server-server/16 && server+2 >= client-client/16
}
