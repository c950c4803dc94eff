package supernode

import "time"

// Demotion. In December 2010 a quarter of Skype's supernodes crashed, their clients moved
// onto the rest, and the rest shut themselves down under the load, which moved it onto
// fewer still: a supernode that demotes itself because it is busy feeds exactly that
// loop. So overload here is answered by shedding (admission.go): attachments beyond the
// bounds are turned away with a retry-after and less loaded supernodes to try, and the
// supernode keeps serving those it has. It demotes itself only when all of these hold:
//
//   - Overload held at every maintenance tick for OverloadWindow (minutes, not the
//     seconds of a spike: a storm's reconnects are over by then);
//   - the layer is not short of supernodes by the login server's target, and has not
//     shrunk while the overload lasted (the ring is as large as it was at its start):
//     a layer that lost members needs every one that is left;
//   - the less loaded supernodes it knows (from the heartbeat answers) have headroom for
//     all its clients, so they land somewhere with room, not on the next to fall.
//
// Every tick that finds the supernode overloaded counts overload_ticks; a demotion the
// rules hold back counts demotions_deferred (once per tick past the window).

// shouldDemote runs at each maintenance tick and says whether to demote now.
func (sn *Supernode) shouldDemote() bool {
	if sn.cfg.Overload == nil {
		return false
	}
	now := sn.clk.Now()
	ring := sn.RingSize()
	sn.mu.Lock()
	n := len(sn.clients)
	over := sn.cfg.Overload(n)
	if !over {
		sn.overSince = time.Time{}
		sn.mu.Unlock()
		return false
	}
	if sn.overSince.IsZero() {
		sn.overSince = now
		sn.adm.mu.Lock()
		sn.adm.peakRing = ring
		sn.adm.mu.Unlock()
	}
	since := sn.overSince
	sn.mu.Unlock()
	sn.m.Inc("overload_ticks")
	sn.adm.mu.Lock()
	sn.adm.peakRing = max(sn.adm.peakRing, ring)
	peak, layer := sn.adm.peakRing, sn.adm.layer
	sn.adm.mu.Unlock()
	if now.Sub(since) < sn.cfg.OverloadWindow {
		return false
	}
	room := sn.headroom()
	switch {
	case layer.Short():
		sn.log.Info("overloaded, but the layer is short of supernodes: staying", "clients", n, "layer", layer.LayerSize, "wanted", layer.LayerWanted)
	case ring < peak:
		sn.log.Info("overloaded, but the layer shrank: staying", "clients", n, "ring", ring, "was", peak)
	case room < n:
		sn.log.Info("overloaded, but the others have no room for my clients: staying", "clients", n, "headroom", room)
	default:
		sn.log.Warn("overloaded for the whole window, and the layer has room: demoting", "clients", n,
			"for", now.Sub(since).Round(time.Second), "headroom", room)
		return true
	}
	sn.m.Inc("demotions_deferred")
	return false
}
