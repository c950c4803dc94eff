package client

import (
	"bufio"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/peerline/peerline/internal/proto"
	"github.com/peerline/peerline/internal/rpc"
	"github.com/peerline/peerline/internal/secure"
)

// Promotion: a client becomes a supernode on its own decision, never on anyone else's.
// It promotes itself only when all of these hold, checked every Promote.CheckInterval:
//
//   - its NAT detection found no NAT (its mapped address is its own);
//   - its supernode dialled it back at the address it would serve on and the node there
//     proved the client's key (so the address is reachable from outside);
//   - its measured upload bandwidth, CPU count and memory are above the thresholds;
//   - it has been up for Promote.MinUptime (uptime predicts availability);
//   - the supernode layer is short of the size the login server wants, when it wants
//     one (its supernode passes the size and the target on): so a layer that lost
//     supernodes is refilled by the eligible clients, and no further.
//
// The login server then dials it back once more before it admits it. A promoted client
// runs the supernode role in its own process with its own key; it demotes itself (hands
// off its records and leaves) when it stops or is overloaded, and does not promote again
// for Promote.Cooldown after an overload.

// PromoteConfig sets when a client promotes itself. Zero fields take the defaults shown.
type PromoteConfig struct {
	Disabled      bool          // never promote (peerline client --no-supernode)
	MinUptime     time.Duration // 0 = 10 minutes
	MinUploadBps  float64       // bytes per second to the supernode; 0 = 125,000 (1 Mbit/s)
	MinCPUs       int           // 0 = 2
	MinMemory     uint64        // bytes of RAM; 0 = 1 GiB
	CheckInterval time.Duration // 0 = 1 minute
	Cooldown      time.Duration // after an overload demotion; 0 = 1 hour
	// Listen opens the supernode role's listener at the given address; nil = net.Listen.
	Listen func(network, addr string) (net.Listener, error)
	// ListenAddr is where the supernode role listens; "" = the client's public IP with a
	// free port.
	ListenAddr string
	MaxClients int // of the supernode role; 0 = supernode's default
	// NewSupernode builds the supernode role once the client promotes itself. The
	// program that composes the roles provides it (cmd gives one that builds package
	// supernode's), so that this package knows the role only by the interface it
	// declares. nil = never promote.
	NewSupernode func(SupernodeParams) (SupernodeRole, error)
}

// SupernodeRole is the supernode a promoted client runs, until ctx ends or it demotes
// itself. Run serves on SupernodeParams.Listener, which it closes when it returns.
type SupernodeRole interface {
	Run(ctx context.Context) error
	Registered() bool // admitted by the login server
}

// SupernodeParams is what a client gives the supernode role it starts.
type SupernodeParams struct {
	Key            ed25519.PrivateKey // the client's: the role has the user's identity
	Name           string
	Advertise      string       // the role's address, as others reach it
	Listener       net.Listener // accepts at Advertise: the role's, once NewSupernode succeeds
	Login          LoginServer
	UserCredential []byte // the client's credential: the login server admits the user
	Dialer         secure.Dialer
	MaxClients     int // 0 = the role's default
	Logger         *slog.Logger
	// Overload is the role's overload test, given the clients attached: true demotes it.
	Overload func(attached int) bool
}

func (p *PromoteConfig) setDefaults() {
	if p.MinUptime <= 0 {
		p.MinUptime = 10 * time.Minute
	}
	if p.MinUploadBps <= 0 {
		p.MinUploadBps = 125_000
	}
	if p.MinCPUs <= 0 {
		p.MinCPUs = 2
	}
	if p.MinMemory == 0 {
		p.MinMemory = 1 << 30
	}
	if p.CheckInterval <= 0 {
		p.CheckInterval = time.Minute
	}
	if p.Cooldown <= 0 {
		p.Cooldown = time.Hour
	}
	if p.Listen == nil {
		p.Listen = net.Listen
	}
}

// PromotionStatus says whether the client serves as a supernode, and if not, why not.
type PromotionStatus struct {
	Supernode bool      `json:"supernode"` // the supernode role runs
	Admitted  bool      `json:"admitted"`  // and the login server admitted it
	Addr      string    `json:"addr,omitempty"`
	Since     time.Time `json:"since,omitzero"`
	Reason    string    `json:"reason,omitempty"` // why the client is not a supernode (yet)
	UploadBps float64   `json:"upload_bps,omitempty"`
	CPUs      int       `json:"cpus,omitempty"`
	Memory    uint64    `json:"memory,omitempty"`
}

// promoteLoop checks the promotion conditions periodically and runs the supernode role
// while they hold.
func (c *Client) promoteLoop(ctx context.Context) {
	p := &c.cfg.Promote
	switch {
	case p.Disabled:
		c.setPromotion(PromotionStatus{Reason: "disabled (--no-supernode)"})
		return
	case p.NewSupernode == nil:
		c.setPromotion(PromotionStatus{Reason: "no supernode role in this program"})
		return
	}
	start := c.cfg.Now()
	var cooldownUntil time.Time
	t := c.clk.NewTicker(p.CheckInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		if c.cfg.Now().Before(cooldownUntil) {
			continue
		}
		c.m.Inc("promotion_checks")
		st, addr, ln, err := c.promotionCheck(ctx, start)
		if err != nil {
			st.Reason = err.Error()
			c.setPromotion(st)
			continue
		}
		overloaded := c.runSupernode(ctx, st, addr, ln)
		if overloaded {
			cooldownUntil = c.cfg.Now().Add(p.Cooldown)
		}
	}
}

func (c *Client) setPromotion(st PromotionStatus) {
	c.mu.Lock()
	c.promotion = st
	c.mu.Unlock()
}

// promotionCheck measures the conditions; on success it returns the listener the
// supernode role will serve on (already confirmed by a dial-back).
func (c *Client) promotionCheck(ctx context.Context, start time.Time) (PromotionStatus, string, net.Listener, error) {
	p := &c.cfg.Promote
	st := PromotionStatus{CPUs: runtime.NumCPU(), Memory: totalMemory()}
	if up := c.cfg.Now().Sub(start); up < p.MinUptime {
		return st, "", nil, fmt.Errorf("up %v of the %v required", up.Round(time.Second), p.MinUptime)
	}
	c.mu.Lock()
	nat, a, layer := c.nat, c.attached, c.layer
	c.mu.Unlock()
	if a == nil {
		return st, "", nil, errors.New("not attached")
	}
	if layer == (proto.Layer{}) {
		// Not heard since the attachment (a client restarted with a stocked host cache
		// puts off its refresh): ask before asking the login server to promote.
		c.refreshPeers(ctx, a)
		c.mu.Lock()
		layer = c.layer
		c.mu.Unlock()
	}
	if layer.LayerWanted > 0 && !layer.Short() {
		// The login server wants no more supernodes: it would refuse this one.
		return st, "", nil, fmt.Errorf("supernode layer full (%d of %d wanted)", layer.LayerSize, layer.LayerWanted)
	}
	if nat.Checked.IsZero() {
		return st, "", nil, errors.New("NAT not detected yet")
	}
	if !nat.Public {
		return st, "", nil, fmt.Errorf("behind a NAT (%s)", nat.Classic)
	}
	if st.CPUs < p.MinCPUs {
		return st, "", nil, fmt.Errorf("%d CPUs, %d required", st.CPUs, p.MinCPUs)
	}
	if st.Memory < p.MinMemory {
		return st, "", nil, fmt.Errorf("%d bytes of memory, %d required", st.Memory, p.MinMemory)
	}
	bps, err := c.measureUpload(ctx, a)
	st.UploadBps = bps
	if err != nil {
		return st, "", nil, fmt.Errorf("upload probe: %w", err)
	}
	if bps < p.MinUploadBps {
		return st, "", nil, fmt.Errorf("upload %.0f B/s, %.0f required", bps, p.MinUploadBps)
	}
	addr := p.ListenAddr
	if addr == "" {
		mapped, err := netip.ParseAddrPort(nat.MappedAddr)
		if err != nil {
			return st, "", nil, fmt.Errorf("no public address: %w", err)
		}
		addr = netip.AddrPortFrom(mapped.Addr(), 0).String()
	}
	ln, err := p.Listen("tcp", addr)
	if err != nil {
		return st, "", nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	// Answer the overlay handshake with our key while the supernode dials back.
	adv := ln.Addr().String()
	probeCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		if nc, err := ln.Accept(); err == nil {
			completeHandshake(probeCtx, nc, c)
		}
	}()
	_, err = a.conn.Call(probeCtx, &proto.DialBack{Addr: adv})
	if err != nil {
		ln.Close()
		<-accepted
		return st, "", nil, fmt.Errorf("dial-back to %s failed: %w", adv, err)
	}
	<-accepted
	return st, adv, ln, nil
}

// runSupernode runs the supernode role until ctx ends or it demotes itself; it reports
// whether it stopped because of overload.
func (c *Client) runSupernode(ctx context.Context, st PromotionStatus, addr string, ln net.Listener) (overloaded bool) {
	p := &c.cfg.Promote
	c.mu.Lock()
	cred := c.cred
	c.mu.Unlock()
	params := SupernodeParams{
		Key: c.key, Name: "sn-" + c.user, Advertise: addr, Listener: ln, Login: c.cfg.Login, UserCredential: cred,
		Dialer: c.cfg.Dialer, MaxClients: p.MaxClients, Logger: c.log.With("role", "supernode"),
	}
	max := p.MaxClients
	if max <= 0 {
		max = 5000
	}
	var hitOverload atomic.Bool
	params.Overload = func(n int) bool {
		over := n >= max*9/10
		if over {
			hitOverload.Store(true)
		}
		return over
	}
	sn, err := p.NewSupernode(params)
	if err != nil {
		ln.Close()
		st.Reason = err.Error()
		c.setPromotion(st)
		return false
	}
	st.Supernode, st.Addr, st.Since, st.Reason = true, addr, c.cfg.Now(), ""
	c.setPromotion(st)
	c.mu.Lock()
	c.sn = sn
	c.mu.Unlock()
	c.m.Inc("promotions")
	c.log.Info("promoted to supernode", "addr", addr)
	err = sn.Run(ctx)
	c.mu.Lock()
	c.sn = nil
	c.mu.Unlock()
	st.Supernode = false
	st.Reason = "demoted"
	if err != nil {
		st.Reason = "supernode stopped: " + err.Error()
	}
	if hitOverload.Load() && ctx.Err() == nil {
		st.Reason = "demoted: overloaded"
		overloaded = true
	}
	c.setPromotion(st)
	c.m.Inc("demotions")
	c.log.Info("supernode role ended", "reason", st.Reason)
	return overloaded
}

// measureUpload times a few upload probes to the supernode.
func (c *Client) measureUpload(ctx context.Context, a *attachment) (float64, error) {
	payload := make([]byte, proto.MaxProbe-1024)
	const rounds = 8
	mctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	start := time.Now() // a bandwidth, measured in real time whatever the client's clock
	for i := 0; i < rounds; i++ {
		if _, err := rpc.Call[*proto.BandwidthOK](mctx, a.conn, &proto.Bandwidth{Payload: payload}); err != nil {
			return 0, err
		}
	}
	el := time.Since(start).Seconds()
	if el <= 0 {
		el = 1e-6
	}
	return float64(rounds*len(payload)) / el, nil
}

// totalMemory reads MemTotal from /proc/meminfo (0 if unknown).
func totalMemory() uint64 {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemTotal:" {
			kb, err := strconv.ParseUint(fields[1], 10, 64)
			if err == nil {
				return kb * 1024
			}
		}
	}
	return 0
}
