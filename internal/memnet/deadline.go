package memnet

import (
	"sync"
	"time"
)

// deadline is one read or write deadline. Its fields are guarded by the mutex of the
// conn that owns it.
//
// One timer serves every deadline the conn ever sets: a new deadline moves it (Reset)
// rather than stopping it and starting another. The rpc layer sets a write deadline
// for every frame; with a timer per deadline, each stopped one stays in the runtime's
// timer heap until its time would have come. On the simulation's virtual clock, where
// work takes no time, that was ten seconds' worth of every frame of the whole overlay:
// 0.74 GB of timers at 20,000 users (a heap profile of TestStormsVirtual).
type deadline struct {
	timer   *time.Timer // created by the first future deadline; nil before
	at      time.Time   // the deadline; zero = none (also after stopLocked)
	wake    func()      // wakes the callers blocked on this deadline
	expired bool
}

// setLocked makes t the deadline; the zero time means none. mu is the lock held by the
// caller and guarding d; when the deadline passes, the timer takes mu, marks d expired
// and calls wake so that blocked callers recheck.
func (d *deadline) setLocked(mu *sync.Mutex, t time.Time, wake func()) {
	d.at, d.wake, d.expired = t, wake, false
	if t.IsZero() {
		d.disarm()
		return
	}
	dur := time.Until(t)
	if dur <= 0 {
		d.disarm()
		d.at = time.Time{}
		d.expired = true
		wake()
		return
	}
	if d.timer == nil {
		d.timer = time.AfterFunc(dur, func() {
			mu.Lock()
			defer mu.Unlock()
			d.fireLocked()
		})
		return
	}
	d.timer.Reset(dur)
}

// fireLocked runs when the timer fires. The deadline may have moved since the timer was
// set (a firing can be under way when Reset moves it): it then waits for the new one.
func (d *deadline) fireLocked() {
	if d.at.IsZero() || d.expired {
		return
	}
	if rem := time.Until(d.at); rem > 0 {
		d.timer.Reset(rem)
		return
	}
	d.at = time.Time{}
	d.expired = true
	d.wake()
}

// stopLocked disarms d without changing whether it has expired.
func (d *deadline) stopLocked() {
	d.at = time.Time{}
	d.disarm()
}

func (d *deadline) disarm() {
	if d.timer != nil {
		d.timer.Stop()
	}
}
