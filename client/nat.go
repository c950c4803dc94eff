package client

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/peerline/peerline/internal/atomicfile"
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

// loadNAT reads the NAT type the last run detected (NATFile), for the records published
// before this run's detection.
func (c *Client) loadNAT() {
	b, err := os.ReadFile(filepath.Join(c.cfg.DataDir, NATFile))
	if errors.Is(err, os.ErrNotExist) {
		return
	}
	classic := strings.TrimSpace(string(b))
	if err != nil || !knownClassic(classic) {
		c.m.Inc("nat_file_unreadable")
		c.log.Warn("saved NAT type unreadable; publishing none until detection", "err", err, "saved", classic)
		return
	}
	c.mu.Lock()
	c.natClassic = classic
	c.mu.Unlock()
}

func knownClassic(s string) bool {
	switch s {
	case natdetect.ClassicOpen, natdetect.ClassicFullCone, natdetect.ClassicRestrictedCone,
		natdetect.ClassicPortRestrictedCone, natdetect.ClassicSymmetric, natdetect.ClassicUDPBlocked:
		return true
	}
	return false
}

// detectNAT runs RFC 5780 detection against the STUN service of the supernode the
// client is attached to, then republishes the record if the NAT type differs from the
// one it carries (none on a first run; the saved one after a restart), so that callers
// see the NAT type.
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
	published := c.natClassic
	c.nat, c.natClassic = st, res.Classic
	c.mu.Unlock()
	c.m.Inc("nat_detections")
	c.log.Info("NAT detected", "classic", res.Classic, "mapping", res.Mapping, "filtering", res.Filtering, "err", err)
	if res.Classic == published {
		c.m.Inc("nat_unchanged") // the record and NATFile already say so
		return
	}
	if knownClassic(res.Classic) {
		if err := atomicfile.WriteFile(filepath.Join(c.cfg.DataDir, NATFile), []byte(res.Classic+"\n"), 0o600); err != nil {
			c.log.Debug("NAT type not saved", "err", err)
		}
	}
	if ctx.Err() == nil {
		if err := c.publish(ctx, a, false); err != nil {
			c.log.Debug("republish after NAT detection failed", "err", err)
		}
	}
}

func defaultListenPacket(network, addr string) (net.PacketConn, error) {
	return net.ListenPacket(network, addr)
}
