package client

import (
	"context"
	"net"
	"time"

	"github.com/peerline/peerline/internal/natdetect"
)

// NATRecheck is how often the client runs NAT detection again while attached (NATs are
// rebooted, laptops move).
const NATRecheck = 10 * time.Minute

// NATStatus is the last NAT detection the client ran.
type NATStatus struct {
	natdetect.Result
	Checked time.Time `json:"checked"`
	Error   string    `json:"error,omitempty"`
}

// detectNAT runs RFC 5780 detection against the STUN service of the supernode the
// client is attached to, then republishes the record so that callers see the NAT type.
func (c *Client) detectNAT(ctx context.Context, a *attachment) {
	if a.stun == "" {
		return
	}
	c.mu.Lock()
	last := c.nat.Checked
	c.mu.Unlock()
	if !last.IsZero() && c.cfg.Now().Sub(last) < NATRecheck {
		return
	}
	conn, err := c.cfg.ListenPacket("udp", ":0")
	if err != nil {
		c.log.Warn("NAT detection: no UDP socket", "err", err)
		return
	}
	defer conn.Close()
	opts := natdetect.Options{Servers: []string{a.stun}, Timeout: c.cfg.NATTimeout}
	if hp, err := c.cfg.ListenPacket("udp", ":0"); err == nil {
		defer hp.Close()
		opts.HairpinConn = hp
	}
	res, err := natdetect.Detect(ctx, conn, opts)
	st := NATStatus{Result: res, Checked: c.cfg.Now()}
	if err != nil {
		st.Error = err.Error()
	}
	c.mu.Lock()
	c.nat, c.natClassic = st, res.Classic
	c.mu.Unlock()
	c.m.Inc("nat_detections")
	c.log.Info("NAT detected", "classic", res.Classic, "mapping", res.Mapping, "filtering", res.Filtering, "err", err)
	if ctx.Err() == nil {
		if err := c.publish(ctx, a, false); err != nil {
			c.log.Debug("republish after NAT detection failed", "err", err)
		}
	}
}

func defaultListenPacket(network, addr string) (net.PacketConn, error) {
	return net.ListenPacket(network, addr)
}
