// Package backoff computes retry delays: exponential growth with full jitter, so that a
// crowd of clients that failed together does not retry together (the lesson of Skype's
// 2007 and 2010 outages, where synchronized reconnects flattened the login servers).
package backoff

import (
	"math/rand/v2"
	"time"
)

// Backoff yields successive retry delays. The zero value uses the defaults documented on
// each field. It is not safe for concurrent use.
type Backoff struct {
	Base time.Duration // first ceiling; 0 = 200ms
	Max  time.Duration // largest ceiling; 0 = 30s

	attempt int
}

// Next returns the delay before the next attempt: uniformly random in [ceiling/2, ceiling],
// where the ceiling doubles from Base up to Max. Keeping half of the ceiling as a floor
// avoids hot retry loops while still spreading a crowd over a wide window.
func (b *Backoff) Next() time.Duration {
	base, max := b.Base, b.Max
	if base <= 0 {
		base = 200 * time.Millisecond
	}
	if max <= 0 {
		max = 30 * time.Second
	}
	ceil := base
	for i := 0; i < b.attempt && ceil < max; i++ {
		ceil *= 2
	}
	if ceil > max {
		ceil = max
	}
	b.attempt++
	half := ceil / 2
	return half + rand.N(ceil-half+1)
}

// Reset starts the sequence again after a success.
func (b *Backoff) Reset() { b.attempt = 0 }

// Sleep waits for d or until done is closed; it reports whether the full delay elapsed.
func Sleep(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
