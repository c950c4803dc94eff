package loginsrv

import (
	"container/list"
	"fmt"
	"sync"
	"time"
)

// FailLimiter counts failed logins per key and refuses a key that has failed max times
// within the last window (a sliding window: each failure stops counting exactly window
// after it happened). The server keeps separate keys for the account name and for the
// source address, so that one address cannot try many names and many addresses cannot
// hammer one name.
//
// Memory is bounded: at most maxKeys keys are tracked, each with at most max timestamps
// (8 bytes each). Keys whose failures have all expired are dropped as the limiter is used;
// when it is full of live keys, a new key evicts the one whose last failure is oldest.
// Eviction forgets that key's failures, which is the price of the bound: an attacker who can
// fail from more than maxKeys distinct keys within a window can reset others' counters, so
// size maxKeys well above the number of keys expected to fail in one window.
type FailLimiter struct {
	max     int
	window  time.Duration
	maxKeys int
	now     func() time.Time
	epoch   time.Time // failure times are stored as offsets from it

	mu   sync.Mutex               // mu protects all following fields
	keys map[string]*list.Element // value is *rlEntry
	lru  *list.List               // entries by last failure, most recent at the front
}

// rlEntry is the failure record of one key.
type rlEntry struct {
	key   string
	fails []time.Duration // offsets from epoch, oldest first; at most max of them
}

// NewFailLimiter returns a limiter that refuses a key after max failures within window,
// tracking at most maxKeys keys. now is the clock (nil = time.Now). It panics if max,
// window or maxKeys is not positive.
func NewFailLimiter(max int, window time.Duration, maxKeys int, now func() time.Time) *FailLimiter {
	if max < 1 || window <= 0 || maxKeys < 1 {
		panic(fmt.Sprintf("loginsrv: NewFailLimiter(max=%d, window=%v, maxKeys=%d): all must be positive", max, window, maxKeys))
	}
	if now == nil {
		now = time.Now
	}
	return &FailLimiter{
		max:     max,
		window:  window,
		maxKeys: maxKeys,
		now:     now,
		epoch:   now(),
		keys:    make(map[string]*list.Element),
		lru:     list.New(),
	}
}

// Allow reports whether key may try to log in. When it may not, retryAfter says how long
// until its oldest counted failure leaves the window.
func (l *FailLimiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	now := l.now().Sub(l.epoch)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	el, found := l.keys[key]
	if !found {
		return true, 0
	}
	e := el.Value.(*rlEntry)
	l.pruneLocked(e, now)
	if len(e.fails) == 0 {
		l.removeLocked(el)
		return true, 0
	}
	if len(e.fails) < l.max {
		return true, 0
	}
	retry := e.fails[len(e.fails)-l.max] + l.window - now
	// A clock that stepped backwards must not make the wait longer than one window.
	return false, min(retry, l.window)
}

// Fail records a failed login for key, now.
func (l *FailLimiter) Fail(key string) {
	now := l.now().Sub(l.epoch)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	if el, found := l.keys[key]; found {
		e := el.Value.(*rlEntry)
		l.pruneLocked(e, now)
		if len(e.fails) == l.max {
			// Only the newest max failures can matter for Allow.
			copy(e.fails, e.fails[1:])
			e.fails = e.fails[:l.max-1]
		}
		e.fails = append(e.fails, now)
		l.lru.MoveToFront(el)
		return
	}
	for len(l.keys) >= l.maxKeys {
		l.removeLocked(l.lru.Back())
	}
	e := &rlEntry{key: key, fails: make([]time.Duration, 1, min(l.max, 4))}
	e.fails[0] = now
	l.keys[key] = l.lru.PushFront(e)
}

// Reset forgets key's failures; the server calls it after a successful login.
func (l *FailLimiter) Reset(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if el, found := l.keys[key]; found {
		l.removeLocked(el)
	}
}

// Len returns the number of keys with failures inside the window.
func (l *FailLimiter) Len() int {
	now := l.now().Sub(l.epoch)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweepLocked(now)
	return len(l.keys)
}

// sweepLocked drops keys whose newest failure has left the window. They sit at the back of
// the list, so each call does work only for keys it removes.
func (l *FailLimiter) sweepLocked(now time.Duration) {
	for el := l.lru.Back(); el != nil; {
		e := el.Value.(*rlEntry)
		if now-e.fails[len(e.fails)-1] < l.window {
			return
		}
		prev := el.Prev()
		l.removeLocked(el)
		el = prev
	}
}

// pruneLocked drops e's failures that have left the window.
func (l *FailLimiter) pruneLocked(e *rlEntry, now time.Duration) {
	i := 0
	for i < len(e.fails) && now-e.fails[i] >= l.window {
		i++
	}
	if i > 0 {
		n := copy(e.fails, e.fails[i:])
		e.fails = e.fails[:n]
	}
}

func (l *FailLimiter) removeLocked(el *list.Element) {
	delete(l.keys, el.Value.(*rlEntry).key)
	l.lru.Remove(el)
}
