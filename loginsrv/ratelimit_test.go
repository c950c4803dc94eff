package loginsrv

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// rlClock is a manual clock for FailLimiter tests.
type rlClock struct {
	mu sync.Mutex // mu protects t
	t  time.Time
}

func newRLClock() *rlClock { return &rlClock{t: time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)} }

func (c *rlClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *rlClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func wantAllow(t *testing.T, l *FailLimiter, key string, ok bool, retry time.Duration) {
	t.Helper()
	gotOK, gotRetry := l.Allow(key)
	if gotOK != ok || gotRetry != retry {
		t.Fatalf("Allow(%q) = %v, %v; want %v, %v", key, gotOK, gotRetry, ok, retry)
	}
}

func TestFailLimiterLimit(t *testing.T) {
	c := newRLClock()
	l := NewFailLimiter(3, time.Minute, 100, c.Now)
	wantAllow(t, l, "ann", true, 0)
	l.Fail("ann")
	c.Advance(10 * time.Second)
	l.Fail("ann")
	wantAllow(t, l, "ann", true, 0)
	c.Advance(10 * time.Second)
	l.Fail("ann")                                 // third failure, at +20s
	wantAllow(t, l, "ann", false, 40*time.Second) // the first one leaves the window at +60s
	wantAllow(t, l, "bob", true, 0)               // keys are independent

	c.Advance(39 * time.Second) // +59s: still three inside the window
	wantAllow(t, l, "ann", false, time.Second)
	c.Advance(time.Second) // +60s: the first failure is exactly one window old
	wantAllow(t, l, "ann", true, 0)
	l.Fail("ann") // +60s: three again (at +10, +20, +60)
	wantAllow(t, l, "ann", false, 10*time.Second)
	if l.Len() != 1 {
		t.Fatalf("Len = %d, want 1", l.Len())
	}
}

func TestFailLimiterWindowExpiry(t *testing.T) {
	c := newRLClock()
	l := NewFailLimiter(2, time.Minute, 100, c.Now)
	for range 5 { // more failures than max: only the newest max count
		l.Fail("ann")
	}
	wantAllow(t, l, "ann", false, time.Minute)
	c.Advance(time.Minute)
	wantAllow(t, l, "ann", true, 0)
	if l.Len() != 0 {
		t.Fatalf("Len = %d after the window, want 0 (expired keys are dropped)", l.Len())
	}
	// A fresh start after expiry: one failure is not enough.
	l.Fail("ann")
	wantAllow(t, l, "ann", true, 0)
}

func TestFailLimiterReset(t *testing.T) {
	c := newRLClock()
	l := NewFailLimiter(1, time.Hour, 100, c.Now)
	l.Fail("ann")
	l.Fail("10.0.0.1")
	wantAllow(t, l, "ann", false, time.Hour)
	l.Reset("ann")
	wantAllow(t, l, "ann", true, 0)
	wantAllow(t, l, "10.0.0.1", false, time.Hour) // other keys untouched
	l.Reset("nobody")                             // no-op
	if l.Len() != 1 {
		t.Fatalf("Len = %d, want 1", l.Len())
	}
}

func TestFailLimiterMaxKeys(t *testing.T) {
	c := newRLClock()
	l := NewFailLimiter(1, time.Minute, 3, c.Now)
	for i := range 3 {
		l.Fail(fmt.Sprintf("k%d", i))
		c.Advance(time.Second)
	}
	l.Fail("k0") // k0 is now the most recent failure; k1 the oldest
	for i := 3; i < 10; i++ {
		l.Fail(fmt.Sprintf("k%d", i))
		if n := l.Len(); n > 3 {
			t.Fatalf("Len = %d > maxKeys 3", n)
		}
	}
	// The three most recent keys are tracked; k0, although refreshed, was evicted in turn.
	for i := range 10 {
		key := fmt.Sprintf("k%d", i)
		ok, _ := l.Allow(key)
		if want := i < 7; ok != want {
			t.Errorf("Allow(%s) = %v, want %v", key, ok, want)
		}
	}
}

// TestFailLimiterEvictsOldestFirst: when full, the key whose last failure is oldest goes,
// not a key that failed recently.
func TestFailLimiterEvictsOldestFirst(t *testing.T) {
	c := newRLClock()
	l := NewFailLimiter(2, time.Minute, 2, c.Now)
	l.Fail("old")
	c.Advance(time.Second)
	l.Fail("new")
	c.Advance(time.Second)
	l.Fail("old") // old is now the most recent
	c.Advance(time.Second)
	l.Fail("third")                               // evicts "new"
	wantAllow(t, l, "old", false, 57*time.Second) // its first failure, at 0, leaves at +60s
	l.Fail("new")
	l.Fail("new")
	wantAllow(t, l, "new", false, time.Minute)
	if l.Len() != 2 {
		t.Fatalf("Len = %d, want 2", l.Len())
	}
}

// TestFailLimiterExpiredKeysFreeRoom: a full limiter whose keys have expired makes room
// without evicting live ones.
func TestFailLimiterExpiredKeysFreeRoom(t *testing.T) {
	c := newRLClock()
	l := NewFailLimiter(1, time.Minute, 1000, c.Now)
	for i := range 1000 {
		l.Fail(fmt.Sprintf("bot%d", i))
	}
	if l.Len() != 1000 {
		t.Fatalf("Len = %d, want 1000", l.Len())
	}
	c.Advance(time.Minute)
	l.Fail("ann")
	if l.Len() != 1 {
		t.Fatalf("Len = %d after expiry, want 1", l.Len())
	}
	wantAllow(t, l, "ann", false, time.Minute)
}

func TestFailLimiterClockBackwards(t *testing.T) {
	c := newRLClock()
	l := NewFailLimiter(1, time.Minute, 10, c.Now)
	l.Fail("ann")
	c.Advance(-time.Hour)
	ok, retry := l.Allow("ann")
	if ok || retry <= 0 || retry > time.Minute {
		t.Fatalf("after the clock stepped back: Allow = %v, %v; want blocked for at most a window", ok, retry)
	}
}

func TestFailLimiterConcurrent(t *testing.T) {
	l := NewFailLimiter(5, time.Minute, 50, nil)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 500 {
				key := fmt.Sprintf("k%d", (g*31+i)%80)
				l.Allow(key)
				l.Fail(key)
				if i%7 == 0 {
					l.Reset(key)
				}
			}
		})
	}
	wg.Wait()
	if n := l.Len(); n > 50 {
		t.Fatalf("Len = %d > maxKeys", n)
	}
}

func TestNewFailLimiterRejectsBadArgs(t *testing.T) {
	for _, a := range []struct {
		max     int
		window  time.Duration
		maxKeys int
	}{{0, time.Minute, 1}, {1, 0, 1}, {1, time.Minute, 0}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewFailLimiter(%+v) did not panic", a)
				}
			}()
			NewFailLimiter(a.max, a.window, a.maxKeys, nil)
		}()
	}
}

// BenchmarkFailLimiter is the per-login cost: two Allow checks (name and address) on a
// limiter tracking many keys, and a Fail.
func BenchmarkFailLimiter(b *testing.B) {
	l := NewFailLimiter(5, 15*time.Minute, 100000, nil)
	keys := make([]string, 50000)
	for i := range keys {
		keys[i] = fmt.Sprintf("user%05d", i)
		l.Fail(keys[i])
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := keys[i%len(keys)]
		l.Allow(k)
		l.Allow("203.0.113.7")
		l.Fail(k)
		i++
	}
}
