package portmap

import (
	"context"
	"net/netip"
	"sync"
)

// ProbeResult says which protocols the router answered.
type ProbeResult struct {
	// Gateway is the router probed.
	Gateway netip.Addr
	// PCP, NATPMP and UPnP say whether the router speaks the protocol and answered
	// without an error (for UPnP: whether it has a WAN connection service).
	PCP, NATPMP, UPnP bool
	// ExternalAddr is the router's external address as NAT-PMP told it; the zero Addr if
	// NAT-PMP did not answer.
	ExternalAddr netip.Addr
}

// answer is what probing one protocol learnt.
type answer struct {
	ok        bool         // the router speaks it and answered without an error
	err       error        // why not
	restarted bool         // the epoch says the router lost its mappings (NAT-PMP, PCP)
	ext       netip.Addr   // NAT-PMP's external address
	igd       []igdService // UPnP's WAN connection services
}

// Probe asks the router, with every protocol of Config.Protocols at once, which ones it
// speaks, and waits for all of them, at most Config.Timeout. A protocol that did not
// answer is not an error: the error is for a host with no route to a router, or ctx
// ending.
func (c *Client) Probe(ctx context.Context) (ProbeResult, error) {
	p, err := c.findPath()
	if err != nil {
		return ProbeResult{}, err
	}
	answers := c.probe(ctx, p, false)
	if err := ctx.Err(); err != nil {
		return ProbeResult{}, err
	}
	res := ProbeResult{
		Gateway:      p.gateway,
		PCP:          answers[PCP].ok,
		NATPMP:       answers[NATPMP].ok,
		UPnP:         answers[UPnP].ok,
		ExternalAddr: answers[NATPMP].ext,
	}
	for proto, a := range answers {
		if !a.ok {
			c.log.Debug("portmap: probe", "protocol", proto, "err", a.err)
		}
	}
	c.log.Debug("portmap: probed", "gateway", res.Gateway, "pcp", res.PCP, "natpmp", res.NATPMP, "upnp", res.UPnP)
	return res, nil
}

// probe runs the probes of Config.Protocols at once, within Config.Timeout. With best,
// it returns as soon as the answers decide which protocol to map with: the most
// preferred one that answered, once every protocol preferred to it has failed. The
// probes still running are then stopped; their protocols have no answer.
func (c *Client) probe(ctx context.Context, p path, best bool) map[Protocol]answer {
	ctx, cancel := withTimeout(ctx, c.clk, c.cfg.Timeout)
	type result struct {
		proto Protocol
		a     answer
	}
	results := make(chan result, len(c.cfg.Protocols))
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	for _, proto := range c.cfg.Protocols {
		wg.Go(func() { results <- result{proto, c.probeOne(ctx, p, proto)} })
	}
	answers := make(map[Protocol]answer, len(c.cfg.Protocols))
	for range c.cfg.Protocols {
		r := <-results
		answers[r.proto] = r.a
		if best && c.decided(answers) {
			break
		}
	}
	return answers
}

// decided reports whether answers settle which protocol to map with.
func (c *Client) decided(answers map[Protocol]answer) bool {
	for _, proto := range c.cfg.Protocols {
		a, in := answers[proto]
		if !in {
			return false
		}
		if a.ok {
			return true
		}
	}
	return true
}

// probeOne asks whether the router speaks proto.
func (c *Client) probeOne(ctx context.Context, p path, proto Protocol) answer {
	switch proto {
	case PCP:
		return c.probePCP(ctx, p)
	case NATPMP:
		return c.probeNATPMP(ctx, p)
	}
	return c.probeUPnP(ctx, p)
}
