package relay

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// user is one user's quota state, shared by all of its allocations. The allocation counts
// are guarded by Server.qmu; the bucket has its own lock because the read loops take
// from it per datagram.
type user struct {
	name    string
	allocs  int // allocations the user holds
	pending int // allocations admitted by the quota check and not yet created or failed
	bucket  bucket
}

// bucket is a token bucket of bytes. rate 0 means unlimited.
type bucket struct {
	rate, burst float64

	mu     sync.Mutex // mu protects the following fields
	tokens float64
	last   time.Time
}

func newBucket(rate, burst int, now time.Time) bucket {
	return bucket{rate: float64(rate), burst: float64(burst), tokens: float64(burst), last: now}
}

// refillLocked adds the tokens earned since the last call.
func (b *bucket) refillLocked(now time.Time) {
	if d := now.Sub(b.last); d > 0 {
		b.tokens = min(b.burst, b.tokens+d.Seconds()*b.rate)
		b.last = now
	}
}

// allow takes n tokens if the bucket holds them, for datagrams, which are dropped when it
// does not.
func (b *bucket) allow(n int, now time.Time) bool {
	if b.rate == 0 {
		return true
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now)
	if b.tokens < float64(n) {
		return false
	}
	b.tokens -= float64(n)
	return true
}

// reserve takes n tokens, going into debt if need be, and says how long the caller must
// wait for the debt to be paid: TCP streams are slowed down, not cut.
func (b *bucket) reserve(n int, now time.Time) time.Duration {
	if b.rate == 0 {
		return 0
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked(now)
	b.tokens -= float64(n)
	if b.tokens >= 0 {
		return 0
	}
	return time.Duration(-b.tokens / b.rate * float64(time.Second))
}

// flowKey names a client's transport address; TCP and UDP flows are distinct.
type flowKey struct {
	tcp bool
	ap  netip.AddrPort
}

func flowKeyOf(a net.Addr) flowKey {
	switch a := a.(type) {
	case *net.UDPAddr:
		return flowKey{ap: unmap(a.AddrPort())}
	case *net.TCPAddr:
		return flowKey{tcp: true, ap: unmap(a.AddrPort())}
	}
	return flowKey{}
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Is4In6() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return ap
}

// userLocked returns the state of user name, creating it. s.qmu must be held.
func (s *Server) userLocked(name string) *user {
	u := s.users[name]
	if u == nil {
		u = &user{name: name, bucket: newBucket(s.cfg.UserBandwidth, s.cfg.UserBurst, s.cfg.Now())}
		s.users[name] = u
	}
	return u
}

// forgetLocked drops u once it holds nothing. s.qmu must be held.
func (s *Server) forgetLocked(u *user) {
	if u.allocs <= 0 && u.pending <= 0 && s.users[u.name] == u {
		delete(s.users, u.name)
	}
}

// quota is pion's QuotaHandler: it admits an Allocate request if the user holds fewer
// than MaxAllocsPerUser allocations, and reserves one for it until pion reports the
// allocation created (allocCreated) or failed (allocFailed). Pion handles one request
// per client address at a time, so the reservation is keyed by that address.
func (s *Server) quota(username, _ string, src net.Addr) bool {
	_, name, _ := parseUsername(username)
	s.qmu.Lock()
	defer s.qmu.Unlock()
	u := s.userLocked(name)
	if max := s.cfg.MaxAllocsPerUser; max > 0 && u.allocs+u.pending >= max {
		s.forgetLocked(u)
		s.m.Inc(MetricQuotaAllocsRefused)
		s.log.Info("allocation refused: user at quota", "user", name, "remote", src.String(), "allocations", u.allocs)
		return false
	}
	u.pending++
	s.pending[flowKeyOf(src)] = u
	return true
}

// allocCreated moves the reservation made by quota to the user's allocations.
func (s *Server) allocCreated(src net.Addr, username string) *user {
	_, name, _ := parseUsername(username)
	k := flowKeyOf(src)
	s.qmu.Lock()
	defer s.qmu.Unlock()
	u := s.pending[k]
	if u != nil {
		delete(s.pending, k)
		u.pending--
	}
	if u == nil || u.name != name {
		u = s.userLocked(name)
	}
	u.allocs++
	return u
}

// allocFailed releases a reservation whose Allocate request failed after the quota check.
func (s *Server) allocFailed(src net.Addr) {
	k := flowKeyOf(src)
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if u := s.pending[k]; u != nil {
		delete(s.pending, k)
		u.pending--
		s.forgetLocked(u)
	}
}

// allocDeleted gives back the user's allocation.
func (s *Server) allocDeleted(username string) {
	_, name, _ := parseUsername(username)
	s.qmu.Lock()
	defer s.qmu.Unlock()
	if u := s.users[name]; u != nil {
		u.allocs--
		s.forgetLocked(u)
	}
}
