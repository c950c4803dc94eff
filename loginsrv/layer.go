package loginsrv

import (
	"math/rand/v2"
	"sync"
	"time"

	"github.com/peerline/peerline/internal/proto"
)

// The supernode layer's size and its refilling.
//
// The login server admits every supernode, and every supernode tells it its load with
// each heartbeat, so it alone sees the whole layer: how many supernodes there are and how
// many clients they serve. From that it computes the layer it wants, Wanted =
// max(MinSupernodes, ceil(population / ClientsPerSupernode)), where the population is the
// largest number of attached clients reported within PopulationWindow (not the current
// one: right after a crash the dead supernodes' clients are attached nowhere, which is
// exactly when the layer must not be thought big enough). The heartbeat answers carry
// the size and the target to every supernode, which passes them on to its clients in
// AttachOK and PeersOK; an eligible client promotes itself only while the layer is short
// (client/promote.go), and the login server refuses promotions once it is full
// (sn_promotions_unneeded).
//
// Promotions are admitted at a bounded rate, PromotionsPerSecond with a burst of
// PromotionBurst, whatever the number of eligible clients: each costs a dial-back and a
// signature here and a member-list change at every supernode. Beyond the rate a promotion
// is answered busy with a retry-after (sn_promotions_paced) and the client's supernode
// role retries it then. A supernode already on the member list (renewing its credential)
// is not paced nor refused.
//
// With neither target set there is no target: Wanted is 0, and clients promote whenever
// they are eligible, as before.

// layerLoads is how many of the least loaded supernodes a heartbeat answer lists, for
// busy supernodes to point clients at.
const layerLoads = 16

// layerView is the layer as last computed, shared by every heartbeat answer.
type layerView struct {
	mu         sync.Mutex // mu protects the following fields
	at         time.Time  // when computed
	least      []proto.SupernodeInfo
	layer      proto.Layer
	peak       int       // the largest population seen within the window
	peakAt     time.Time // when it was seen
	tokens     float64   // the promotion bucket
	tokensAt   time.Time
	tokensInit bool
}

// layer returns the least loaded supernodes and the layer against its target,
// recomputed at most ten times per heartbeat interval so that a crowd of heartbeats does
// not sort the table each time.
func (s *Server) layer() ([]proto.SupernodeInfo, proto.Layer) {
	lv := &s.layerView
	now := s.clk.Now()
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if !lv.at.IsZero() && now.Sub(lv.at) < s.cfg.HeartbeatInterval/10 && !now.Before(lv.at) {
		return lv.least, lv.layer
	}
	least, size, clients := s.members.loads(layerLoads)
	if clients >= lv.peak || now.Sub(lv.peakAt) > s.cfg.PopulationWindow {
		lv.peak, lv.peakAt = clients, now
	}
	wanted := 0
	if s.cfg.ClientsPerSupernode > 0 {
		wanted = (lv.peak + s.cfg.ClientsPerSupernode - 1) / s.cfg.ClientsPerSupernode
	}
	if s.cfg.MinSupernodes > 0 || s.cfg.ClientsPerSupernode > 0 {
		wanted = max(wanted, s.cfg.MinSupernodes, 1)
	}
	lv.at, lv.least, lv.layer = now, least, proto.Layer{LayerSize: size, LayerWanted: wanted}
	return lv.least, lv.layer
}

// Layer returns the supernode layer's size and the size wanted (0 = no target).
func (s *Server) Layer() proto.Layer {
	_, l := s.layer()
	return l
}

// pacePromotion takes a token for one promotion, or says how long to wait for one.
func (s *Server) pacePromotion() (ok bool, retry time.Duration) {
	lv := &s.layerView
	now := s.clk.Now()
	rate, burst := s.cfg.PromotionsPerSecond, float64(s.cfg.PromotionBurst)
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if !lv.tokensInit {
		lv.tokensInit, lv.tokens, lv.tokensAt = true, burst, now
	}
	if el := now.Sub(lv.tokensAt).Seconds(); el > 0 {
		lv.tokens = min(burst, lv.tokens+el*rate)
	}
	lv.tokensAt = now
	if lv.tokens >= 1 {
		lv.tokens--
		return true, 0
	}
	// Wait for a token, and a random share of a second more so that the promotions
	// refused together do not all come back together.
	wait := time.Duration((1 - lv.tokens) / rate * float64(time.Second))
	return false, wait + rand.N(time.Second)
}
