package backoff

import (
	"sync"
	"time"
)

// Budget is a retry budget in the manner of gRPC's retry throttling and Finagle's
// RetryBudget: every retry spends a token, every success and the passing of time give
// tokens back, and a client whose budget is spent waits the back-off's cap before each
// further retry instead of retrying at the back-off's pace. It never refuses outright: a
// client must keep trying to come back, only more slowly when it has been failing for a
// while. The point is the crowd: when a whole population retries against a server that
// is down or shedding, the retries that reach it are bounded by the budget (Burst at
// first, then PerSecond per client) rather than by how fast back-off lets each client go.
//
// One Budget is shared by all of a client's reconnect paths (login, attach, reattach), so
// that three retrying loops cannot triple a client's load on the servers. The zero value
// uses the defaults named on each field. It is safe for concurrent use.
type Budget struct {
	// Burst is how many tokens the budget holds, and starts with; 0 = 10.
	Burst float64
	// PerSecond is the tokens that time gives back per second; 0 = 0.1 (one retry per
	// ten seconds once the burst is spent).
	PerSecond float64
	// PerSuccess is the tokens a success gives back; 0 = 1, so one success pays for the
	// retry that led to it.
	PerSuccess float64
	Now        func() time.Time // the clock; nil = time.Now

	mu     sync.Mutex // mu protects the following fields
	init   bool
	tokens float64
	at     time.Time // when tokens was last brought up to date
}

func (b *Budget) refillLocked() {
	now := time.Now
	if b.Now != nil {
		now = b.Now
	}
	t := now()
	if !b.init {
		b.init, b.tokens, b.at = true, b.burst(), t
		return
	}
	if el := t.Sub(b.at).Seconds(); el > 0 {
		b.tokens = min(b.burst(), b.tokens+el*b.perSecond())
	}
	b.at = t
}

func (b *Budget) burst() float64 {
	if b.Burst <= 0 {
		return 10
	}
	return b.Burst
}

func (b *Budget) perSecond() float64 {
	if b.PerSecond <= 0 {
		return 0.1
	}
	return b.PerSecond
}

// Retry spends a token for one retry; it reports false when none was left, and then the
// caller waits its back-off's cap before retrying.
func (b *Budget) Retry() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked()
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// Success gives back PerSuccess tokens.
func (b *Budget) Success() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked()
	per := b.PerSuccess
	if per <= 0 {
		per = 1
	}
	b.tokens = min(b.burst(), b.tokens+per)
}

// Tokens returns the tokens left now (for status and tests).
func (b *Budget) Tokens() float64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refillLocked()
	return b.tokens
}

// Delay is the wait before the next retry of a loop that backs off with bo, after a
// server asked for retryAfter (0 = it said nothing): the back-off's next delay, at least
// retryAfter, and the back-off's cap when the budget is spent. It reports whether the
// budget was spent.
func (b *Budget) Delay(bo *Backoff, retryAfter time.Duration) (d time.Duration, spent bool) {
	d = bo.Next()
	if !b.Retry() {
		spent = true
		d = max(d, bo.cap())
	}
	return max(d, retryAfter), spent
}

// cap is the largest ceiling of b.
func (b *Backoff) cap() time.Duration {
	if b.Max <= 0 {
		return 30 * time.Second
	}
	return b.Max
}
